//! Building and running the HTTP server: state, routes, layers, shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::audit::{self, AuditLog};
use crate::auth::UserDirectory;
use crate::config::ApiArgs;
use crate::history::routes as history;
use crate::oidc::Oidc;
use crate::session::{self, LoginLimiter};
use crate::tokens::LocalKeys;
use crate::{admin, security};

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
    pub(crate) users: Arc<UserDirectory>,
    /// The audit trail writer.
    pub(crate) audit: AuditLog,
    pub(crate) login_limiter: Arc<LoginLimiter>,
    /// Series reads, invalidated by the projector's notifications.
    pub(crate) series_cache: Arc<crate::history::cache::SeriesCache>,
    /// Live views: the change hub and socket bookkeeping.
    pub(crate) live: Arc<crate::live::Live>,
    /// Cancelled when the server stops: live sockets close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Live socket tasks, awaited on shutdown (axum does not track them).
    pub(crate) sockets: tokio_util::task::TaskTracker,
    /// What `/readyz` reports on beyond the database.
    pub(crate) readiness: Arc<Readiness>,
    /// The settings the server was started with.
    pub(crate) config: Arc<ApiArgs>,
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
/// when it runs one, whether its projector is running.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
    consumer: Mutex<Option<Arc<AtomicBool>>>,
}

impl Readiness {
    /// Reports on a consumer in this process: `running` is true while it runs.
    pub fn watch_consumer(&self, running: Arc<AtomicBool>) {
        *self.consumer.lock().unwrap_or_else(|e| e.into_inner()) = Some(running);
    }

    fn consumer_running(&self) -> Option<bool> {
        self.consumer.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|c| c.load(Ordering::Relaxed))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs ring as the process's TLS crypto provider (once; every TLS
/// user in the process, from the listener to the OIDC client, shares it).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Application {
    /// Binds the listener and builds the routes. `extra` is merged in: under
    /// `serve` it carries HTTP ingest, so one port serves everything.
    pub async fn build(args: ApiArgs, pool: PgPool, extra: Router) -> anyhow::Result<Self> {
        install_crypto_provider();
        args.check_transport()?;
        if !tokenusage_web::vendor_present() {
            tracing::warn!("uPlot is not embedded (run `npm ci --prefix web` before building); charts will not draw");
        }
        let tls = match (&args.tls_cert, &args.tls_key) {
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
        let state = AppState {
            keys: Arc::new(LocalKeys::from_args(&args)?),
            oidc: Oidc::from_args(&args)?.map(Arc::new),
            users: Arc::new(UserDirectory::default()),
            audit: AuditLog::spawn(pool.clone()),
            login_limiter: Arc::new(LoginLimiter::new(args.login_attempts_per_minute)),
            readiness: Arc::new(Readiness::default()),
            series_cache: Arc::new(crate::history::cache::SeriesCache::new(args.series_cache_entries)),
            live: Arc::new(crate::live::Live::new()),
            shutdown: CancellationToken::new(),
            sockets: tokio_util::task::TaskTracker::new(),
            pool,
            config: Arc::new(args),
        };
        Ok(Self { listener, router: router(state.clone(), extra), tls, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The readiness handle, to register a consumer running beside the API.
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

/// `GET /readyz`: 200 when this process should get traffic: the database
/// answers, its schema is current, the projector (if any) runs, and we are
/// not draining. 503 with the failing checks otherwise.
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let database = tokio::time::timeout(Duration::from_secs(2), sqlx::query("select 1").execute(&state.pool)).await;
    let database_ok = matches!(database, Ok(Ok(_)));
    let want = tokenusage_plumbing::db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let have: Option<i64> = if database_ok {
        sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
            .fetch_one(&state.pool)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let consumer = state.readiness.consumer_running();
    let draining = state.readiness.draining.load(Ordering::Relaxed);
    let ready = database_ok && have == Some(want) && consumer != Some(false) && !draining;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "database": if database_ok { "ok" } else { "unreachable" },
            "migrations": match have { Some(v) if v == want => "current".to_owned(), Some(v) => format!("at {v}, need {want}"), None => "unknown".to_owned() },
            "consumer": match consumer { None => "not in this process", Some(true) => "running", Some(false) => "stopped" },
            "draining": draining,
        }
    });
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

fn router(state: AppState, extra: Router) -> Router {
    // Every route here is audited (one entry per request, fail closed).
    let api = Router::new()
        .route("/auth/login", post(session::login))
        .route("/auth/refresh", post(session::refresh))
        .route("/auth/logout", post(session::logout))
        .route("/me", get(session::me))
        .route("/live", get(crate::live::upgrade))
        .route("/usage/series", get(history::series))
        .route("/usage/summary", get(history::summary))
        .route("/usage/breakdown", get(history::breakdown))
        .route("/usage/dimensions", get(history::dimensions))
        .route("/usage/export.csv", get(history::export_csv))
        .route("/admin/usage/top-users", get(history::top_users))
        .route("/audit/views", get(audit::views_of_me))
        .route("/admin/audit", get(audit::admin_search))
        .route("/admin/keys", get(admin::list_keys).post(admin::create_key))
        .route("/admin/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/admin/dead-letters", get(admin::list_dead_letters))
        .route("/admin/dead-letters/{id}/redrive", post(admin::redrive_dead_letter))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), audit::audit_requests));
    let max_body = state.config.max_body_bytes;
    let hsts = state.config.tls_in_front();
    let mut app = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", crate::openapi::document()))
        .route("/metrics", get(|| async { tokenusage_plumbing::metrics::recorder().render() }))
        .merge(tokenusage_web::router())
        .with_state(state)
        .merge(extra);
    app = app.layer(axum::extract::DefaultBodyLimit::max(max_body));
    if hsts {
        app = app.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ));
    }
    with_common_layers(app)
}

/// The layers every HTTP surface of tokenusage shares: security headers,
/// a request timeout, request ids (set, logged, returned), a trace span per
/// request that logs the path but never the query, and redaction of
/// credentials in logged headers. `tokenusage ingest` uses it too.
pub fn with_common_layers(mut app: Router) -> Router {
    for layer in security::layers() {
        app = app.layer(layer);
    }
    app.layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // Path only: a query string could carry something sensitive.
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveHeadersLayer::new([header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE]))
}
