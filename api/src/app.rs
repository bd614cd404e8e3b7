//! Building and running the HTTP server: state, routes, layers, shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use sqlx::PgPool;
use tokenusage_plumbing::health::{Health, Verdict};
use tokenusage_plumbing::http::limit_bodies;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::accounts::Directory;
use crate::admin;
use crate::audit::{self, AuditLog};
use crate::config::ApiArgs;
use crate::error::ApiError;
use crate::history::routes as history;
use crate::oidc::Oidc;
use crate::session::{self, LoginLimiter};
use crate::teams;
use crate::tokens::LocalKeys;

/// Shared state of every request.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The connection pool (reads rollups, users).
    pub pool: PgPool,
    /// Signing and verification of our access tokens.
    pub(crate) keys: Arc<LocalKeys>,
    /// The external identity provider, when configured.
    pub(crate) oidc: Option<Arc<Oidc>>,
    /// Account status of local users (cached).
    pub(crate) users: Arc<Directory>,
    /// Who manages which team, and teams' members (cached).
    pub(crate) teams: Arc<crate::teams::TeamDirectory>,
    /// The audit trail writer.
    pub(crate) audit: AuditLog,
    pub(crate) login_limiter: Arc<LoginLimiter>,
    /// Series reads, invalidated by the projector's notifications.
    pub(crate) series_cache: Arc<crate::history::cache::SeriesCache>,
    /// Live views: the change hub and socket bookkeeping.
    pub(crate) live: Arc<crate::live::Live>,
    /// Budgets' last evaluation, and the scopes waiting for the next one.
    pub(crate) budgets: Arc<crate::budgets::board::Board>,
    /// Bumped when reconciliation alerts were queued (in any process).
    pub(crate) reconciliation: Arc<tokio::sync::watch::Sender<u64>>,
    /// Cancelled when the server stops: live sockets close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Live socket tasks, awaited on shutdown (axum does not track them).
    pub(crate) sockets: tokio_util::task::TaskTracker,
    /// What `/readyz` reports on beyond the database.
    pub(crate) readiness: Arc<Readiness>,
    /// The settings the server was started with.
    pub(crate) config: Arc<ApiArgs>,
}

impl AppState {
    /// The state of a server with these settings (spawns the audit writer).
    pub(crate) fn new(args: ApiArgs, pool: PgPool) -> anyhow::Result<Self> {
        let budgets = Arc::new(crate::budgets::board::Board::default());
        Ok(AppState {
            keys: Arc::new(LocalKeys::from_args(&args)?),
            oidc: Oidc::from_args(&args)?.map(Arc::new),
            users: Arc::new(Directory::default()),
            teams: Arc::default(),
            audit: AuditLog::spawn(pool.clone()),
            login_limiter: Arc::new(LoginLimiter::new(args.login_attempts_per_minute)),
            readiness: Arc::new(Readiness::default()),
            series_cache: Arc::new(crate::history::cache::SeriesCache::new(args.history.series_cache_entries)),
            live: Arc::new(crate::live::Live::new(budgets.clone())),
            budgets,
            reconciliation: Arc::new(tokio::sync::watch::channel(0).0),
            shutdown: CancellationToken::new(),
            sockets: tokio_util::task::TaskTracker::new(),
            pool,
            config: Arc::new(args),
        })
    }

    /// Starts the budget evaluator and the webhook sender (off with
    /// `--budgets-off`: another process does it).
    fn spawn_budgets(&self) {
        let b = &self.config.budgets;
        if b.off {
            return;
        }
        let (pool, board, shutdown) = (self.pool.clone(), self.budgets.clone(), self.shutdown.clone());
        tokio::spawn(crate::budgets::evaluate::run(pool.clone(), board.clone(), shutdown.clone()));
        let cfg = crate::budgets::webhooks::SenderConfig {
            max_attempts: b.webhook_max_attempts,
            timeout: Duration::from_secs(b.webhook_timeout_secs),
            workers: usize::from(b.webhook_senders),
            policy: b.outbound.policy(),
        };
        tokio::spawn(crate::budgets::webhooks::run(pool, board, cfg, shutdown));
    }

    /// Starts the scheduled import of the providers' reports (off with an
    /// interval of 0).
    fn spawn_provider_imports(&self) {
        let every = self.config.providers.import_interval_secs;
        if every == 0 {
            return;
        }
        let client = match self.config.budgets.outbound.policy().client() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "provider report imports are off: the outbound client could not be built");
                return;
            }
        };
        let importer = tokenusage_providers::fetch::Importer { client, retry: Default::default() };
        let owner = format!("api-{}", uuid::Uuid::new_v4().simple());
        tokio::spawn(tokenusage_providers::schedule::run(
            self.pool.clone(),
            importer,
            Duration::from_secs(every),
            owner,
            self.shutdown.clone(),
        ));
    }

    /// For unit tests: default settings and a pool that never connects
    /// (every query fails at once), so code that needs no database runs.
    #[cfg(test)]
    pub(crate) fn without_database() -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        AppState::new(ApiArgs::for_tests(), pool).expect("test state")
    }
}

