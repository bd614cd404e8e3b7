//! Rebuilding rollups from the stored raw events (`tokenusage replay`) and
//! checking them against the raw events (`tokenusage verify`).
//!
//! Both work a day at a time. A replay day is one transaction holding the
//! rebuild lock exclusively; the projector takes the same lock shared for
//! each commit, so a rebuild never interleaves with live counting and the
//! rebuilt rows equal what live projection would have produced.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use tokenusage_schema::rows::MEASURES;
use tokenusage_schema::{Grain, notice};

/// The advisory lock id shared by rebuilds (exclusive) and commits (shared).
pub(crate) const REBUILD_LOCK: i64 = tokenusage_schema::locks::COUNTING;

/// How one grain's stored rollups differ from the raw events in a range.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Drift {
    pub grain: String,
    /// Rows whose sums differ.
    pub changed: u64,
    /// Rows the raw events imply but the rollup lacks.
    pub missing: u64,
    /// Rollup rows with no raw events behind them.
    pub extra: u64,
    /// Stored minus recomputed, summed over the range.
    pub input_tokens_delta: i64,
    pub output_tokens_delta: i64,
    pub events_delta: i64,
    /// Stored minus recomputed cost, in nano-units.
    pub cost_nanos_delta: i64,
    pub unpriced_tokens_delta: i64,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.changed == 0 && self.missing == 0 && self.extra == 0
    }

    fn add(&mut self, o: &Drift) {
        self.changed += o.changed;
        self.missing += o.missing;
        self.extra += o.extra;
        self.input_tokens_delta += o.input_tokens_delta;
        self.output_tokens_delta += o.output_tokens_delta;
        self.events_delta += o.events_delta;
        self.cost_nanos_delta += o.cost_nanos_delta;
        self.unpriced_tokens_delta += o.unpriced_tokens_delta;
    }
}

/// Widens `[from, to)` to whole hours, the coarsest grain, so every rebuilt
/// bucket is complete.
pub fn align(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let h = TimeDelta::hours(1);
    let from = from.duration_trunc(h).unwrap_or(from);
    let t = to.duration_trunc(h).unwrap_or(to);
    (from, if t < to { t + h } else { t })
}

