//! Writing one batch to PostgreSQL in one transaction: offsets (fenced by
//! epoch), dead letters, de-duplication keys, raw events, rollups, and the
//! post-commit notification; and isolating the events the database refuses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tokenusage_contract::UsageEvent;

use tokenusage_plumbing::failure::{self, Failure};

use tokenusage_pricing::Book;
use tokenusage_schema::dead_letters::NewDeadLetter;
use tokenusage_schema::rows::{RollupKey, Sums, fold};
use tokenusage_schema::{Grain, notice};

use crate::batch::{Batch, DeadLetter, Positioned};
use crate::metrics::Tally;

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
    /// Rows written: new events, duplicates skipped by the database, and
    /// the events the database refused, which went to the dead letters
    /// instead (with its message).
    Done { new_events: Tally, duplicates: usize, isolated: Vec<DeadLetter> },
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

/// Forgets where `group` is in each partition of `topic`, for a log that
/// was replaced by a new, empty one (the embedded broker starts empty every
/// run): offsets stored for the old log point past the end of the new one,
/// and every new record below them would be taken as already counted. The
/// epochs stay, so a fenced projector stays fenced; events already counted
/// stay counted, and their keys de-duplicate any replay. Returns how many
/// partitions had a position.
pub async fn forget_positions(pool: &PgPool, group: &str, topic: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "update projector_offsets set next_offset = -1, updated_at = now() \
         where consumer_group = $1 and topic = $2 and next_offset >= 0",
    )
    .bind(group)
    .bind(topic)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Writes `batch` atomically, in five round trips whatever its size: begin
/// (with the rebuild lock), offsets, de-duplication keys, one call for
/// everything else (migration 0009), commit. Dead letters, when there are
/// any, add one each. `epochs` holds our claim on each partition.
///
/// If the database refuses the rows themselves (a data error, see
/// `plumbing::failure`), the batch is written again with the refused
/// events isolated: they become dead letters carrying the database's
/// message, everything else is counted, and the offsets move on. A
/// deterministic failure can therefore never stall a partition; only a
/// transient one is returned, for the caller to retry.
pub(crate) async fn commit(
    pool: &PgPool,
    who: &Claimant,
    epochs: &BTreeMap<i32, i64>,
    batch: &Batch,
) -> Result<Committed, sqlx::Error> {
    let mut book = crate::prices::current(pool).await?;
    let mut isolation = Isolation::Off;
    let mut stale = 0;
    loop {
        match commit_with(pool, who, epochs, batch, isolation, &book).await {
            // The price book changed since it was loaded: price again with
            // the new one (bounded: a book changing faster than commits is
            // an error worth surfacing as a transient failure).
            Err(e) if is_stale_book(&e) && stale < MAX_STALE_RETRIES => {
                stale += 1;
                book = crate::prices::reload(pool).await?;
            }
            Err(e) if Failure::of(&e) == Failure::Data && isolation == Isolation::Off => {
                tracing::warn!(
                    error = %failure::describe(&e),
                    records = batch.records,
                    "the database refused part of a batch; isolating the refused events"
                );
                isolation = Isolation::On;
            }
            other => return other,
        }
    }
}

/// How often one write re-prices for a book that changed under it.
pub(crate) const MAX_STALE_RETRIES: u32 = 8;

pub(crate) use tokenusage_pricing::store::is_stale_book;

/// Whether events are written in savepoints, bisecting to find the ones
/// the database refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    Off,
    On,
}

