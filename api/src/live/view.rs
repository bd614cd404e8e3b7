//! One subscription's view, kept exact in memory: the snapshot it was read
//! with (and the commit number that snapshot includes), the committed
//! increments added since, and which buckets changed since the last send.
//! Pure arithmetic, unit-tested without a socket or a database.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokenusage_schema::Sums;
use tokenusage_schema::freshness::Freshness;
use tokenusage_schema::notice::Delta;

use super::protocol::{BucketUpdate, ServerMessage};
use crate::history::params::View;
use crate::history::plan::{GroupBy, Plan};
use crate::history::present::{fmt_time, series_response};
use crate::history::read::{SeriesData, Snapshot, Subject};

/// One subscription's view and what the client has been sent.
#[derive(Debug)]
pub(crate) struct Sub {
    pub view: View,
    pub plan: Plan,
    pub subject: Subject,
    /// No `to`: the view grows with time.
    pub open_ended: bool,
    data: SeriesData,
    /// The rollup sequence `data` includes: only later increments are added.
    seq: i64,
    /// Buckets changed since the last send.
    changed: Vec<usize>,
    /// The data cannot be brought up to date in memory: re-read it.
    pub needs_snapshot: bool,
}

impl Sub {
    pub(crate) fn new(view: View, plan: Plan, subject: Subject, open_ended: bool, snap: &Snapshot) -> Self {
        Sub {
            view,
            plan,
            subject,
            open_ended,
            data: snap.data.clone(),
            seq: snap.seq,
            changed: Vec::new(),
            needs_snapshot: false,
        }
    }

    /// Starts over from a fresh read.
    pub(crate) fn reset(&mut self, snap: &Snapshot) {
        self.data = snap.data.clone();
        self.seq = snap.seq;
        self.changed.clear();
        self.needs_snapshot = false;
    }

    pub(crate) fn has_changes(&self) -> bool {
        self.needs_snapshot || !self.changed.is_empty()
    }

    /// Adds committed increments numbered `seq` that fall in this view: the
    /// same rows, filters and buckets the REST read sums. Increments the
    /// snapshot already holds (`seq` not above its own) are skipped.
    pub(crate) fn apply(&mut self, seq: i64, rows: &[Delta]) {
        if seq <= self.seq || self.needs_snapshot {
            return;
        }
        let n = self.plan.edges.len();
        let f = &self.view.filters;
        for d in rows {
            if !self.subject.includes(d.user()) || !f.admits(d.activity(), d.model(), d.project(), d.source()) {
                continue;
            }
            let Some(t) = DateTime::<Utc>::from_timestamp(d.minute(), 0) else { continue };
            if t < self.plan.start() || t >= self.plan.end {
                continue;
            }
            let i = self.plan.edges.partition_point(|e| *e <= t) - 1;
            let sums = d.sums();
            self.data.totals[i].add(&sums);
            let key = match self.view.group {
                GroupBy::None => None,
                GroupBy::Activity => Some(d.activity()),
                GroupBy::Model => Some(d.model()),
                GroupBy::Project => Some(d.project()),
                GroupBy::Source => Some(d.source()),
                GroupBy::User => Some(d.user()),
            };
            if let Some(key) = key {
                self.data.groups.entry(key.to_owned()).or_insert_with(|| vec![Sums::default(); n])[i].add(&sums);
            }
            if self.changed.last() != Some(&i) {
                self.changed.push(i);
                // Bounded: many increments of few buckets collapse here.
                if self.changed.len() > 4 * n.max(64) {
                    self.changed.sort_unstable();
                    self.changed.dedup();
                }
            }
        }
    }

    /// The whole view, shaped like the REST series.
    pub(crate) fn snapshot<'a>(&self, id: &'a str, freshness: &'a Freshness) -> ServerMessage<'a> {
        let series = series_response(&self.view, &self.plan, &self.subject, &self.data, None);
        ServerMessage::Snapshot { id, live: self.open_ended, series: Box::new(series), freshness }
    }

