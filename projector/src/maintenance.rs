//! Background upkeep run beside the consume loop: re-driving dead letters
//! that admins asked for, dropping raw events past their retention, and
//! sealing ended days into day rows (`seal`).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How often requested re-drives are picked up.
const REDRIVE_EVERY: Duration = Duration::from_secs(5);
/// How often ended days are sealed (a pass with nothing to do is one
/// indexed query).
const SEAL_EVERY: Duration = Duration::from_secs(60);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted per statement on plain PostgreSQL, so no single delete
/// holds locks for long.
const DELETE_BATCH: i64 = 10_000;

/// Deletes raw events (and their de-duplication keys) older than
/// `days`. Rollups are kept forever. Under TimescaleDB whole chunks are
/// dropped; on plain PostgreSQL rows go in bounded batches. Returns the
/// number of raw rows (or chunks) removed.
pub async fn apply_retention(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(i64::from(days));
    let removed = if tokenusage_schema::migrations::has_timescaledb(pool).await? {
        let chunks: Vec<(String,)> = sqlx::query_as("select drop_chunks('usage_events', older_than => $1)::text")
            .bind(cutoff)
            .fetch_all(pool)
            .await?;
        chunks.len() as u64
    } else {
        delete_in_batches(pool, "usage_events", "occurred_at, source, event_id", "occurred_at", cutoff).await?
    };
    // A key older than the raw retention can go: a duplicate arriving that
    // late would be counted again, which is the documented horizon.
    delete_in_batches(pool, "event_keys", "source, event_id", "first_seen", cutoff).await?;
    Ok(removed)
}

/// Deletes rows of `table` whose `column` is before `cutoff`, at most
/// `DELETE_BATCH` per statement, naming rows by their primary key `key`.
/// Never by `ctid`: on a TimescaleDB hypertable a ctid is only unique
/// within one chunk, so `ctid in (...)` would delete rows of every chunk.
/// Identifiers are fixed in this module, never input.
async fn delete_in_batches(
    pool: &PgPool,
    table: &str,
    key: &str,
    column: &str,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<u64, sqlx::Error> {
    let sql = format!("delete from {table} where ({key}) in (select {key} from {table} where {column} < $1 limit $2)");
    let mut removed = 0;
    loop {
        let n = sqlx::query(&sql).bind(cutoff).bind(DELETE_BATCH).execute(pool).await?.rows_affected();
        removed += n;
        if n < DELETE_BATCH as u64 {
            return Ok(removed);
        }
    }
}

/// Runs upkeep until `shutdown`. Errors are logged and retried next tick.
pub(crate) async fn run(pool: PgPool, retention_days: u32, shutdown: CancellationToken) {
    let mut redrive = tokio::time::interval(REDRIVE_EVERY);
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    let mut seal = tokio::time::interval(SEAL_EVERY);
    seal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = redrive.tick() => {
                if let Err(e) = crate::deadletters::process_requested(&pool).await {
                    tracing::warn!(error = %e, "re-driving dead letters failed; will retry");
                }
            }
            _ = seal.tick() => {
                // A first pass over a long history takes a while; shutdown
                // does not wait for it (the open transaction rolls back).
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = crate::seal::tick(&pool) => {}
                }
            }
            _ = retention.tick() => {
                match apply_retention(&pool, retention_days).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, retention_days, "old raw events removed"),
                    Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
                }
            }
        }
    }
}
