//! The migrations in `migrations/`, embedded at compile time.

use sqlx::PgPool;

/// The migrations, in order.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies every pending migration; a no-op when the schema is current.
/// Concurrent callers are serialised by sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    if timescaledb_unloadable(pool).await? {
        tracing::warn!(
            "TimescaleDB is installed but not in shared_preload_libraries, so it cannot be created: \
             using plain PostgreSQL tables (add timescaledb to shared_preload_libraries and restart \
             PostgreSQL before the first migration to get hypertables; docs/OPERATIONS.md)"
        );
        return without_timescaledb().run(pool).await;
    }
    MIGRATOR.run(pool).await
}

/// The migration that turns tables into hypertables where TimescaleDB can
/// be created (20261127000002_timescaledb.sql).
const TIMESCALEDB_MIGRATION: i64 = 20261127000002;

/// TimescaleDB is available to `create extension` but not preloaded, and
/// not created yet. Then `create extension timescaledb` ends the backend
/// with a FATAL ("must be preloaded"), which the migration's exception
/// block cannot catch, and every migration after it would fail.
async fn timescaledb_unloadable(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from pg_available_extensions where name = 'timescaledb') \
            and not exists (select 1 from pg_extension where extname = 'timescaledb') \
            and current_setting('shared_preload_libraries') !~ 'timescaledb'",
    )
    .fetch_one(pool)
    .await
}

/// The migrations with the TimescaleDB one reduced to what it documents for
/// a server that cannot create the extension: nothing (plain tables). Its
/// checksum stays the file's, so databases migrated either way validate
/// against the same history.
fn without_timescaledb() -> sqlx::migrate::Migrator {
    let migrations = MIGRATOR
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if m.version == TIMESCALEDB_MIGRATION {
                m.sql = "select 1 -- timescaledb is not preloaded: plain tables".into();
            }
            m
        })
        .collect::<Vec<_>>();
    sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(migrations),
        ignore_missing: MIGRATOR.ignore_missing,
        locking: MIGRATOR.locking,
        no_tx: MIGRATOR.no_tx,
    }
}

/// The newest migration's version: what `/readyz` expects to find applied.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// True when the TimescaleDB extension is installed in this database.
pub async fn has_timescaledb(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from pg_extension where extname = 'timescaledb')").fetch_one(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_timescaledb_only_the_timescaledb_migration_differs_and_keeps_its_checksum() {
        let plain = without_timescaledb();
        assert_eq!(plain.iter().count(), MIGRATOR.iter().count());
        for (a, b) in MIGRATOR.iter().zip(plain.iter()) {
            assert_eq!((a.version, &a.checksum), (b.version, &b.checksum));
            assert_eq!(a.sql == b.sql, a.version != TIMESCALEDB_MIGRATION, "version {}", a.version);
        }
        let ts = MIGRATOR.iter().find(|m| m.version == TIMESCALEDB_MIGRATION).expect("the migration exists");
        assert!(ts.sql.contains("create extension if not exists timescaledb"));
    }
}