    /// The buckets changed since the last call, with absolute values (a
    /// delta applied twice is harmless), or `None` if nothing changed.
    pub(crate) fn take_delta<'a>(&mut self, id: &'a str, freshness: &'a Freshness) -> Option<ServerMessage<'a>> {
        if self.changed.is_empty() {
            return None;
        }
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        let buckets = changed
            .into_iter()
            .map(|i| BucketUpdate {
                index: i,
                start: fmt_time(self.plan.edges[i], &self.view.tz),
                end: fmt_time(self.plan.bucket_end(i), &self.view.tz),
                sums: self.data.totals[i],
                groups: self.data.groups.iter().map(|(k, v)| (k.clone(), v[i])).collect::<BTreeMap<_, _>>(),
            })
            .collect();
        Some(ServerMessage::Delta { id, buckets, total: self.data.total(), freshness })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::history::params::{Filters, ViewParams};

    pub(crate) fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// An hourly view of alice's 2026-11-20, grouped by `group`.
    pub(crate) fn sub(group: GroupBy, filters: Filters) -> Sub {
        let params = ViewParams {
            from: Some("2026-11-20T00:00:00Z".into()),
            to: Some("2026-11-21T00:00:00Z".into()),
            granularity: Some("hour".into()),
            ..Default::default()
        };
        let mut view = View::parse(&params, chrono::Weekday::Mon, true).unwrap();
        view.group = group;
        view.filters = filters;
        let plan = crate::history::params::plan_view(&view, 10_000).unwrap();
        let data = SeriesData { totals: vec![Sums::default(); plan.edges.len()], ..Default::default() };
        Sub::new(view, plan, Subject::User("alice".into()), false, &Snapshot { data, seq: 10 })
    }

    fn d(user: &str, model: &str, at: &str, input: i64) -> Delta {
        Delta(
            user.into(),
            "chat".into(),
            model.into(),
            t(at).timestamp(),
            tokenusage_schema::Sums::new(input, 1, 1).to_array(),
            "src".into(),
            String::new(),
        )
    }

    #[test]
    fn increments_land_in_their_bucket_once_and_only_for_this_view() {
        let mut s = sub(GroupBy::Model, Filters::default());
        s.apply(11, &[d("alice", "m1", "2026-11-20T10:05:00Z", 5), d("bob", "m1", "2026-11-20T10:05:00Z", 99)]);
        s.apply(11, &[d("alice", "m1", "2026-11-20T10:05:00Z", 5)]);
        s.apply(10, &[d("alice", "m1", "2026-11-20T10:06:00Z", 7)]);
        s.apply(12, &[d("alice", "m2", "2026-11-20T23:59:00Z", 3), d("alice", "m2", "2026-11-21T00:00:00Z", 1000)]);
        let f = Freshness::default();
        let Some(ServerMessage::Delta { buckets, total, .. }) = s.take_delta("v", &f) else { panic!("a delta") };
        assert_eq!(buckets.iter().map(|b| b.index).collect::<Vec<_>>(), vec![10, 23]);
        assert_eq!(buckets[0].sums.input_tokens, 10, "two increments of commit 11, none of the snapshot's own 10");
        assert_eq!(buckets[0].groups["m1"].input_tokens, 10);
        assert_eq!(buckets[1].groups["m2"].input_tokens, 3, "the next day's minute is outside the view");
        assert_eq!(total.input_tokens, 13);
        assert!(s.take_delta("v", &f).is_none(), "nothing changed since");
    }

    #[test]
    fn filters_apply_to_increments_like_to_reads() {
        let mut s = sub(GroupBy::None, Filters { model: vec!["m2".into()], ..Filters::default() });
        s.apply(11, &[d("alice", "m1", "2026-11-20T01:00:00Z", 5), d("alice", "m2", "2026-11-20T01:00:00Z", 6)]);
        let f = Freshness::default();
        let Some(ServerMessage::Delta { total, .. }) = s.take_delta("v", &f) else { panic!() };
        assert_eq!(total.input_tokens, 6);
    }

    #[test]
    fn a_view_waiting_for_a_snapshot_applies_nothing_and_reset_starts_over() {
        let mut s = sub(GroupBy::None, Filters::default());
        s.needs_snapshot = true;
        s.apply(11, &[d("alice", "m1", "2026-11-20T01:00:00Z", 5)]);
        assert!(s.has_changes());
        let data = SeriesData { totals: vec![Sums::new(1, 0, 1); 24], ..Default::default() };
        s.reset(&Snapshot { data, seq: 20 });
        assert!(!s.has_changes());
        s.apply(20, &[d("alice", "m1", "2026-11-20T01:00:00Z", 5)]);
        assert!(!s.has_changes(), "commit 20 is in the new snapshot");
    }
}
