//! The projector: Kafka in, exact per-user rollups in PostgreSQL out.
//!
//! It owns the consumer group membership, the batching of records, the
//! de-duplication by (source, event id), the rollup tables, the stored
//! offsets and the post-commit notification. Offsets live in PostgreSQL, in
//! the same transaction as the rows they account for, and a projector that
//! lost a partition is fenced by an epoch so it cannot commit stale work.
//! It also seals ended days into the day rows cold reads use (`seal`).
//! It never serves HTTP and never reads rollups for display.

// In the order a record passes through them: read and claimed, guarded,
// batched, priced, written; then what runs beside the write path.
mod consumer;
mod claims;
mod gapguard;
pub mod batch;
mod prices;
mod store;
mod writer;
mod freshness;
pub mod seal;
pub mod deadletters;
pub mod rebuild;
pub mod maintenance;
pub mod metrics;

pub use consumer::{ProjectorArgs, ProjectorError, STALL_PATIENCE, run};
pub use store::forget_positions;
pub use tokenusage_plumbing::health::Health;

/// Counts events that did not come through Kafka (imports, tests and
/// benchmark seeding) by the same path the consumer uses: de-duplicated by
/// (source, event id), stored, added to every rollup grain and notified,
/// in one transaction. Partition and offset are recorded as -1. Returns how
/// many were new.
pub async fn count_events(pool: &sqlx::PgPool, events: Vec<tokenusage_contract::UsageEvent>) -> sqlx::Result<usize> {
    let positioned = unpositioned(events);
    let mut book = prices::current(pool).await?;
    for _ in 0..store::MAX_STALE_RETRIES {
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock_shared($1)").bind(rebuild::REBUILD_LOCK).execute(&mut *tx).await?;
        match store::write_events(&mut tx, &book, &positioned).await {
            Err(e) if store::is_stale_book(&e) => book = prices::reload(pool).await?,
            Err(e) => return Err(e),
            Ok(n) => {
                tx.commit().await?;
                n.record();
                return Ok(n.events());
            }
        }
    }
    Err(sqlx::Error::Protocol("the price book kept changing while these events were priced".into()))
}

/// Events that did not come through Kafka: partition and offset -1.
fn unpositioned(events: Vec<tokenusage_contract::UsageEvent>) -> Vec<batch::Positioned> {
    events.into_iter().map(|event| batch::Positioned { event, partition: -1, offset: -1, request_id: None }).collect()
}

/// Replaces `user`'s raw events from `source` in one UTC day with
/// `events` (which must all be that source's and user's, in that day) and
/// rebuilds that user's rollups of the day from the raw events, in one
/// transaction under the rebuild lock: readers see the old figures or the
/// new ones, never both or neither. For usage that is restated rather than
/// appended (providers' reports, which revise their buckets). Returns how
/// many events the day holds afterwards.
pub async fn replace_day_events(
    pool: &sqlx::PgPool,
    source: &str,
    user: &str,
    day: chrono::NaiveDate,
    events: Vec<tokenusage_contract::UsageEvent>,
) -> sqlx::Result<usize> {
    let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let end = start + chrono::TimeDelta::days(1);
    if let Some(e) =
        events.iter().find(|e| e.source != source || e.user_id != user || e.occurred_at < start || e.occurred_at >= end)
    {
        return Err(sqlx::Error::Protocol(format!("event {} is not {source}'s for {user} on {day}", e.event_id)));
    }
    let positioned = unpositioned(events);
    let mut book = prices::current(pool).await?;
    for _ in 0..store::MAX_STALE_RETRIES {
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(rebuild::REBUILD_LOCK).execute(&mut *tx).await?;
        let gone: Vec<String> = sqlx::query_scalar(
            "delete from usage_events where source = $1 and user_id = $2 and occurred_at >= $3 and occurred_at < $4 \
             returning event_id",
        )
        .bind(source)
        .bind(user)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("delete from event_keys where source = $1 and event_id = any($2)")
            .bind(source)
            .bind(&gone)
            .execute(&mut *tx)
            .await?;
        match store::write_events(&mut tx, &book, &positioned).await {
            Err(e) if store::is_stale_book(&e) => book = prices::reload(pool).await?,
            Err(e) => return Err(e),
            Ok(_) => {
                rebuild::rebuild_user_day(&mut tx, start, end, user).await?;
                tx.commit().await?;
                return Ok(positioned.len());
            }
        }
    }
    Err(sqlx::Error::Protocol("the price book kept changing while these events were priced".into()))
}
