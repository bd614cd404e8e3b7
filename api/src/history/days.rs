//! Reading the day rows (`usage_day`, migration 0013) for cold views: how a
//! planned view's buckets cut each UTC day (pure, unit-tested), and the SQL
//! that sums day rows below the subject's seal and the fine rollups above
//! it in one statement, so both halves come from one snapshot.
//!
//! A UTC day row overlaps at most three buckets of a view whose buckets are
//! at least a local day long (two local midnights can fall in one UTC day
//! at a DST change, e.g. London's 23-hour day). Its part in each bucket is a
//! quarter-hour range `[lo, hi)` of the day: the whole day from the row's
//! sums, a part from two of its running sums. Views with more cuts per day
//! (hours, minutes) read the fine rollups as before.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{Postgres, QueryBuilder};
use tokenusage_schema::Grain;
use tokenusage_schema::days::QUARTERS;

use super::plan::{Granularity, Plan};

/// Pieces one UTC day can have at most (its part in up to three buckets).
pub const MAX_SLOTS: usize = 3;

/// How a view's buckets cut the UTC days it spans: for day `k` (counted
/// from `first`) and slot `n` in `0..slots`, entry `k * slots + n` is a
/// piece: bucket (1-based, as `width_bucket` numbers them; 0: no piece) and
/// the quarter-hours `[lo, hi)` of the day it covers. `slots` is the most
/// pieces any day has (1 for UTC views and most weeks and months), so the
/// read pairs each row with no more slots than it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPieces {
    pub first: NaiveDate,
    pub slots: usize,
    pub bucket: Vec<i32>,
    pub lo: Vec<i32>,
    pub hi: Vec<i32>,
}

impl DayPieces {
    /// The pieces as `(day, bucket, lo, hi)`, skipping empty slots.
    pub fn iter(&self) -> impl Iterator<Item = (NaiveDate, i32, i32, i32)> + '_ {
        (0..self.bucket.len()).filter(|&j| self.bucket[j] > 0).map(move |j| {
            let day = self.first + TimeDelta::days((j / self.slots) as i64);
            (day, self.bucket[j], self.lo[j], self.hi[j])
        })
    }
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The pieces of a planned view, or `None` when day rows do not serve it:
/// buckets shorter than a day, edges off the quarter-hour grid, or a day
/// cut more than [`MAX_SLOTS`] times.
pub fn pieces(plan: &Plan) -> Option<DayPieces> {
    if plan.granularity < Granularity::Day || plan.rollup == Grain::Minute {
        return None;
    }
    let (start, end) = (plan.start(), plan.end);
    let first = start.date_naive();
    let last = (end - TimeDelta::seconds(1)).date_naive();
    let days = usize::try_from((last - first).num_days()).ok()? + 1;
    let mut per_day: Vec<Vec<(i32, i32, i32)>> = Vec::with_capacity(days);
    // The bucket holding the current instant; buckets are walked once.
    let mut i = 0;
    for k in 0..days {
        let d0 = midnight(first + TimeDelta::days(k as i64));
        let (from, to) = (d0.max(start), (d0 + TimeDelta::days(1)).min(end));
        let quarter = |x: DateTime<Utc>| {
            let secs = (x - d0).num_seconds();
            (secs % 900 == 0).then_some((secs / 900) as i32)
        };
        let mut day = Vec::new();
        let mut t = from;
        while t < to {
            while plan.bucket_end(i) <= t {
                i += 1;
            }
            let piece_end = plan.bucket_end(i).min(to);
            day.push((i32::try_from(i + 1).ok()?, quarter(t)?, quarter(piece_end)?));
            t = piece_end;
        }
        if day.len() > MAX_SLOTS {
            return None;
        }
        per_day.push(day);
    }
    let slots = per_day.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut out =
        DayPieces { first, slots, bucket: vec![0; days * slots], lo: vec![0; days * slots], hi: vec![0; days * slots] };
    for (k, day) in per_day.iter().enumerate() {
        for (n, &(b, lo, hi)) in day.iter().enumerate() {
            let j = k * slots + n;
            (out.bucket[j], out.lo[j], out.hi[j]) = (b, lo, hi);
        }
    }
    Some(out)
}

/// The nine measure columns, in [`tokenusage_schema::Sums::to_array`] order.
pub const MEASURES: [&str; 9] = [
    "input_tokens",
    "output_tokens",
    "events",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "unpriced_tokens",
    "supplied_events",
];

