//! Writing one batch to PostgreSQL in one transaction: offsets (fenced by
//! epoch), dead letters, de-duplication keys, raw events, rollups, and the
//! post-commit notification.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tokenusage_contract::UsageEvent;

use crate::batch::{Batch, Positioned, RollupKey, Sums, rollup};
use crate::grain::Grain;
use crate::notify;

/// Identity of one claim on the stored offsets.
#[derive(Debug, Clone)]
pub(crate) struct Claimant {
    pub group: String,
    pub topic: String,
    pub owner: String,
}

/// The result of committing a batch.
#[derive(Debug)]
pub(crate) enum Committed {
    /// Rows written: (new events, duplicates skipped by the database).
    Done { new_events: usize, duplicates: usize },
    /// These partitions were claimed by someone else since we claimed them;
    /// nothing was written.
    Fenced(Vec<i32>),
}

/// Claims `partition` for this process: bumps the epoch (so any previous
/// owner's commits now fail) and returns (epoch, next offset to read).
pub(crate) async fn claim(pool: &PgPool, who: &Claimant, partition: i32) -> Result<(i64, Option<i64>), sqlx::Error> {
    let row: (i64, i64, bool) = sqlx::query_as(
        r#"
        insert into projector_offsets as o (consumer_group, topic, partition, next_offset, epoch, owner)
        values ($1, $2, $3, -1, 1, $4)
        on conflict (consumer_group, topic, partition)
        do update set epoch = o.epoch + 1, owner = excluded.owner, updated_at = now()
        returning epoch, next_offset, (xmax = 0) as inserted
        "#,
    )
    .bind(&who.group)
    .bind(&who.topic)
    .bind(partition)
    .bind(&who.owner)
    .fetch_one(pool)
    .await?;
    let (epoch, next, _) = row;
    // -1 marks "claimed but nothing committed yet": start from the beginning.
    Ok((epoch, (next >= 0).then_some(next)))
}

/// Writes `batch` atomically. `epochs` holds our claim on each partition.
pub(crate) async fn commit(
    pool: &PgPool,
    who: &Claimant,
    epochs: &BTreeMap<i32, i64>,
    batch: &Batch,
) -> Result<Committed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Shared with other commits, exclusive against a replay rebuilding rollups.
    sqlx::query("select pg_advisory_xact_lock_shared($1)").bind(crate::rebuild::REBUILD_LOCK).execute(&mut *tx).await?;

    let mut fenced = Vec::new();
    for (&partition, &next) in &batch.next_offsets {
        let Some(&epoch) = epochs.get(&partition) else {
            fenced.push(partition);
            continue;
        };
        let updated = sqlx::query(
            r#"
            update projector_offsets set next_offset = $4, updated_at = now()
            where consumer_group = $1 and topic = $2 and partition = $3 and epoch = $5
            "#,
        )
        .bind(&who.group)
        .bind(&who.topic)
        .bind(partition)
        .bind(next)
        .bind(epoch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            fenced.push(partition);
        }
    }
    if !fenced.is_empty() {
        tx.rollback().await?;
        return Ok(Committed::Fenced(fenced));
    }

    insert_dead_letters(&mut tx, &who.topic, batch).await?;
    let new_events = write_events(&mut tx, &batch.events).await?;
    tx.commit().await?;
    Ok(Committed::Done { new_events, duplicates: batch.events.len() - new_events })
}

/// Counts `events` inside `tx`: keeps those whose (source, event_id) is
/// new, stores them, adds them to every rollup grain and notifies. Returns
/// how many were new. The one path by which events become numbers.
pub(crate) async fn write_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[Positioned],
) -> Result<usize, sqlx::Error> {
    let fresh = insert_new_keys(tx, events).await?;
    insert_events(tx, &fresh).await?;
    if fresh.is_empty() {
        return Ok(0);
    }
    let fresh_events: Vec<&UsageEvent> = fresh.iter().map(|p| &p.event).collect();
    let mut minute_rows = BTreeMap::new();
    for grain in Grain::ALL {
        let rows = rollup(fresh_events.iter().copied(), grain);
        upsert_rollup(tx, grain, &rows).await?;
        if grain == Grain::Minute {
            minute_rows = rows;
        }
    }
    // Last, so the sequence row stays locked only until the commit.
    let seq = notify::next_seq(tx).await?;
    notify::send(tx, &notify::payloads(seq, &minute_rows)).await?;
    Ok(fresh.len())
}

