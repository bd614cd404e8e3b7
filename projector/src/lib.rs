//! The projector: Kafka in, exact per-user rollups in PostgreSQL out.
//!
//! It owns the consumer group membership, the batching of records, the
//! de-duplication by (source, event id), the rollup tables, the stored
//! offsets and the post-commit notification. Offsets live in PostgreSQL, in
//! the same transaction as the rows they account for, and a projector that
//! lost a partition is fenced by an epoch so it cannot commit stale work.
//! It also seals ended days into the day rows cold reads use (`seal`).
//! It never serves HTTP and never reads rollups for display.

pub mod batch;
mod claims;
mod consumer;
pub mod deadletters;
mod freshness;
mod gapguard;
pub mod maintenance;
pub mod metrics;
mod prices;
pub mod rebuild;
pub mod seal;
mod store;
mod writer;

pub use consumer::{ProjectorArgs, ProjectorError, STALL_PATIENCE, run};
pub use store::forget_positions;
pub use tokenusage_plumbing::health::Health;

/// Counts events that did not come through Kafka (imports, tests and
/// benchmark seeding) by the same path the consumer uses: de-duplicated by
/// (source, event id), stored, added to every rollup grain and notified,
/// in one transaction. Partition and offset are recorded as -1. Returns how
/// many were new.
pub async fn count_events(pool: &sqlx::PgPool, events: Vec<tokenusage_contract::UsageEvent>) -> sqlx::Result<usize> {
    let positioned: Vec<batch::Positioned> = events
        .into_iter()
        .map(|event| batch::Positioned { event, partition: -1, offset: -1, request_id: None })
        .collect();
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
