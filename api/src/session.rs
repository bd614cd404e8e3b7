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

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::{Role, verify_password};
use crate::app::AppState;
use crate::audit::{AuditSlot, ClientIp};
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson};

/// The refresh-token cookie.
pub(crate) const COOKIE: &str = "tu_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";
/// A token rotated this recently and presented again is most likely a
/// second tab refreshing at the same moment, not a stolen copy.
const ROTATION_GRACE: Duration = Duration::from_secs(10);

/// Limits on failed sign-ins that an attacker cannot turn against the
/// person they target (docs/SECURITY.md, "Sign-in limits"):
///
/// - per user name *and* address: `per_minute` failures a minute, so one
///   guesser is slowed without touching anyone else;
/// - per address: three times that over all names (password spraying);
/// - per user name over all addresses: ten times that per 15 minutes
///   (distributed guessing), except from an address that signed in as that
///   name successfully in the last 30 days, so a flood of wrong passwords
///   from elsewhere cannot lock the owner out.
///
/// Only failures count: signing in never uses up a budget. Memory is
/// bounded; when a table would grow past its cap, expired entries go first.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    inner: std::sync::Mutex<Limits>,
    per_pair: u32,
    per_address: u32,
    per_name: u32,
}

#[derive(Debug, Default)]
struct Limits {
    by_pair: HashMap<(String, IpAddr), VecDeque<Instant>>,
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
    by_name: HashMap<String, VecDeque<Instant>>,
    trusted: HashMap<(String, IpAddr), Instant>,
}

const MINUTE: Duration = Duration::from_secs(60);
const NAME_WINDOW: Duration = Duration::from_secs(15 * 60);
const TRUST_FOR: Duration = Duration::from_secs(30 * 86_400);
/// Keys kept per table at most.
const LIMITER_KEYS: usize = 100_000;

/// Seconds until a window holding `limit` failures frees a slot, if full.
fn refused(failures: Option<&VecDeque<Instant>>, limit: u32, window: Duration, now: Instant) -> Option<u64> {
    let f = failures?;
    let recent = f.iter().filter(|t| now.duration_since(**t) < window).count();
    if recent < limit as usize {
        return None;
    }
    let oldest = f.iter().find(|t| now.duration_since(**t) < window)?;
    Some(window.saturating_sub(now.duration_since(*oldest)).as_secs().max(1))
}

fn note<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, VecDeque<Instant>>,
    key: K,
    limit: u32,
    window: Duration,
    now: Instant,
) {
    if map.len() >= LIMITER_KEYS && !map.contains_key(&key) {
        map.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < window));
        if map.len() >= LIMITER_KEYS {
            tracing::warn!("the sign-in limiter is full; forgetting old failures");
            map.clear();
        }
    }
    let f = map.entry(key).or_default();
    f.push_back(now);
    while f.len() > limit as usize || f.front().is_some_and(|t| now.duration_since(*t) >= window) {
        f.pop_front();
    }
}

impl LoginLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        let per_pair = per_minute.max(1);
        Self {
            inner: std::sync::Mutex::default(),
            per_pair,
            per_address: per_pair.saturating_mul(3),
            per_name: per_pair.saturating_mul(10),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses an attempt whose budgets are spent, with seconds to wait.
    fn check(&self, user: &str, ip: IpAddr) -> Result<(), ApiError> {
        // Lower-cased so `Alice` and `alice` share a budget.
        let name = user.to_lowercase();
        let now = Instant::now();
        let l = self.lock();
        let pair = (name.clone(), ip);
        let trusted = l.trusted.get(&pair).is_some_and(|t| now.duration_since(*t) < TRUST_FOR);
        let wait = refused(l.by_pair.get(&pair), self.per_pair, MINUTE, now)
            .or_else(|| refused(l.by_address.get(&ip), self.per_address, MINUTE, now))
            .or_else(|| if trusted { None } else { refused(l.by_name.get(&name), self.per_name, NAME_WINDOW, now) });
        match wait {
            Some(retry_after_secs) => Err(ApiError::TooManyRequests { retry_after_secs }),
            None => Ok(()),
        }
    }

    fn failed(&self, user: &str, ip: IpAddr) {
        let name = user.to_lowercase();
        let now = Instant::now();
        let mut l = self.lock();
        note(&mut l.by_pair, (name.clone(), ip), self.per_pair, MINUTE, now);
        note(&mut l.by_address, ip, self.per_address, MINUTE, now);
        note(&mut l.by_name, name, self.per_name, NAME_WINDOW, now);
    }

    fn succeeded(&self, user: &str, ip: IpAddr) {
        let pair = (user.to_lowercase(), ip);
        let now = Instant::now();
        let mut l = self.lock();
        l.by_pair.remove(&pair);
        if l.trusted.len() >= LIMITER_KEYS {
            l.trusted.retain(|_, t| now.duration_since(*t) < TRUST_FOR);
            if l.trusted.len() >= LIMITER_KEYS {
                l.trusted.clear();
            }
        }
        l.trusted.insert(pair, now);
    }

    /// Drops windows that have run out (bounded memory).
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        let mut l = self.lock();
        l.by_pair.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < MINUTE));
        l.by_address.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < MINUTE));
        l.by_name.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < NAME_WINDOW));
        l.trusted.retain(|_, t| now.duration_since(*t) < TRUST_FOR);
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