/// Inserts the (source, event_id) keys and returns the events whose key was
/// new: the database, not the batch, decides what has been seen before.
async fn insert_new_keys<'a>(
    tx: &mut Transaction<'_, Postgres>,
    events: &'a [Positioned],
) -> Result<Vec<&'a Positioned>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<&str> = events.iter().map(|p| p.event.source.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|p| p.event.event_id.as_str()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|p| p.event.occurred_at).collect();
    let inserted: Vec<(String, String)> = sqlx::query_as(
        r#"
        insert into event_keys (source, event_id, occurred_at)
        select * from unnest($1::text[], $2::text[], $3::timestamptz[])
        on conflict (source, event_id) do nothing
        returning source, event_id
        "#,
    )
    .bind(&sources)
    .bind(&ids)
    .bind(&times)
    .fetch_all(&mut **tx)
    .await?;
    let new: std::collections::HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(events.iter().filter(|p| new.contains(&(p.event.source.clone(), p.event.event_id.clone()))).collect())
}

async fn insert_events(tx: &mut Transaction<'_, Postgres>, events: &[&Positioned]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&UsageEvent) -> &str| events.iter().map(|p| f(&p.event)).collect::<Vec<&str>>();
    let times: Vec<DateTime<Utc>> = events.iter().map(|p| p.event.occurred_at).collect();
    let input: Vec<i64> = events.iter().map(|p| p.event.input_tokens as i64).collect();
    let output: Vec<i64> = events.iter().map(|p| p.event.output_tokens as i64).collect();
    let metadata: Vec<Option<serde_json::Value>> =
        events.iter().map(|p| p.event.metadata.clone().map(serde_json::Value::Object)).collect();
    let partitions: Vec<i32> = events.iter().map(|p| p.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|p| p.offset).collect();
    sqlx::query(
        r#"
        insert into usage_events (occurred_at, source, event_id, user_id, activity, model,
                                  input_tokens, output_tokens, metadata, kafka_partition, kafka_offset)
        select * from unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::int8[], $8::int8[], $9::jsonb[], $10::int4[], $11::int8[])
        on conflict do nothing
        "#,
    )
    .bind(&times)
    .bind(col(|e| &e.source))
    .bind(col(|e| &e.event_id))
    .bind(col(|e| &e.user_id))
    .bind(col(|e| &e.activity))
    .bind(col(|e| &e.model))
    .bind(&input)
    .bind(&output)
    .bind(&metadata)
    .bind(&partitions)
    .bind(&offsets)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds a batch's sums (`rows`, of `grain`) to that grain's rollup table.
async fn upsert_rollup(
    tx: &mut Transaction<'_, Postgres>,
    grain: Grain,
    rows: &BTreeMap<RollupKey, Sums>,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = rows.keys().map(|k| k.user_id.as_str()).collect();
    let buckets: Vec<DateTime<Utc>> = rows.keys().map(|k| k.bucket).collect();
    let activities: Vec<&str> = rows.keys().map(|k| k.activity.as_str()).collect();
    let models: Vec<&str> = rows.keys().map(|k| k.model.as_str()).collect();
    let input: Vec<i64> = rows.values().map(|s| s.input_tokens).collect();
    let output: Vec<i64> = rows.values().map(|s| s.output_tokens).collect();
    let counts: Vec<i64> = rows.values().map(|s| s.events).collect();
    // Dynamic only in the table name, which comes from a fixed enum.
    let sql = format!(
        r#"
        insert into {table} as t (user_id, bucket, activity, model, input_tokens, output_tokens, events)
        select * from unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[])
        on conflict (user_id, bucket, activity, model) do update
        set input_tokens = t.input_tokens + excluded.input_tokens,
            output_tokens = t.output_tokens + excluded.output_tokens,
            events = t.events + excluded.events
        "#,
        table = grain.table()
    );
    sqlx::query(&sql)
        .bind(&users)
        .bind(&buckets)
        .bind(&activities)
        .bind(&models)
        .bind(&input)
        .bind(&output)
        .bind(&counts)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    batch: &Batch,
) -> Result<(), sqlx::Error> {
    for d in &batch.dead {
        let headers: Vec<(String, String)> =
            d.record.headers.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect();
        sqlx::query(
            r#"
            insert into dead_letters (topic, partition, kafka_offset, record_key, payload, headers, error)
            values ($1, $2, $3, $4, $5, $6, $7)
            on conflict on constraint dead_letters_position do nothing
            "#,
        )
        .bind(topic)
        .bind(d.record.partition)
        .bind(d.record.offset)
        .bind(d.record.key.as_deref())
        .bind(d.record.payload.as_deref())
        .bind(sqlx::types::Json(&headers))
        .bind(&d.error)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
