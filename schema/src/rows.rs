//! A rollup row: its identity (user, bucket, activity, model) and its sums,
//! and the folding of events into rows. Pure, so the projector's batches and
//! the API's live views are unit-tested without a database.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokenusage_contract::UsageEvent;

use crate::grain::Grain;

/// Token sums: what a rollup row holds and what every view returns.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
pub struct Sums {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// `input_tokens + output_tokens`, kept so views need not add.
    pub total_tokens: i64,
    /// How many events were summed.
    pub events: i64,
}

impl Sums {
    pub fn new(input: i64, output: i64, events: i64) -> Self {
        Sums { input_tokens: input, output_tokens: output, total_tokens: input + output, events }
    }

    /// One event's contribution. The contract bounds tokens to 1e9 per
    /// event, so i64 sums cannot overflow for any batch or history.
    pub fn of(e: &UsageEvent) -> Self {
        Sums::new(e.input_tokens as i64, e.output_tokens as i64, 1)
    }

    pub fn add(&mut self, o: &Sums) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.total_tokens += o.total_tokens;
        self.events += o.events;
    }
}

/// A rollup row's identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RollupKey {
    pub user_id: String,
    pub bucket: DateTime<Utc>,
    pub activity: String,
    pub model: String,
}

/// Sums events into rollup rows of one grain. The map is ordered, so every
/// writer locks rows in the same order and concurrent projectors cannot
/// deadlock on shared rows.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a UsageEvent>, grain: Grain) -> BTreeMap<RollupKey, Sums> {
    let mut out: BTreeMap<RollupKey, Sums> = BTreeMap::new();
    for e in events {
        let key = RollupKey {
            user_id: e.user_id.clone(),
            bucket: grain.floor(e.occurred_at),
            activity: e.activity.clone(),
            model: e.model.clone(),
        };
        out.entry(key).or_default().add(&Sums::of(e));
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
        let rows: Vec<_> = Grain::ALL.iter().map(|g| fold(&events, *g)).collect();
        assert_eq!(rows.iter().map(BTreeMap::len).collect::<Vec<_>>(), vec![4, 3, 1]);
        for r in &rows {
            assert_eq!(total(r), Sums::new(11 + 11 + 24 + 26 + 69, 5, 5));
        }
    }
}
