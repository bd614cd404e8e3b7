//! Reading the day rows (`usage_day`, migration 0013) for cold views: how a
//! planned view's buckets cut each UTC day, and how a day row's sums fold
//! into those buckets (pure, unit- and property-tested), and the SQL that
//! fetches the rows below the subject's seal.
//!
//! A UTC day row overlaps at most three buckets of a view whose buckets are
//! at least a local day long (two local midnights can fall in one UTC day
//! at a DST change, e.g. London's 23-hour day). Its part in each bucket is a
//! quarter-hour range `[lo, hi)` of the day, so what a bucket needs from the
//! row is the running sum at each cut strictly inside the day: PostgreSQL
//! returns the row's sums and its running sums at those cuts (a binary
//! search and nine subscripts each), and the folding into buckets happens
//! here. Views with more cuts per day (hours, minutes) read the fine
//! rollups.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::{Postgres, QueryBuilder};
use tokenusage_schema::Grain;
use tokenusage_schema::Sums;
use tokenusage_schema::days::QUARTERS;

use super::plan::{Granularity, Plan};

/// Buckets one UTC day can fall in at most.
pub const MAX_PIECES: usize = 3;

/// One UTC day's part in one bucket: `[lo, hi)` in quarter-hours of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The bucket's index in the plan.
    pub bucket: usize,
    pub lo: i32,
    pub hi: i32,
}

/// How a view's buckets cut the UTC days it spans: per day from `first`,
/// its pieces and the quarter-hours strictly inside the day where a piece
/// starts or ends (`cuts`, ascending). `width` is the most cuts any day
/// has: the number of running sums the read asks per row (0 for UTC views).
///
/// Days with the same pieces and cuts (a month's whole days, say) form a
/// class: folding is linear, so the read sums a class's rows in
/// PostgreSQL and folds the sum once, as its first day (`class[k]` is day
/// `k`'s class, 1-based; `classes[c - 1]` that class's first day). A month
/// view then returns about 2 rows per month and key instead of 30.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayPlan {
    pub first: NaiveDate,
    pub days: Vec<(Vec<Piece>, Vec<i32>)>,
    pub width: usize,
    pub class: Vec<i32>,
    pub classes: Vec<usize>,
}

