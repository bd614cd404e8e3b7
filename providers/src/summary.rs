//! The reconciliation a day at a time: per UTC day and connection, the
//! provider's tokens and bill beside what we counted for everything mapped
//! to it: the first answer for long ranges (a year is 365 rows per
//! connection, where the lines are one per day, model and scope), with the
//! lines of a chosen day one request away.
//!
//! Fast because neither side reads its finest rows: the provider's side
//! comes from the day sums kept with the reports (migration 0020), ours
//! from the day rows below each user's seal and the hourly rollups above it
//! (the rule every history view uses; exact, see migration 0013).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;
use tokenusage_contract::PROVIDER_SOURCE_PREFIX;

use crate::Provider;
use crate::reconcile::{Counted, Reason, Tokens};

/// One connection's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    pub day: NaiveDate,
    pub connection: String,
    pub provider: Option<Provider>,
    /// Everything the provider reported for the day, mapped or not.
    pub reported: Tokens,
    /// The part of `reported` under scopes and keys mapped to nothing.
    pub unmapped_tokens: i64,
    /// What we counted for the connection's targets.
    pub ours: Counted,
    /// The bill in our price book's currency, if the provider reported one.
    pub billed_nanos: Option<i64>,
    /// Reported total tokens minus ours.
    pub token_difference: i64,
    /// Billed minus our cost, when there is a bill in our currency.
    pub cost_difference_nanos: Option<i64>,
    pub reasons: Vec<Reason>,
}

impl Day {
    /// Is a difference larger than `percent` of the provider's figure (any
    /// difference against zero; unmapped usage always)?
    pub fn exceeds(&self, percent: rust_decimal::Decimal) -> bool {
        let over = |diff: i64, base: i64| crate::reconcile::past(diff, base, percent);
        self.unmapped_tokens > 0
            || over(self.token_difference, self.reported.total())
            || self.cost_difference_nanos.zip(self.billed_nanos).is_some_and(|(d, b)| over(d, b))
    }
}

/// The day summary of a range.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub from: NaiveDate,
    /// Exclusive.
    pub to: NaiveDate,
    pub currency: String,
    pub days: Vec<Day>,
    pub imported_through: BTreeMap<String, Option<NaiveDate>>,
    pub explanations: BTreeMap<Reason, &'static str>,
}

type Target = (Option<String>, Option<String>);

#[derive(Default)]
struct Acc {
    reported: Tokens,
    unmapped: i64,
    tiered: bool,
    ours: Counted,
    billed: Option<i64>,
    other_currency: bool,
    revised: bool,
}

