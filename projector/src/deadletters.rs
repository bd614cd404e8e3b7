//! Re-driving dead letters once the cause is fixed (a publisher's clock, a
//! bug in our validation, a constraint, or an edited payload). Listing and
//! requesting re-drives are `schema::dead_letters`, shared with the API.
//!
//! Re-driving decodes the stored record again and, if it is now valid,
//! counts it through the same path as live records (de-duplicated by
//! (source, event id)), in one transaction with marking it re-driven.

use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;
use tokenusage_plumbing::failure::{self, Failure};
use tokenusage_schema::dead_letters;

use crate::batch::{Positioned, Record};

/// Outcome of processing requested re-drives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// Now valid and counted (or already counted: a duplicate).
    pub counted: u64,
    /// Still invalid, or still refused by the database; `redrive_error` says why.
    pub still_invalid: u64,
}

/// Processes every requested re-drive, each in its own transaction. A
/// record that is still invalid, or that the database still refuses, keeps
/// its dead letter with the reason in `redrive_error`; only a transient
/// database failure stops the run (it is retried on the next tick).
pub async fn process_requested(pool: &PgPool) -> Result<Redriven, sqlx::Error> {
    let mut out = Redriven::default();
    for r in dead_letters::requested(pool, 10_000).await? {
        let record =
            Record { partition: r.partition, offset: r.offset, key: r.key, payload: r.payload, headers: r.headers };
        let mut batch = crate::batch::Batch::default();
        batch.push(record, Utc::now());
        let invalid = match batch.dead.first() {
            Some(dead) => Some(dead.error.clone()),
            None => match count_redriven(pool, r.id, &batch.events).await {
                Ok(()) => None,
                Err(e) if Failure::of(&e) == Failure::Data => Some(failure::describe(&e)),
                Err(e) => return Err(e),
            },
        };
        match invalid {
            None => out.counted += 1,
            Some(error) => {
                dead_letters::mark_still_invalid(pool, r.id, &error).await?;
                out.still_invalid += 1;
            }
        }
    }
    if out != Redriven::default() {
        tracing::info!(counted = out.counted, still_invalid = out.still_invalid, "dead letters re-driven");
    }
    Ok(out)
}

/// Counts a re-driven dead letter's event and marks it re-driven, in one
/// transaction under the shared rebuild lock.
async fn count_redriven(pool: &PgPool, id: i64, events: &[Positioned]) -> Result<(), sqlx::Error> {
    let mut book = crate::prices::current(pool).await?;
    let mut tries = 0;
    loop {
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock_shared($1)")
            .bind(crate::rebuild::REBUILD_LOCK)
            .execute(&mut *tx)
            .await?;
        match crate::store::write_events(&mut tx, &book, events).await {
            Err(e) if crate::store::is_stale_book(&e) && tries < crate::store::MAX_STALE_RETRIES => {
                tries += 1;
                book = crate::prices::reload(pool).await?;
            }
            Err(e) => return Err(e),
            Ok(counted) => {
                dead_letters::mark_redriven(&mut tx, id).await?;
                tx.commit().await?;
                counted.record();
                return Ok(());
            }
        }
    }
}