/// Routes served beside the API on the same listener, and their OpenAPI
/// description (under `serve`: HTTP ingest).
#[derive(Default)]
pub struct Mounted {
    pub router: Router,
    pub doc: Option<utoipa::openapi::OpenApi>,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("documented", &self.doc.is_some()).finish_non_exhaustive()
    }
}

/// A bound, not yet serving, API server. Binding first lets callers (and
/// tests, with port 0) learn the address before serving starts.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    state: AppState,
}

/// Readiness beyond the database: whether the process is draining and,
/// when it runs one, whether its projector is getting commits through.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
    projector: Mutex<Option<(Arc<Health>, Duration)>>,
}

impl Readiness {
    /// Reports on a projector in this process: ready while it runs and its
    /// commits have not been failing for longer than `patience`.
    pub fn watch_projector(&self, health: Arc<Health>, patience: Duration) {
        *self.projector.lock().unwrap_or_else(|e| e.into_inner()) = Some((health, patience));
    }

    fn projector(&self) -> Option<Verdict> {
        self.projector.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(h, patience)| h.verdict(*patience))
    }
}

/// Installs ring as the process's TLS crypto provider (once; every TLS
/// user in the process, from the listener to the OIDC client, shares it).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Application {
    /// Binds the listener and builds the routes. `mounted` is served beside
    /// them (its routes merged, its document merged into `/openapi.json`): under
    /// `serve` it carries HTTP ingest, so one port serves everything.
    pub async fn build(args: ApiArgs, pool: PgPool, mounted: Mounted) -> anyhow::Result<Self> {
        install_crypto_provider();
        describe_metrics();
        args.check_transport()?;
        if !tokenusage_web::vendor_present() {
            tracing::warn!("uPlot is not embedded (run `npm ci --prefix web` before building); charts will not draw");
        }
        let tls = match (&args.tls.cert, &args.tls.key) {
            (Some(cert), Some(key)) => Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot load the TLS certificate or key: {e}"))?,
            ),
            _ => None,
        };
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let state = AppState::new(args, pool)?;
        Ok(Self { listener, router: router(state.clone(), mounted), tls, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The readiness handle, to register a projector running beside the API.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.state.readiness.clone()
    }

    /// `https` when the built-in TLS listener is on.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until `shutdown` fires, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let housekeeping = tokio::spawn(housekeeping(self.state.clone(), shutdown.clone()));
        let (readiness, s, inner) = (self.state.readiness.clone(), shutdown.clone(), self.state.shutdown.clone());
        tokio::spawn(async move {
            s.cancelled().await;
            readiness.draining.store(true, Ordering::Relaxed);
            inner.cancel();
        });
        self.state.live.spawn_hub(
            self.state.pool.clone(),
            self.state.shutdown.clone(),
            self.state.series_cache.clone(),
        );
        self.state.spawn_budgets();
        self.state.spawn_provider_imports();
        {
            // The gateway check's key cache follows revocations at once.
            let (board, stopped) = (self.state.budgets.clone(), self.state.shutdown.clone());
            tokenusage_plumbing::db::follow_notifications(
                self.state.pool.clone(),
                tokenusage_schema::keys::CHANGED,
                move || stopped.is_cancelled(),
                move || board.forget_publishers(),
            );
        }
        {
            // Live reconciliation alerts follow the outbox in every process.
            let (alerts, stopped) = (self.state.reconciliation.clone(), self.state.shutdown.clone());
            tokenusage_plumbing::db::follow_notifications(
                self.state.pool.clone(),
                tokenusage_providers::alerts::CHANNEL,
                move || stopped.is_cancelled(),
                move || alerts.send_modify(|n| *n += 1),
            );
        }
        let sockets = self.state.sockets.clone();
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let result = match self.tls {
            None => {
                // Small WebSocket frames must not wait for a delayed ACK
                // (Nagle): TCP_NODELAY on every connection.
                let listener = self.listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                });
                axum::serve(listener, service).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
            }
            Some(tls) => {
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    shutdown.cancelled().await;
                    h.graceful_shutdown(Some(Duration::from_secs(30)));
                });
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
                    .acceptor(axum_server::accept::NoDelayAcceptor::new());
                axum_server::from_tcp(self.listener.into_std()?).acceptor(acceptor).handle(handle).serve(service).await
            }
        };
        housekeeping.abort();
        // Live sockets were told to close (1001); give them a moment to say so.
        sockets.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), sockets.wait()).await;
        result
    }
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

/// Bounded memory and tables: prunes the sign-in limiter, purges ended sessions.
async fn housekeeping(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        state.login_limiter.prune();
        if let Err(e) = session::purge_expired(&state.pool).await {
            tracing::warn!(error = %e, "cannot purge ended sessions");
        }
    }
}

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
        .get("/teams", teams::my_teams)
        .get("/admin/teams", teams::admin_list)
        .post("/admin/teams", teams::admin_create)
        .get("/admin/teams/{team}", teams::admin_get)
        .patch("/admin/teams/{team}", teams::admin_rename)
        .delete("/admin/teams/{team}", teams::admin_delete)
        .put("/admin/teams/{team}/members/{user}", teams::admin_set_member)
        .delete("/admin/teams/{team}/members/{user}", teams::admin_remove_member)
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
fn describe_metrics() {
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

fn router(state: AppState, mounted: Mounted) -> Router {
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
