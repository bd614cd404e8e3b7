//! The audit trail's routes: the admins' search and "who viewed my usage".

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::search::{AuditQuery, search};
use crate::audit::{AuditRow, AuditSlot};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiQuery};

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(admin_search)).routes(routes!(views_of_me))
}

/// Search the audit trail, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditRow>), (status = 401, body = crate::http::error::ErrorBody),
        (status = 403, body = crate::http::error::ErrorBody)))]
pub(crate) async fn admin_search(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: crate::http::extract::Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<Vec<AuditRow>>, ApiError> {
    slot.set_detail("audit.search", q.subject.as_deref(), search_params(&q), None);
    user.require_admin()?;
    let q = AuditQuery { limit: Some(crate::http::error::page_limit(q.limit, 100, 1000)?), ..q };
    let rows = search(&state.pool, &q, None).await?;
    slot.set_detail("audit.search", q.subject.as_deref(), search_params(&q), Some(rows.len() as i64));
    Ok(axum::Json(rows))
}

/// Who else looked at the caller's usage, newest first.
#[utoipa::path(get, path = "/api/v1/audit/views", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditRow>), (status = 401, body = crate::http::error::ErrorBody)))]
pub(crate) async fn views_of_me(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: crate::http::extract::Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<Vec<AuditRow>>, ApiError> {
    let limit = Some(crate::http::error::page_limit(q.limit, 100, 1000)?);
    let q = AuditQuery { actor: q.actor, from: q.from, to: q.to, before: q.before, limit, ..Default::default() };
    let rows: Vec<AuditRow> =
        search(&state.pool, &q, Some(&user.id)).await?.into_iter().map(|r| r.covering_only(&user.id)).collect();
    slot.set_detail("audit.views_of_me", Some(&user.id), search_params(&q), Some(rows.len() as i64));
    Ok(axum::Json(rows))
}

fn search_params(q: &AuditQuery) -> serde_json::Value {
    serde_json::json!({
        "actor": q.actor, "subject": q.subject, "action": q.action, "outcome": q.outcome,
        "from": q.from, "to": q.to, "before": q.before, "limit": q.limit,
    })
}
