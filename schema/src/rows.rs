//! A rollup row: its identity (user, bucket, activity, model, source,
//! project) and its sums,
//! and the folding of events into rows. Pure, so the projector's batches and
//! the API's live views are unit-tested without a database.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokenusage_contract::UsageEvent;

use crate::grain::Grain;

/// Token and cost sums: what a rollup row holds and what every view
/// returns. Cost is exact: nano-units (10^-9) of the price book's currency.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sums {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// `input_tokens + output_tokens`, kept so views need not add.
    pub total_tokens: i64,
    /// How many events were summed.
    pub events: i64,
    /// Input tokens read from a prompt cache (part of `input_tokens`).
    pub cache_read_tokens: i64,
    /// Input tokens written to a prompt cache, 5-minute and 1-hour rates
    /// together (part of `input_tokens`).
    pub cache_write_tokens: i64,
    /// Output tokens spent on reasoning (part of `output_tokens`).
    pub reasoning_tokens: i64,
    /// The cost of the priced tokens, in nano-units of the book's currency.
    pub cost_nanos: i64,
    /// Tokens no price covered: their cost is unknown, not zero.
    pub unpriced_tokens: i64,
    /// Events whose cost the publisher supplied.
    pub supplied_events: i64,
}

/// The sums as views serialize them: every field, plus `cost`, the same
/// amount as decimal text (exact, for people and spreadsheets), which is
/// `null` when there were tokens and none of them had a price.
impl Serialize for Sums {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Sums", 11)?;
        st.serialize_field("input_tokens", &self.input_tokens)?;
        st.serialize_field("output_tokens", &self.output_tokens)?;
        st.serialize_field("total_tokens", &self.total_tokens)?;
        st.serialize_field("events", &self.events)?;
        st.serialize_field("cache_read_tokens", &self.cache_read_tokens)?;
        st.serialize_field("cache_write_tokens", &self.cache_write_tokens)?;
        st.serialize_field("reasoning_tokens", &self.reasoning_tokens)?;
        st.serialize_field("cost_nanos", &self.cost_nanos)?;
        st.serialize_field("cost", &self.cost_text())?;
        st.serialize_field("unpriced_tokens", &self.unpriced_tokens)?;
        st.serialize_field("supplied_events", &self.supplied_events)?;
        st.end()
    }
}

/// The documented shape of [`Sums`] as serialized (with `cost`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SumsSchema {
    input_tokens: i64,
    output_tokens: i64,
    /// `input_tokens + output_tokens`.
    total_tokens: i64,
    /// How many events were summed.
    events: i64,
    /// Input tokens read from a prompt cache (part of `input_tokens`).
    cache_read_tokens: i64,
    /// Input tokens written to a prompt cache, both rates (part of `input_tokens`).
    cache_write_tokens: i64,
    /// Output tokens spent on reasoning (part of `output_tokens`).
    reasoning_tokens: i64,
    /// Exact cost of the priced tokens in nano-units (10^-9) of the price book's currency.
    cost_nanos: i64,
    /// The same cost as decimal text, e.g. "0.0123"; null when there were tokens and none had a price.
    cost: Option<String>,
    /// Tokens no price covered: their cost is unknown, not zero.
    unpriced_tokens: i64,
    /// Events whose cost the publisher supplied.
    supplied_events: i64,
}

impl utoipa::PartialSchema for Sums {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <SumsSchema as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Sums {
    fn name() -> std::borrow::Cow<'static, str> {
        "Sums".into()
    }
}

impl Sums {
    /// How many `i64`s [`Sums::to_array`] holds: everything but the total.
    pub const WIDTH: usize = 9;

    /// The sum columns of a rollup table, in [`Sums::from_array`] order,
    /// each wrapped as `tokenusage_sum(col)` (for `select` lists): an int8
    /// sum that stays int8 (migration 0013; `sum(int8)` accumulates in
    /// numeric and is cast back, a third of a cold year view's aggregation).
    /// It is 0, not null, over no rows (so totals need no `coalesce`); it
    /// fails on overflow as the cast did.
    pub const SQL_SUMS: &'static str = "tokenusage_sum(input_tokens), tokenusage_sum(output_tokens), \
        tokenusage_sum(events), tokenusage_sum(cache_read_tokens), tokenusage_sum(cache_write_tokens), \
        tokenusage_sum(reasoning_tokens), tokenusage_sum(cost_nanos), tokenusage_sum(unpriced_tokens), \
        tokenusage_sum(supplied_events)";

    /// Tokens only (no kinds, no cost known).
    pub fn new(input: i64, output: i64, events: i64) -> Self {
        Sums { input_tokens: input, output_tokens: output, total_tokens: input + output, events, ..Sums::default() }
    }

    pub fn to_array(&self) -> [i64; Sums::WIDTH] {
        [
            self.input_tokens,
            self.output_tokens,
            self.events,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.cost_nanos,
            self.unpriced_tokens,
            self.supplied_events,
        ]
    }

