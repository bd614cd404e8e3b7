//! The migrations in `migrations/`, embedded at compile time.

use sqlx::PgPool;

/// The migrations, in order.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies every pending migration; a no-op when the schema is current.
/// Concurrent callers are serialised by sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The newest migration's version: what `/readyz` expects to find applied.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// True when the TimescaleDB extension is installed in this database.
pub async fn has_timescaledb(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from pg_extension where extname = 'timescaledb')").fetch_one(pool).await
}
