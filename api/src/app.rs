//! Building and running the HTTP server: state, routes, layers, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, header};
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{self, TokenKeys};
use crate::config::ApiArgs;
use crate::{admin, security, usage};

/// Shared state of every request.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The connection pool (reads rollups, users).
    pub pool: PgPool,
    /// Signing and verification of access tokens.
    pub(crate) keys: Arc<TokenKeys>,
    /// The settings the server was started with.
    pub(crate) config: Arc<ApiArgs>,
}

/// A bound, not yet serving, API server. Binding first lets callers (and
/// tests, with port 0) learn the address before serving starts.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Application {
    /// Binds the listener and builds the routes. `extra` is merged in: under
    /// `serve` it carries HTTP ingest, so one port serves everything.
    pub async fn build(args: ApiArgs, pool: PgPool, extra: Router) -> anyhow::Result<Self> {
        if !tokenusage_web::vendor_present() {
            tracing::warn!("uPlot is not embedded (run `npm ci --prefix web` before building); charts will not draw");
        }
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
        let state = AppState { pool, keys: Arc::new(TokenKeys::from_args(&args)?), config: Arc::new(args) };
        Ok(Self { listener, router: router(state, extra) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` fires, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }
}

fn router(state: AppState, extra: Router) -> Router {
    let api = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/me", get(auth::me))
        .route("/usage/series", get(usage::series))
        .route("/usage/breakdown", get(usage::breakdown))
        .route("/admin/keys", get(admin::list_keys).post(admin::create_key))
        .route("/admin/keys/{id}", axum::routing::delete(admin::revoke_key))
        .route("/admin/dead-letters", get(admin::list_dead_letters))
        .route("/admin/dead-letters/{id}/redrive", post(admin::redrive_dead_letter));
    let max_body = state.config.max_body_bytes;
    let app = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { tokenusage_plumbing::metrics::recorder().render() }))
        .merge(tokenusage_web::router())
        .with_state(state)
        .merge(extra);
    let app = app.layer(axum::extract::DefaultBodyLimit::max(max_body));
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
