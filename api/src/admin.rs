//! Admin-only routes: publisher API keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tokenusage_schema::{dead_letters, keys};

use crate::app::AppState;
use crate::audit::AuditSlot;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};

/// Publisher API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<keys::KeyInfo>)))]
pub(crate) async fn list_keys(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
) -> Result<Json<Vec<keys::KeyInfo>>, ApiError> {
    user.require_admin()?;
    let rows = keys::list(&st.pool).await?;
    slot.set_detail("admin.keys.list", None, serde_json::json!({}), Some(rows.len() as i64));
    Ok(Json(rows))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// A label, 1 to 128 characters.
    name: String,
    /// The `source` stamped on this key's events; defaults to the name.
    source: Option<String>,
    /// Events per second allowed (1 to 1000000, default 5000).
    rate_per_sec: Option<i32>,
}

/// Creates a publisher API key; the response holds the key, the only time
/// it is shown.
#[utoipa::path(post, path = "/api/v1/admin/keys", tag = "admin", security(("bearer" = [])), request_body = CreateKey,
    responses((status = 201, body = keys::NewKey)))]
pub(crate) async fn create_key(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<keys::NewKey>), ApiError> {
    user.require_admin()?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad_request("invalid_name", "`name` must be 1 to 128 characters"));
    }
    let source = req.source.as_deref().map_or(name, str::trim);
    if source.is_empty() || source.len() > tokenusage_contract::Limits::SOURCE_MAX_CHARS {
        return Err(ApiError::bad_request("invalid_source", "`source` must be 1 to 256 characters"));
    }
    let rate = req.rate_per_sec.unwrap_or(5000);
    if !(1..=1_000_000).contains(&rate) {
        return Err(ApiError::bad_request("invalid_rate", "`rate_per_sec` must be between 1 and 1000000"));
    }
    slot.set_detail(
        "admin.keys.create",
        None,
        serde_json::json!({ "name": name, "source": source, "rate_per_sec": rate }),
        None,
    );
    let key = keys::create(&st.pool, name, source, rate).await?;
    tracing::info!(admin = %user.id, key = %key.info.key_prefix, "API key created");
    Ok((StatusCode::CREATED, Json(key)))
}

/// Revokes a publisher key by id or prefix (it stops working within the
/// key cache's lifetime, 30 s by default).
#[utoipa::path(delete, path = "/api/v1/admin/keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id or its `tu_<prefix>`")),
    responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke_key(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.keys.revoke", None, serde_json::json!({ "key": id }), None);
    user.require_admin()?;
    if keys::revoke(&st.pool, &id).await? {
        tracing::info!(admin = %user.id, key = %id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no active key {id}")))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterQuery {
    /// At most this many, newest first (1 to 10000, default 100).
    limit: Option<i64>,
    /// Include those already re-driven.
    all: Option<bool>,
}

/// Records the projector could not count, newest first.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    params(DeadLetterQuery), responses((status = 200, body = Vec<dead_letters::DeadLetter>)))]
pub(crate) async fn list_dead_letters(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Json<Vec<dead_letters::DeadLetter>>, ApiError> {
    user.require_admin()?;
    let rows = dead_letters::list(&st.pool, q.limit.unwrap_or(100), !q.all.unwrap_or(false)).await?;
    slot.set_detail(
        "admin.dead_letters.list",
        None,
        serde_json::json!({ "limit": q.limit, "all": q.all }),
        Some(rows.len() as i64),
    );
    Ok(Json(rows))
}

/// Asks the projector to count a dead letter again (picked up within
/// seconds; it stays a dead letter, with the reason, if it is still refused).
#[utoipa::path(post, path = "/api/v1/admin/dead-letters/{id}/redrive", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 202, description = "Re-drive requested")))]
pub(crate) async fn redrive_dead_letter(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.dead_letters.redrive", None, serde_json::json!({ "id": id }), None);
    user.require_admin()?;
    if dead_letters::request_redrive(&st.pool, Some(id), None).await? == 0 {
        return Err(ApiError::NotFound(format!("no dead letter {id} waiting for a re-drive")));
    }
    tracing::info!(admin = %user.id, dead_letter = id, "re-drive requested");
    Ok(StatusCode::ACCEPTED)
}
