//! The projector's Prometheus metrics: their descriptions, and usage itself
//! as counters (tokens and events newly counted, by model) so an
//! operator's Grafana shows what is consumed beside how the pipeline is
//! doing (docs/operations/grafana/).
//!
//! The counters move only after the transaction that counted the events
//! commits, and only by events that were new (duplicates never count), so
//! `increase()` over a window equals what the rollups gained through this
//! process in it. Each projector process exports its own counters; sum
//! them across processes. They start at zero with the process, as every
//! Prometheus counter does: the rollups, not these, are the record.
//!
//! Model names come from publishers, so their number is not ours to bound:
//! the first [`MAX_MODEL_LABELS`] distinct models seen by a process get a
//! label of their own and keep it; any later one is counted as `other`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};

use tokenusage_contract::UsageEvent;
use tokenusage_schema::rows::Sums;

/// Distinct `model` label values one process exports, `other` aside.
pub const MAX_MODEL_LABELS: usize = 100;

/// The label for models past the bound.
pub const OTHER: &str = "other";

static LABELLED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Describes every projector metric (the `# HELP` lines) and exports the
/// fixed-label counters at zero, so dashboards and `rate()` see them before
/// the first failure.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "tokenusage_usage_tokens_total",
        Unit::Count,
        "Tokens newly counted, by model and kind (input, output); duplicates never count"
    );
    describe_counter!("tokenusage_usage_events_total", Unit::Count, "Events newly counted, by model");
    describe_counter!("tokenusage_projector_records_total", Unit::Count, "Kafka records read and committed");
    describe_counter!(
        "tokenusage_projector_events_counted_total",
        Unit::Count,
        "Events counted (new by source and event id)"
    );
    describe_counter!(
        "tokenusage_projector_duplicates_skipped_total",
        Unit::Count,
        "Events skipped as already counted"
    );
    describe_counter!("tokenusage_projector_dead_letters_total", Unit::Count, "Records sent to the dead-letter table");
    describe_counter!(
        "tokenusage_projector_refused_by_database_total",
        Unit::Count,
        "Events the database refused, isolated into dead letters"
    );
    describe_counter!(
        "tokenusage_projector_commit_failures_total",
        Unit::Count,
        "Failed batch commits, by kind (transient: retried)"
    );
    describe_gauge!(
        "tokenusage_projector_lag_records",
        Unit::Count,
        "Records behind the partition's end, per partition"
    );
    describe_gauge!("tokenusage_projector_stalled", "1 while work waits and nothing committed for the stall patience");
    describe_counter!("tokenusage_day_rows_written_total", Unit::Count, "Day rows built by the sealer");
    describe_gauge!(
        "tokenusage_day_rows_users_behind",
        Unit::Count,
        "Users whose day rows stop before the last sealable day, after the last sealing pass"
    );
    describe_histogram!(
        "tokenusage_projector_commit_seconds",
        Unit::Seconds,
        "Time to commit one batch, retries included"
    );
    describe_histogram!("tokenusage_projector_batch_records", Unit::Count, "Records per committed batch");
    describe_histogram!(
        "tokenusage_projector_fetch_delay_seconds",
        Unit::Seconds,
        "From a record's append to its fetch"
    );
    describe_histogram!(
        "tokenusage_projector_batch_fill_seconds",
        Unit::Seconds,
        "From a batch's first record to its hand-over to a writer"
    );
    for kind in [tokenusage_plumbing::failure::Failure::Data, tokenusage_plumbing::failure::Failure::Transient] {
        metrics::counter!("tokenusage_projector_commit_failures_total", "kind" => kind.label()).increment(0);
    }
}

/// New events of one write, summed by model: what the usage counters move
/// by once that write commits.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Tally(BTreeMap<String, Sums>);

impl Tally {
    pub(crate) fn of<'a>(events: impl IntoIterator<Item = (&'a UsageEvent, Sums)>) -> Self {
        let mut t = BTreeMap::<String, Sums>::new();
        for (e, s) in events {
            t.entry(e.model.clone()).or_default().add(&s);
        }
        Self(t)
    }

    /// Adds another write of the same transaction.
    pub(crate) fn merge(&mut self, other: Tally) {
        for (model, s) in other.0 {
            self.0.entry(model).or_default().add(&s);
        }
    }

    /// How many new events it holds.
    pub(crate) fn events(&self) -> usize {
        self.0.values().map(|s| s.events as usize).sum()
    }

    /// Moves the usage counters; call after the commit that counted these.
    pub(crate) fn record(&self) {
        for (model, s) in &self.0 {
            let label = label_for(model);
            metrics::counter!("tokenusage_usage_tokens_total", "model" => label.clone(), "kind" => "input")
                .increment(s.input_tokens as u64);
            metrics::counter!("tokenusage_usage_tokens_total", "model" => label.clone(), "kind" => "output")
                .increment(s.output_tokens as u64);
            metrics::counter!("tokenusage_usage_events_total", "model" => label).increment(s.events as u64);
        }
    }
}

/// The label `model` is exported under: itself while the bound allows.
fn label_for(model: &str) -> String {
    let mut guard = LABELLED.lock().unwrap_or_else(PoisonError::into_inner);
    let seen = guard.get_or_insert_with(HashSet::new);
    if seen.contains(model) {
        return model.to_owned();
    }
    if seen.len() < MAX_MODEL_LABELS && model != OTHER {
        seen.insert(model.to_owned());
        return model.to_owned();
    }
    OTHER.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_stable() {
        // Other tests of this binary may have labelled models already; this
        // one only relies on the bound and on stability.
        let first = label_for("bounded-test-model-0");
        assert_eq!(first, "bounded-test-model-0");
        for i in 1..(MAX_MODEL_LABELS * 2) {
            let _ = label_for(&format!("bounded-test-model-{i}"));
        }
        let seen = LABELLED.lock().unwrap().as_ref().map(HashSet::len).unwrap();
        assert!(seen <= MAX_MODEL_LABELS, "{seen} labels");
        assert_eq!(label_for("bounded-test-model-0"), "bounded-test-model-0", "a label once given is kept");
        assert_eq!(label_for(&format!("bounded-test-model-{}", MAX_MODEL_LABELS * 2)), OTHER);
        assert_eq!(label_for(OTHER), OTHER);
    }
}
