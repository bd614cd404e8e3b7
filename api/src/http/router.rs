//! The route table and the layers around it (audit, body and head
//! limits, security headers), and the API's metric descriptions.

use axum::Router;
use axum::http::{HeaderValue, header};
use tokenusage_plumbing::http::limit_bodies;
use tower_http::set_header::SetResponseHeaderLayer;

use super::error::ApiError;
use super::{AppState, Mounted};

/// The API's routes and document: the audited API, then operations.
pub(crate) fn parts() -> (Router<AppState>, Router<AppState>, utoipa::openapi::OpenApi) {
    let (api, mut doc) = super::routes::api().split_for_parts();
    let (ops, ops_doc) = super::routes::operational().split_for_parts();
    doc.merge(ops_doc);
    (api, ops, doc)
}

/// The `# HELP` lines of the API's metrics, exported at zero from the start
/// (dashboards and `rate()` then see them before the first event).
pub(super) fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("tokenusage_live_sockets", Unit::Count, "Open live WebSockets");
    describe_counter!("tokenusage_live_sockets_closed_total", Unit::Count, "Live WebSockets closed, by reason");
    describe_counter!(
        "tokenusage_api_series_cache_total",
        Unit::Count,
        "Series reads, by result (hit: served from the cache)"
    );
    describe_counter!("tokenusage_budget_evaluations_total", Unit::Count, "Budget evaluation passes");
    describe_counter!(
        "tokenusage_budget_crossings_total",
        Unit::Count,
        "Budget thresholds crossed, or undone (re-pricing, a rolling window moving on)"
    );
    describe_counter!(
        "tokenusage_webhook_deliveries_total",
        Unit::Count,
        "Webhook delivery attempts, by outcome (delivered, failed, dead)"
    );
    describe_histogram!(
        "tokenusage_budget_evaluation_seconds",
        Unit::Seconds,
        "Time of one budget evaluation pass (sums, crossings, outbox, commit)"
    );
    metrics::counter!("tokenusage_budget_evaluations_total").increment(0);
    for event in ["crossed", "resolved"] {
        metrics::counter!("tokenusage_budget_crossings_total", "event" => event).increment(0);
    }
    for outcome in ["delivered", "failed", "dead"] {
        metrics::counter!("tokenusage_webhook_deliveries_total", "outcome" => outcome).increment(0);
    }
    metrics::gauge!("tokenusage_live_sockets").increment(0.0);
    for result in ["hit", "miss"] {
        metrics::counter!("tokenusage_api_series_cache_total", "result" => result).increment(0);
    }
    for reason in crate::live::protocol::close::REASONS {
        metrics::counter!("tokenusage_live_sockets_closed_total", "reason" => reason).increment(0);
    }
}

/// Unknown paths under `/api/v1`: a 404 in the envelope, audited.
async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no API resource at {}; the API is described at /docs", uri.path()))
}

pub(super) fn router(state: AppState, mounted: Mounted) -> Router {
    let (api, ops, _) = parts();
    // Unknown paths under `/api/v1` answer 404 in the envelope, audited.
    let api = api
        .route("/api/v1", axum::routing::any(api_not_found))
        .route("/api/v1/{*rest}", axum::routing::any(api_not_found));
    // Every route here, and the fallback, is audited (one entry per
    // request, fail closed).
    // Bodies are bounded inside the audit, so a refused one is on the record.
    let max_body = state.config.max_body_bytes;
    let api = limit_bodies(api, max_body, "")
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::audit::audit_requests));
    let hsts = state.config.tls_in_front();
    let rest = Router::new()
        .merge(ops)
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", super::openapi::document(mounted.doc)))
        .merge(tokenusage_web::router());
    // Mounted routers (ingest) bring their own body limit.
    let mut app = Router::new()
        .merge(api)
        .merge(limit_bodies(rest, max_body, ""))
        .with_state(state)
        .merge(mounted.router)
        // Outside the audited API, heads are bounded without an entry.
        .layer(axum::middleware::from_fn(limit_unaudited_heads));
    if hsts {
        app = app.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ));
    }
    tokenusage_plumbing::http::with_common_layers(app)
}

/// [`HeadLimits`] for everything but the audited API, which checks them
/// inside its audit middleware so the refusal is on the record.
async fn limit_unaudited_heads(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let audited = req.uri().path().starts_with("/api/v1/") && req.uri().path() != "/api/v1/events";
    if audited {
        return next.run(req).await;
    }
    tokenusage_plumbing::http::limit_heads(req, next).await
}
