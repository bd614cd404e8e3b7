//! Usage without instrumentation: the second use of the import. For a
//! connection with `as_usage` on, each mapped scope's daily usage becomes
//! raw events of the source and user `provider:<connection>` (a prefix no
//! publisher may use, so every view, breakdown and CSV shows it as
//! provider-reported), counted by the projector's own write path and
//! priced by the book like any event.
//!
//! Counted once: a (target, day) holds the provider's figures only while we
//! counted no event of our own for that target and day; once ours arrive the
//! provider's are taken out again. Revisions restate a day: its events are
//! replaced and the user's rollups of the day rebuilt in one transaction
//! (`tokenusage_projector::replace_day_events`). The reconciliation never
//! counts these events as ours.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, TimeDelta};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokenusage_contract::{Limits, PROVIDER_SOURCE_PREFIX, UsageEvent};

use crate::store;

/// The source (and user) a connection's usage is counted under.
pub fn source_of(connection: &str) -> String {
    format!("{PROVIDER_SOURCE_PREFIX}{connection}")
}

/// The activity of provider-reported events.
pub const ACTIVITY: &str = "provider-report";

/// The hour of its UTC day a daily bucket is placed at: the providers
/// report whole UTC days, and midday keeps the day's usage on the same date
/// in every zone from UTC-12 to UTC+11.
const PLACED_AT_HOUR: u32 = 12;

/// How far back each import re-checks the counted days, for our own
/// events that arrive late.
pub const RECHECK_DAYS: i64 = 31;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// Days whose provider-reported events were written or replaced.
    pub days_written: u64,
    /// Days whose provider-reported events were taken out (we counted our own, or the option is off).
    pub days_removed: u64,
    /// (target, day) pairs skipped because we counted events of our own there.
    pub covered_by_ours: u64,
    /// Provider rows that could not be events (a model name no event may carry): logged.
    pub refused_rows: u64,
}

#[derive(sqlx::FromRow)]
struct Row {
    day: NaiveDate,
    target_source: Option<String>,
    target_project: Option<String>,
    model: String,
    service_tier: String,
    input: i64,
    output: i64,
    cache_read: i64,
    cache_write: i64,
    cache_write_1h: i64,
    audio_input: i64,
    audio_output: i64,
    web_search: i64,
}

type Target = (Option<String>, Option<String>);

