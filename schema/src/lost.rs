//! Records the projector was owed and can never count (`lost_records`,
//! migration 0014): written by the projector in the commit that passes
//! over them, read by `/readyz`, the live views' freshness, `verify`, and
//! acknowledged by an operator.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// Offsets `from..to` of one partition are gone from the broker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LostRange {
    pub id: i64,
    pub consumer_group: String,
    pub topic: String,
    pub partition: i32,
    pub from_offset: i64,
    pub to_offset: i64,
    pub detected_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

impl LostRange {
    pub fn records(&self) -> i64 {
        self.to_offset - self.from_offset
    }
}

/// Records lost ranges (partition, from, to) inside the committing batch's
/// transaction.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    group: &str,
    topic: &str,
    ranges: &[(i32, i64, i64)],
) -> sqlx::Result<()> {
    if ranges.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into lost_records (consumer_group, topic, partition, from_offset, to_offset) \
         select $1, $2, r.p, r.f, r.t from unnest($3::int4[], $4::int8[], $5::int8[]) as r(p, f, t)",
    )
    .bind(group)
    .bind(topic)
    .bind(ranges.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(ranges.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(ranges.iter().map(|r| r.2).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records lost and not yet acknowledged, over every group and topic.
pub async fn open_total(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "select coalesce(sum(to_offset - from_offset), 0)::int8 from lost_records where acknowledged_at is null",
    )
    .fetch_one(pool)
    .await
}

/// Every lost range, newest first (bounded: `limit`).
pub async fn list(pool: &PgPool, include_acknowledged: bool, limit: i64) -> sqlx::Result<Vec<LostRange>> {
    sqlx::query_as::<_, (i64, String, String, i32, i64, i64, DateTime<Utc>, Option<DateTime<Utc>>)>(
        "select id, consumer_group, topic, partition, from_offset, to_offset, detected_at, acknowledged_at \
         from lost_records where $1 or acknowledged_at is null order by detected_at desc, id desc limit $2",
    )
    .bind(include_acknowledged)
    .bind(limit)
    .fetch_all(pool)
    .await
    .map(|rows| {
        rows.into_iter()
            .map(|(id, consumer_group, topic, partition, from_offset, to_offset, detected_at, acknowledged_at)| {
                LostRange { id, consumer_group, topic, partition, from_offset, to_offset, detected_at, acknowledged_at }
            })
            .collect()
    })
}

/// Marks every open loss as known to an operator; returns how many ranges.
pub async fn acknowledge_all(pool: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query("update lost_records set acknowledged_at = now() where acknowledged_at is null")
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
