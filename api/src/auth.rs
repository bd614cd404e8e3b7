//! Authentication: password sign-in, and strict validation of the access
//! tokens (JWTs) we issue.
//!
//! Tokens travel only in the `Authorization: Bearer` header, never in a URL.
//! Validation pins the algorithm and requires `exp`, `nbf`, `iss`, `aud` and
//! `sub`, with a small leeway; anything else is a 401, never a 5xx.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::config::ApiArgs;
use crate::error::ApiError;

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees their own usage.
    Viewer,
    /// Sees everyone's usage and manages users.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    role: Role,
}

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

/// Signing and verification keys with the validation rules.
pub(crate) struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub(crate) fn from_args(args: &ApiArgs) -> anyhow::Result<Self> {
        let secret: Vec<u8> = match &args.jwt_secret {
            Some(s) if s.expose_secret().len() >= 32 => s.expose_secret().as_bytes().to_vec(),
            Some(_) => anyhow::bail!("TOKENUSAGE_JWT_SECRET must be at least 32 bytes"),
            None => {
                tracing::warn!(
                    "no TOKENUSAGE_JWT_SECRET set: using a random one; sign-ins end when this process stops"
                );
                let mut b = vec![0u8; 32];
                rand::rng().fill_bytes(&mut b);
                b
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&args.jwt_issuer]);
        validation.set_audience(&[&args.jwt_audience]);
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            ttl_secs: args.access_token_ttl_secs,
        })
    }

    pub(crate) fn issue(&self, user: &str, role: Role) -> anyhow::Result<(String, u64)> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + self.ttl_secs,
            nbf: now,
            iat: now,
            role,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, self.ttl_secs))
    }

    fn verify(&self, token: &str) -> Option<Claims> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() => Some(data.claims),
            Ok(_) => None,
            Err(e) => {
                // The reason helps operators; the token itself is never logged.
                tracing::debug!(reason = %e, "access token rejected");
                None
            }
        }
    }
}

/// The authenticated caller, from a valid bearer token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub role: Role,
}

impl AuthUser {
    /// The user whose data this request may read: the caller, or for an
    /// admin, whoever they ask for.
    pub fn subject_for(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match requested {
            None => Ok(self.id.clone()),
            Some(u) if u == self.id => Ok(self.id.clone()),
            Some(u) if self.role == Role::Admin => Ok(u.to_owned()),
            Some(_) => Err(ApiError::Forbidden("viewers can only see their own usage")),
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or(ApiError::Unauthorized)?;
        let value = header.to_str().map_err(|_| ApiError::Unauthorized)?;
        let token =
            value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(ApiError::Unauthorized)?;
        let claims = state.keys.verify(token.trim()).ok_or(ApiError::Unauthorized)?;
        Ok(AuthUser { id: claims.sub, role: claims.role })
    }
}

/// Hashes a password with argon2id (the crate's default parameters). CPU
/// heavy: call it from a blocking thread.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?
        .to_string())
}

/// A valid hash of a random password, verified against when the user does
/// not exist, so that "no such user" and "wrong password" take equally long.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_password("not-a-real-password").unwrap_or_default());

fn verify_password(hash: Option<&str>, password: &str) -> bool {
    let hash = hash.unwrap_or(DUMMY_HASH.as_str());
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct LoginResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: String,
    role: Role,
}

/// `POST /api/v1/auth/login`: username and password for an access token.
pub(crate) async fn login(
    State(state): State<AppState>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    if req.username.is_empty() || req.username.len() > 128 || req.password.len() > 1024 {
        return Err(ApiError::Unauthorized);
    }
    let row: Option<(Option<String>, String, bool)> =
        sqlx::query_as("select password_hash, role, disabled from users where id = $1")
            .bind(&req.username)
            .fetch_optional(&state.pool)
            .await?;
    let hash = row.as_ref().and_then(|(h, _, disabled)| if *disabled { None } else { h.clone() });
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(hash.as_deref(), &password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let role = row.as_ref().and_then(|(_, r, _)| Role::parse(r));
    match (ok, role) {
        (true, Some(role)) => {
            let (access_token, expires_in) = state.keys.issue(&req.username, role)?;
            tracing::info!(user = %req.username, "signed in");
            Ok(Json(LoginResponse { access_token, token_type: "Bearer", expires_in, user: req.username, role }))
        }
        _ => {
            tracing::info!(user = %req.username, "sign-in refused");
            Err(ApiError::Unauthorized)
        }
    }
}

/// `GET /api/v1/me`: who the token belongs to.
pub(crate) async fn me(user: AuthUser) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "user": user.id, "role": user.role }))
}
