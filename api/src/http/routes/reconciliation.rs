//! Admin routes over the providers' reports (`tokenusage-providers`):
//! the connections (never their keys) and the reconciliation, as JSON and
//! CSV, and the mappings. Connecting (the admin key) is on the command
//! line only (`tokenusage providers add`); see docs/RECONCILIATION.md.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, TimeDelta};
use serde::Deserialize;
use tokenusage_providers::{reconcile, store};

use crate::audit::AuditSlot;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::http::extract::Caller;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(providers))
        .routes(routes!(put_mapping))
        .routes(routes!(delete_mapping))
        .routes(routes!(reconciliation))
        .routes(routes!(reconciliation_csv))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    /// First day (UTC), YYYY-MM-DD.
    from: String,
    /// Last day (UTC), inclusive, YYYY-MM-DD; at most 400 days after `from`.
    to: String,
    /// The difference allowed, in percent of the provider's figure (0 to 100; default 0).
    tolerance: Option<String>,
    /// `line` (default): one line per day, connection, model and target;
    /// `day`: one per day and connection, the first answer for long ranges
    /// (a year in well under a second). JSON only: the CSV has lines.
    by: Option<String>,
}

struct Range {
    from: NaiveDate,
    to: NaiveDate,
    tolerance: rust_decimal::Decimal,
    by_day: bool,
}

fn range(q: &RangeQuery) -> Result<Range, ApiError> {
    let day = |name: &'static str, s: &str| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            ApiError::bad_request("invalid_range", format!("`{name}` must be a date like 2026-11-27, got {s:?}"))
        })
    };
    let (from, last) = (day("from", &q.from)?, day("to", &q.to)?);
    let to = last + TimeDelta::days(1);
    reconcile::check_range(from, to).map_err(|m| ApiError::bad_request("invalid_range", m))?;
    let tolerance = match &q.tolerance {
        None => rust_decimal::Decimal::ZERO,
        Some(t) => reconcile::parse_tolerance(t)
            .map_err(|m| ApiError::bad_request("invalid_tolerance", format!("`tolerance`: {m}")))?,
    };
    let by_day = match q.by.as_deref() {
        None | Some("line") => false,
        Some("day") => true,
        Some(other) => {
            return Err(ApiError::bad_request("invalid_by", format!("`by` is line or day, got {other:?}")));
        }
    };
    Ok(Range { from, to, tolerance, by_day })
}

/// The reconciliation as the API answers it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Reconciliation {
    /// `from`, `to` (exclusive), `currency` (our price book's), `lines`
    /// (per day, connection, model and target: `ours`, `reported`,
    /// `billed`, `token_difference`, `cost_difference_nanos`, `reasons`)
    /// or with `by=day` `days` (per day and connection: `reported`,
    /// `unmapped_tokens`, `ours`, `billed_nanos`, the differences and
    /// `reasons`), and `imported_through` per connection. See
    /// docs/RECONCILIATION.md.
    #[schema(value_type = Object)]
    report: serde_json::Value,
    /// How many lines (or days) differ by more than the tolerance.
    past_tolerance: usize,
}

/// Our counts and costs beside the providers' reports, per UTC day,
/// connection, model and mapped target, with the reasons for differences.
#[utoipa::path(get, path = "/api/v1/admin/reconciliation", tag = "admin", params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, body = Reconciliation)))]
pub(crate) async fn reconciliation(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Json<Reconciliation>, ApiError> {
    slot.set_detail("admin.reconciliation", None, serde_json::json!({"from": q.from, "to": q.to}), None);
    user.require_admin()?;
    let r = range(&q)?;
    let json = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| ApiError::Internal(e.into()));
    let (report, rows, past_tolerance) = if r.by_day {
        let s = tokenusage_providers::summary::summary(&st.pool, r.from, r.to).await?;
        let past = s.days.iter().filter(|d| d.exceeds(r.tolerance)).count();
        (json(serde_json::to_value(&s))?, s.days.len(), past)
    } else {
        let report = reconcile::reconcile(&st.pool, r.from, r.to).await?;
        let past = report.lines.iter().filter(|l| l.exceeds(r.tolerance)).count();
        (json(serde_json::to_value(&report))?, report.lines.len(), past)
    };
    slot.set_detail(
        "admin.reconciliation",
        None,
        serde_json::json!({"from": q.from, "to": q.to, "by": if r.by_day { "day" } else { "line" }}),
        Some(rows as i64),
    );
    Ok(Json(Reconciliation { report, past_tolerance }))
}