/// `with seal as (...)`: the lowest seal among the subject's users
/// (`subject` pushes their condition), `-infinity` if none; day rows serve
/// days before it.
pub fn push_seal(qb: &mut QueryBuilder<'_, Postgres>, subject: impl FnOnce(&mut QueryBuilder<'_, Postgres>)) {
    qb.push(
        "with seal as (select coalesce(min(sealed_through), '-infinity'::date) as through, \
         coalesce(min(sealed_through), '-infinity'::date)::timestamp at time zone 'UTC' as at \
         from usage_day_seal where true",
    );
    subject(qb);
    qb.push(") ");
}

/// The day-row half of a series read: `(i, key, m1 .. m9)` per piece of
/// every day row below the seal, at grouping `summed`; `conditions` pushes
/// the subject's and filters' ` and ...` clauses. `key` is a fixed
/// column expression, never input.
pub fn push_day_part(
    qb: &mut QueryBuilder<'_, Postgres>,
    pieces: &DayPieces,
    summed: i16,
    key: &str,
    conditions: impl FnOnce(&mut QueryBuilder<'_, Postgres>),
) {
    // Innermost: each row with each of its day's pieces (`slots` of them,
    // empty ones dropped; lateral, so the day rows are the outer side and
    // their wide tuples are never materialized). Then the running sums' positions at the piece's ends
    // (width_bucket: how many of the row's quarters lie before the end).
    // Then each measure of the piece: the day's sum when the piece is the
    // whole day, else a difference of running sums. The `offset 0`s keep
    // each step's work done once per row and the arrays out of the
    // aggregation.
    let measure = |m: usize, col: &str| {
        format!(
            "case when y.whole then y.{col} else coalesce(y.running[y.h][{n}], 0) - coalesce(y.running[y.l][{n}], 0) end as {col}",
            n = m + 1
        )
    };
    let measures: Vec<String> = MEASURES.iter().enumerate().map(|(m, c)| measure(m, c)).collect();
    let cols = MEASURES.join(", ");
    qb.push(format!(
        "select y.i, y.key, {} from (select x.i, x.key, x.lo = 0 and x.hi = {QUARTERS} as whole, {cols}, x.running, \
         case when x.lo = 0 then 0 else width_bucket(x.lo - 1, x.quarters) end as l, \
         case when x.hi = {QUARTERS} then cardinality(x.quarters) else width_bucket(x.hi - 1, x.quarters) end as h \
         from (select b.i, b.lo, b.hi, {key} as key, {cols}, quarters, running \
         from usage_day cross join lateral (values {}) as s(n) \
         cross join lateral (select ",
        measures.join(", "),
        (1..=pieces.slots).map(|n| format!("({n})")).collect::<Vec<_>>().join(", ")
    ));
    let slot = |qb: &mut QueryBuilder<'_, Postgres>, v: &Vec<i32>| {
        qb.push("(").push_bind(v.clone()).push("::int4[])[(day - ").push_bind(pieces.first);
        qb.push(format!(") * {} + s.n]", pieces.slots));
    };
    slot(qb, &pieces.bucket);
    qb.push(" as i, ");
    slot(qb, &pieces.lo);
    qb.push(" as lo, ");
    slot(qb, &pieces.hi);
    qb.push(" as hi) b where b.i > 0 and summed = ").push_bind(summed);
    qb.push(" and day >= ").push_bind(pieces.first);
    qb.push(" and day < (select through from seal)");
    conditions(qb);
    qb.push(" offset 0) x offset 0) y");
}

/// `[from, to)` split for a range read: the whole UTC days inside it (for
/// day rows, up to the seal) and the parts before and after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSplit {
    /// `[from, days.0)`: the part before the first whole day.
    pub head: (DateTime<Utc>, DateTime<Utc>),
    pub days: (NaiveDate, NaiveDate),
    /// `[days.1, to)`.
    pub tail: (DateTime<Utc>, DateTime<Utc>),
}