/// Brings the connection's provider-reported events for days `from .. to`
/// (exclusive) in line with its imported, mapped usage.
pub async fn sync(pool: &PgPool, connection: &str, from: NaiveDate, to: NaiveDate) -> Result<Outcome, sqlx::Error> {
    let (id, on): (i64, bool) = sqlx::query_as("select id, as_usage from provider_connections where name = $1")
        .bind(connection)
        .fetch_one(pool)
        .await?;
    let source = source_of(connection);
    let mut out = Outcome::default();
    let mut wanted: BTreeMap<NaiveDate, Vec<UsageEvent>> = BTreeMap::new();
    if on {
        let rows: Vec<Row> = sqlx::query_as(
            "select u.day, m.target_source, m.target_project, u.model, u.service_tier, \
                    sum(u.input_tokens)::int8 as input, sum(u.output_tokens)::int8 as output, \
                    sum(u.cache_read_tokens)::int8 as cache_read, \
                    sum(u.cache_write_tokens - u.cache_write_1h_tokens)::int8 as cache_write, \
                    sum(u.cache_write_1h_tokens)::int8 as cache_write_1h, \
                    sum(u.audio_input_tokens)::int8 as audio_input, sum(u.audio_output_tokens)::int8 as audio_output, \
                    sum(u.web_search_requests)::int8 as web_search \
             from provider_usage u \
             left join provider_mappings mk on mk.connection_id = u.connection_id and mk.kind = 'api_key' \
                   and u.api_key <> '' and mk.external_id = u.api_key \
             left join provider_mappings ms on ms.connection_id = u.connection_id and ms.kind = 'scope' \
                   and ms.external_id = coalesce(nullif(u.scope, ''), 'default') \
             cross join lateral (select \
                   case when mk.connection_id is not null then mk.target_source else ms.target_source end as target_source, \
                   case when mk.connection_id is not null then mk.target_project else ms.target_project end as target_project) m \
             where u.connection_id = $1 and u.day >= $2 and u.day < $3 \
               and (mk.connection_id is not null or ms.connection_id is not null) \
             group by 1, 2, 3, 4, 5 order by 1, 2, 3, 4, 5",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
        let ours = ours(pool, id, from, to).await?;
        let mut skipped: BTreeSet<(Target, NaiveDate)> = BTreeSet::new();
        for r in rows {
            let target = (r.target_source.clone(), r.target_project.clone());
            if ours.contains(&(target.clone(), r.day)) {
                skipped.insert((target, r.day));
                continue;
            }
            match events_of(&source, connection, &r) {
                Ok(es) => wanted.entry(r.day).or_default().extend(es),
                Err(why) => {
                    out.refused_rows += 1;
                    tracing::warn!(connection, day = %r.day, model = %r.model, %why,
                                   "a provider usage row cannot be counted as usage");
                }
            }
        }
        out.covered_by_ours = skipped.len() as u64;
    }
    let stored = stored(pool, &source, from, to).await?;
    let mut day = from;
    while day < to {
        let want = wanted.remove(&day).unwrap_or_default();
        let have = stored.get(&day);
        let same = match have {
            None => want.is_empty(),
            Some(h) => *h == want.iter().map(fingerprint).collect::<BTreeSet<_>>(),
        };
        if !same {
            let removing = want.is_empty();
            tokenusage_projector::replace_day_events(pool, &source, &source, day, want).await?;
            if removing { out.days_removed += 1 } else { out.days_written += 1 }
        }
        day += TimeDelta::days(1);
    }
    Ok(out)
}

/// The (target, day) pairs of this connection's targets where we counted
/// events of our own.
async fn ours(
    pool: &PgPool,
    id: i64,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<BTreeSet<(Target, NaiveDate)>, sqlx::Error> {
    let rows: Vec<(Option<String>, Option<String>, NaiveDate)> = sqlx::query_as(
        "with targets as (select distinct target_source, target_project from provider_mappings where connection_id = $1) \
         select t.target_source, t.target_project, (r.bucket at time zone 'UTC')::date \
         from usage_hour r join targets t \
           on (t.target_source is null or r.source = t.target_source) \
          and (t.target_project is null or r.project = t.target_project) \
         where r.bucket >= $2 and r.bucket < $3 and r.source not like $4 and r.events > 0 \
         group by 1, 2, 3",
    )
    .bind(id)
    .bind(from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    .bind(to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    .bind(format!("{PROVIDER_SOURCE_PREFIX}%"))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(s, p, d)| ((s, p), d)).collect())
}

/// What makes two provider-reported events the same: id, model, project
/// and every count (the native JSON without time, source and user).
fn fingerprint(e: &UsageEvent) -> String {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        for k in ["occurred_at", "source", "user_id", "metadata", "activity"] {
            o.remove(k);
        }
    }
    v.to_string()
}

/// The connection's stored provider-reported events per day, fingerprinted.
async fn stored(
    pool: &PgPool,
    source: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<BTreeMap<NaiveDate, BTreeSet<String>>, sqlx::Error> {
    type Stored = (NaiveDate, String, String, Option<String>, i64, i64, Option<Value>);
    let rows: Vec<Stored> = sqlx::query_as(
        "select (occurred_at at time zone 'UTC')::date, event_id, model, project, input_tokens, output_tokens, detail \
         from usage_events where source = $1 and occurred_at >= $2 and occurred_at < $3",
    )
    .bind(source)
    .bind(from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    .bind(to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    .fetch_all(pool)
    .await?;
    let mut out: BTreeMap<NaiveDate, BTreeSet<String>> = BTreeMap::new();
    for (day, event_id, model, project, input, output, detail) in rows {
        let mut v = detail.unwrap_or_else(|| json!({}));
        if let Some(o) = v.as_object_mut() {
            o.remove("cost");
            o.insert("event_id".into(), json!(event_id));
            o.insert("model".into(), json!(model));
            if let Some(p) = project {
                o.insert("project".into(), json!(p));
            }
            o.insert("input_tokens".into(), json!(input));
            o.insert("output_tokens".into(), json!(output));
        }
        // Read back through the event type so both sides serialize alike.
        let e: Option<UsageEvent> = serde_json::from_value(json!({
            "source": source, "user_id": source, "occurred_at": day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
            "activity": ACTIVITY,
        }))
        .ok()
        .and_then(|mut base: Value| {
            if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
                b.extend(o.clone());
            }
            serde_json::from_value(base).ok()
        });
        out.entry(day).or_default().insert(e.as_ref().map(fingerprint).unwrap_or_default());
    }
    Ok(out)
}

/// One provider row as events: one event, or several when a count is over
/// the contract's per-event bound (each kind split evenly, so every piece
/// keeps the subset rule). Validated like any published event.
fn events_of(source: &str, connection: &str, r: &Row) -> Result<Vec<UsageEvent>, String> {
    let input_parts = [r.cache_read, r.cache_write, r.cache_write_1h, r.audio_input];
    let plain_input = r.input - input_parts.iter().sum::<i64>();
    let plain_output = r.output - r.audio_output;
    if plain_input < 0 || plain_output < 0 || [r.input, r.output, r.web_search].iter().any(|n| *n < 0) {
        return Err("the row's token kinds are more than its totals".into());
    }
    let max = Limits::MAX_TOKENS as i64;
    let pieces = [r.input, r.output].iter().map(|n| (n + max - 1) / max).max().unwrap_or(1).max(1);
    let searches_max = Limits::MAX_REQUESTS as i64;
    let pieces = pieces.max((r.web_search + searches_max - 1) / searches_max);
    // Piece i of n of x: floor(x(i+1)/n) - floor(xi/n); the pieces sum to x.
    let part = |x: i64, i: i64| -> i64 {
        let (x, i, n) = (i128::from(x), i128::from(i), i128::from(pieces));
        (x * (i + 1) / n - x * i / n) as i64
    };
    let key = format!(
        "{}|{}|{}|{}|{}",
        r.day,
        r.target_source.as_deref().unwrap_or(""),
        r.target_project.as_deref().unwrap_or(""),
        r.model,
        r.service_tier
    );
    let digest = hex::encode(&Sha256::digest(key.as_bytes())[..12]);
    let at = r.day.and_hms_opt(PLACED_AT_HOUR, 0, 0).unwrap_or_default().and_utc();
    let mut out = Vec::with_capacity(pieces as usize);
    for i in 0..pieces {
        let kinds = [r.cache_read, r.cache_write, r.cache_write_1h, r.audio_input].map(|k| part(k, i));
        let mut v = json!({
            "event_id": format!("{}-{digest}-{i}", r.day),
            "user_id": source,
            "occurred_at": at.to_rfc3339(),
            "activity": ACTIVITY,
            "model": if r.model.is_empty() { "unspecified" } else { r.model.as_str() },
            "input_tokens": part(plain_input, i) + kinds.iter().sum::<i64>(),
            "output_tokens": part(plain_output, i) + part(r.audio_output, i),
            "cache_read_input_tokens": kinds[0],
            "cache_write_input_tokens": kinds[1],
            "cache_write_1h_input_tokens": kinds[2],
            "audio_input_tokens": kinds[3],
            "audio_output_tokens": part(r.audio_output, i),
            "web_search_requests": part(r.web_search, i),
            "metadata": {"reported_by": connection},
        });
        match tokenusage_contract::ServiceTier::parse(&r.service_tier) {
            Some(t) => v["service_tier"] = json!(t.name()),
            None if r.service_tier.is_empty() => {}
            // Counted at the standard price rather than not at all; the
            // reconciliation shows the tier's price difference.
            None => {
                tracing::warn!(connection, tier = %r.service_tier, "a service tier we do not know; priced as standard");
            }
        }
        if let Some(p) = &r.target_project {
            v["project"] = json!(p);
        }
        if let Some(s) = &r.target_source {
            v["metadata"]["reported_for_source"] = json!(s);
        }
        // The bucket's day may be today; no clock check applies to a report.
        let e = tokenusage_contract::parse_native_value(&v, source, at).map_err(|e| e.to_string())?;
        out.push(e);
    }
    Ok(out)
}

/// Turns the option on or off and brings every imported day in line.
pub async fn set(pool: &PgPool, connection: &str, on: bool) -> Result<Outcome, store::StoreError> {
    store::set_as_usage(pool, connection, on).await?;
    let c = store::get(pool, connection).await?;
    let to = c.imported_through.unwrap_or(c.import_from).max(c.import_from);
    // Whatever is stored, from the first day anything could be.
    let (first, last): (Option<NaiveDate>, Option<NaiveDate>) = sqlx::query_as(
        "with r as (select min(day) as lo, max(day) as hi from provider_usage where connection_id = $1 \
                    union all \
                    select min((occurred_at at time zone 'UTC')::date), max((occurred_at at time zone 'UTC')::date) \
                    from usage_events where source = $2) \
         select min(lo), max(hi) from r",
    )
    .bind(c.id)
    .bind(source_of(connection))
    .fetch_one(pool)
    .await?;
    let (Some(first), Some(last)) = (first, last) else { return Ok(Outcome::default()) };
    Ok(sync(pool, connection, first, last.max(to) + TimeDelta::days(1)).await?)
}

/// After a mapping of `connection` changed: if its usage is counted as
/// usage, the counted days follow the new mapping.
pub async fn after_mapping_change(pool: &PgPool, connection: &str) -> Result<Option<Outcome>, store::StoreError> {
    let c = store::get(pool, connection).await?;
    if !c.as_usage {
        return Ok(None);
    }
    set(pool, connection, true).await.map(Some)
}
