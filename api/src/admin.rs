//! Admin-only routes: publisher API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tokenusage_ingest::keys;

use crate::app::AppState;
use crate::audit::AuditSlot;
use crate::auth::AuthUser;
use crate::error::ApiError;

/// `GET /api/v1/admin/keys`
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

#[derive(Debug, Deserialize)]
pub(crate) struct CreateKey {
    name: String,
    /// Defaults to the name.
    source: Option<String>,
    rate_per_sec: Option<i32>,
}

/// `POST /api/v1/admin/keys`: the response holds the key, once.
pub(crate) async fn create_key(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    Json(req): Json<CreateKey>,
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

/// `DELETE /api/v1/admin/keys/{id}`: revoke by id or prefix.
pub(crate) async fn revoke_key(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    user.require_admin()?;
    slot.set_detail("admin.keys.revoke", None, serde_json::json!({ "key": id }), None);
    if keys::revoke(&st.pool, &id).await? {
        tracing::info!(admin = %user.id, key = %id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::bad_request("unknown_key", format!("no active key {id}")))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeadLetterQuery {
    limit: Option<i64>,
    all: Option<bool>,
}

/// `GET /api/v1/admin/dead-letters`
pub(crate) async fn list_dead_letters(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    axum::extract::Query(q): axum::extract::Query<DeadLetterQuery>,
) -> Result<Json<Vec<tokenusage_projector::deadletters::DeadLetter>>, ApiError> {
    user.require_admin()?;
    let rows =
        tokenusage_projector::deadletters::list(&st.pool, q.limit.unwrap_or(100), !q.all.unwrap_or(false)).await?;
    slot.set_detail(
        "admin.dead_letters.list",
        None,
        serde_json::json!({ "limit": q.limit, "all": q.all }),
        Some(rows.len() as i64),
    );
    Ok(Json(rows))
}

/// `POST /api/v1/admin/dead-letters/{id}/redrive`: asks the projector to
/// count it again (picked up within seconds). 202: requested.
pub(crate) async fn redrive_dead_letter(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    user.require_admin()?;
    slot.set_detail("admin.dead_letters.redrive", None, serde_json::json!({ "id": id }), None);
    if tokenusage_projector::deadletters::request_redrive(&st.pool, Some(id), None).await? == 0 {
        return Err(ApiError::bad_request(
            "unknown_dead_letter",
            format!("no dead letter {id} waiting for a re-drive"),
        ));
    }
    tracing::info!(admin = %user.id, dead_letter = id, "re-drive requested");
    Ok(StatusCode::ACCEPTED)
}
