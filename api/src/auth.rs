//! Who is calling: roles, password hashing, and the [`AuthUser`] extractor
//! that every data route takes.
//!
//! A credential travels only in the `Authorization: Bearer` header, never in
//! a URL. A bearer token is one of ours (HS256, `kid` we hold) or, when an
//! OIDC issuer is configured, the identity provider's. Anything else, or a
//! token that fails validation, is a 401, never a 5xx. Local users are
//! re-checked against the database (cached for a few seconds), so a
//! disabled user or a changed role takes effect without waiting for the
//! token to expire.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::app::AppState;
use crate::audit::AuditSlot;
use crate::error::ApiError;

/// What a signed-in person may do. Publishers are not users: they hold API
/// keys, which only the ingest endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees their own usage.
    Viewer,
    /// Sees everyone's usage, manages users and keys, reads the audit log.
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

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// A token we issued at sign-in.
    Local,
    /// A token of the configured OpenID Connect provider.
    Oidc,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub role: Role,
    pub issuer: Issuer,
    /// When the credential expires (Unix seconds), for long-lived sockets.
    pub expires_at: u64,
}

impl AuthUser {
    /// The user whose data this request may read: the caller, or for an
    /// admin, whoever they ask for. The user never comes from the request
    /// for anyone else.
    pub fn subject_for(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match requested {
            None => Ok(self.id.clone()),
            Some(u) if u == self.id => Ok(self.id.clone()),
            Some(u) if self.role == Role::Admin => Ok(u.to_owned()),
            Some(_) => Err(ApiError::Forbidden("viewers can only see their own usage")),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin { Ok(()) } else { Err(ApiError::Forbidden("admins only")) }
    }
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The longest access token accepted, in bytes. Ours are ~300 bytes and
/// identity providers' a few KiB; a larger one is refused before it is
/// decoded, signature and all.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Validates a bearer token from any accepted issuer.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<AuthUser, ApiError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::Unauthorized);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized)?;
    let kid = header.kid.ok_or(ApiError::Unauthorized)?;
    let (id, role, issuer, exp) = if state.keys.holds(&kid) {
        let c = state.keys.verify(&kid, token).ok_or(ApiError::Unauthorized)?;
        (c.sub, c.role, Issuer::Local, c.exp)
    } else if let Some(oidc) = &state.oidc {
        let ident = oidc.verify(&kid, token).await.ok_or(ApiError::Unauthorized)?;
        (ident.user, ident.role, Issuer::Oidc, ident.exp)
    } else {
        return Err(ApiError::Unauthorized);
    };
    // The database has the last word on local accounts; a provider's user
    // without a local row is fine, a disabled local row is not.
    let role = match (state.users.status(&state.pool, &id).await?, issuer) {
        (Some(UserStatus { disabled: true, .. }), _) => return Err(ApiError::Unauthorized),
        (Some(UserStatus { role: db_role, .. }), Issuer::Local) => db_role,
        (None, Issuer::Local) => return Err(ApiError::Unauthorized),
        (_, Issuer::Oidc) => role,
    };
    Ok(AuthUser { id, role, issuer, expires_at: exp })
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let user = authenticate(state, token).await?;
        if let Some(slot) = parts.extensions.get::<AuditSlot>() {
            slot.set_actor(&user.id, Some(user.role));
        }
        Ok(user)
    }
}

/// A local account's standing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserStatus {
    pub role: Role,
    pub disabled: bool,
}

/// How long a looked-up account status is trusted.
const STATUS_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; the cache is cleared when it would grow past this.
const STATUS_CAPACITY: usize = 50_000;

/// Account status by user id, cached briefly so each request does not cost
/// a query, and bounded so a flood of distinct ids cannot grow it.
#[derive(Debug, Default)]
pub(crate) struct UserDirectory {
    cache: Mutex<HashMap<String, (Instant, Option<UserStatus>)>>,
}

impl UserDirectory {
    pub(crate) async fn status(&self, pool: &PgPool, id: &str) -> Result<Option<UserStatus>, ApiError> {
        if let Some((at, s)) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(id)
            && at.elapsed() < STATUS_TTL
        {
            return Ok(*s);
        }
        let row: Option<(String, bool)> =
            sqlx::query_as("select role, disabled from users where id = $1").bind(id).fetch_optional(pool).await?;
        let status = row.map(|(r, disabled)| UserStatus { role: Role::parse(&r).unwrap_or(Role::Viewer), disabled });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= STATUS_CAPACITY {
            cache.clear();
        }
        cache.insert(id.to_owned(), (Instant::now(), status));
        Ok(status)
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

pub(crate) fn verify_password(hash: Option<&str>, password: &str) -> bool {
    let hash = hash.unwrap_or(DUMMY_HASH.as_str());
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}
