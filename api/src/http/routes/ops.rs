//! Operations: `/healthz`, `/readyz` and `/metrics`, beside the API.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokenusage_plumbing::health::Verdict;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, body = String, content_type = "text/plain", description = "Prometheus text format")))]
pub(crate) async fn metrics() -> String {
    tokenusage_plumbing::metrics::recorder().render()
}

/// What `/readyz` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ReadyResponse {
    /// `ready` or `not_ready`.
    status: &'static str,
    checks: ReadyChecks,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ReadyChecks {
    /// `ok` or `unreachable`.
    database: &'static str,
    /// `current`, `at N, need M`, or `unknown`.
    migrations: String,
    /// `running`, `stopped`, `failing for N s: ...`, or `not in this process`.
    projector: String,
    draining: bool,
    /// Records the broker no longer held when the projector got to them:
    /// never counted, not yet acknowledged (`tokenusage lost`). The loss is
    /// in the past, so it does not make the process unready; it is said
    /// here, in the live views' freshness and by `tokenusage verify`.
    lost_records: i64,
}

/// `GET /readyz`: 200 when this process should get traffic: the database
/// answers, its schema is current, the projector (if any) runs and gets its
/// commits through, and we are not draining. 503 with the failing checks
/// otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = ReadyResponse, description = "Ready"),
        (status = 503, body = ReadyResponse, description = "Not ready; the checks say why")))]
pub(crate) async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let database = tokio::time::timeout(Duration::from_secs(2), sqlx::query("select 1").execute(&state.pool)).await;
    let database_ok = matches!(database, Ok(Ok(_)));
    let want = tokenusage_schema::migrations::latest_version();
    let have: Option<i64> = if database_ok {
        sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
            .fetch_one(&state.pool)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let lost_records =
        if database_ok { tokenusage_schema::lost::open_total(&state.pool).await.unwrap_or_default() } else { 0 };
    let projector = state.readiness.projector();
    let draining = state.readiness.draining.load(Ordering::Relaxed);
    let ready = database_ok && have == Some(want) && projector.as_ref().is_none_or(Verdict::is_ok) && !draining;
    let body = ReadyResponse {
        status: if ready { "ready" } else { "not_ready" },
        checks: ReadyChecks {
            database: if database_ok { "ok" } else { "unreachable" },
            migrations: match have {
                Some(v) if v == want => "current".to_owned(),
                Some(v) => format!("at {v}, need {want}"),
                None => "unknown".to_owned(),
            },
            projector: projector.map_or_else(|| "not in this process".to_owned(), |v| v.describe()),
            draining,
            lost_records,
        },
    };
    let status = if ready { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}
