//! Running the HTTP server: binding, TLS, the engines' background tasks,
//! graceful shutdown and housekeeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::router::{describe_metrics, router};
use super::{AppState, Readiness};
use crate::config::ApiArgs;
use crate::session;
use tokenusage_plumbing::replica::ReadPools;

impl AppState {
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
        let reads = match &args.history.read_url {
            Some(url) => {
                let lag = Duration::from_secs(args.history.read_max_lag_secs);
                ReadPools::with_standby(pool.clone(), url, lag).await?
            }
            None => ReadPools::primary_only(pool.clone()),
        };
        let state = AppState::new(args, pool, Arc::new(reads))?;
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
        self.state.reads.spawn_tracker(self.state.shutdown.clone());
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