/// Refuses a browser request sent from another origin (scheme, host and
/// port, see `crate::origin`). Requests without an `Origin` header come
/// from non-browser clients, which cannot be driven by another site.
pub(crate) fn require_same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::origin::allowed(headers, state.config.tls_in_front(), &[]) {
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
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<(CookieJar, Json<TokenResponse>), ApiError> {
    require_same_origin(&state, &headers)?;
    let username = req.username.trim().to_owned();
    slot.set_actor(&username, None);
    slot.set_detail("auth.login", None, serde_json::json!({ "username": username }), None);
    if username.is_empty() || username.len() > 128 || req.password.len() > 1024 {
        return Err(ApiError::Unauthorized);
    }
    let ip = ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    state.login_limiter.check(&username, ip)?;
    let (hash, role) = crate::accounts::credentials(&state.pool, &username).await?.unwrap_or((None, None));
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(hash.as_deref(), &password))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let (true, Some(role)) = (ok, role) else {
        state.login_limiter.failed(&username, ip);
        tracing::info!(user = %tokenusage_contract::text::escape(&username), "sign-in refused");
        return Err(ApiError::Unauthorized);
    };
    state.login_limiter.succeeded(&username, ip);
    slot.set_actor(&username, Some(role));
    let access_token = state.keys.issue(&username, role)?;
    let refresh = new_refresh_token();
    let expires_at = Utc::now() + chrono::TimeDelta::seconds(state.config.jwt.session_ttl_secs as i64);
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
    require_same_origin(&state, &headers)?;
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
    require_same_origin(&state, &headers)?;
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

/// Who the caller is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MeResponse {
    user: String,
    role: Role,
    /// When the access token expires (Unix seconds).
    expires_at: u64,
    /// `local` (signed in here) or `oidc` (the identity provider's token).
    issuer: &'static str,
    /// What the caller may see and set, decided by the server's one access
    /// rule, so the dashboard never works it out for itself.
    access: Access,
}

/// The scopes the caller may read and set budgets on. For admins
/// `everything` is true and the lists name the caller and every team.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Access {
    /// Usage and budgets the caller may see: themselves, each team they
    /// manage and its members.
    see: crate::access::Visible,
    /// Scopes the caller may set budgets on: themselves and each team they
    /// manage.
    set: crate::access::Visible,
}

/// Who the access token belongs to, and what they may see and set.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = MeResponse)))]
pub(crate) async fn me(
    State(st): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<MeResponse>, ApiError> {
    slot.set_detail("auth.me", Some(&user.id), serde_json::json!({}), None);
    let reach = user.reach(&st).await?;
    let (mut see, mut set) =
        (crate::access::visible_scopes(&user, &reach), crate::access::settable_scopes(&user, &reach));
    if see.everything {
        // An admin's pickers offer every team by name.
        let teams = crate::teams::list(&st.pool).await?;
        for v in [&mut see, &mut set] {
            v.scopes.extend(teams.iter().map(|t| crate::access::Scope::Team(t.name.clone())));
        }
    }
    let crate::access::Caller { id, role, issuer, expires_at } = user.0;
    Ok(Json(MeResponse { issuer: issuer.as_str(), user: id, role, expires_at, access: Access { see, set } }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn one_guesser_spends_only_their_own_budget() {
        let l = LoginLimiter::new(3);
        for _ in 0..3 {
            assert!(l.check("alice", ip(1)).is_ok());
            l.failed("Alice", ip(1));
        }
        assert!(
            matches!(l.check("alice", ip(1)), Err(ApiError::TooManyRequests { retry_after_secs }) if retry_after_secs >= 1)
        );
        assert!(l.check("alice", ip(2)).is_ok(), "alice from elsewhere is not locked out");
        assert!(
            l.check("bob", ip(1)).is_ok(),
            "the guesser may still sign in as someone else, within the address budget"
        );
    }

    #[test]
    fn spraying_many_names_from_one_address_is_stopped() {
        let l = LoginLimiter::new(2);
        for i in 0..6 {
            let name = format!("user{i}");
            assert!(l.check(&name, ip(9)).is_ok());
            l.failed(&name, ip(9));
        }
        assert!(l.check("someone-new", ip(9)).is_err(), "3 x 2 failures per address per minute");
        assert!(l.check("someone-new", ip(8)).is_ok());
    }

    #[test]
    fn a_distributed_flood_locks_the_name_except_where_its_owner_signed_in_before() {
        let l = LoginLimiter::new(1);
        l.succeeded("alice", ip(200));
        for i in 0..10 {
            l.failed("alice", ip(i));
        }
        assert!(l.check("alice", ip(100)).is_err(), "ten failures for alice from ten addresses in 15 minutes");
        assert!(l.check("alice", ip(200)).is_ok(), "alice's own address still gets through");
        l.prune();
        assert!(l.check("alice", ip(200)).is_ok());
    }
}
