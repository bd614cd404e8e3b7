//! API settings.

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
    /// PEM certificate chain for the built-in TLS listener (with --tls-key).
    #[arg(long = "tls-cert", env = "TOKENUSAGE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the built-in TLS listener (with --tls-cert).
    #[arg(long = "tls-key", env = "TOKENUSAGE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A TLS-terminating reverse proxy is in front: allow plain HTTP on a
    /// non-loopback address, send HSTS, and take the client address from
    /// the last hop of X-Forwarded-For.
    #[arg(long = "behind-tls-proxy", env = "TOKENUSAGE_BEHIND_TLS_PROXY")]
    pub behind_tls_proxy: bool,
    /// Secret for signing access tokens (HS256), at least 32 bytes. When
    /// unset, a random one is generated at start: tokens then do not survive
    /// a restart and cannot be shared between API processes. Never logged.
    #[arg(long = "jwt-secret", env = "TOKENUSAGE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// Earlier signing secrets, comma-separated, still accepted for
    /// verification while their tokens expire (key rotation by `kid`).
    #[arg(
        long = "jwt-previous-secrets",
        env = "TOKENUSAGE_JWT_PREVIOUS_SECRETS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub jwt_previous_secrets: Vec<SecretString>,
    /// `iss` of the access tokens we issue and require.
    #[arg(long = "jwt-issuer", env = "TOKENUSAGE_JWT_ISSUER", default_value = "tokenusage")]
    pub jwt_issuer: String,
    /// `aud` of the access tokens we issue and require.
    #[arg(long = "jwt-audience", env = "TOKENUSAGE_JWT_AUDIENCE", default_value = "tokenusage-api")]
    pub jwt_audience: String,
    /// Lifetime of an access token, in seconds.
    #[arg(long = "access-token-ttl-secs", env = "TOKENUSAGE_ACCESS_TOKEN_TTL_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(30..=3600))]
    pub access_token_ttl_secs: u64,
    /// Lifetime of a sign-in session (the refresh-token cookie), in seconds.
    #[arg(long = "session-ttl-secs", env = "TOKENUSAGE_SESSION_TTL_SECS", default_value_t = 43_200,
          value_parser = clap::value_parser!(u64).range(300..=2_592_000))]
    pub session_ttl_secs: u64,
    /// Sign-in attempts allowed per minute for one user name (and three
    /// times as many per client address).
    #[arg(long = "login-attempts-per-minute", env = "TOKENUSAGE_LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub login_attempts_per_minute: u32,
    /// OpenID Connect issuer whose bearer JWTs are also accepted (its
    /// discovery document and JWKS are fetched from this URL).
    #[arg(long = "oidc-issuer", env = "TOKENUSAGE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// `aud` required in tokens of the OIDC issuer.
    #[arg(long = "oidc-audience", env = "TOKENUSAGE_OIDC_AUDIENCE", default_value = "tokenusage")]
    pub oidc_audience: String,
    /// Claim of OIDC tokens that names the user (must match `user_id` in events).
    #[arg(long = "oidc-user-claim", env = "TOKENUSAGE_OIDC_USER_CLAIM", default_value = "sub")]
    pub oidc_user_claim: String,
    /// Claim of OIDC tokens holding the caller's roles or groups (a string or a list).
    #[arg(long = "oidc-role-claim", env = "TOKENUSAGE_OIDC_ROLE_CLAIM", default_value = "roles")]
    pub oidc_role_claim: String,
    /// Values of the role claim that make the caller an admin, comma-separated;
    /// anyone else is a viewer.
    #[arg(
        long = "oidc-admin-values",
        env = "TOKENUSAGE_OIDC_ADMIN_VALUES",
        default_value = "tokenusage-admin",
        value_delimiter = ','
    )]
    pub oidc_admin_values: Vec<String>,
    /// Least time between two JWKS fetches triggered by an unknown `kid`, in seconds.
    #[arg(long = "oidc-jwks-min-refetch-secs", env = "TOKENUSAGE_OIDC_JWKS_MIN_REFETCH_SECS", default_value_t = 30)]
    pub oidc_jwks_min_refetch_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long = "max-body-bytes", env = "TOKENUSAGE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// First day of the week for weekly buckets (a request can override it
    /// with `week_start`).
    #[arg(long = "week-start", env = "TOKENUSAGE_WEEK_START", value_enum, default_value = "monday")]
    pub week_start: WeekStart,
    /// Live updates sent per subscription per second at most (coalesced).
    #[arg(long = "live-updates-per-sec", env = "TOKENUSAGE_LIVE_UPDATES_PER_SEC", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    pub live_updates_per_sec: u32,
    /// Live sockets one user may hold open at once.
    #[arg(long = "live-max-sockets-per-user", env = "TOKENUSAGE_LIVE_MAX_SOCKETS_PER_USER", default_value_t = 10)]
    pub live_max_sockets_per_user: usize,
    /// A live socket whose client sends nothing (not even a pong) for this
    /// long is closed, in seconds.
    #[arg(long = "live-idle-secs", env = "TOKENUSAGE_LIVE_IDLE_SECS", default_value_t = 120)]
    pub live_idle_secs: u64,
    /// Origins besides the server's own that may open live sockets
    /// (comma-separated, e.g. https://dash.example.com).
    #[arg(long = "live-allowed-origins", env = "TOKENUSAGE_LIVE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub live_allowed_origins: Vec<String>,
    /// Series reads kept in memory (invalidated by the projector's
    /// notifications); 0 turns the cache off.
    #[arg(long = "series-cache-entries", env = "TOKENUSAGE_SERIES_CACHE_ENTRIES", default_value_t = 4096)]
    pub series_cache_entries: usize,
    /// Most points (buckets) one series response may hold.
    #[arg(long = "max-points", env = "TOKENUSAGE_MAX_POINTS", default_value_t = 10_000)]
    pub max_points: usize,
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
    /// Defaults for tests and the demo: loopback, port 0.
    pub fn for_tests() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            tls_cert: None,
            tls_key: None,
            behind_tls_proxy: false,
            jwt_secret: None,
            jwt_previous_secrets: Vec::new(),
            jwt_issuer: "tokenusage".into(),
            jwt_audience: "tokenusage-api".into(),
            access_token_ttl_secs: 300,
            session_ttl_secs: 43_200,
            login_attempts_per_minute: 10,
            oidc_issuer: None,
            oidc_audience: "tokenusage".into(),
            oidc_user_claim: "sub".into(),
            oidc_role_claim: "roles".into(),
            oidc_admin_values: vec!["tokenusage-admin".into()],
            oidc_jwks_min_refetch_secs: 30,
            max_body_bytes: 1024 * 1024,
            week_start: WeekStart::Monday,
            live_updates_per_sec: 4,
            live_max_sockets_per_user: 10,
            live_idle_secs: 120,
            live_allowed_origins: Vec::new(),
            series_cache_entries: 4096,
            max_points: 10_000,
        }
    }

    /// True when clients reach us over TLS (ours or a proxy's).
    pub fn tls_in_front(&self) -> bool {
        self.tls_cert.is_some() || self.behind_tls_proxy
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
    fn plain_http_is_refused_off_loopback_unless_tls_is_in_front() {
        let mut a = ApiArgs::for_tests();
        assert!(a.check_transport().is_ok());
        a.listen = "0.0.0.0:8080".parse().unwrap();
        let err = a.check_transport().unwrap_err().to_string();
        assert!(err.contains("refusing to serve plain HTTP on 0.0.0.0:8080"), "{err}");
        a.behind_tls_proxy = true;
        assert!(a.check_transport().is_ok());
        a.behind_tls_proxy = false;
        a.tls_cert = Some("cert.pem".into());
        a.tls_key = Some("key.pem".into());
        assert!(a.check_transport().is_ok());
        a.listen = "[::1]:8080".parse().unwrap();
        a.tls_cert = None;
        assert!(a.check_transport().is_ok(), "IPv6 loopback is loopback");
    }
}
