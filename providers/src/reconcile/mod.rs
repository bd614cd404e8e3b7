//! Reconciliation: per UTC day × provider connection × model × mapped
//! target, what we counted (tokens by kind, computed cost) beside what the
//! provider reported (tokens) and billed (cost), the differences, and the
//! reasons for a difference that can be named.
//!
//! Which of our events a provider row is compared with comes from the
//! mappings ([`crate::store::map`]): a provider project/workspace or API key
//! maps to a target (our source, our project, or both); an API key's
//! mapping wins over its scope's. Targets never overlap, so each of our
//! events is compared once. Our events under a target are set beside the
//! connection (of those mapped to the target) whose report names their
//! model in the range; events of a model no mapped provider reports are
//! rows of their own ("not in any provider's report").

use std::collections::{BTreeMap, BTreeSet};

mod csv;
mod rows;
pub use csv::{CSV_HEADER, csv_record, signed_nanos};
use rows::{BilledRow, OursRow, ReportedRow};

use chrono::{NaiveDate, TimeDelta};
use serde::Serialize;
use sqlx::PgPool;
use tokenusage_contract::money;

use crate::Provider;

/// A target: our source and/or project (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Target {
    pub source: Option<String>,
    pub project: Option<String>,
}

impl Target {
    pub fn label(&self) -> String {
        match (&self.source, &self.project) {
            (Some(s), Some(p)) => format!("source {s:?}, project {p:?}"),
            (Some(s), None) => format!("source {s:?}"),
            (None, Some(p)) => format!("project {p:?}"),
            (None, None) => "everything".into(),
        }
    }
}

/// Token counts by kind, as both ledgers have them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

impl Tokens {
    pub fn total(&self) -> i64 {
        self.input_tokens + self.output_tokens
    }

    pub(crate) fn add(&mut self, o: &Tokens) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
    }
}

/// What we counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counted {
    #[serde(flatten)]
    pub tokens: Tokens,
    pub events: i64,
    /// In the price book's currency.
    pub cost_nanos: i64,
    /// Tokens no price covered: our cost is a lower bound.
    pub unpriced_tokens: i64,
}

/// What the provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Reported {
    #[serde(flatten)]
    pub tokens: Tokens,
    pub requests: i64,
    /// Some of it was over 200k input tokens (a long-context price).
    pub long_context: bool,
    /// Some of it was batch, flex or priority (a tier price).
    pub other_tier: bool,
}

/// What the provider billed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Billed {
    pub amount_nanos: i64,
    pub currency: String,
}

/// A reason for a difference, as a code and in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The provider reports usage of a scope or key mapped to nothing of ours.
    Unmapped,
    /// The provider reports more tokens than we counted: events not published to us.
    NotPublished,
    /// We counted more than the provider reports: events published twice
    /// under different ids, or mapped to the wrong scope.
    CountedMore,
    /// Our events of a model no mapped provider's report names.
    NotReported,
    /// Some of our tokens had no price: our cost is a lower bound.
    UnpricedModel,
    /// Tokens agree; cost differs, and some usage was long-context or a
    /// batch/flex/priority tier: a tier price is missing or different.
    TierPrice,
    /// Tokens agree; cost differs: our price differs from the provider's.
    PriceDiffers,
    /// The provider reported usage and no cost for it (costs not imported
    /// yet, or only mapped by API key, which cost reports do not group by).
    NoCostReport,
    /// The bill is in another currency than our price book.
    CurrencyDiffers,
    /// The provider revised its figures for this day and model after first
    /// reporting them (the comparison uses the latest).
    Revised,
}

impl Reason {
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Unmapped => "the provider's scope or key is mapped to nothing of ours",
            Reason::NotPublished => "the provider reports more tokens than we counted: events were not published to us",
            Reason::CountedMore => "we counted more tokens than the provider reports (duplicates or a wrong mapping)",
            Reason::NotReported => "no mapped provider's report names this model",
            Reason::UnpricedModel => "some of our tokens have no price: our cost is a lower bound",
            Reason::TierPrice => "long-context or batch/flex/priority usage: a tier price is missing or differs",
            Reason::PriceDiffers => "tokens agree; our price differs from the provider's",
            Reason::NoCostReport => {
                "the provider reported no cost for this usage (not imported yet, or mapped by API key)"
            }
            Reason::CurrencyDiffers => "the bill is in another currency than our price book",
            Reason::Revised => "the provider revised these figures after first reporting them",
        }
    }
}

