//! How current the rollups are: written per partition by the projector's
//! freshness probe, read by the API for every live message.
//!
//! The probe time is taken *before* the broker is asked for its high
//! watermarks, so when a partition's stored offset has reached the
//! watermark, every record the broker held at that time is counted: the
//! partition is "complete through" it. A partition never read yet (stored
//! offset -1) is owed every record from offset 0: records below the low
//! watermark that were never counted are lag until the projector records
//! them as lost (`lost`), never silently "complete".

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// How current the rollups are, over every partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Freshness {
    /// Every record the broker held at this time is counted (minimum over
    /// partitions); null until the projector's probe has run.
    pub complete_through: Option<DateTime<Utc>>,
    /// Records on the broker not yet counted, summed over partitions.
    pub lag_records: i64,
    /// Records the broker no longer held when the projector got to them
    /// (never counted; see `tokenusage lost`), not yet acknowledged by an
    /// operator.
    pub lost_records: i64,
}

/// Reads the freshness over every partition of every consumer group.
pub async fn read(pool: &PgPool) -> sqlx::Result<Freshness> {
    let (min, unknown, lag, lost): (Option<DateTime<Utc>>, i64, i64, i64) = sqlx::query_as(
        "select min(caught_up_at), count(*) filter (where caught_up_at is null), coalesce(sum(lag), 0)::int8, \
                (select coalesce(sum(to_offset - from_offset), 0)::int8 from lost_records where acknowledged_at is null) \
         from projector_offsets",
    )
    .fetch_one(pool)
    .await?;
    Ok(Freshness { complete_through: if unknown > 0 { None } else { min }, lag_records: lag, lost_records: lost })
}

/// The partitions a consumer group has claimed on a topic.
pub async fn claimed_partitions(pool: &PgPool, group: &str, topic: &str) -> sqlx::Result<Vec<i32>> {
    sqlx::query_scalar("select partition from projector_offsets where consumer_group = $1 and topic = $2")
        .bind(group)
        .bind(topic)
        .fetch_all(pool)
        .await
}

/// The broker's watermarks of one partition at one probe.
#[derive(Debug, Clone, Copy)]
pub struct Watermarks {
    pub partition: i32,
    /// Not used for lag (a never-counted partition is owed offset 0 on),
    /// kept for the record of what the broker held.
    pub low: i64,
    pub high: i64,
}

/// Records a probe taken at `probed_at` (before the broker was asked).
pub async fn record(
    pool: &PgPool,
    group: &str,
    topic: &str,
    probed_at: DateTime<Utc>,
    marks: &[Watermarks],
) -> sqlx::Result<()> {
    sqlx::query(
        r#"
        update projector_offsets o
        set high_watermark = h.high,
            lag = greatest(h.high - greatest(o.next_offset, 0), 0),
            caught_up_at = case when greatest(o.next_offset, 0) >= h.high then $5 else o.caught_up_at end,
            probed_at = $5
        from unnest($3::int4[], $4::int8[]) as h(partition, high)
        where o.consumer_group = $1 and o.topic = $2 and o.partition = h.partition
        "#,
    )
    .bind(group)
    .bind(topic)
    .bind(marks.iter().map(|m| m.partition).collect::<Vec<_>>())
    .bind(marks.iter().map(|m| m.high).collect::<Vec<_>>())
    .bind(probed_at)
    .execute(pool)
    .await?;
    Ok(())
}
