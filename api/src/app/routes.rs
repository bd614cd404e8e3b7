//! The route table: every route of the API once, with the layers around
//! them (audit, body and head limits, CORS-free security headers).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use tokenusage_plumbing::http::limit_bodies;
use tower_http::set_header::SetResponseHeaderLayer;

use super::ready::readyz;
use super::{AppState, Mounted};
use crate::admin;
use crate::audit;
use crate::error::ApiError;
use crate::history::routes as history;
use crate::session;
use crate::teams;

/// Builds a router while listing what it serves, so the OpenAPI document
/// can be checked against the routes that really exist (see the test in
/// `openapi.rs`).
pub(crate) struct Routes<S> {
    router: Router<S>,
    listed: Vec<(axum::http::Method, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub(crate) fn new() -> Self {
        Self { router: Router::new(), listed: Vec::new() }
    }

    fn add(mut self, method: axum::http::Method, path: &'static str, route: axum::routing::MethodRouter<S>) -> Self {
        self.listed.push((method, path));
        self.router = self.router.route(path, route);
        self
    }

    pub(crate) fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add(axum::http::Method::GET, path, get(handler))
    }

    pub(crate) fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add(axum::http::Method::POST, path, post(handler))
    }

    pub(crate) fn put<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add(axum::http::Method::PUT, path, axum::routing::put(handler))
    }

    pub(crate) fn patch<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add(axum::http::Method::PATCH, path, axum::routing::patch(handler))
    }

    pub(crate) fn delete<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, S>,
        T: 'static,
    {
        self.add(axum::http::Method::DELETE, path, axum::routing::delete(handler))
    }

    /// The routes and what they answer, with `prefix` in front of each path.
    pub(crate) fn into_parts(self, prefix: &str) -> (Router<S>, Vec<(axum::http::Method, String)>) {
        (self.router, self.listed.into_iter().map(|(m, p)| (m, format!("{prefix}{p}"))).collect())
    }
}

/// Everything under `/api/v1` that is audited: every route below and the
/// fallback (404), all wrapped by the audit middleware.
pub(crate) fn api_routes() -> Routes<AppState> {
    Routes::new()
        .post("/auth/login", session::login)
        .post("/auth/refresh", session::refresh)
        .post("/auth/logout", session::logout)
        .get("/me", session::me)
        .get("/live", crate::live::upgrade)
        .get("/usage/series", history::series)
        .get("/usage/summary", history::summary)
        .get("/usage/breakdown", history::breakdown)
        .get("/usage/dimensions", history::dimensions)
        .get("/usage/export.csv", history::export_csv)
        .get("/usage/overview", history::overview)
        .get("/budgets", crate::budgets::routes::list)
        .post("/budgets", crate::budgets::routes::create)
        .get("/budgets/check", crate::budgets::routes::check)
        .get("/budgets/{id}", crate::budgets::routes::get)
        .delete("/budgets/{id}", crate::budgets::routes::delete)
        .get("/admin/webhooks", crate::budgets::routes::list_endpoints)
        .post("/admin/webhooks", crate::budgets::routes::create_endpoint)
        .delete("/admin/webhooks/{name}", crate::budgets::routes::delete_endpoint)
        .get("/admin/webhooks/deliveries", crate::budgets::routes::list_deliveries)
        .post("/admin/webhooks/deliveries/{id}/retry", crate::budgets::routes::retry_delivery)
        .get("/teams", teams::routes::my_teams)
        .get("/admin/teams", teams::routes::admin_list)
        .post("/admin/teams", teams::routes::admin_create)
        .get("/admin/teams/{team}", teams::routes::admin_get)
        .patch("/admin/teams/{team}", teams::routes::admin_rename)
        .delete("/admin/teams/{team}", teams::routes::admin_delete)
        .put("/admin/teams/{team}/members/{user}", teams::routes::admin_set_member)
        .delete("/admin/teams/{team}/members/{user}", teams::routes::admin_remove_member)
        .get("/admin/usage/top-users", history::top_users)
        .get("/audit/views", audit::search::views_of_me)
        .get("/admin/audit", audit::search::admin_search)
        .get("/admin/keys", admin::list_keys)
        .post("/admin/keys", admin::create_key)
        .delete("/admin/keys/{id}", admin::revoke_key)
        .get("/admin/prices", admin::list_prices)
        .post("/admin/prices", admin::set_price)
        .delete("/admin/prices/{id}", admin::remove_price)
        .get("/admin/dead-letters", admin::list_dead_letters)
        .post("/admin/dead-letters/{id}/redrive", admin::redrive_dead_letter)
        .get("/admin/providers", crate::reconciliation::providers)
        .put("/admin/providers/{name}/mappings", crate::reconciliation::put_mapping)
        .delete("/admin/providers/{name}/mappings/{kind}/{external_id}", crate::reconciliation::delete_mapping)
        .get("/admin/reconciliation", crate::reconciliation::reconciliation)
        .get("/admin/reconciliation.csv", crate::reconciliation::reconciliation_csv)
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

/// The operational routes beside the API.
pub(crate) fn operational_routes() -> Routes<AppState> {
    Routes::new().get("/healthz", healthz).get("/readyz", readyz).get("/metrics", metrics)
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

/// Unknown paths under `/api/v1`: a 404 in the envelope, audited.
async fn api_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no API resource at {}; the API is described at /docs", uri.path()))
}

pub(super) fn router(state: AppState, mounted: Mounted) -> Router {
    let (api, _) = api_routes().into_parts("");
    // Every route here, and the fallback, is audited (one entry per
    // request, fail closed).
    // Bodies are bounded inside the audit, so a refused one is on the record.
    let max_body = state.config.max_body_bytes;
    let api = limit_bodies(api.fallback(api_not_found), max_body, "")
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::audit_requests));
    let (ops, _) = operational_routes().into_parts("");
    let hsts = state.config.tls_in_front();
    let rest = Router::new()
        .merge(ops)
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", crate::openapi::document(mounted.doc)))
        .merge(tokenusage_web::router());
    // Mounted routers (ingest) bring their own body limit.
    let mut app = Router::new()
        .nest("/api/v1", api)
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
