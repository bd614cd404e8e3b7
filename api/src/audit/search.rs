//! Reading the trail: the admins' search, and "who viewed my usage".

use axum::extract::State;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, QueryBuilder};

use super::chain::{AuditRow, COLUMNS};
use super::record::AuditSlot;
use crate::app::AppState;
use crate::error::{ApiError, ApiQuery};

/// Filters of an audit search.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    subject: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Entries with a `seq` below this (paging backwards).
    before: Option<i64>,
    limit: Option<i64>,
}

pub(crate) async fn search(pool: &PgPool, q: &AuditQuery, only_views_of: Option<&str>) -> sqlx::Result<Vec<AuditRow>> {
    let mut qb = QueryBuilder::new(format!("select {COLUMNS} from audit_log where true"));
    if let Some(s) = only_views_of {
        // Someone else looked at this user's data, tried to and was denied,
        // read everyone's at once (an admin's `user=*`, which covers this
        // user too), or a team's with this user in it.
        qb.push(" and (subject = ").push_bind(s.to_owned()).push(" or subject = '*' or covers @> array[");
        qb.push_bind(s.to_owned()).push("]::text[])");
        qb.push(" and actor is distinct from ").push_bind(s.to_owned());
        qb.push(" and outcome in ('ok', 'denied')");
    }
    for (col, v) in [("actor", &q.actor), ("subject", &q.subject), ("action", &q.action), ("outcome", &q.outcome)] {
        if let Some(v) = v {
            qb.push(format!(" and {col} = ")).push_bind(v.clone());
        }
    }
    if let Some(t) = q.from {
        qb.push(" and at >= ").push_bind(t);
    }
    if let Some(t) = q.to {
        qb.push(" and at < ").push_bind(t);
    }
    if let Some(b) = q.before {
        qb.push(" and seq < ").push_bind(b);
    }
    qb.push(" order by seq desc limit ").push_bind(q.limit.unwrap_or(100));
    qb.build_query_as().fetch_all(pool).await
}

/// Search the audit trail, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditRow>), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn admin_search(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: crate::auth::Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<Vec<AuditRow>>, ApiError> {
    slot.set_detail("audit.search", q.subject.as_deref(), search_params(&q), None);
    user.require_admin()?;
    let q = AuditQuery { limit: Some(crate::error::page_limit(q.limit, 100, 1000)?), ..q };
    let rows = search(&state.pool, &q, None).await?;
    slot.set_detail("audit.search", q.subject.as_deref(), search_params(&q), Some(rows.len() as i64));
    Ok(axum::Json(rows))
}

/// Who else looked at the caller's usage, newest first.
#[utoipa::path(get, path = "/api/v1/audit/views", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditRow>), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn views_of_me(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: crate::auth::Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<Vec<AuditRow>>, ApiError> {
    let limit = Some(crate::error::page_limit(q.limit, 100, 1000)?);
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