/// One line of the reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub day: NaiveDate,
    pub connection: Option<String>,
    pub provider: Option<Provider>,
    pub model: String,
    /// Our target; `None` for provider usage mapped to nothing.
    pub target: Option<Target>,
    /// For unmapped usage: the provider's scope (project, workspace) it is under.
    pub provider_scope: Option<String>,
    pub ours: Option<Counted>,
    pub reported: Option<Reported>,
    pub billed: Option<Billed>,
    /// Reported total tokens minus ours.
    pub token_difference: i64,
    /// Billed minus our cost, in nano-units, when both are known in one currency.
    pub cost_difference_nanos: Option<i64>,
    pub reasons: Vec<Reason>,
}

impl Line {
    /// Is a difference larger than `percent` of the provider's figure (any
    /// difference against a zero figure; unmapped usage always)?
    pub fn exceeds(&self, percent: rust_decimal::Decimal) -> bool {
        let over = |diff: i64, base: i64| past(diff, base, percent);
        let theirs = self.reported.map(|r| r.tokens.total()).unwrap_or(0);
        self.target.is_none()
            || over(self.token_difference, theirs)
            || self.cost_difference_nanos.zip(self.billed.as_ref()).is_some_and(|(d, b)| over(d, b.amount_nanos))
    }
}

/// Reads a tolerance: a percentage of the provider's figure, 0 to 100
/// (a trailing `%` allowed).
pub fn parse_tolerance(text: &str) -> Result<rust_decimal::Decimal, String> {
    let t = text.strip_suffix('%').unwrap_or(text);
    money::parse_decimal(t)
        .ok()
        .filter(|d| !d.is_sign_negative() && *d <= rust_decimal::Decimal::from(100))
        .ok_or_else(|| format!("a tolerance is 0 to 100 (percent), got {text:?}"))
}

/// Is `diff` more than `percent` of `base` (any difference against 0)?
pub fn past(diff: i64, base: i64, percent: rust_decimal::Decimal) -> bool {
    use rust_decimal::Decimal;
    if base == 0 {
        return diff != 0;
    }
    Decimal::from(diff.unsigned_abs()) * Decimal::from(100) > percent * Decimal::from(base.unsigned_abs())
}

/// The reconciliation of a range of days.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: NaiveDate,
    /// Exclusive.
    pub to: NaiveDate,
    /// Our price book's currency (our costs are in it).
    pub currency: String,
    pub lines: Vec<Line>,
    /// Each connection and the last day its reports were read whole up to (exclusive).
    pub imported_through: BTreeMap<String, Option<NaiveDate>>,
    /// The reasons that appear in `lines`, in words (for people and the dashboard).
    pub explanations: BTreeMap<Reason, &'static str>,
}

type Key = (Option<i64>, NaiveDate, String, Option<Target>, Option<String>);

#[derive(Default)]
struct Acc {
    ours: Option<Counted>,
    reported: Option<Reported>,
    billed: Option<Billed>,
    revised: bool,
}

/// The most days one reconciliation covers.
pub const MAX_DAYS: i64 = 400;

