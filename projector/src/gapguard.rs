//! Guarding the one assumption exactness rests on: that the records of a
//! partition arrive contiguously from the offset we asked for.
//!
//! A broker that answers a fetch at offset N with a later record batch
//! (seen with Tansu 0.6.0 when N falls inside a stored batch) would make the
//! projector commit past records it never saw. So every record is checked
//! against the offset expected next: an older one (a re-delivery) is
//! skipped, a newer one means a gap, and the partition is rewound far enough
//! back to fetch the batch holding the expected offset; the records before it
//! are skipped again on the way. Only when a rewind to the very start still
//! lands past it (the records are gone from Kafka, e.g. by retention) is the
//! gap accepted, loudly.

use std::collections::HashMap;

/// What to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The expected record: count it.
    Accept,
    /// Already accounted for (a re-delivery, or the run-up after a rewind).
    Skip,
    /// A gap: seek the partition to this offset and skip until the expected one.
    Rewind(i64),
    /// A gap that cannot be closed (rewound to the start already): count it.
    AcceptGap { missing_from: i64 },
}

/// How far back the first rewind goes; each further rewind doubles it.
const FIRST_STEP: i64 = 1000;

#[derive(Debug, Default)]
pub(crate) struct GapGuard {
    /// Per partition: the offset expected next.
    next: HashMap<i32, i64>,
    /// Per partition being rewound: the current step.
    step: HashMap<i32, i64>,
}

impl GapGuard {
    /// Starts tracking `partition` at a claimed offset. A partition never
    /// counted yet (`None`) is owed every record from offset 0: a log whose
    /// first record is later (trimmed by retention, or by a broker that
    /// drops its oldest records) is a gap like any other, not a new start.
    pub(crate) fn start(&mut self, partition: i32, next: Option<i64>) {
        self.next.insert(partition, next.unwrap_or(0));
        self.step.remove(&partition);
    }

    pub(crate) fn forget(&mut self, partition: i32) {
        self.next.remove(&partition);
        self.step.remove(&partition);
    }

    pub(crate) fn check(&mut self, partition: i32, offset: i64) -> Verdict {
        let Some(expected) = self.next.get(&partition).copied() else { return Verdict::Accept };
        if offset == expected {
            self.next.insert(partition, offset + 1);
            self.step.remove(&partition);
            return Verdict::Accept;
        }
        if offset < expected {
            return Verdict::Skip;
        }
        let step = self.step.get(&partition).map_or(FIRST_STEP, |s| s.saturating_mul(2));
        if self.step.get(&partition).is_some_and(|s| *s >= expected) {
            // Already rewound to offset 0 and still past: the records are gone.
            self.next.insert(partition, offset + 1);
            self.step.remove(&partition);
            return Verdict::AcceptGap { missing_from: expected };
        }
        self.step.insert(partition, step);
        Verdict::Rewind((expected - step).max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_records_are_accepted_and_redeliveries_skipped() {
        let mut g = GapGuard::default();
        g.start(0, Some(10));
        assert_eq!(g.check(0, 10), Verdict::Accept);
        assert_eq!(g.check(0, 11), Verdict::Accept);
        assert_eq!(g.check(0, 11), Verdict::Skip);
        assert_eq!(g.check(0, 5), Verdict::Skip);
    }

    #[test]
    fn a_gap_rewinds_and_the_run_up_is_skipped() {
        let mut g = GapGuard::default();
        g.start(2, Some(3160));
        assert_eq!(g.check(2, 3240), Verdict::Rewind(2160));
        assert_eq!(g.check(2, 2160), Verdict::Skip);
        assert_eq!(g.check(2, 3159), Verdict::Skip);
        assert_eq!(g.check(2, 3160), Verdict::Accept);
        assert_eq!(g.check(2, 3161), Verdict::Accept);
    }

    #[test]
    fn a_persistent_gap_rewinds_further_then_is_accepted_at_the_start() {
        let mut g = GapGuard::default();
        g.start(1, Some(1500));
        assert_eq!(g.check(1, 1600), Verdict::Rewind(500));
        assert_eq!(g.check(1, 1600), Verdict::Rewind(0));
        assert_eq!(g.check(1, 1600), Verdict::AcceptGap { missing_from: 1500 });
        assert_eq!(g.check(1, 1601), Verdict::Accept);
    }

    #[test]
    fn from_the_beginning_every_record_from_offset_zero_is_owed() {
        let mut g = GapGuard::default();
        g.start(0, None);
        assert_eq!(g.check(0, 0), Verdict::Accept);
        assert_eq!(g.check(0, 1), Verdict::Accept);
        // A log whose oldest records were trimmed before we read them: the
        // start is rewound to once, then the loss is accepted and named.
        g.start(1, None);
        assert_eq!(g.check(1, 42), Verdict::Rewind(0));
        assert_eq!(g.check(1, 42), Verdict::AcceptGap { missing_from: 0 });
        assert_eq!(g.check(1, 43), Verdict::Accept);
    }
}
