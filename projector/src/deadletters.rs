//! Dead letters: listing them, and re-driving them once the cause is fixed
//! (a publisher's clock, a bug in our validation, or an edited payload).
//!
//! Re-driving decodes the stored record again and, if it is now valid,
//! counts it through the same path as live records (de-duplicated by
//! (source, event id)), in one transaction with marking it re-driven.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::batch::{Positioned, Record};

/// A dead letter as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    /// The raw value bytes, exactly as read from Kafka.
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub kafka_offset: i64,
    /// The raw value as UTF-8 (lossy, for reading); `payload` is untouched.
    #[sqlx(skip)]
    pub payload_text: Option<String>,
    pub error: String,
    pub received_at: DateTime<Utc>,
    pub redriven_at: Option<DateTime<Utc>>,
    pub redrive_requested_at: Option<DateTime<Utc>>,
    pub redrive_error: Option<String>,
}

/// Newest first; `pending_only` hides those already re-driven.
pub async fn list(pool: &PgPool, limit: i64, pending_only: bool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select id, topic, partition, kafka_offset, payload, error,
               received_at, redriven_at, redrive_requested_at, redrive_error
        from dead_letters
        where not $2 or redriven_at is null
        order by id desc limit $1
        "#,
    )
    .bind(limit.clamp(1, 10_000))
    .bind(pending_only)
    .fetch_all(pool)
    .await
    .map(|rows: Vec<DeadLetter>| {
        rows.into_iter()
            .map(|mut d| {
                d.payload_text = d.payload.as_deref().map(|p| String::from_utf8_lossy(p).into_owned());
                d
            })
            .collect()
    })
}

/// Asks for a re-drive of one dead letter (or, with `None`, of all that are
/// not yet re-driven), optionally replacing its payload. Returns how many
/// were marked.
pub async fn request_redrive(pool: &PgPool, id: Option<i64>, new_payload: Option<&[u8]>) -> Result<u64, sqlx::Error> {
    let n = sqlx::query(
        r#"
        update dead_letters set redrive_requested_at = now(), redrive_error = null,
               payload = coalesce($2, payload)
        where redriven_at is null and ($1::int8 is null or id = $1)
        "#,
    )
    .bind(id)
    .bind(new_payload)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Outcome of processing requested re-drives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// Now valid and counted (or already counted: a duplicate).
    pub counted: u64,
    /// Still invalid; `redrive_error` says why.
    pub still_invalid: u64,
}

/// A dead letter's stored record: id, partition, offset, key, value, headers.
type StoredRecord = (i64, i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, sqlx::types::Json<Vec<(String, String)>>);

/// Processes every requested re-drive, each in its own transaction.
pub async fn process_requested(pool: &PgPool) -> Result<Redriven, sqlx::Error> {
    let rows: Vec<StoredRecord> = sqlx::query_as(
        "select id, partition, kafka_offset, record_key, payload, headers from dead_letters \
         where redrive_requested_at is not null and redriven_at is null order by id limit 10000",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Redriven::default();
    for (id, partition, offset, key, payload, headers) in rows {
        let record = Record {
            partition,
            offset,
            key,
            payload,
            headers: headers.0.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
        };
        let mut batch = crate::batch::Batch::default();
        batch.push(record, Utc::now());
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock_shared($1)")
            .bind(crate::rebuild::REBUILD_LOCK)
            .execute(&mut *tx)
            .await?;
        if let Some(dead) = batch.dead.first() {
            sqlx::query("update dead_letters set redrive_requested_at = null, redrive_error = $2 where id = $1")
                .bind(id)
                .bind(&dead.error)
                .execute(&mut *tx)
                .await?;
            out.still_invalid += 1;
        } else {
            let events: Vec<Positioned> = batch.events;
            crate::store::write_events(&mut tx, &events).await?;
            sqlx::query("update dead_letters set redrive_requested_at = null, redrive_error = null, redriven_at = now() where id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            out.counted += 1;
        }
        tx.commit().await?;
    }
    if out != Redriven::default() {
        tracing::info!(counted = out.counted, still_invalid = out.still_invalid, "dead letters re-driven");
    }
    Ok(out)
}
