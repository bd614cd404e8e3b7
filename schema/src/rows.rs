//! A rollup row: its identity (user, bucket, activity, model, source,
//! project) and its sums,
//! and the folding of events into rows. Pure, so the projector's batches and
//! the API's live views are unit-tested without a database.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokenusage_contract::UsageEvent;

use crate::grain::Grain;

/// The one definition of the measures a rollup row holds, in stored order:
/// each is an `int8` column of every rollup table and of the day rows, a
/// field of [`Sums`], an element of [`Sums::to_array`] (the live notice's
/// wire order), a CSV column and a field of every view's JSON. Adding a
/// token kind is one line here plus a migration; everything listed above
/// follows from it (`MEASURES`, `sql_sums`, the arrays, `add`, the JSON
/// and CSV fields and the OpenAPI schema).
///
/// Two derived values travel with them and are not stored:
/// `total_tokens` (after `output_tokens`) and `cost`, exact decimal text
/// (after `cost_nanos`).
macro_rules! measures {
    ($($(#[doc = $doc:literal])* $name:ident,)+) => {
        /// Token and cost sums: what a rollup row holds and what every view
        /// returns. Cost is exact: nano-units (10^-9) of the price book's
        /// currency.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Sums {
            $($(#[doc = $doc])* pub $name: i64,)+
            /// `input_tokens + output_tokens`, kept so views need not add.
            pub total_tokens: i64,
        }

        /// The measure columns, in stored order ([`Sums::to_array`]).
        pub const MEASURES: [&str; Sums::WIDTH] = [$(stringify!($name)),+];

        impl Sums {
            /// How many `i64`s [`Sums::to_array`] holds: every measure, not
            /// the total.
            pub const WIDTH: usize = [$(stringify!($name)),+].len();

            /// The sum columns of a rollup table, in [`Sums::from_array`]
            /// order, each wrapped as `tokenusage_sum(col)` (for `select`
            /// lists): an int8 sum that stays int8 (migration 0013;
            /// `sum(int8)` accumulates in numeric and is cast back, a third
            /// of a cold year view's aggregation). It is 0, not null, over no
            /// rows (so totals need no `coalesce`); it fails on overflow as
            /// the cast did.
            pub fn sql_sums() -> &'static str {
                static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    MEASURES.map(|m| format!("tokenusage_sum({m})")).join(", ")
                });
                &SQL
            }

            pub fn to_array(&self) -> [i64; Sums::WIDTH] {
                [$(self.$name),+]
            }

            pub fn from_array(a: [i64; Sums::WIDTH]) -> Self {
                let [$($name),+] = a;
                let mut s = Sums { $($name,)+ total_tokens: 0 };
                s.total_tokens = s.input_tokens + s.output_tokens;
                s
            }

            pub fn add(&mut self, o: &Sums) {
                $(self.$name += o.$name;)+
                self.total_tokens += o.total_tokens;
            }

            /// Every field as views show it, in wire order: the measures,
            /// with `total_tokens` after `output_tokens` and `cost` after
            /// `cost_nanos`.
            pub fn wire_fields(&self) -> Vec<(&'static str, Wire)> {
                let mut out = Vec::with_capacity(Sums::WIDTH + 2);
                for (name, v) in MEASURES.into_iter().zip(self.to_array()) {
                    out.push((name, Wire::Int(v)));
                    match name {
                        "output_tokens" => out.push(("total_tokens", Wire::Int(self.total_tokens))),
                        "cost_nanos" => out.push(("cost", Wire::Text(self.cost_text()))),
                        _ => {}
                    }
                }
                out
            }
        }

        /// Each measure's description, as its doc comment says it.
        const MEASURE_DOCS: [&str; Sums::WIDTH] = [$(concat!($($doc, "\n",)* "")),+];
    };
}

measures! {
    input_tokens,
    output_tokens,
    /// How many events were summed.
    events,
    /// Input tokens read from a prompt cache (part of `input_tokens`).
    cache_read_tokens,
    /// Input tokens written to a prompt cache, 5-minute and 1-hour rates
    /// together (part of `input_tokens`).
    cache_write_tokens,
    /// Output tokens spent on reasoning (part of `output_tokens`).
    reasoning_tokens,
    /// The cost of the priced tokens, in nano-units (10^-9) of the price
    /// book's currency.
    cost_nanos,
    /// Tokens no price covered: their cost is unknown, not zero.
    unpriced_tokens,
    /// Events whose cost the publisher supplied.
    supplied_events,
}

/// One field of [`Sums::wire_fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Int(i64),
    /// `cost`: exact decimal text, `None` when nothing had a price.
    Text(Option<String>),
}

impl Wire {
    /// As a CSV cell: the number, the text, or empty for no text.
    pub fn cell(&self) -> String {
        match self {
            Wire::Int(n) => n.to_string(),
            Wire::Text(t) => t.clone().unwrap_or_default(),
        }
    }
}

/// The sums as views serialize them: [`Sums::wire_fields`].
impl Serialize for Sums {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.wire_fields();
        let mut m = s.serialize_map(Some(fields.len()))?;
        for (name, v) in fields {
            match v {
                Wire::Int(n) => m.serialize_entry(name, &n)?,
                Wire::Text(t) => m.serialize_entry(name, &t)?,
            }
        }
        m.end()
    }
}

/// The documented shape of [`Sums`]: its wire fields, in wire order, each
/// with its measure's description.
impl utoipa::PartialSchema for Sums {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        let mut o = ObjectBuilder::new();
        for (name, wire) in Sums::default().wire_fields() {
            let doc = match name {
                "total_tokens" => "`input_tokens + output_tokens`.".to_owned(),
                "cost" => {
                    "The cost as decimal text, e.g. \"0.0123\"; null when there were tokens and none had a price."
                        .to_owned()
                }
                _ => MEASURES
                    .iter()
                    .position(|m| *m == name)
                    .map(|i| MEASURE_DOCS[i].lines().map(str::trim).collect::<Vec<_>>().join("\n").trim().to_owned())
                    .unwrap_or_default(),
            };
            let field = match wire {
                Wire::Int(_) => ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
                Wire::Text(_) => ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])),
            };
            let field = if doc.is_empty() { field } else { field.description(Some(doc)) };
            o = o.property(name, field);
            if matches!(wire, Wire::Int(_)) {
                o = o.required(name);
            }
        }
        o = o.description(Some("Token and cost sums: exact, cost in nano-units and as decimal text."));
        utoipa::openapi::RefOr::T(utoipa::openapi::schema::Schema::Object(o.build()))
    }
}

impl utoipa::ToSchema for Sums {
    fn name() -> std::borrow::Cow<'static, str> {
        "Sums".into()
    }
}

impl Sums {
    /// Tokens only (no kinds, no cost known).
    pub fn new(input: i64, output: i64, events: i64) -> Self {
        Sums { input_tokens: input, output_tokens: output, total_tokens: input + output, events, ..Sums::default() }
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