/// Reconciles days `from .. to` (exclusive).
pub async fn reconcile(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<Report, sqlx::Error> {
    let mut tx = pool.begin_with("begin isolation level repeatable read read only").await?;
    let currency: String = sqlx::query_scalar("select currency from price_book_state").fetch_one(&mut *tx).await?;
    let conns: Vec<(i64, String, String, Option<NaiveDate>)> =
        sqlx::query_as("select id, name, provider, imported_through from provider_connections order by name")
            .fetch_all(&mut *tx)
            .await?;
    let mut acc: BTreeMap<Key, Acc> = BTreeMap::new();

    // The provider's usage, each row under its mapping (a key's first).
    let reported: Vec<ReportedRow> = sqlx::query_as(
        "select u.connection_id, u.day, u.model, m.target_source, m.target_project, \
                case when m.connection_id is null then u.scope end as scope, \
                sum(u.input_tokens)::int8 as input, sum(u.output_tokens)::int8 as output, \
                sum(u.cache_read_tokens)::int8 as cache_read, sum(u.cache_write_tokens)::int8 as cache_write, \
                sum(u.requests)::int8 as requests, bool_or(u.context_window = '200k-1M') as long_context, \
                bool_or(u.service_tier not in ('', 'standard', 'default', 'auto')) as other_tier \
         from provider_usage u \
         left join provider_mappings mk on mk.connection_id = u.connection_id and mk.kind = 'api_key' \
               and u.api_key <> '' and mk.external_id = u.api_key \
         left join provider_mappings ms on ms.connection_id = u.connection_id and ms.kind = 'scope' \
               and ms.external_id = coalesce(nullif(u.scope, ''), 'default') \
         cross join lateral (select coalesce(mk.connection_id, ms.connection_id) as connection_id, \
               case when mk.connection_id is not null then mk.target_source else ms.target_source end as target_source, \
               case when mk.connection_id is not null then mk.target_project else ms.target_project end as target_project) m \
         where u.day >= $1 and u.day < $2 \
         group by 1, 2, 3, 4, 5, 6",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    // Which models each target's connections report, for placing our events.
    let mut reports: BTreeMap<(Target, String), BTreeSet<i64>> = BTreeMap::new();
    for r in reported {
        let target = r.target();
        if let Some(t) = &target {
            reports.entry((t.clone(), r.model.clone())).or_default().insert(r.connection_id);
        }
        let a = acc.entry((Some(r.connection_id), r.day, r.model.clone(), target, r.scope.clone())).or_default();
        let rep = a.reported.get_or_insert_with(Reported::default);
        rep.tokens.add(&Tokens {
            input_tokens: r.input,
            output_tokens: r.output,
            cache_read_tokens: r.cache_read,
            cache_write_tokens: r.cache_write,
        });
        rep.requests += r.requests;
        rep.long_context |= r.long_context;
        rep.other_tier |= r.other_tier;
    }

    // The bill, under scope mappings (cost reports have no API keys).
    let billed: Vec<BilledRow> = sqlx::query_as(
        "select c.connection_id, c.day, c.model, m.target_source, m.target_project, \
                case when m.connection_id is null then c.scope end as scope, c.currency, sum(c.amount_nanos)::int8 as amount \
         from provider_costs c \
         left join provider_mappings m on m.connection_id = c.connection_id and m.kind = 'scope' \
               and m.external_id = coalesce(nullif(c.scope, ''), 'default') \
         where c.day >= $1 and c.day < $2 \
         group by 1, 2, 3, 4, 5, 6, 7",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    for b in billed {
        let target = b.target();
        let a = acc.entry((Some(b.connection_id), b.day, b.model.clone(), target, b.scope.clone())).or_default();
        match &mut a.billed {
            Some(x) if x.currency == b.currency => x.amount_nanos += b.amount,
            Some(_) => {} // two currencies for one line: keep the first; CurrencyDiffers is named below
            None => a.billed = Some(Billed { amount_nanos: b.amount, currency: b.currency.clone() }),
        }
    }

    // What we counted under each target (never the provider's own usage
    // counted as usage, `as_usage`: that would reconcile with itself).
    let ours: Vec<OursRow> = sqlx::query_as(
        // Three equi-joins, one per target shape, so each is a hash join;
        // targets never overlap, so no row is taken twice.
        "with targets as (select distinct target_source, target_project from provider_mappings), \
         matched as ( \
           select t.target_source, t.target_project, r.* from usage_hour r \
             join targets t on t.target_source is null and r.project = t.target_project \
           union all \
           select t.target_source, t.target_project, r.* from usage_hour r \
             join targets t on t.target_project is null and r.source = t.target_source \
           union all \
           select t.target_source, t.target_project, r.* from usage_hour r \
             join targets t on r.source = t.target_source and r.project = t.target_project) \
         select r.target_source, r.target_project, (r.bucket at time zone 'UTC')::date as day, r.model, \
                sum(r.input_tokens)::int8 as input, sum(r.output_tokens)::int8 as output, \
                sum(r.cache_read_tokens)::int8 as cache_read, sum(r.cache_write_tokens)::int8 as cache_write, \
                sum(r.events)::int8 as events, sum(r.cost_nanos)::int8 as cost, sum(r.unpriced_tokens)::int8 as unpriced \
         from matched r \
         where r.bucket >= $1 and r.bucket < $2 and r.source not like 'provider:%' \
         group by 1, 2, 3, 4",
    )
    .bind(from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    .bind(to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
    .fetch_all(&mut *tx)
    .await?;
    for o in ours {
        let target = Target { source: o.target_source.clone(), project: o.target_project.clone() };
        let conn = reports.get(&(target.clone(), o.model.clone())).and_then(|s| s.iter().next().copied());
        let a = acc.entry((conn, o.day, o.model.clone(), Some(target), None)).or_default();
        let c = a.ours.get_or_insert_with(Counted::default);
        c.tokens.add(&Tokens {
            input_tokens: o.input,
            output_tokens: o.output,
            cache_read_tokens: o.cache_read,
            cache_write_tokens: o.cache_write,
        });
        c.events += o.events;
        c.cost_nanos += o.cost;
        c.unpriced_tokens += o.unpriced;
    }

    // Days and models the provider revised.
    let revised: Vec<(i64, NaiveDate, String)> = sqlx::query_as(
        "select distinct connection_id, day, model from provider_revisions where day >= $1 and day < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    let revised: BTreeSet<(i64, NaiveDate, String)> = revised.into_iter().collect();
    tx.commit().await?;

    let names: BTreeMap<i64, (String, Option<Provider>)> =
        conns.iter().map(|(id, n, p, _)| (*id, (n.clone(), Provider::parse(p)))).collect();
    let lines: Vec<Line> = acc
        .into_iter()
        .map(|((conn, day, model, target, scope), mut a)| {
            a.revised = conn.is_some_and(|c| revised.contains(&(c, day, model.clone())));
            line(conn.and_then(|c| names.get(&c)), day, model, target, scope, a, &currency)
        })
        .collect();
    let explanations = lines.iter().flat_map(|l| l.reasons.iter().map(|r| (*r, r.describe()))).collect();
    let imported_through = conns.into_iter().map(|(_, n, _, t)| (n, t)).collect();
    Ok(Report { from, to, currency, lines, imported_through, explanations })
}

fn line(
    conn: Option<&(String, Option<Provider>)>,
    day: NaiveDate,
    model: String,
    target: Option<Target>,
    provider_scope: Option<String>,
    a: Acc,
    currency: &str,
) -> Line {
    let ours_total = a.ours.map(|c| c.tokens.total()).unwrap_or(0);
    let theirs_total = a.reported.map(|r| r.tokens.total()).unwrap_or(0);
    let same_currency = a.billed.as_ref().is_none_or(|b| b.currency == currency);
    let cost_difference_nanos = match &a.billed {
        Some(b) if same_currency => Some(b.amount_nanos - a.ours.map(|c| c.cost_nanos).unwrap_or(0)),
        _ => None,
    };
    let mut reasons = BTreeSet::new();
    if target.is_none() {
        reasons.insert(Reason::Unmapped);
    } else if conn.is_none() {
        reasons.insert(Reason::NotReported);
    } else if theirs_total > ours_total {
        reasons.insert(Reason::NotPublished);
    } else if ours_total > theirs_total {
        reasons.insert(Reason::CountedMore);
    }
    if a.ours.is_some_and(|c| c.unpriced_tokens > 0) {
        reasons.insert(Reason::UnpricedModel);
    }
    if a.reported.is_some_and(|r| r.tokens.total() > 0) && a.billed.is_none() {
        reasons.insert(Reason::NoCostReport);
    }
    if !same_currency {
        reasons.insert(Reason::CurrencyDiffers);
    }
    if theirs_total == ours_total && theirs_total > 0 && cost_difference_nanos.is_some_and(|d| d != 0) {
        let tiered = a.reported.is_some_and(|r| r.long_context || r.other_tier);
        reasons.insert(if tiered { Reason::TierPrice } else { Reason::PriceDiffers });
    }
    if a.revised {
        reasons.insert(Reason::Revised);
    }
    Line {
        day,
        connection: conn.map(|c| c.0.clone()),
        provider: conn.and_then(|c| c.1),
        model,
        target,
        provider_scope,
        ours: a.ours,
        reported: a.reported,
        billed: a.billed,
        token_difference: theirs_total - ours_total,
        cost_difference_nanos,
        reasons: reasons.into_iter().collect(),
    }
}

/// Checks a range of days.
pub fn check_range(from: NaiveDate, to: NaiveDate) -> Result<(), String> {
    if to <= from {
        return Err(format!("`to` ({to}) must be after `from` ({from}); `to` is exclusive"));
    }
    if to - from > TimeDelta::days(MAX_DAYS) {
        return Err(format!("a reconciliation covers at most {MAX_DAYS} days"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