/// The reconciliation as CSV: one row per line, money as exact decimal
/// text, reasons as space-separated codes.
#[utoipa::path(get, path = "/api/v1/admin/reconciliation.csv", tag = "admin", params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String)))]
pub(crate) async fn reconciliation_csv(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    slot.set_detail("admin.reconciliation_csv", None, serde_json::json!({"from": q.from, "to": q.to}), None);
    user.require_admin()?;
    let r = range(&q)?;
    if r.by_day {
        return Err(ApiError::bad_request(
            "invalid_by",
            "the CSV has one row per line: leave out `by` (by=day is JSON only)",
        ));
    }
    let report = reconcile::reconcile(&st.pool, r.from, r.to).await?;
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    let mut write = |rec: Vec<String>| w.write_record(&rec).map_err(|e| ApiError::Internal(e.into()));
    write(reconcile::CSV_HEADER.iter().map(|s| (*s).to_owned()).collect())?;
    for l in &report.lines {
        write(reconcile::csv_record(l))?;
    }
    let body = w.into_inner().map_err(|e| ApiError::Internal(anyhow::anyhow!("{e}")))?;
    slot.set_detail(
        "admin.reconciliation_csv",
        None,
        serde_json::json!({"from": q.from, "to": q.to}),
        Some(report.lines.len() as i64),
    );
    let filename = format!(
        "tokenusage-reconciliation-{}-{}.csv",
        r.from.format("%Y%m%d"),
        (r.to - TimeDelta::days(1)).format("%Y%m%d")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8; header=present".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        body,
    )
        .into_response())
}

/// The provider connections.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Connections {
    /// Each connection (`name`, `provider`, `base_url`, `import_from`,
    /// `imported_through`, `last_import`): never its admin key.
    #[schema(value_type = Vec<Object>)]
    connections: serde_json::Value,
    /// The mappings of provider scopes and keys to our sources and projects.
    #[schema(value_type = Vec<Object>)]
    mappings: serde_json::Value,
}

/// Provider connections (never their keys), their last imports, and the mappings.
#[utoipa::path(get, path = "/api/v1/admin/providers", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Connections)))]
pub(crate) async fn providers(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<Connections>, ApiError> {
    slot.set_detail("admin.providers.list", None, serde_json::json!({}), None);
    user.require_admin()?;
    let connections = store::list(&st.pool).await?;
    let mappings = store::mappings(&st.pool).await?;
    slot.set_detail("admin.providers.list", None, serde_json::json!({}), Some(connections.len() as i64));
    let value = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| ApiError::Internal(e.into()));
    Ok(Json(Connections {
        connections: value(serde_json::to_value(&connections))?,
        mappings: value(serde_json::to_value(&mappings))?,
    }))
}

/// A mapping of a provider scope or API key to our source and/or project.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MappingBody {
    /// `scope` (an OpenAI project, an Anthropic workspace; `default` for
    /// usage outside any) or `api_key`.
    kind: String,
    /// The provider's id of the scope or key.
    external_id: String,
    /// Our publisher (`source`); null: any.
    #[serde(default)]
    target_source: Option<String>,
    /// Our project; null: any. At least one of the two.
    #[serde(default)]
    target_project: Option<String>,
}

fn store_error(e: store::StoreError) -> ApiError {
    match e {
        store::StoreError::Invalid(m) => ApiError::bad_request("invalid_mapping", m),
        store::StoreError::NoSuchConnection(_) => ApiError::NotFound(e.to_string()),
        store::StoreError::Db(e) => e.into(),
    }
}

/// Maps a provider scope or API key of connection `name` to our source
/// and/or project (replacing its mapping). Refused if the target overlaps
/// another mapping's target (an event would reconcile twice).
#[utoipa::path(put, path = "/api/v1/admin/providers/{name}/mappings", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The connection")), request_body = MappingBody,
    responses((status = 200, body = MappingBody)))]
pub(crate) async fn put_mapping(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<MappingBody>,
) -> Result<Json<MappingBody>, ApiError> {
    slot.set_detail("admin.providers.map", None, serde_json::json!({"connection": name, "mapping": &body}), None);
    user.require_admin()?;
    let m = store::Mapping {
        connection: name,
        kind: body.kind.clone(),
        external_id: body.external_id.clone(),
        target_source: body.target_source.clone(),
        target_project: body.target_project.clone(),
    };
    store::map(&st.pool, &m).await.map_err(store_error)?;
    tokenusage_providers::as_usage::after_mapping_change(&st.pool, &m.connection).await.map_err(store_error)?;
    Ok(Json(body))
}

/// Removes a mapping.
#[utoipa::path(delete, path = "/api/v1/admin/providers/{name}/mappings/{kind}/{external_id}", tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The connection"), ("kind" = String, Path, description = "scope or api_key"),
           ("external_id" = String, Path, description = "The provider's id")),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn delete_mapping(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath((name, kind, external_id)): ApiPath<(String, String, String)>,
) -> Result<axum::http::StatusCode, ApiError> {
    slot.set_detail(
        "admin.providers.unmap",
        None,
        serde_json::json!({"connection": name, "kind": kind, "external_id": external_id}),
        None,
    );
    user.require_admin()?;
    if !store::unmap(&st.pool, &name, &kind, &external_id).await? {
        return Err(ApiError::NotFound(format!("{name} has no {kind} mapping for {external_id:?}")));
    }
    tokenusage_providers::as_usage::after_mapping_change(&st.pool, &name).await.map_err(store_error)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
