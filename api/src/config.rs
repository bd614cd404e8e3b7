//! API settings, one struct per concern, flattened into the command line.
//! Every field is a flag with an environment variable; the defaults live in
//! the `#[arg]` attributes only (tests take them from there too).

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;

/// Settings of the HTTP API.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address the HTTP server listens on. Port 0 picks a free port. A
    /// non-loopback address needs TLS (--tls-cert/--tls-key) or
    /// --behind-tls-proxy.
    #[arg(long = "listen", env = "TOKENUSAGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Failed sign-ins allowed per minute for one user name from one
    /// address (three times as many per address over all names, and ten
    /// times as many per 15 minutes for one name over all addresses, except
    /// from addresses that signed in as that name before).
    #[arg(long = "login-attempts-per-minute", env = "TOKENUSAGE_LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub login_attempts_per_minute: u32,
    /// Largest request body accepted, in bytes.
    #[arg(long = "max-body-bytes", env = "TOKENUSAGE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub oidc: OidcArgs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub budgets: BudgetArgs,
    #[command(flatten)]
    pub providers: ProviderArgs,
}

/// The providers' usage and cost reports (docs/RECONCILIATION.md).
#[derive(Debug, Clone, clap::Args)]
pub struct ProviderArgs {
    /// Seconds between imports of the providers' reports (`tokenusage
    /// providers add`); 0: never in this process. Several processes take
    /// turns, one import per connection at a time. Calls obey
    /// --outbound-allow like webhooks.
    #[arg(long = "provider-import-interval-secs", env = "TOKENUSAGE_PROVIDER_IMPORT_INTERVAL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(0..=604_800))]
    pub import_interval_secs: u64,
}

/// Budget evaluation and webhook delivery.
#[derive(Debug, Clone, clap::Args)]
pub struct BudgetArgs {
    /// Do not evaluate budgets or send webhooks in this process (another
    /// API process does; several may, they take turns).
    #[arg(id = "budgets_off", long = "budgets-off", env = "TOKENUSAGE_BUDGETS_OFF")]
    pub off: bool,
    /// Attempts at delivering a notification before it is marked dead
    /// (admins see and retry dead ones). Retries back off from 2 s to 10 min.
    #[arg(long = "webhook-max-attempts", env = "TOKENUSAGE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8,
          value_parser = clap::value_parser!(i32).range(1..=100))]
    pub webhook_max_attempts: i32,
    /// Seconds a webhook endpoint has to answer before the attempt fails.
    #[arg(long = "webhook-timeout-secs", env = "TOKENUSAGE_WEBHOOK_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub webhook_timeout_secs: u64,
    /// Deliveries sent at once.
    #[arg(long = "webhook-senders", env = "TOKENUSAGE_WEBHOOK_SENDERS", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub webhook_senders: u16,
    #[command(flatten)]
    pub outbound: tokenusage_plumbing::outbound::OutboundArgs,
}

/// Transport security.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain for the built-in TLS listener (with --tls-key).
    #[arg(id = "tls_cert", long = "tls-cert", env = "TOKENUSAGE_TLS_CERT", requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// PEM private key for the built-in TLS listener (with --tls-cert).
    #[arg(id = "tls_key", long = "tls-key", env = "TOKENUSAGE_TLS_KEY", requires = "tls_cert")]
    pub key: Option<PathBuf>,
    /// A TLS-terminating reverse proxy is in front: allow plain HTTP on a
    /// non-loopback address, send HSTS, and take the client address from
    /// the last hop of X-Forwarded-For.
    #[arg(id = "behind_tls_proxy", long = "behind-tls-proxy", env = "TOKENUSAGE_BEHIND_TLS_PROXY")]
    pub behind_proxy: bool,
}

/// Our own access tokens and sign-in sessions.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// Secret for signing access tokens (HS256), at least 32 bytes. When
    /// unset, a random one is generated at start: tokens then do not survive
    /// a restart and cannot be shared between API processes. Never logged.
    #[arg(id = "jwt_secret", long = "jwt-secret", env = "TOKENUSAGE_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<SecretString>,
    /// Earlier signing secrets, comma-separated, still accepted for
    /// verification while their tokens expire (key rotation by `kid`).
    #[arg(
        id = "jwt_previous_secrets",
        long = "jwt-previous-secrets",
        env = "TOKENUSAGE_JWT_PREVIOUS_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub previous_secrets: Vec<SecretString>,
    /// `iss` of the access tokens we issue and require.
    #[arg(id = "jwt_issuer", long = "jwt-issuer", env = "TOKENUSAGE_JWT_ISSUER", default_value = "tokenusage")]
    pub issuer: String,
    /// `aud` of the access tokens we issue and require.
    #[arg(
        id = "jwt_audience",
        long = "jwt-audience",
        env = "TOKENUSAGE_JWT_AUDIENCE",
        default_value = "tokenusage-api"
    )]
    pub audience: String,
    /// Lifetime of an access token, in seconds.
    #[arg(id = "access_token_ttl_secs", long = "access-token-ttl-secs", env = "TOKENUSAGE_ACCESS_TOKEN_TTL_SECS",
          default_value_t = 300, value_parser = clap::value_parser!(u64).range(30..=3600))]
    pub access_token_ttl_secs: u64,
    /// Lifetime of a sign-in session (the refresh-token cookie), in seconds.
    #[arg(id = "session_ttl_secs", long = "session-ttl-secs", env = "TOKENUSAGE_SESSION_TTL_SECS",
          default_value_t = 43_200, value_parser = clap::value_parser!(u64).range(300..=2_592_000))]
    pub session_ttl_secs: u64,
}

