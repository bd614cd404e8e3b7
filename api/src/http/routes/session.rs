//! The sign-in routes: login, refresh (rotating the session cookie),
//! logout and `/me`. The sessions' store and the sign-in limits are
//! `crate::session`.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::accounts::{Role, verify_password};
use crate::audit::{AuditSlot, ClientIp};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiJson};
use crate::http::extract::Caller;
use crate::session::{new_refresh_token, token_hash};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(login)).routes(routes!(refresh)).routes(routes!(logout)).routes(routes!(me))
}

/// The refresh-token cookie.
pub(crate) const COOKIE: &str = "tu_refresh";
const COOKIE_PATH: &str = "/api/v1/auth";
/// A token rotated this recently and presented again is most likely a
/// second tab refreshing at the same moment, not a stolen copy.
const ROTATION_GRACE: Duration = Duration::from_secs(10);

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
/// port, see `crate::http::origin`). Requests without an `Origin` header come
/// from non-browser clients, which cannot be driven by another site.
pub(crate) fn require_same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if crate::http::origin::allowed(headers, state.config.tls_in_front(), &[]) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("cross-origin request refused"))
    }
}

/// User name and password for an access token and a session cookie
/// (`tu_refresh`, HttpOnly). Rate-limited per user name and address.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse, description = "Signed in; sets the `tu_refresh` cookie"),
        (status = 401, body = crate::http::error::ErrorBody), (status = 429, body = crate::http::error::ErrorBody)))]
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
    state
        .login_limiter
        .check(&username, ip)
        .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
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
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::http::error::ErrorBody),
        (status = 403, body = crate::http::error::ErrorBody, description = "Cross-origin request")))]
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
