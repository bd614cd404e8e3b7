//! Sign-in sessions: password login, refresh-token rotation, logout, and
//! rate limiting against password guessing.
//!
//! An access token lives minutes and is held by the page in memory. The
//! session itself is a random refresh token in an `HttpOnly; Secure;
//! SameSite=Strict` cookie scoped to `/api/v1/auth`: scripts cannot read
//! it and other sites cannot send it. Only its SHA-256 is stored. Each
//! refresh rotates it; presenting a token that was already rotated (a
//! copied cookie) revokes the whole session. Sessions end at a fixed time
//! after sign-in, however often they are refreshed.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::audit::{AuditSlot, ClientIp};
use crate::auth::{AuthUser, Role, verify_password};
use crate::error::ApiError;

/// The refresh-token cookie.
pub(crate) const COOKIE: &str = "tu_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";
/// A token rotated this recently and presented again is most likely a
/// second tab refreshing at the same moment, not a stolen copy.
const ROTATION_GRACE: Duration = Duration::from_secs(10);

/// Per-user-name and per-address limits on sign-in attempts.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    by_user: DefaultKeyedRateLimiter<String>,
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
}

impl LoginLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        let per_user = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let per_ip = per_user.saturating_mul(NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN));
        Self {
            by_user: RateLimiter::keyed(Quota::per_minute(per_user)),
            by_ip: RateLimiter::keyed(Quota::per_minute(per_ip)),
        }
    }

    fn check(&self, user: &str, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let clock = DefaultClock::default();
        let refused = |n: governor::NotUntil<_>| ApiError::TooManyRequests {
            retry_after_secs: n.wait_time_from(clock.now()).as_secs().max(1),
        };
        // Lower-cased so `Alice` and `alice` share a budget.
        self.by_user.check_key(&user.to_lowercase()).map_err(refused)?;
        if let Some(ip) = ip {
            self.by_ip.check_key(&ip).map_err(refused)?;
        }
        Ok(())
    }

    /// Drops state of keys that are back to a full budget (bounded memory).
    pub(crate) fn prune(&self) {
        self.by_user.retain_recent();
        self.by_ip.retain_recent();
        self.by_user.shrink_to_fit();
        self.by_ip.shrink_to_fit();
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: String,
    role: Role,
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_refresh_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("tur_{}", hex::encode(b))
}

fn session_cookie(token: String, expires_at: DateTime<Utc>) -> Cookie<'static> {
    let max_age = (expires_at - Utc::now()).num_seconds().max(0);
    Cookie::build((COOKIE, token))
        .path(COOKIE_PATH)
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .max_age(time_delta(max_age))
        .build()
}

fn time_delta(secs: i64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(secs)
}

fn removal_cookie() -> Cookie<'static> {
    Cookie::build((COOKIE, "")).path(COOKIE_PATH).http_only(true).secure(true).same_site(SameSite::Strict).build()
}

/// Refuses a browser request sent from another origin. Requests without an
/// `Origin` header come from non-browser clients, which cannot be driven by
/// another site.
pub(crate) fn require_same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, h)| h).unwrap_or_default();
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("cross-origin request refused"))
    }
}