/// An external OpenID Connect identity provider.
#[derive(Debug, Clone, clap::Args)]
pub struct OidcArgs {
    /// OpenID Connect issuer whose bearer JWTs are also accepted (its
    /// discovery document and JWKS are fetched from this URL).
    #[arg(id = "oidc_issuer", long = "oidc-issuer", env = "TOKENUSAGE_OIDC_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` required in tokens of the OIDC issuer.
    #[arg(
        id = "oidc_audience",
        long = "oidc-audience",
        env = "TOKENUSAGE_OIDC_AUDIENCE",
        default_value = "tokenusage"
    )]
    pub audience: String,
    /// Claim of OIDC tokens that names the user (must match `user_id` in events).
    #[arg(id = "oidc_user_claim", long = "oidc-user-claim", env = "TOKENUSAGE_OIDC_USER_CLAIM", default_value = "sub")]
    pub user_claim: String,
    /// Claim of OIDC tokens holding the caller's roles or groups (a string or a list).
    #[arg(
        id = "oidc_role_claim",
        long = "oidc-role-claim",
        env = "TOKENUSAGE_OIDC_ROLE_CLAIM",
        default_value = "roles"
    )]
    pub role_claim: String,
    /// Values of the role claim that make the caller an admin, comma-separated;
    /// anyone else is a viewer.
    #[arg(
        id = "oidc_admin_values",
        long = "oidc-admin-values",
        env = "TOKENUSAGE_OIDC_ADMIN_VALUES",
        default_value = "tokenusage-admin",
        value_delimiter = ','
    )]
    pub admin_values: Vec<String>,
    /// Claim of OIDC tokens listing the caller's groups (a string or a list),
    /// read for team membership when a team prefix below is set.
    #[arg(
        id = "oidc_groups_claim",
        long = "oidc-groups-claim",
        env = "TOKENUSAGE_OIDC_GROUPS_CLAIM",
        default_value = "groups"
    )]
    pub groups_claim: String,
    /// A group named `<prefix><team>` makes the caller a member of that team
    /// (created if missing); unset: groups do not make members.
    #[arg(
        id = "oidc_team_member_prefix",
        long = "oidc-team-member-prefix",
        env = "TOKENUSAGE_OIDC_TEAM_MEMBER_PREFIX"
    )]
    pub team_member_prefix: Option<String>,
    /// A group named `<prefix><team>` makes the caller a manager of that team.
    #[arg(
        id = "oidc_team_manager_prefix",
        long = "oidc-team-manager-prefix",
        env = "TOKENUSAGE_OIDC_TEAM_MANAGER_PREFIX"
    )]
    pub team_manager_prefix: Option<String>,
    /// Least time between two JWKS fetches triggered by an unknown `kid`, in seconds.
    #[arg(
        id = "oidc_jwks_min_refetch_secs",
        long = "oidc-jwks-min-refetch-secs",
        env = "TOKENUSAGE_OIDC_JWKS_MIN_REFETCH_SECS",
        default_value_t = 30
    )]
    pub jwks_min_refetch_secs: u64,
}

/// Live views over WebSocket.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveArgs {
    /// Live updates sent per subscription per second at most (coalesced).
    #[arg(id = "live_updates_per_sec", long = "live-updates-per-sec", env = "TOKENUSAGE_LIVE_UPDATES_PER_SEC",
          default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub updates_per_sec: u32,
    /// Live sockets one user may hold open at once.
    #[arg(
        id = "live_max_sockets_per_user",
        long = "live-max-sockets-per-user",
        env = "TOKENUSAGE_LIVE_MAX_SOCKETS_PER_USER",
        default_value_t = 10
    )]
    pub max_sockets_per_user: usize,
    /// A live socket whose client sends nothing (not even a pong) for this
    /// long is closed, in seconds.
    #[arg(id = "live_idle_secs", long = "live-idle-secs", env = "TOKENUSAGE_LIVE_IDLE_SECS", default_value_t = 120)]
    pub idle_secs: u64,
    /// Origins besides the server's own that may open live sockets
    /// (comma-separated, e.g. https://dash.example.com).
    #[arg(
        id = "live_allowed_origins",
        long = "live-allowed-origins",
        env = "TOKENUSAGE_LIVE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
}