    pub fn from_array(a: [i64; Sums::WIDTH]) -> Self {
        let [input, output, events, cache_read, cache_write, reasoning, cost, unpriced, supplied] = a;
        Sums {
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            reasoning_tokens: reasoning,
            cost_nanos: cost,
            unpriced_tokens: unpriced,
            supplied_events: supplied,
            ..Sums::new(input, output, events)
        }
    }

    /// Reads [`Sums::WIDTH`] `int8` columns starting at `first`.
    pub fn from_row(row: &sqlx::postgres::PgRow, first: usize) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let mut a = [0i64; Sums::WIDTH];
        for (i, v) in a.iter_mut().enumerate() {
            *v = row.try_get::<Option<i64>, _>(first + i)?.unwrap_or(0);
        }
        Ok(Sums::from_array(a))
    }

    /// One event's contribution, priced: `cost_nanos` and `unpriced` come
    /// from the price book (or the publisher), `supplied` if the latter.
    /// The contract bounds tokens to 1e9 and a cost to 1e18 nano-units per
    /// event, so i64 sums cannot overflow for any batch or realistic history.
    pub fn of(e: &UsageEvent, cost_nanos: i64, unpriced: i64, supplied: bool) -> Self {
        let k = &e.kinds;
        Sums {
            cache_read_tokens: k.cache_read_input_tokens as i64,
            cache_write_tokens: (k.cache_write_input_tokens + k.cache_write_1h_input_tokens) as i64,
            reasoning_tokens: k.reasoning_output_tokens as i64,
            cost_nanos,
            unpriced_tokens: unpriced,
            supplied_events: i64::from(supplied),
            ..Sums::new(e.input_tokens as i64, e.output_tokens as i64, 1)
        }
    }

    /// The cost as decimal text, or `None` when tokens were used and none of
    /// them had a price (so a view never shows 0 for an unknown cost).
    pub fn cost_text(&self) -> Option<String> {
        let nothing_priced =
            self.total_tokens > 0 && self.unpriced_tokens >= self.total_tokens && self.supplied_events == 0;
        (!nothing_priced).then(|| tokenusage_contract::money::format_nanos(self.cost_nanos))
    }

    pub fn add(&mut self, o: &Sums) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.total_tokens += o.total_tokens;
        self.events += o.events;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cost_nanos += o.cost_nanos;
        self.unpriced_tokens += o.unpriced_tokens;
        self.supplied_events += o.supplied_events;
    }
}

/// A rollup row's identity (migration 0011 added source and project).
/// Field order is the primary key's, so a sorted batch locks rows in index
/// order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub user_id: String,
    pub bucket: DateTime<Utc>,
    pub activity: String,
    pub model: String,
    /// The publisher (`UsageEvent::source`).
    pub source: String,
    /// The project, `""` for none.
    pub project: String,
}

/// Sums events (each with its priced contribution, [`Sums::of`]) into
/// rollup rows of one grain. The map is ordered, so every writer locks rows
/// in the same order and concurrent projectors cannot deadlock on shared rows.
pub fn fold<'a>(events: impl IntoIterator<Item = (&'a UsageEvent, Sums)>, grain: Grain) -> BTreeMap<RollupKey, Sums> {
    let mut out: BTreeMap<RollupKey, Sums> = BTreeMap::new();
    for (e, sums) in events {
        let key = RollupKey {
            user_id: e.user_id.clone(),
            bucket: grain.floor(e.occurred_at),
            activity: e.activity.clone(),
            model: e.model.clone(),
            source: e.source.clone(),
            project: e.project_key().to_owned(),
        };
        out.entry(key).or_default().add(&sums);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(minute: u32, tokens: u64) -> UsageEvent {
        UsageEvent {
            source: "s".into(),
            event_id: format!("e{minute}-{tokens}"),
            user_id: "u".into(),
            occurred_at: format!("2026-11-27T10:{minute:02}:10Z").parse().unwrap(),
            activity: "chat".into(),
            model: "m".into(),
            input_tokens: tokens,
            output_tokens: 1,
            kinds: Default::default(),
            billing: Default::default(),
            cost: None,
            project: None,
            metadata: None,
        }
    }

    #[test]
    fn rows_sum_per_bucket_and_coarser_grains_sum_the_same_totals() {
        let events: Vec<UsageEvent> = [1u32, 1, 14, 16, 59].iter().map(|m| ev(*m, 10 + u64::from(*m))).collect();
        let total = |m: &BTreeMap<RollupKey, Sums>| {
            m.values().fold(Sums::default(), |mut t, s| {
                t.add(s);
                t
            })
        };
        let rows: Vec<_> =
            Grain::ALL.iter().map(|g| fold(events.iter().map(|e| (e, Sums::of(e, 7, 0, false))), *g)).collect();
        assert_eq!(rows.iter().map(BTreeMap::len).collect::<Vec<_>>(), vec![4, 3, 1]);
        for r in &rows {
            assert_eq!(total(r), Sums { cost_nanos: 35, ..Sums::new(11 + 11 + 24 + 26 + 69, 5, 5) });
        }
    }
}