/// The day summary of days `from .. to` (exclusive). The two ledgers are
/// read at once, each in a snapshot of its own on a connection of its own:
/// they are independent, and on two cores this halves the wait.
pub async fn summary(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<Summary, sqlx::Error> {
    let ((currency, conns, mut acc, owners), counted) = tokio::try_join!(theirs(pool, from, to), ours(pool, from, to))?;
    // Each target is ours for the first connection mapping it.
    let owner: BTreeMap<Target, i64> = owners.into_iter().map(|(s, p, c)| ((s, p), c)).collect();
    for (target, day, counted) in counted {
        let Some(conn) = owner.get(&target) else { continue };
        let c = &mut acc.entry((day, *conn)).or_default().ours;
        c.tokens.add(&counted.tokens);
        c.events += counted.events;
        c.cost_nanos += counted.cost_nanos;
        c.unpriced_tokens += counted.unpriced_tokens;
    }
    let names: BTreeMap<i64, (String, Option<Provider>)> =
        conns.iter().map(|(id, n, p, _)| (*id, (n.clone(), Provider::parse(p)))).collect();
    let days: Vec<Day> =
        acc.into_iter().filter_map(|((day, conn), a)| names.get(&conn).map(|(n, p)| day_of(day, n, *p, a))).collect();
    let explanations = days.iter().flat_map(|d| d.reasons.iter().map(|r| (*r, r.describe()))).collect();
    let imported_through = conns.into_iter().map(|(_, n, _, t)| (n, t)).collect();
    Ok(Summary { from, to, currency, days, imported_through, explanations })
}

type Conn = (i64, String, String, Option<NaiveDate>);
type Owner = (Option<String>, Option<String>, i64);
type Theirs = (String, Vec<Conn>, BTreeMap<(NaiveDate, i64), Acc>, Vec<Owner>);

/// The providers' side per day and connection, and each target's owner
/// (the first connection mapping it), in one snapshot.
async fn theirs(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<Theirs, sqlx::Error> {
    let mut tx = pool.begin_with("begin isolation level repeatable read read only").await?;
    // Every grouping below has tens of thousands of groups that the
    // planner, from row estimates of joins through the mappings, takes for
    // a hundred: sorting them by text (collation) was half of the time.
    sqlx::query("set local enable_sort = off").execute(&mut *tx).await?;
    let currency: String = sqlx::query_scalar("select currency from price_book_state").fetch_one(&mut *tx).await?;
    let conns: Vec<(i64, String, String, Option<NaiveDate>)> =
        sqlx::query_as("select id, name, provider, imported_through from provider_connections order by name")
            .fetch_all(&mut *tx)
            .await?;
    let mut acc: BTreeMap<(NaiveDate, i64), Acc> = BTreeMap::new();

    // The provider's day sums, mapped (a key's mapping first) or not.
    type UsageDay = (i64, NaiveDate, bool, i64, i64, i64, i64, bool);
    let usage: Vec<UsageDay> = sqlx::query_as(
        "select u.connection_id, u.day, (mk.connection_id is null and ms.connection_id is null) as unmapped, \
                tokenusage_sum(u.input_tokens), tokenusage_sum(u.output_tokens), tokenusage_sum(u.cache_read_tokens), \
                tokenusage_sum(u.cache_write_tokens), bool_or(u.tiered) \
         from provider_usage_days u \
         left join provider_mappings mk on mk.connection_id = u.connection_id and mk.kind = 'api_key' \
               and u.api_key <> '' and mk.external_id = u.api_key \
         left join provider_mappings ms on ms.connection_id = u.connection_id and ms.kind = 'scope' \
               and ms.external_id = coalesce(nullif(u.scope, ''), 'default') \
         where u.day >= $1 and u.day < $2 \
         group by 1, 2, 3",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    for (conn, day, unmapped, input, output, cache_read, cache_write, tiered) in usage {
        let a = acc.entry((day, conn)).or_default();
        let t = Tokens {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
        };
        a.reported.add(&t);
        if unmapped {
            a.unmapped += t.total();
        }
        a.tiered |= tiered;
    }

    let costs: Vec<(i64, NaiveDate, String, i64)> = sqlx::query_as(
        "select connection_id, day, currency, tokenusage_sum(amount_nanos) from provider_cost_days \
         where day >= $1 and day < $2 group by 1, 2, 3",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    for (conn, day, cur, amount) in costs {
        let a = acc.entry((day, conn)).or_default();
        if cur == currency {
            *a.billed.get_or_insert(0) += amount;
        } else {
            a.other_currency = true;
        }
    }

    let owners: Vec<Owner> =
        sqlx::query_as("select target_source, target_project, min(connection_id) from provider_mappings group by 1, 2")
            .fetch_all(&mut *tx)
            .await?;
    let revised: Vec<(i64, NaiveDate)> =
        sqlx::query_as("select distinct connection_id, day from provider_revisions where day >= $1 and day < $2")
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await?;
    for (conn, day) in revised {
        if let Some(a) = acc.get_mut(&(day, conn)) {
            a.revised = true;
        }
    }
    tx.commit().await?;
    Ok((currency, conns, acc, owners))
}

fn day_of(day: NaiveDate, connection: &str, provider: Option<Provider>, a: Acc) -> Day {
    let (theirs, ours) = (a.reported.total(), a.ours.tokens.total());
    let cost_difference_nanos = a.billed.filter(|_| !a.other_currency).map(|b| b - a.ours.cost_nanos);
    let mut reasons = BTreeSet::new();
    if a.unmapped > 0 {
        reasons.insert(Reason::Unmapped);
    }
    if theirs - a.unmapped > ours {
        reasons.insert(Reason::NotPublished);
    } else if ours > theirs - a.unmapped {
        reasons.insert(Reason::CountedMore);
    }
    if a.ours.unpriced_tokens > 0 {
        reasons.insert(Reason::UnpricedModel);
    }
    if theirs > 0 && a.billed.is_none() && !a.other_currency {
        reasons.insert(Reason::NoCostReport);
    }
    if a.other_currency {
        reasons.insert(Reason::CurrencyDiffers);
    }
    if theirs == ours && theirs > 0 && cost_difference_nanos.is_some_and(|d| d != 0) {
        reasons.insert(if a.tiered { Reason::TierPrice } else { Reason::PriceDiffers });
    }
    if a.revised {
        reasons.insert(Reason::Revised);
    }
    Day {
        day,
        connection: connection.to_owned(),
        provider,
        reported: a.reported,
        unmapped_tokens: a.unmapped,
        ours: a.ours,
        billed_nanos: a.billed,
        token_difference: theirs - ours,
        cost_difference_nanos,
        reasons: reasons.into_iter().collect(),
    }
}

type OursRow = (Option<String>, Option<String>, NaiveDate, i64, i64, i64, i64, i64, i64, i64);

/// What we counted per mapped target and UTC day: day rows below each
/// user's seal, hourly rollups from it on (read user by user through the
/// rollups' key; `offset 0` keeps the planner from flattening that into
/// one scan of every user's year, measured at 270 of 340 ms);
/// never provider-reported usage.
async fn ours(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<Vec<(Target, NaiveDate, Counted)>, sqlx::Error> {
    let mut tx = pool.begin_with("begin isolation level repeatable read read only").await?;
    sqlx::query("set local enable_sort = off").execute(&mut *tx).await?;
    let start = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let end = to.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    // Each target shape is an equality join on the day rows of the one
    // grouping that keeps its dimensions (migration 0013's `summed` bits:
    // 14 keeps the project, 13 the source, 0 both).
    let rows: Vec<OursRow> = sqlx::query_as(
        "with targets as (select distinct target_source, target_project from provider_mappings), \
         days as ( \
           select t.target_source, t.target_project, d.* from usage_day d \
             join targets t on t.target_source is null and d.project = t.target_project \
             where d.summed = 14 and d.day >= $1 and d.day < $2 \
           union all \
           select t.target_source, t.target_project, d.* from usage_day d \
             join targets t on t.target_project is null and d.source = t.target_source \
             where d.summed = 13 and d.day >= $1 and d.day < $2 \
           union all \
           select t.target_source, t.target_project, d.* from usage_day d \
             join targets t on d.source = t.target_source and d.project = t.target_project \
             where d.summed = 0 and d.day >= $1 and d.day < $2), \
         sealed as ( \
           select d.target_source, d.target_project, d.day, d.input_tokens, d.output_tokens, d.cache_read_tokens, \
                  d.cache_write_tokens, d.events, d.cost_nanos, d.unpriced_tokens \
           from days d join usage_day_seal s on s.user_id = d.user_id and d.day < s.sealed_through \
           where d.user_id not like $5), \
         above as ( \
           select r.* from usage_day_seal s cross join lateral ( \
             select * from usage_hour r where r.user_id = s.user_id \
               and r.bucket >= greatest($3, s.sealed_through::timestamptz) and r.bucket < $4 offset 0) r \
           where s.sealed_through < $2 and r.source not like $5), \
         unsealed as ( \
           select t.target_source, t.target_project, r.* from above r \
             join targets t on t.target_source is null and r.project = t.target_project \
           union all \
           select t.target_source, t.target_project, r.* from above r \
             join targets t on t.target_project is null and r.source = t.target_source \
           union all \
           select t.target_source, t.target_project, r.* from above r \
             join targets t on r.source = t.target_source and r.project = t.target_project) \
         select target_source, target_project, day, tokenusage_sum(input_tokens), tokenusage_sum(output_tokens), \
                tokenusage_sum(cache_read_tokens), tokenusage_sum(cache_write_tokens), tokenusage_sum(events), tokenusage_sum(cost_nanos), \
                tokenusage_sum(unpriced_tokens) \
         from (select * from sealed union all \
               select target_source, target_project, (bucket at time zone 'UTC')::date, input_tokens, output_tokens, \
                      cache_read_tokens, cache_write_tokens, events, cost_nanos, unpriced_tokens from unsealed) x \
         group by 1, 2, 3",
    )
    .bind(from)
    .bind(to)
    .bind(start)
    .bind(end)
    .bind(format!("{PROVIDER_SOURCE_PREFIX}%"))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(s, p, day, input, output, cache_read, cache_write, events, cost, unpriced)| {
            let tokens = Tokens {
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: cache_read,
                cache_write_tokens: cache_write,
            };
            ((s, p), day, Counted { tokens, events, cost_nanos: cost, unpriced_tokens: unpriced })
        })
        .collect())
}
