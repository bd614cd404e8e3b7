//! Building and running the HTTP server: state, routes, layers, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::{get, post};
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
use crate::oidc::Oidc;
use crate::session::{self, LoginLimiter};
use crate::tokens::LocalKeys;
use crate::{admin, security, usage};

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
            pool,
            config: Arc::new(args),
        };
        Ok(Self { listener, router: router(state.clone(), extra), tls, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// `https` when the built-in TLS listener is on.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until `shutdown` fires, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let housekeeping = tokio::spawn(housekeeping(self.state.clone(), shutdown.clone()));
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let result = match self.tls {
            None => {
                axum::serve(self.listener, service)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await
            }
            Some(tls) => {
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    shutdown.cancelled().await;
                    h.graceful_shutdown(Some(Duration::from_secs(30)));
                });
                axum_server::from_tcp_rustls(self.listener.into_std()?, tls).handle(handle).serve(service).await
            }
        };
        housekeeping.abort();
        result
    }
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
        .route("/usage/series", get(usage::series))
        .route("/usage/breakdown", get(usage::breakdown))
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