fn midnight(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The day plan of a planned view, or `None` when day rows do not serve
/// it: buckets shorter than a day, edges off the quarter-hour grid, or a
/// day in more than [`MAX_PIECES`] buckets.
pub fn day_plan(plan: &Plan) -> Option<DayPlan> {
    if plan.granularity < Granularity::Day || plan.rollup == Grain::Minute {
        return None;
    }
    let (start, end) = (plan.start(), plan.end);
    let first = start.date_naive();
    let last = (end - TimeDelta::seconds(1)).date_naive();
    let n = usize::try_from((last - first).num_days()).ok()? + 1;
    let mut days = Vec::with_capacity(n);
    // The bucket holding the current instant; buckets are walked once.
    let mut i = 0;
    for k in 0..n {
        let d0 = midnight(first + TimeDelta::days(k as i64));
        let (from, to) = (d0.max(start), (d0 + TimeDelta::days(1)).min(end));
        let quarter = |x: DateTime<Utc>| {
            let secs = (x - d0).num_seconds();
            (secs % 900 == 0).then_some((secs / 900) as i32)
        };
        let mut pieces = Vec::new();
        let mut t = from;
        while t < to {
            while plan.bucket_end(i) <= t {
                i += 1;
            }
            let piece_end = plan.bucket_end(i).min(to);
            pieces.push(Piece { bucket: i, lo: quarter(t)?, hi: quarter(piece_end)? });
            t = piece_end;
        }
        if pieces.len() > MAX_PIECES {
            return None;
        }
        let mut cuts: Vec<i32> =
            pieces.iter().flat_map(|p| [p.lo, p.hi]).filter(|q| (1..QUARTERS).contains(q)).collect();
        cuts.dedup();
        days.push((pieces, cuts));
    }
    let width = days.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
    // Classes are runs of like days: a bucket's days are consecutive.
    let (mut class, mut classes) = (Vec::with_capacity(n), Vec::new());
    for k in 0..n {
        if k == 0 || days[k] != days[k - 1] {
            classes.push(k);
        }
        class.push(i32::try_from(classes.len()).ok()?);
    }
    Some(DayPlan { first, days, width, class, classes })
}

impl DayPlan {
    /// For the SQL: cut `c` (0-based) of every day, [`QUARTERS`] where a
    /// day has fewer (the read then returns no running sum for it).
    pub fn cut_column(&self, c: usize) -> Vec<i32> {
        self.days.iter().map(|(_, cuts)| cuts.get(c).copied().unwrap_or(QUARTERS)).collect()
    }

    /// Folds one day row into its buckets: `day` is the row's day counted
    /// from `first`, `total` its sums, `running[c]` its running sums before
    /// the day's cut `c`. Calls `add(bucket, sums)` once per piece.
    pub fn fold(&self, day: usize, total: &Sums, running: &[Sums], mut add: impl FnMut(usize, &Sums)) {
        let Some((pieces, cuts)) = self.days.get(day) else { return };
        let at = |q: i32| -> Sums {
            match q {
                0 => Sums::default(),
                QUARTERS => *total,
                q => cuts.iter().position(|c| *c == q).and_then(|c| running.get(c)).copied().unwrap_or_default(),
            }
        };
        for p in pieces {
            add(p.bucket, &difference(&at(p.hi), &at(p.lo)));
        }
    }
}

/// `a - b`, measure by measure.
fn difference(a: &Sums, b: &Sums) -> Sums {
    let (a, b) = (a.to_array(), b.to_array());
    Sums::from_array(std::array::from_fn(|m| a[m] - b[m]))
}

/// The measure columns, in [`tokenusage_schema::Sums::to_array`] order.
pub use tokenusage_schema::rows::MEASURES;

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

/// The day rows of a view below the seal, at grouping `summed`, summed
/// per class of like days and group key: the columns `lead` names, the
/// class (int4), the key, the nine sums, and for each of the plan's `width`
/// cut columns the nine running sums before that day's cut (0 where the
/// class has no such cut). `conditions` pushes the subject's and filters'
/// ` and ...` clauses; `key` is a fixed column expression, never input;
/// `several_users`: the subject is a team or everyone, whose rows are
/// always summed per class. Needs [`push_seal`] before it.
pub fn push_day_rows(
    qb: &mut QueryBuilder<'_, Postgres>,
    lead: &str,
    plan: &DayPlan,
    summed: i16,
    key: &str,
    several_users: bool,
    conditions: impl FnOnce(&mut QueryBuilder<'_, Postgres>),
) {
    // Inner: one row per day row, with the class, the key, the sums and
    // the running sums at the cuts taken out of the arrays (`offset 0`:
    // the wide arrays never reach the aggregation). Outer: summed per
    // class and key, when classes hold several days (weeks, months) or
    // several users' rows (a team, everyone); for one user's day view each
    // class is one row and the rows go out as they are.
    let grouped = several_users || plan.classes.len() * 2 <= plan.days.len();
    // The columns: the nine sums, then the running sums at each cut.
    let mut exprs: Vec<String> = MEASURES.iter().map(|m| (*m).to_owned()).collect();
    for c in 0..plan.width {
        exprs.extend((1..=MEASURES.len()).map(|m| format!("running[j{c}][{m}]")));
    }
    qb.push(format!("select {lead}"));
    if grouped {
        let sums: Vec<String> = (0..exprs.len()).map(|v| format!("tokenusage_sum(v{v})")).collect();
        let named: Vec<String> = exprs.iter().enumerate().map(|(v, e)| format!("{e} as v{v}")).collect();
        qb.push(format!("class, key, {} from (select (", sums.join(", ")));
        qb.push_bind(plan.class.clone()).push("::int4[])[day - ").push_bind(plan.first);
        qb.push(format!(" + 1] as class, {key} as key, {} from usage_day", named.join(", ")));
    } else {
        qb.push("(").push_bind(plan.class.clone()).push("::int4[])[day - ").push_bind(plan.first);
        qb.push(format!(" + 1], {key}, {} from usage_day", exprs.join(", ")));
    }
    for c in 0..plan.width {
        // Where the running sums before cut c sit: how many of the row's
        // quarters lie before it (binary search), computed once per row.
        qb.push(format!(
            " cross join lateral (select case when x < {QUARTERS} then width_bucket(x - 1, quarters) end as j{c} from (select ("
        ));
        qb.push_bind(plan.cut_column(c))
            .push("::int4[])[day - ")
            .push_bind(plan.first)
            .push(format!(" + 1] as x) x{c} offset 0) w{c}"));
    }
    qb.push(" where summed = ").push_bind(summed);
    qb.push(" and day >= ").push_bind(plan.first);
    qb.push(" and day < ").push_bind(plan.first + TimeDelta::days(plan.days.len() as i64));
    qb.push(" and day < (select through from seal)");
    conditions(qb);
    if grouped {
        qb.push(" offset 0) d group by class, key");
    }
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

    fn pieces(d: &DayPlan) -> Vec<(String, usize, i32, i32)> {
        d.days
            .iter()
            .enumerate()
            .flat_map(|(k, (ps, _))| {
                let day = (d.first + TimeDelta::days(k as i64)).to_string();
                ps.iter().map(move |p| (day.clone(), p.bucket, p.lo, p.hi))
            })
            .collect()
    }

    #[test]
    fn a_new_york_day_takes_the_end_of_one_utc_day_and_the_start_of_the_next() {
        let p = plan_of(Granularity::Day, "America/New_York", "2026-01-10T05:00:00Z", "2026-01-12T05:00:00Z");
        let d = day_plan(&p).unwrap();
        assert_eq!(
            pieces(&d),
            vec![
                ("2026-01-10".into(), 0, 20, 96),
                ("2026-01-11".into(), 0, 0, 20),
                ("2026-01-11".into(), 1, 20, 96),
                ("2026-01-12".into(), 1, 0, 20),
            ]
        );
        assert_eq!(d.width, 1, "one running sum per row: at 05:00Z");
        assert_eq!(d.cut_column(0), vec![20, 20, 20]);
    }

    #[test]
    fn utc_views_need_no_running_sums() {
        for g in [Granularity::Day, Granularity::Week, Granularity::Month] {
            let d = day_plan(&plan_of(g, "UTC", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z")).unwrap();
            assert_eq!(d.width, 0, "{g:?}");
        }
        let month = day_plan(&plan_of(Granularity::Month, "UTC", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"));
        assert_eq!(month.unwrap().classes.len(), 12, "a month's days are one class");
        let ny =
            day_plan(&plan_of(Granularity::Month, "America/New_York", "2025-01-01T05:00:00Z", "2026-01-01T05:00:00Z"));
        // Each month: its whole days, and the UTC day its end cuts (the
        // first day is cut by the view's start, the last by its end).
        assert_eq!(ny.unwrap().classes.len(), 25);
    }

    #[test]
    fn london_spring_forward_ends_a_local_day_an_hour_before_utc_midnight() {
        // 2026-03-29: local midnight is 00:00Z, the next one 23:00Z.
        let p = plan_of(Granularity::Day, "Europe/London", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
        let d = day_plan(&p).unwrap();
        let got: Vec<_> = pieces(&d).into_iter().filter(|x| x.0 == "2026-03-29").map(|x| (x.1, x.2, x.3)).collect();
        assert_eq!(got, vec![(1, 0, 92), (2, 92, 96)]);
        let p = plan_of(Granularity::Day, "Asia/Kathmandu", "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z");
        assert!(pieces(&day_plan(&p).unwrap()).iter().all(|x| [0, 73].contains(&x.2) && [73, 96].contains(&x.3)));
    }

    #[test]
    fn hours_and_minutes_are_not_read_from_day_rows() {
        assert!(day_plan(&plan_of(Granularity::Hour, "UTC", "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z")).is_none());
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
        /// Every quarter-hour of the view lies in exactly one piece, in the
        /// bucket the planner puts it in; and folding a day row with random
        /// quarter-hour sums gives each bucket exactly the sum of its
        /// quarters, from the running sums at the day's cuts alone.
        #[test]
        fn pieces_tile_the_view_and_a_day_row_folds_into_its_buckets_exactly(
            from in 1_600_000_000i64..1_800_000_000,
            len in 86_400i64..40_000_000,
            g in 2usize..5,
            zone in proptest::sample::select(vec!["UTC", "America/New_York", "Europe/London", "Asia/Kolkata",
                "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns", "Pacific/Chatham"]),
            quarters in proptest::collection::vec(0i64..1000, 96),
            day_pick in 0usize..10_000,
        ) {
            let (from, to) = (DateTime::from_timestamp(from, 0).unwrap(), DateTime::from_timestamp(from + len, 0).unwrap());
            let Ok(p) = plan(Some(Granularity::ALL[g]), &zone.parse::<Tz>().unwrap(), Weekday::Mon, from, to, 10_000)
                else { return Ok(()) };
            let Some(d) = day_plan(&p) else { return Ok(()) };
            let mut covered = 0i64;
            let mut last_end = p.start();
            for (k, (ps, cuts)) in d.days.iter().enumerate() {
                proptest::prop_assert!(cuts.len() <= d.width);
                for piece in ps {
                    proptest::prop_assert!(piece.lo < piece.hi && piece.lo >= 0 && piece.hi <= QUARTERS);
                    let day = midnight(d.first + TimeDelta::days(k as i64));
                    let a = day + TimeDelta::minutes(15 * i64::from(piece.lo));
                    let b = day + TimeDelta::minutes(15 * i64::from(piece.hi));
                    proptest::prop_assert_eq!(a, last_end, "pieces follow each other with no gap or overlap");
                    proptest::prop_assert!(p.edges[piece.bucket] <= a && b <= p.bucket_end(piece.bucket));
                    covered += (b - a).num_seconds();
                    last_end = b;
                }
            }
            proptest::prop_assert_eq!(last_end, p.end);
            proptest::prop_assert_eq!(covered, (p.end - p.start()).num_seconds());
            // Fold one day: the row as PostgreSQL returns it.
            let k = day_pick % d.days.len();
            let sums = |range: std::ops::Range<usize>| Sums::new(quarters[range].iter().sum(), 0, 0);
            let total = sums(0..96);
            let running: Vec<Sums> = d.days[k].1.iter().map(|c| sums(0..*c as usize)).collect();
            let mut got = std::collections::BTreeMap::new();
            d.fold(k, &total, &running, |b, s| got.entry(b).or_insert_with(Sums::default).add(s));
            for piece in &d.days[k].0 {
                let want: i64 = quarters[piece.lo as usize..piece.hi as usize].iter().sum();
                proptest::prop_assert_eq!(got[&piece.bucket].input_tokens, want);
            }
        }
    }
}
