//! What every request shares: the pool, the engines' handles, settings.
//! It imports engines, never a route (`routes` import it).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokenusage_plumbing::health::{Health, Verdict};
use tokenusage_plumbing::replica::ReadPools;
use tokio_util::sync::CancellationToken;

use crate::accounts::Directory;
use crate::audit::AuditLog;
use crate::config::ApiArgs;
use crate::oidc::Oidc;
use crate::session::LoginLimiter;
use crate::tokens::LocalKeys;

/// Shared state of every request.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The connection pool (reads rollups, users).
    pub pool: PgPool,
    /// Where history, overview, CSV and budget-status reads go: a read
    /// standby while it keeps up, else `pool`.
    pub(crate) reads: Arc<ReadPools>,
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
    pub(crate) fn new(args: ApiArgs, pool: PgPool, reads: Arc<ReadPools>) -> anyhow::Result<Self> {
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
            reads,
            config: Arc::new(args),
        })
    }

    /// For unit tests: default settings and a pool that never connects
    /// (every query fails at once), so code that needs no database runs.
    #[cfg(test)]
    pub(crate) fn without_database() -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let reads = Arc::new(ReadPools::primary_only(pool.clone()));
        AppState::new(ApiArgs::for_tests(), pool, reads).expect("test state")
    }
}

/// Readiness beyond the database: whether the process is draining and,
/// when it runs one, whether its projector is getting commits through.
#[derive(Debug, Default)]
pub struct Readiness {
    pub(crate) draining: AtomicBool,
    projector: Mutex<Option<(Arc<Health>, Duration)>>,
}

impl Readiness {
    /// Reports on a projector in this process: ready while it runs and its
    /// commits have not been failing for longer than `patience`.
    pub fn watch_projector(&self, health: Arc<Health>, patience: Duration) {
        *self.projector.lock().unwrap_or_else(|e| e.into_inner()) = Some((health, patience));
    }

    pub(crate) fn projector(&self) -> Option<Verdict> {
        self.projector.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(h, patience)| h.verdict(*patience))
    }
}