/// History reads.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    /// First day of the week for weekly buckets (a request can override it
    /// with `week_start`).
    #[arg(id = "week_start", long = "week-start", env = "TOKENUSAGE_WEEK_START", value_enum, default_value = "monday")]
    pub week_start: WeekStart,
    /// Series reads kept in memory (invalidated by the projector's
    /// notifications); 0 turns the cache off.
    #[arg(
        id = "series_cache_entries",
        long = "series-cache-entries",
        env = "TOKENUSAGE_SERIES_CACHE_ENTRIES",
        default_value_t = 4096
    )]
    pub series_cache_entries: usize,
    /// Most points (buckets) one series response may hold.
    #[arg(id = "max_points", long = "max-points", env = "TOKENUSAGE_MAX_POINTS", default_value_t = 10_000)]
    pub max_points: usize,
    /// A hot standby of the database (streaming replication) that serves
    /// history, overview, CSV and budget-status reads while it is at most
    /// --database-read-max-lag-secs behind the primary; the primary serves
    /// them otherwise, and always serves live views, sign-in and writes.
    /// Never logged.
    #[arg(
        id = "database_read_url",
        long = "database-read-url",
        env = "TOKENUSAGE_DATABASE_READ_URL",
        hide_env_values = true
    )]
    pub read_url: Option<SecretString>,
    /// How far behind the primary (in seconds of commits) the read standby
    /// may be before reads go to the primary instead.
    #[arg(
        id = "database_read_max_lag_secs",
        long = "database-read-max-lag-secs",
        env = "TOKENUSAGE_DATABASE_READ_MAX_LAG_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub read_max_lag_secs: u64,
}

/// The day weeks start on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeekStart {
    Monday,
    Sunday,
}

impl WeekStart {
    pub fn weekday(self) -> chrono::Weekday {
        match self {
            WeekStart::Monday => chrono::Weekday::Mon,
            WeekStart::Sunday => chrono::Weekday::Sun,
        }
    }
}

impl ApiArgs {
    /// The defaults, as declared above, listening on a free loopback port:
    /// for tests and benchmarks.
    pub fn for_tests() -> Self {
        let mut args: ApiArgs = tokenusage_plumbing::config::defaults();
        args.listen = "127.0.0.1:0".parse().expect("literal address");
        args
    }

    /// True when clients reach us over TLS (ours or a proxy's).
    pub fn tls_in_front(&self) -> bool {
        self.tls.cert.is_some() || self.tls.behind_proxy
    }

    /// Refuses plain HTTP on an address other machines can reach, unless
    /// TLS is configured or a TLS-terminating proxy is declared.
    pub fn check_transport(&self) -> anyhow::Result<()> {
        if !self.listen.ip().is_loopback() && !self.tls_in_front() {
            anyhow::bail!(
                "refusing to serve plain HTTP on {}, which other machines can reach: set --tls-cert and --tls-key \
                 (TOKENUSAGE_TLS_CERT/TOKENUSAGE_TLS_KEY), or --behind-tls-proxy (TOKENUSAGE_BEHIND_TLS_PROXY=true) \
                 if a TLS-terminating proxy is in front",
                self.listen
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_defaults_are_the_declared_ones() {
        let a = ApiArgs::for_tests();
        assert_eq!((a.jwt.access_token_ttl_secs, a.live.updates_per_sec, a.history.max_points), (300, 4, 10_000));
        assert_eq!(a.oidc.admin_values, vec!["tokenusage-admin".to_owned()]);
        assert_eq!(a.listen.port(), 0);
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_tls_is_in_front() {
        let mut a = ApiArgs::for_tests();
        assert!(a.check_transport().is_ok());
        a.listen = "0.0.0.0:8080".parse().unwrap();
        let err = a.check_transport().unwrap_err().to_string();
        assert!(err.contains("refusing to serve plain HTTP on 0.0.0.0:8080"), "{err}");
        a.tls.behind_proxy = true;
        assert!(a.check_transport().is_ok());
        a.tls.behind_proxy = false;
        a.tls.cert = Some("cert.pem".into());
        a.tls.key = Some("key.pem".into());
        assert!(a.check_transport().is_ok());
        a.listen = "[::1]:8080".parse().unwrap();
        a.tls.cert = None;
        assert!(a.check_transport().is_ok(), "IPv6 loopback is loopback");
    }
}