/// Compares (and unless `dry_run`, rewrites) the rollups of one grain over
/// `[from, to)` inside `tx`.
async fn one_grain(
    tx: &mut Transaction<'_, Postgres>,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    user: Option<&str>,
    dry_run: bool,
) -> Result<Drift, sqlx::Error> {
    // Table and bucket expression come from a fixed enum, never from input.
    // The measures from raw events, in `MEASURES` order: the SQL twin of
    // `Sums::of` (a new measure needs its line here too).
    let recomputed = format!(
        r#"
        select user_id, {bucket} as bucket, activity, model, source, coalesce(project, '') as project,
               sum(input_tokens)::int8 as input_tokens, sum(output_tokens)::int8 as output_tokens, count(*)::int8 as events,
               coalesce(sum((detail->>'cache_read_input_tokens')::int8), 0)::int8 as cache_read_tokens,
               coalesce(sum(coalesce((detail->>'cache_write_input_tokens')::int8, 0)
                            + coalesce((detail->>'cache_write_1h_input_tokens')::int8, 0)), 0)::int8 as cache_write_tokens,
               coalesce(sum((detail->>'reasoning_output_tokens')::int8), 0)::int8 as reasoning_tokens,
               sum(cost_nanos)::int8 as cost_nanos, sum(unpriced_tokens)::int8 as unpriced_tokens,
               count(*) filter (where detail->'cost'->>'currency' = (select currency from price_book_state))::int8
                 as supplied_events
        from usage_events
        where occurred_at >= $1 and occurred_at < $2 and ($3::text is null or user_id = $3)
        group by 1, 2, 3, 4, 5, 6
        "#,
        bucket = grain.sql_floor("occurred_at")
    );
    let diff_sql = format!(
        r#"
        with r as ({recomputed}),
             s as (select * from {table} where bucket >= $1 and bucket < $2 and ($3::text is null or user_id = $3))
        select
          count(*) filter (where s.user_id is not null and r.user_id is not null
                           and ({stored}) <> ({recounted}))::int8,
          count(*) filter (where s.user_id is null)::int8,
          count(*) filter (where r.user_id is null)::int8,
          (coalesce(sum(s.input_tokens), 0) - coalesce(sum(r.input_tokens), 0))::int8,
          (coalesce(sum(s.output_tokens), 0) - coalesce(sum(r.output_tokens), 0))::int8,
          (coalesce(sum(s.events), 0) - coalesce(sum(r.events), 0))::int8,
          (coalesce(sum(s.cost_nanos), 0) - coalesce(sum(r.cost_nanos), 0))::int8,
          (coalesce(sum(s.unpriced_tokens), 0) - coalesce(sum(r.unpriced_tokens), 0))::int8
        from r full outer join s using (user_id, bucket, activity, model, source, project)
        "#,
        table = grain.table(),
        stored = MEASURES.map(|m| format!("s.{m}")).join(", "),
        recounted = MEASURES.map(|m| format!("r.{m}")).join(", "),
    );
    let (changed, missing, extra, di, dout, de, dc, du): (i64, i64, i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(&diff_sql).bind(from).bind(to).bind(user).fetch_one(&mut **tx).await?;
    let drift = Drift {
        grain: grain.table().to_owned(),
        changed: changed as u64,
        missing: missing as u64,
        extra: extra as u64,
        input_tokens_delta: di,
        output_tokens_delta: dout,
        events_delta: de,
        cost_nanos_delta: dc,
        unpriced_tokens_delta: du,
    };
    if !dry_run && !drift.is_clean() {
        let delete = format!(
            "delete from {table} where bucket >= $1 and bucket < $2 and ($3::text is null or user_id = $3)",
            table = grain.table()
        );
        sqlx::query(&delete).bind(from).bind(to).bind(user).execute(&mut **tx).await?;
        let insert = format!(
            "insert into {table} (user_id, bucket, activity, model, source, project, {columns}) {recomputed}",
            table = grain.table(),
            columns = MEASURES.join(", ")
        );
        sqlx::query(&insert).bind(from).bind(to).bind(user).execute(&mut **tx).await?;
    }
    Ok(drift)
}

/// `[from, to)` widened to whole hours ([`align`]) and cut into UTC days
/// (the last one may be shorter): the unit of work of replay and reprice.
fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let (mut start, to) = align(from, to);
    let mut out = Vec::new();
    while start < to {
        let end = (start + TimeDelta::days(1)).min(to);
        out.push((start, end));
        start = end;
    }
    out
}

/// One day's transaction, holding the rebuild lock exclusively.
async fn begin_day(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)").bind(REBUILD_LOCK).execute(&mut *tx).await?;
    Ok(tx)
}

/// Commits a day's work, or with `dry_run` throws it away.
async fn end_day(tx: Transaction<'_, Postgres>, dry_run: bool) -> Result<(), sqlx::Error> {
    if dry_run { tx.rollback().await } else { tx.commit().await }
}

/// Compares (and unless `dry_run`, rewrites) every grain over one day,
/// inside `tx`, which holds the rebuild lock. Live views are told to
/// re-read if anything was rewritten.
async fn rebuild_day(
    tx: &mut Transaction<'_, Postgres>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    user: Option<&str>,
    dry_run: bool,
) -> Result<Vec<Drift>, sqlx::Error> {
    let mut out = Vec::new();
    for g in Grain::ALL {
        out.push(one_grain(tx, g, start, end, user, dry_run).await?);
    }
    if !dry_run && out.iter().any(|d| !d.is_clean()) {
        // The day rows of this day no longer stand for its rollups: lower
        // the seals (of `user`, or everyone's) to it, and the sealer
        // rebuilds them; reads take the fine rollups meanwhile.
        // Locked first, as the counting transactions do (migration 0013,
        // `tokenusage_lower_day_seals`): a sealer building over this day
        // right now is waited for, and its raised seal lowered after it.
        sqlx::query(
            "select 1 from usage_day_seal where $1::text is null or user_id = $1 order by user_id for no key update",
        )
        .bind(user)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "update usage_day_seal set sealed_through = ($1 at time zone 'UTC')::date \
             where sealed_through > ($1 at time zone 'UTC')::date and ($2::text is null or user_id = $2)",
        )
        .bind(start)
        .bind(user)
        .execute(&mut **tx)
        .await?;
        // Rewritten rows have no increments to send: live views re-read.
        notice::send(tx, &[notice::everyone()]).await?;
    }
    Ok(out)
}

