//! The PostgreSQL pool: typed settings, connecting, and the encoding check.
//! (The schema and its migrations belong to the `schema` crate.)

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// PostgreSQL connection settings, shared by every subcommand that touches
/// the database.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL. Put `sslmode=require` (or `verify-full`)
    /// in it for TLS. Never logged.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/tokenusage"
    )]
    pub url: SecretString,
    /// Most connections this process opens to PostgreSQL.
    #[arg(long = "db-max-connections", env = "TOKENUSAGE_DB_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_connections: u32,
    /// How long to wait for a free connection (or a first connect) before
    /// failing, in seconds.
    #[arg(long = "db-acquire-timeout-secs", env = "TOKENUSAGE_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 10)]
    pub acquire_timeout_secs: u64,
}

/// What can go wrong while connecting or migrating.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(#[source] sqlx::Error),
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect { target: String, source: sqlx::Error },
    #[error(
        "the database {target} uses the {encoding} encoding; tokenusage needs UTF8 (create it with \
         `create database ... encoding 'UTF8'`), or names and models outside {encoding} would be refused"
    )]
    NotUtf8 { target: String, encoding: String },
    #[error(
        "the read database {target} is not a hot standby (pg_is_in_recovery() is false there): \
         --database-read-url must name a streaming replica of the primary"
    )]
    NotStandby { target: String },
}

impl DatabaseArgs {
    /// Host, port and database name, for messages; never the password.
    pub fn describe(&self) -> String {
        match PgConnectOptions::from_str(self.url.expose_secret()) {
            Ok(o) => format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or("(default)")),
            Err(_) => "(unparseable URL)".into(),
        }
    }

    pub fn connect_options(&self) -> Result<PgConnectOptions, DbError> {
        // JIT off: our statements run in milliseconds, and PostgreSQL
        // compiles (100-200 ms) whenever a plan's cost estimate passes
        // `jit_above_cost`, which a year of rollup rows does; the compile
        // never pays back (docs/DECISIONS.md, "Cold reads").
        PgConnectOptions::from_str(self.url.expose_secret())
            .map(|o| o.application_name("tokenusage").options([("jit", "off")]))
            .map_err(DbError::BadUrl)
    }

    /// Opens the pool and checks that one connection works, so a wrong URL
    /// fails at start with a clear message rather than on the first request.
    pub async fn connect(&self) -> Result<PgPool, DbError> {
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_secs(self.acquire_timeout_secs))
            .connect_with(self.connect_options()?)
            .await
            .map_err(|source| DbError::Connect { target: self.describe(), source })?;
        // Validation promises that any accepted text can be stored; that
        // holds only for a UTF-8 database (crate docs of contract::text).
        let encoding: String = sqlx::query_scalar("show server_encoding")
            .fetch_one(&pool)
            .await
            .map_err(|source| DbError::Connect { target: self.describe(), source })?;
        if !encoding.eq_ignore_ascii_case("UTF8") {
            return Err(DbError::NotUtf8 { target: self.describe(), encoding });
        }
        Ok(pool)
    }
}

/// Calls `on` for every notification on `channel`, and once after each
/// (re)connection (anything sent while disconnected was missed), until
/// `done` says so (checked at least every 5 s). Runs on a task of its own;
/// a listener that cannot connect retries with backoff, so callers keep a
/// bound of their own (a cache TTL) for that time.
pub fn follow_notifications(
    pool: PgPool,
    channel: &'static str,
    done: impl Fn() -> bool + Send + 'static,
    on: impl Fn() + Send + 'static,
) {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        while !done() {
            let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if listener.listen(channel).await.is_err() {
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(200);
            on();
            loop {
                match tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
                    Ok(Ok(_)) => on(),
                    Ok(Err(_)) => break,
                    Err(_) if done() => return,
                    Err(_) => {}
                }
            }
        }
    });
}