/// Splits `[from, to)` around the whole UTC days inside it, or `None` if
/// there is not one.
pub fn split_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<RangeSplit> {
    let first = {
        let d = from.date_naive();
        if midnight(d) == from { d } else { d.succ_opt()? }
    };
    let end = to.date_naive();
    (first < end).then(|| RangeSplit { head: (from, midnight(first)), days: (first, end), tail: (midnight(end), to) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::plan::plan;
    use chrono::Weekday;
    use chrono_tz::Tz;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn plan_of(g: Granularity, zone: &str, from: &str, to: &str) -> Plan {
        plan(Some(g), &zone.parse::<Tz>().unwrap(), Weekday::Mon, t(from), t(to), 10_000).unwrap()
    }

    #[test]
    fn a_new_york_day_takes_the_end_of_one_utc_day_and_the_start_of_the_next() {
        let p = plan_of(Granularity::Day, "America/New_York", "2026-01-10T05:00:00Z", "2026-01-12T05:00:00Z");
        let got: Vec<_> = pieces(&p).unwrap().iter().map(|(d, i, lo, hi)| (d.to_string(), i, lo, hi)).collect();
        assert_eq!(
            got,
            vec![
                ("2026-01-10".into(), 1, 20, 96),
                ("2026-01-11".into(), 1, 0, 20),
                ("2026-01-11".into(), 2, 20, 96),
                ("2026-01-12".into(), 2, 0, 20),
            ]
        );
    }

    #[test]
    fn london_spring_forward_ends_a_local_day_an_hour_before_utc_midnight() {
        // 2026-03-29: local midnight is 00:00Z, the next one 23:00Z.
        let p = plan_of(Granularity::Day, "Europe/London", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
        let got: Vec<_> = pieces(&p).unwrap().iter().filter(|x| x.0.to_string() == "2026-03-29").collect();
        assert_eq!(got.iter().map(|x| (x.1, x.2, x.3)).collect::<Vec<_>>(), vec![(2, 0, 92), (3, 92, 96)]);
        let p = plan_of(Granularity::Day, "Asia/Kathmandu", "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z");
        assert!(pieces(&p).unwrap().iter().all(|(_, _, lo, hi)| [0, 73, 96].contains(&lo) && [73, 96].contains(&hi)));
    }

    #[test]
    fn hours_and_minutes_are_not_read_from_day_rows() {
        assert!(pieces(&plan_of(Granularity::Hour, "UTC", "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z")).is_none());
    }

    #[test]
    fn ranges_split_around_their_whole_days() {
        let s = split_range(t("2026-01-01T05:15:00Z"), t("2026-01-04T00:10:00Z")).unwrap();
        assert_eq!(s.head, (t("2026-01-01T05:15:00Z"), t("2026-01-02T00:00:00Z")));
        assert_eq!((s.days.0.to_string(), s.days.1.to_string()), ("2026-01-02".into(), "2026-01-04".into()));
        assert_eq!(s.tail, (t("2026-01-04T00:00:00Z"), t("2026-01-04T00:10:00Z")));
        let s = split_range(t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")).unwrap();
        assert_eq!((s.head.0, s.head.1, s.tail.0, s.tail.1), (s.head.0, s.head.0, s.tail.1, s.tail.1), "no edges");
        assert!(split_range(t("2026-01-01T05:00:00Z"), t("2026-01-02T04:00:00Z")).is_none());
    }

    proptest::proptest! {
        /// Every quarter-hour of the view lies in exactly one piece, and
        /// that piece's bucket is the one the planner puts it in.
        #[test]
        fn pieces_tile_the_view_and_agree_with_its_buckets(
            from in 1_600_000_000i64..1_800_000_000,
            len in 86_400i64..40_000_000,
            g in 2usize..5,
            zone in proptest::sample::select(vec!["UTC", "America/New_York", "Europe/London", "Asia/Kolkata",
                "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns", "Pacific/Chatham"]),
        ) {
            let (from, to) = (DateTime::from_timestamp(from, 0).unwrap(), DateTime::from_timestamp(from + len, 0).unwrap());
            let Ok(p) = plan(Some(Granularity::ALL[g]), &zone.parse::<Tz>().unwrap(), Weekday::Mon, from, to, 10_000)
                else { return Ok(()) };
            let Some(ps) = pieces(&p) else { return Ok(()) };
            let mut covered = 0i64;
            let mut last_end = p.start();
            for (day, i, lo, hi) in ps.iter() {
                proptest::prop_assert!(lo < hi && (0..=QUARTERS).contains(&lo) && hi <= QUARTERS);
                let a = midnight(day) + TimeDelta::minutes(15 * i64::from(lo));
                let b = midnight(day) + TimeDelta::minutes(15 * i64::from(hi));
                proptest::prop_assert_eq!(a, last_end, "pieces follow each other with no gap or overlap");
                let idx = (i - 1) as usize;
                proptest::prop_assert!(p.edges[idx] <= a && b <= p.bucket_end(idx));
                covered += (b - a).num_seconds();
                last_end = b;
            }
            proptest::prop_assert_eq!(last_end, p.end);
            proptest::prop_assert_eq!(covered, (p.end - p.start()).num_seconds());
        }
    }
}