/// Rewrites `user`'s rollups of one UTC day from the raw events, inside
/// `tx`, which holds the rebuild lock.
pub(crate) async fn rebuild_user_day(
    tx: &mut Transaction<'_, Postgres>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    user: &str,
) -> Result<(), sqlx::Error> {
    rebuild_day(tx, start, end, Some(user), false).await.map(drop)
}

/// Replays (or with `dry_run`, only compares) `[from, to)` a day at a time,
/// calling `progress(days_done, days_total)` after each day. Returns the
/// drift found per grain, summed over the range; after a real replay the
/// rollups equal the raw events, so running it again finds no drift.
pub async fn replay(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    user: Option<&str>,
    dry_run: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<Drift>, sqlx::Error> {
    let mut totals: Vec<Drift> =
        Grain::ALL.iter().map(|g| Drift { grain: g.table().to_owned(), ..Drift::default() }).collect();
    let days = days(from, to);
    for (done, &(start, end)) in days.iter().enumerate() {
        let mut tx = begin_day(pool).await?;
        for (i, d) in rebuild_day(&mut tx, start, end, user, dry_run).await?.iter().enumerate() {
            totals[i].add(d);
        }
        end_day(tx, dry_run).await?;
        progress(done as u64 + 1, days.len() as u64);
    }
    Ok(totals)
}

/// The span of stored raw events, for `verify` without a range.
pub async fn raw_span(pool: &PgPool) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let r: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("select min(occurred_at), max(occurred_at) from usage_events").fetch_one(pool).await?;
    Ok(r.0.zip(r.1).map(|(a, b)| (a, b + TimeDelta::seconds(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cut_into_utc_days_after_widening() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            days(t("2026-11-20T10:15:00Z"), t("2026-11-22T01:30:00Z")),
            vec![
                (t("2026-11-20T10:00:00Z"), t("2026-11-21T10:00:00Z")),
                (t("2026-11-21T10:00:00Z"), t("2026-11-22T02:00:00Z")),
            ]
        );
    }

    #[test]
    fn ranges_widen_to_whole_hours() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            align(t("2026-11-20T10:15:00Z"), t("2026-11-20T12:00:00Z")),
            (t("2026-11-20T10:00:00Z"), t("2026-11-20T12:00:00Z"))
        );
        assert_eq!(
            align(t("2026-11-20T10:00:00Z"), t("2026-11-20T12:00:01Z")),
            (t("2026-11-20T10:00:00Z"), t("2026-11-20T13:00:00Z"))
        );
    }
}

/// How re-pricing changed one model's cost on one UTC day.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PriceChange {
    pub day: chrono::NaiveDate,
    pub model: String,
    /// Events whose charge changed.
    pub events: i64,
    pub cost_nanos_before: i64,
    pub cost_nanos_after: i64,
    pub unpriced_tokens_before: i64,
    pub unpriced_tokens_after: i64,
}

