//! API settings.

use std::net::SocketAddr;

use secrecy::SecretString;

/// Settings of the HTTP API.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Address the HTTP server listens on. Port 0 picks a free port.
    #[arg(long = "listen", env = "TOKENUSAGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Secret for signing access tokens (HS256), at least 32 bytes. When
    /// unset, a random one is generated at start: tokens then do not survive
    /// a restart and cannot be shared between API processes. Never logged.
    #[arg(long = "jwt-secret", env = "TOKENUSAGE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// `iss` of the access tokens we issue and require.
    #[arg(long = "jwt-issuer", env = "TOKENUSAGE_JWT_ISSUER", default_value = "tokenusage")]
    pub jwt_issuer: String,
    /// `aud` of the access tokens we issue and require.
    #[arg(long = "jwt-audience", env = "TOKENUSAGE_JWT_AUDIENCE", default_value = "tokenusage-api")]
    pub jwt_audience: String,
    /// Lifetime of an access token, in seconds.
    #[arg(long = "access-token-ttl-secs", env = "TOKENUSAGE_ACCESS_TOKEN_TTL_SECS", default_value_t = 900,
          value_parser = clap::value_parser!(u64).range(30..=86_400))]
    pub access_token_ttl_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long = "max-body-bytes", env = "TOKENUSAGE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Most points (buckets) one series response may hold.
    #[arg(long = "max-points", env = "TOKENUSAGE_MAX_POINTS", default_value_t = 10_000)]
    pub max_points: usize,
}

impl ApiArgs {
    /// Defaults for tests and the demo: loopback, port 0.
    pub fn for_tests() -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            jwt_secret: None,
            jwt_issuer: "tokenusage".into(),
            jwt_audience: "tokenusage-api".into(),
            access_token_ttl_secs: 900,
            max_body_bytes: 1024 * 1024,
            max_points: 10_000,
        }
    }
}