async fn commit_with(
    pool: &PgPool,
    who: &Claimant,
    epochs: &BTreeMap<i32, i64>,
    batch: &Batch,
    isolation: Isolation,
    book: &Book,
) -> Result<Committed, sqlx::Error> {
    // Shared with other commits, exclusive against a replay rebuilding
    // rollups. Sent with BEGIN as one simple query: the id is a constant.
    let begin = format!("begin; select pg_advisory_xact_lock_shared({})", crate::rebuild::REBUILD_LOCK);
    let mut tx = pool.begin_with(begin).await?;

    let claimed: Vec<(i32, i64, i64)> = batch
        .next_offsets
        .iter()
        .filter_map(|(&partition, &next)| epochs.get(&partition).map(|&epoch| (partition, next, epoch)))
        .collect();
    let updated: Vec<i32> = sqlx::query_scalar(
        r#"
        update projector_offsets as o set next_offset = c.next_offset, updated_at = now()
        from unnest($3::int4[], $4::int8[], $5::int8[]) as c(partition, next_offset, epoch)
        where o.consumer_group = $1 and o.topic = $2 and o.partition = c.partition and o.epoch = c.epoch
        returning o.partition
        "#,
    )
    .bind(&who.group)
    .bind(&who.topic)
    .bind(claimed.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind(claimed.iter().map(|c| c.1).collect::<Vec<_>>())
    .bind(claimed.iter().map(|c| c.2).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    // Not ours any more: no epoch held, or someone claimed it since.
    let fenced: Vec<i32> = batch.next_offsets.keys().copied().filter(|p| !updated.contains(p)).collect();
    if !fenced.is_empty() {
        tx.rollback().await?;
        return Ok(Committed::Fenced(fenced));
    }

    insert_dead_letters(&mut tx, &who.topic, &batch.dead).await?;
    let lost: Vec<(i32, i64, i64)> = batch.lost.iter().map(|l| (l.partition, l.from, l.to)).collect();
    tokenusage_schema::lost::record(&mut tx, &who.group, &who.topic, &lost).await?;
    let (new_events, isolated) = match isolation {
        Isolation::Off => (write_events(&mut tx, book, &batch.events).await?, Vec::new()),
        Isolation::On => {
            let (n, refused) = write_isolating(&mut tx, book, &batch.events).await?;
            let dead: Vec<DeadLetter> =
                refused.into_iter().map(|(p, error)| DeadLetter { record: p.as_record(), error }).collect();
            insert_dead_letters(&mut tx, &who.topic, &dead).await?;
            (n, dead)
        }
    };
    tx.commit().await?;
    let duplicates = batch.events.len() - new_events.events() - isolated.len();
    Ok(Committed::Done { new_events, duplicates, isolated })
}

/// Counts `events` in savepoints, halving any group the database refuses
/// with a data error until the refused events are found alone. Returns how
/// many events were new and the refused ones with the database's message.
/// For k refused events among n this costs about 2k·log2(n) savepoints;
/// transient errors end it (the whole transaction is retried).
async fn write_isolating<'a>(
    tx: &mut Transaction<'_, Postgres>,
    book: &Book,
    events: &'a [Positioned],
) -> Result<(Tally, Vec<(&'a Positioned, String)>), sqlx::Error> {
    use sqlx::Acquire;
    let mut counted = Tally::default();
    let mut refused = Vec::new();
    let mut todo: Vec<&'a [Positioned]> = vec![events];
    while let Some(group) = todo.pop() {
        if group.is_empty() {
            continue;
        }
        let mut savepoint = Acquire::begin(&mut **tx).await?;
        match write_events(&mut savepoint, book, group).await {
            Ok(n) => {
                savepoint.commit().await?;
                counted.merge(n);
            }
            Err(e) if Failure::of(&e) == Failure::Data => {
                savepoint.rollback().await?;
                if let [alone] = group {
                    refused.push((alone, failure::describe(&e)));
                } else {
                    let (a, b) = group.split_at(group.len() / 2);
                    todo.push(b);
                    todo.push(a);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((counted, refused))
}

/// Counts `events` inside `tx`: keeps those whose (source, event_id) is
/// new, prices them with `book` at their event time, stores them, adds them
/// to every rollup grain and notifies. Returns the new ones' tally (for the
/// usage counters, once `tx` commits). The one path by which events become
/// numbers. Fails with SQLSTATE TU001 ([`is_stale_book`]) if the book in
/// the database is no longer `book`'s version: price again and retry.
pub(crate) async fn write_events(
    tx: &mut Transaction<'_, Postgres>,
    book: &Book,
    events: &[Positioned],
) -> Result<Tally, sqlx::Error> {
    let fresh = insert_new_keys(tx, events).await?;
    if fresh.is_empty() {
        return Ok(Tally::default());
    }
    let priced: Vec<(&UsageEvent, Sums)> = fresh
        .iter()
        .map(|p| {
            let c = book.charge(&p.event);
            (&p.event, Sums::of(&p.event, c.cost_nanos, c.unpriced_tokens, c.supplied))
        })
        .collect();
    let grains = Grain::ALL.map(|grain| (grain, fold(priced.iter().map(|(e, s)| (*e, *s)), grain)));
    let mut rollups = RollupColumns::default();
    for (grain, rows) in &grains {
        rollups.extend(*grain, rows);
    }
    // Live views apply the minute increments; coarser buckets are their sums.
    let bodies =
        grains.iter().find(|(g, _)| *g == Grain::Minute).map(|(_, rows)| notice::bodies(rows)).unwrap_or_default();
    count_fresh(tx, book.version, &fresh, &priced, &rollups, &bodies).await?;
    Ok(Tally::of(priced))
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

/// Rollup rows of every grain as columns, each row tagged with its table.
#[derive(Default)]
struct RollupColumns<'a> {
    table: Vec<&'static str>,
    user: Vec<&'a str>,
    bucket: Vec<DateTime<Utc>>,
    activity: Vec<&'a str>,
    model: Vec<&'a str>,
    source: Vec<&'a str>,
    project: Vec<&'a str>,
    /// The sums, column by column in [`Sums::to_array`] order.
    sums: [Vec<i64>; Sums::WIDTH],
}

impl<'a> RollupColumns<'a> {
    fn extend(&mut self, grain: Grain, rows: &'a BTreeMap<RollupKey, Sums>) {
        for (k, s) in rows {
            self.table.push(grain.table());
            self.user.push(&k.user_id);
            self.bucket.push(k.bucket);
            self.activity.push(&k.activity);
            self.model.push(&k.model);
            self.source.push(&k.source);
            self.project.push(&k.project);
            for (col, v) in self.sums.iter_mut().zip(s.to_array()) {
                col.push(v);
            }
        }
    }
}

/// Stores the new events, adds the rollup rows and sends the notification
/// bodies, in one call (`tokenusage_count_events_v4`, migration 0013).
async fn count_fresh(
    tx: &mut Transaction<'_, Postgres>,
    book_version: i64,
    events: &[&Positioned],
    priced: &[(&UsageEvent, Sums)],
    rollups: &RollupColumns<'_>,
    bodies: &[String],
) -> Result<(), sqlx::Error> {
    let col = |f: fn(&UsageEvent) -> &str| events.iter().map(|p| f(&p.event)).collect::<Vec<&str>>();
    let times: Vec<DateTime<Utc>> = events.iter().map(|p| p.event.occurred_at).collect();
    let input: Vec<i64> = events.iter().map(|p| p.event.input_tokens as i64).collect();
    let output: Vec<i64> = events.iter().map(|p| p.event.output_tokens as i64).collect();
    let metadata: Vec<Option<serde_json::Value>> =
        events.iter().map(|p| p.event.metadata.clone().map(serde_json::Value::Object)).collect();
    let partitions: Vec<i32> = events.iter().map(|p| p.partition).collect();
    let offsets: Vec<i64> = events.iter().map(|p| p.offset).collect();
    let detail: Vec<Option<serde_json::Value>> = events.iter().map(|p| detail_of(&p.event)).collect();
    let cost: Vec<i64> = priced.iter().map(|(_, s)| s.cost_nanos).collect();
    let unpriced: Vec<i64> = priced.iter().map(|(_, s)| s.unpriced_tokens).collect();
    let [r_input, r_output, r_events, r_cache_read, r_cache_write, r_reasoning, r_cost, r_unpriced, r_supplied] =
        &rollups.sums;
    sqlx::query(
        r#"
        select tokenusage_count_events_v4($1,
            $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::int8[], $10::int8[], $11::jsonb[], $12::int4[], $13::int8[], $14::jsonb[], $15::int8[], $16::int8[],
            $17::text[], $18::text[], $19::timestamptz[], $20::text[], $21::text[], $22::text[], $23::text[],
            $24::int8[], $25::int8[], $26::int8[],
            $27::int8[], $28::int8[], $29::int8[], $30::int8[], $31::int8[], $32::int8[],
            $33, $34::text[])
        "#,
    )
    .bind(book_version)
    .bind(&times)
    .bind(col(|e| &e.source))
    .bind(col(|e| &e.event_id))
    .bind(col(|e| &e.user_id))
    .bind(col(|e| &e.activity))
    .bind(col(|e| &e.model))
    .bind(events.iter().map(|p| p.event.project.as_deref()).collect::<Vec<Option<&str>>>())
    .bind(&input)
    .bind(&output)
    .bind(&metadata)
    .bind(&partitions)
    .bind(&offsets)
    .bind(&detail)
    .bind(&cost)
    .bind(&unpriced)
    .bind(&rollups.table)
    .bind(&rollups.user)
    .bind(&rollups.bucket)
    .bind(&rollups.activity)
    .bind(&rollups.model)
    .bind(&rollups.source)
    .bind(&rollups.project)
    .bind(r_input)
    .bind(r_output)
    .bind(r_events)
    .bind(r_cache_read)
    .bind(r_cache_write)
    .bind(r_reasoning)
    .bind(r_cost)
    .bind(r_unpriced)
    .bind(r_supplied)
    .bind(notice::NOTIFY_CHANNEL)
    .bind(bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a raw event keeps of contract v2 (`usage_events.detail`): the
/// kinds present, the service tier and web searches, and the supplied
/// cost, as in the native JSON, so `reprice` can price it again. `None`
/// for a v1 event.
pub(crate) fn detail_of(e: &UsageEvent) -> Option<serde_json::Value> {
    if e.kinds == tokenusage_contract::TokenKinds::default() && e.billing.is_empty() && e.cost.is_none() {
        return None;
    }
    let mut v = serde_json::to_value(e.kinds).ok()?;
    let obj = v.as_object_mut()?;
    if let Ok(serde_json::Value::Object(billing)) = serde_json::to_value(e.billing) {
        obj.extend(billing);
    }
    if let Some(c) = &e.cost {
        obj.insert("cost".into(), serde_json::to_value(c).ok()?);
    }
    Some(v)
}

/// Stores dead letters (`schema::dead_letters::insert`: total by
/// construction, so isolating refused events can always finish).
async fn insert_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    dead: &[DeadLetter],
) -> Result<(), sqlx::Error> {
    let rows: Vec<NewDeadLetter<'_>> = dead
        .iter()
        .map(|d| NewDeadLetter {
            partition: d.record.partition,
            offset: d.record.offset,
            key: d.record.key.as_deref(),
            payload: d.record.payload.as_deref(),
            headers: &d.record.headers,
            error: &d.error,
        })
        .collect();
    tokenusage_schema::dead_letters::insert(tx, topic, &rows).await
}