/// Prices the stored raw events of `[from, to)` (optionally of one model)
/// again with the price book as it is now, a day at a time; unless
/// `dry_run`, stores the new charges and rebuilds that day's rollups from
/// them in the same transaction (under the rebuild lock, so live counting
/// never interleaves; live views re-read). Idempotent: a second run finds
/// nothing to change. Returns the changes per day and model.
pub async fn reprice(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    model: Option<&str>,
    dry_run: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<PriceChange>, sqlx::Error> {
    let mut book = crate::prices::current(pool).await?;
    let mut changes = Vec::new();
    let days = days(from, to);
    for (done, &(start, end)) in days.iter().enumerate() {
        let mut tx = begin_day(pool).await?;
        // The exclusive counting lock keeps the book as it is until this
        // day commits (a book change takes the same lock).
        let (version,): (i64,) = sqlx::query_as("select version from price_book_state").fetch_one(&mut *tx).await?;
        if version != book.version {
            book = crate::prices::reload(pool).await?;
        }
        let day = reprice_day(&mut tx, &book, start, end, model, dry_run).await?;
        if !dry_run && !day.is_empty() {
            rebuild_day(&mut tx, start, end, None, false).await?;
        }
        changes.extend(day);
        end_day(tx, dry_run).await?;
        progress(done as u64 + 1, days.len() as u64);
    }
    Ok(changes)
}

type RawRow = (DateTime<Utc>, String, String, String, i64, i64, Option<serde_json::Value>, i64, i64);

async fn reprice_day(
    tx: &mut Transaction<'_, Postgres>,
    book: &tokenusage_pricing::Book,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    model: Option<&str>,
    dry_run: bool,
) -> Result<Vec<PriceChange>, sqlx::Error> {
    let rows: Vec<RawRow> = sqlx::query_as(
        "select occurred_at, source, event_id, model, input_tokens, output_tokens, detail, cost_nanos, unpriced_tokens \
         from usage_events where occurred_at >= $1 and occurred_at < $2 and ($3::text is null or model = $3)",
    )
    .bind(start)
    .bind(end)
    .bind(model)
    .fetch_all(&mut **tx)
    .await?;
    let mut by_model: std::collections::BTreeMap<String, PriceChange> = Default::default();
    let (mut times, mut sources, mut ids, mut costs, mut unpriced) = (vec![], vec![], vec![], vec![], vec![]);
    for (at, source, event_id, m, input, output, detail, cost, unp) in rows {
        let event = stored_event(at, &m, input, output, detail.as_ref());
        let c = book.charge(&event);
        if (c.cost_nanos, c.unpriced_tokens) == (cost, unp) {
            continue;
        }
        let ch = by_model.entry(m.clone()).or_insert_with(|| PriceChange {
            day: start.date_naive(),
            model: m,
            events: 0,
            cost_nanos_before: 0,
            cost_nanos_after: 0,
            unpriced_tokens_before: 0,
            unpriced_tokens_after: 0,
        });
        ch.events += 1;
        ch.cost_nanos_before += cost;
        ch.cost_nanos_after += c.cost_nanos;
        ch.unpriced_tokens_before += unp;
        ch.unpriced_tokens_after += c.unpriced_tokens;
        times.push(at);
        sources.push(source);
        ids.push(event_id);
        costs.push(c.cost_nanos);
        unpriced.push(c.unpriced_tokens);
    }
    if !dry_run && !times.is_empty() {
        sqlx::query(
            "update usage_events as e set cost_nanos = c.cost, unpriced_tokens = c.unpriced \
             from unnest($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::int8[]) as c(at, source, event_id, cost, unpriced) \
             where e.occurred_at = c.at and e.source = c.source and e.event_id = c.event_id",
        )
        .bind(&times)
        .bind(&sources)
        .bind(&ids)
        .bind(&costs)
        .bind(&unpriced)
        .execute(&mut **tx)
        .await?;
    }
    Ok(by_model.into_values().collect())
}

/// The parts of a stored raw event that pricing reads, as an event.
fn stored_event(
    at: DateTime<Utc>,
    model: &str,
    input: i64,
    output: i64,
    detail: Option<&serde_json::Value>,
) -> tokenusage_contract::UsageEvent {
    let kinds = detail.and_then(|d| serde_json::from_value(d.clone()).ok()).unwrap_or_default();
    let billing = detail.and_then(|d| serde_json::from_value(d.clone()).ok()).unwrap_or_default();
    let cost = detail.and_then(|d| d.get("cost")).and_then(|c| serde_json::from_value(c.clone()).ok());
    tokenusage_contract::UsageEvent {
        source: String::new(),
        event_id: String::new(),
        user_id: String::new(),
        occurred_at: at,
        activity: String::new(),
        model: model.to_owned(),
        input_tokens: input.max(0) as u64,
        output_tokens: output.max(0) as u64,
        kinds,
        billing,
        cost,
        project: None,
        metadata: None,
    }
}