/// User name and password for an access token and a session cookie
/// (`tu_refresh`, HttpOnly). Rate-limited per user name and address.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse, description = "Signed in; sets the `tu_refresh` cookie"),
        (status = 401, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    Json(req): Json<LoginRequest>,
) -> Result<(CookieJar, Json<TokenResponse>), ApiError> {
    require_same_origin(&headers)?;
    let username = req.username.trim().to_owned();
    slot.set_actor(&username, None);
    slot.set_detail("auth.login", None, serde_json::json!({ "username": username }), None);
    if username.is_empty() || username.len() > 128 || req.password.len() > 1024 {
        return Err(ApiError::Unauthorized);
    }
    state.login_limiter.check(&username, ip)?;
    let row: Option<(Option<String>, String, bool)> =
        sqlx::query_as("select password_hash, role, disabled from users where id = $1")
            .bind(&username)
            .fetch_optional(&state.pool)
            .await?;
    let hash = row.as_ref().and_then(|(h, _, disabled)| if *disabled { None } else { h.clone() });
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(hash.as_deref(), &password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let role = row.as_ref().and_then(|(_, r, _)| Role::parse(r));
    let (true, Some(role)) = (ok, role) else {
        tracing::info!(user = %username, "sign-in refused");
        return Err(ApiError::Unauthorized);
    };
    slot.set_actor(&username, Some(role));
    let access_token = state.keys.issue(&username, role)?;
    let refresh = new_refresh_token();
    let expires_at = Utc::now() + chrono::TimeDelta::seconds(state.config.session_ttl_secs as i64);
    sqlx::query("insert into refresh_tokens (token_hash, family, user_id, expires_at) values ($1, $2, $3, $4)")
        .bind(token_hash(&refresh))
        .bind(uuid::Uuid::new_v4())
        .bind(&username)
        .bind(expires_at)
        .execute(&state.pool)
        .await?;
    tracing::info!(user = %username, "signed in");
    let body =
        TokenResponse { access_token, token_type: "Bearer", expires_in: state.keys.ttl_secs(), user: username, role };
    Ok((jar.add(session_cookie(refresh, expires_at)), Json(body)))
}

type RefreshRow = (String, uuid::Uuid, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A new access token for the session cookie, which is rotated.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody, description = "Cross-origin request")))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<(CookieJar, Json<TokenResponse>), ApiError> {
    require_same_origin(&headers)?;
    slot.set_detail("auth.refresh", None, serde_json::json!({}), None);
    let Some(presented) = jar.get(COOKIE).map(|c| c.value().to_owned()).filter(|v| !v.is_empty()) else {
        return Err(ApiError::Unauthorized);
    };
    let hash = token_hash(&presented);
    let row: Option<RefreshRow> = sqlx::query_as(
        "select user_id, family, expires_at, rotated_at, revoked_at from refresh_tokens where token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&state.pool)
    .await?;
    let Some((user, family, expires_at, rotated_at, revoked_at)) = row else {
        return Err(ApiError::Unauthorized);
    };
    slot.set_actor(&user, None);
    if revoked_at.is_some() || expires_at <= Utc::now() {
        return Err(ApiError::Unauthorized);
    }
    if let Some(at) = rotated_at {
        if (Utc::now() - at).to_std().unwrap_or_default() > ROTATION_GRACE {
            // A rotated token came back: someone holds a copy. End the session.
            revoke_family(&state, family).await?;
            tracing::warn!(user = %user, "a rotated session token was reused; the session is revoked");
        }
        return Err(ApiError::Unauthorized);
    }
    let status = state.users.status(&state.pool, &user).await?;
    let Some(status) = status.filter(|s| !s.disabled) else {
        revoke_family(&state, family).await?;
        return Err(ApiError::Unauthorized);
    };
    let next = new_refresh_token();
    let mut tx = state.pool.begin().await?;
    let claimed =
        sqlx::query("update refresh_tokens set rotated_at = now() where token_hash = $1 and rotated_at is null")
            .bind(&hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if claimed == 0 {
        // Another request rotated it a moment ago.
        return Err(ApiError::Unauthorized);
    }
    sqlx::query("insert into refresh_tokens (token_hash, family, user_id, expires_at) values ($1, $2, $3, $4)")
        .bind(token_hash(&next))
        .bind(family)
        .bind(&user)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    slot.set_actor(&user, Some(status.role));
    let access_token = state.keys.issue(&user, status.role)?;
    let body = TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.keys.ttl_secs(),
        user,
        role: status.role,
    };
    Ok((jar.add(session_cookie(next, expires_at)), Json(body)))
}

async fn revoke_family(state: &AppState, family: uuid::Uuid) -> Result<(), ApiError> {
    sqlx::query("update refresh_tokens set revoked_at = now() where family = $1 and revoked_at is null")
        .bind(family)
        .execute(&state.pool)
        .await?;
    Ok(())
}

/// Ends the session of the cookie (idempotent).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204, description = "Signed out")))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<(StatusCode, CookieJar), ApiError> {
    require_same_origin(&headers)?;
    slot.set_detail("auth.logout", None, serde_json::json!({}), None);
    if let Some(c) = jar.get(COOKIE) {
        let row: Option<(String, uuid::Uuid)> =
            sqlx::query_as("select user_id, family from refresh_tokens where token_hash = $1")
                .bind(token_hash(c.value()))
                .fetch_optional(&state.pool)
                .await?;
        if let Some((user, family)) = row {
            slot.set_actor(&user, None);
            revoke_family(&state, family).await?;
        }
    }
    Ok((StatusCode::NO_CONTENT, jar.remove(removal_cookie())))
}

/// Deletes sessions that ended more than a day ago.
pub(crate) async fn purge_expired(pool: &sqlx::PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query("delete from refresh_tokens where expires_at < now() - interval '1 day'")
        .execute(pool)
        .await?
        .rows_affected())
}

/// Who the access token belongs to.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "`{user, role, expires_at, issuer}`"), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn me(Extension(slot): Extension<AuditSlot>, user: AuthUser) -> Json<serde_json::Value> {
    slot.set_detail("auth.me", Some(&user.id), serde_json::json!({}), None);
    Json(serde_json::json!({
        "user": user.id,
        "role": user.role,
        "expires_at": user.expires_at,
        "issuer": match user.issuer { crate::auth::Issuer::Local => "local", crate::auth::Issuer::Oidc => "oidc" },
    }))
}
