//! Query planning, with no I/O: a view (range, granularity, timezone,
//! grouping, filters) becomes bucket edges in UTC and the rollup table to
//! read.
//!
//! Buckets are calendar units in the viewer's zone: a "day" in
//! America/New_York is 23 or 25 hours long around DST changes, and an
//! "hour" in Asia/Kathmandu starts at :15 UTC. The rollups are minute,
//! quarter-hour and hour buckets in UTC; every real-world UTC offset is a
//! multiple of 15 minutes (since 1972), so the coarsest rollup whose
//! buckets all edges fall on is chosen per request, and summing whole
//! rollup rows into buckets is exact.

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;
pub use tokenusage_schema::Grain;
pub use tokenusage_schema::calendar::{Granularity, bucket_of};
use tokenusage_schema::calendar::{floor, next};

/// What a series is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    None,
    Activity,
    Model,
    /// `""` is "no project".
    Project,
    Source,
    /// Each user of the view (a team's members, or everyone).
    User,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "none" | "" => Some(GroupBy::None),
            "activity" => Some(GroupBy::Activity),
            "model" => Some(GroupBy::Model),
            "project" => Some(GroupBy::Project),
            "source" => Some(GroupBy::Source),
            "user" => Some(GroupBy::User),
            _ => None,
        }
    }

    /// The group's name in exports (`None` when not grouped).
    pub fn name(self) -> Option<&'static str> {
        match self {
            GroupBy::None => None,
            GroupBy::Activity => Some("activity"),
            GroupBy::Model => Some("model"),
            GroupBy::Project => Some("project"),
            GroupBy::Source => Some("source"),
            GroupBy::User => Some("user"),
        }
    }

    /// The SQL expression of the group key (fixed strings, never input).
    pub fn column(self) -> &'static str {
        match self {
            GroupBy::None => "''",
            GroupBy::Activity => "activity",
            GroupBy::Model => "model",
            GroupBy::Project => "project",
            GroupBy::Source => "source",
            GroupBy::User => "user_id",
        }
    }
}

/// Earliest and latest instants a view may touch.
pub fn earliest() -> DateTime<Utc> {
    DateTime::from_timestamp(0, 0).unwrap_or_default()
}
pub fn latest() -> DateTime<Utc> {
    // 2200-01-01: far enough for anyone, near enough to keep arithmetic safe.
    DateTime::from_timestamp(7_258_118_400, 0).unwrap_or_default()
}

/// A planned view: the bucket edges and where to read.
#[derive(Debug, Clone)]
pub struct Plan {
    pub granularity: Granularity,
    /// Bucket starts, strictly increasing; bucket i is `[edges[i], edges[i+1])`
    /// and the last one ends at `end`.
    pub edges: Vec<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    pub rollup: Grain,
}

impl Plan {
    pub fn start(&self) -> DateTime<Utc> {
        self.edges[0]
    }

    pub fn bucket_end(&self, i: usize) -> DateTime<Utc> {
        self.edges.get(i + 1).copied().unwrap_or(self.end)
    }
}

/// Why a view cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    EmptyRange,
    OutOfRange,
    TooManyPoints { granularity: Granularity, points: usize, max: usize },
}

/// Bucket edges covering `[from, to)`: from the start of the bucket holding
/// `from` to the end of the bucket holding the last instant before `to`.
/// `None` if there would be more than `max` buckets.
fn edges(
    g: Granularity,
    tz: &Tz,
    week_start: Weekday,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: usize,
) -> Option<(Vec<DateTime<Utc>>, DateTime<Utc>)> {
    let mut t = floor(g, tz, week_start, from);
    let mut out = Vec::new();
    while t < to {
        if out.len() == max {
            return None;
        }
        out.push(t);
        t = next(g, tz, t);
    }
    Some((out, t))
}

/// The finest granularity `auto` picks has at most this many buckets.
pub const AUTO_TARGET_POINTS: usize = 1000;

/// Plans a view. `granularity: None` is `auto`: the finest granularity with
/// at most [`AUTO_TARGET_POINTS`] (and `max`) buckets.
pub fn plan(
    granularity: Option<Granularity>,
    tz: &Tz,
    week_start: Weekday,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: usize,
) -> Result<Plan, PlanError> {
    if from >= to {
        return Err(PlanError::EmptyRange);
    }
    if from < earliest() || to > latest() {
        return Err(PlanError::OutOfRange);
    }
    let (granularity, (edges, end)) = match granularity {
        Some(g) => {
            let estimate = ((to - from).num_seconds() / g.nominal_secs()) as usize;
            let built = if estimate > max.saturating_mul(2) { None } else { edges(g, tz, week_start, from, to, max) };
            match built {
                Some(e) => (g, e),
                None => {
                    let points = estimate.max(max + 1);
                    return Err(PlanError::TooManyPoints { granularity: g, points, max });
                }
            }
        }
        None => {
            let cap = AUTO_TARGET_POINTS.min(max);
            Granularity::ALL
                .into_iter()
                .filter(|g| ((to - from).num_seconds() / g.nominal_secs()) as usize <= cap.saturating_mul(2))
                .find_map(|g| edges(g, tz, week_start, from, to, cap).map(|e| (g, e)))
                .ok_or(PlanError::TooManyPoints { granularity: Granularity::Month, points: cap + 1, max: cap })?
        }
    };
    let rollup = if granularity == Granularity::Minute {
        Grain::Minute
    } else {
        Grain::coarsest_for(edges.iter().copied().chain([end]))
    };
    Ok(Plan { granularity, edges, end, rollup })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use tokenusage_schema::calendar::on_the_hour;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        name.parse().unwrap()
    }

    fn plan_of(g: Granularity, zone: &str, from: &str, to: &str) -> Plan {
        plan(Some(g), &tz(zone), Weekday::Mon, t(from), t(to), 10_000).unwrap()
    }

    fn local(p: &Plan, zone: &str) -> Vec<String> {
        p.edges.iter().map(|e| e.with_timezone(&tz(zone)).to_rfc3339()).collect()
    }

    #[test]
    fn new_york_days_are_23_and_25_hours_long_around_dst() {
        // Spring forward: Sunday 2026-03-08.
        let p = plan_of(Granularity::Day, "America/New_York", "2026-03-07T05:00:00Z", "2026-03-10T04:00:00Z");
        let lens: Vec<i64> = (0..p.edges.len()).map(|i| (p.bucket_end(i) - p.edges[i]).num_hours()).collect();
        assert_eq!(lens, vec![24, 23, 24]);
        assert_eq!(local(&p, "America/New_York")[1], "2026-03-08T00:00:00-05:00");
        // Fall back: Sunday 2026-11-01.
        let p = plan_of(Granularity::Day, "America/New_York", "2026-10-31T04:00:00Z", "2026-11-03T05:00:00Z");
        let lens: Vec<i64> = (0..p.edges.len()).map(|i| (p.bucket_end(i) - p.edges[i]).num_hours()).collect();
        assert_eq!(lens, vec![24, 25, 24]);
        assert_eq!(p.rollup, Grain::Hour);
    }

    #[test]
    fn berlin_hours_skip_and_repeat_at_dst_changes() {
        // 2026-03-29 02:00 CET does not exist; 2026-10-25 02:00-03:00 happens twice.
        let p = plan_of(Granularity::Hour, "Europe/Berlin", "2026-03-29T00:00:00Z", "2026-03-29T03:00:00Z");
        assert_eq!(
            local(&p, "Europe/Berlin"),
            vec!["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]
        );
        let p = plan_of(Granularity::Hour, "Europe/Berlin", "2026-10-24T23:00:00Z", "2026-10-25T03:00:00Z");
        assert_eq!(p.edges.len(), 4, "{:?}", local(&p, "Europe/Berlin"));
        assert!(p.edges.windows(2).all(|w| w[1] - w[0] == Duration::hours(1)), "every UTC hour is its own bucket");
    }

    #[test]
    fn lord_howe_hours_start_on_a_local_hour_across_both_half_hour_shifts() {
        // DST ends 2026-04-05 02:00 (+11:00) -> 01:30 (+10:30): the wall-clock
        // hour 01:00 holds its repeated half hour (90 minutes). The issue's
        // events at 14:10Z, 14:45Z and 15:10Z are all in it.
        let p = plan_of(Granularity::Hour, "Australia/Lord_Howe", "2026-04-04T13:00:00Z", "2026-04-04T17:00:00Z");
        assert_eq!(
            local(&p, "Australia/Lord_Howe"),
            vec![
                "2026-04-05T00:00:00+11:00",
                "2026-04-05T01:00:00+11:00",
                "2026-04-05T02:00:00+10:30",
                "2026-04-05T03:00:00+10:30"
            ]
        );
        for at in ["2026-04-04T14:10:00Z", "2026-04-04T14:45:00Z", "2026-04-04T15:10:00Z"] {
            let (start, end) = bucket_of(Granularity::Hour, &tz("Australia/Lord_Howe"), Weekday::Mon, t(at));
            assert_eq!((start, end), (t("2026-04-04T14:00:00Z"), t("2026-04-04T15:30:00Z")), "{at}");
        }
        // DST starts 2026-10-04 02:00 (+10:30) -> 02:30 (+11:00): the hour 01:00
        // runs on to 03:00, skipping the wall-clock half hour that never was.
        let p = plan_of(Granularity::Hour, "Australia/Lord_Howe", "2026-10-03T13:30:00Z", "2026-10-03T17:30:00Z");
        assert_eq!(
            local(&p, "Australia/Lord_Howe"),
            vec![
                "2026-10-04T00:00:00+10:30",
                "2026-10-04T01:00:00+10:30",
                "2026-10-04T03:00:00+11:00",
                "2026-10-04T04:00:00+11:00"
            ]
        );
        assert!(p.edges.iter().all(|e| on_the_hour(&tz("Australia/Lord_Howe"), *e)));
        assert_eq!(p.rollup, Grain::QuarterHour);
    }

    #[test]
    fn half_and_quarter_hour_offsets_read_the_quarter_hour_rollup() {
        let p = plan_of(Granularity::Day, "Asia/Kolkata", "2026-11-20T00:00:00Z", "2026-11-23T00:00:00Z");
        assert_eq!(local(&p, "Asia/Kolkata")[0], "2026-11-20T00:00:00+05:30");
        assert_eq!(p.edges[0], t("2026-11-19T18:30:00Z"));
        assert_eq!(p.rollup, Grain::QuarterHour);
        let p = plan_of(Granularity::Hour, "Asia/Kathmandu", "2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z");
        assert_eq!(p.edges[0], t("2026-11-19T23:15:00Z"));
        assert_eq!(p.rollup, Grain::QuarterHour);
        let p = plan_of(Granularity::Day, "UTC", "2026-11-20T00:00:00Z", "2026-11-23T00:00:00Z");
        assert_eq!(p.rollup, Grain::Hour);
        let p = plan_of(Granularity::Minute, "Asia/Kathmandu", "2026-11-20T00:00:00Z", "2026-11-20T00:05:00Z");
        assert_eq!((p.rollup, p.edges.len()), (Grain::Minute, 5));
    }

    #[test]
    fn weeks_start_on_the_configured_day_and_months_and_years_roll_over() {
        // 2026-12-31 is a Thursday.
        let p = plan_of(Granularity::Week, "UTC", "2026-12-31T12:00:00Z", "2027-01-12T00:00:00Z");
        assert_eq!(
            local(&p, "UTC"),
            vec!["2026-12-28T00:00:00+00:00", "2027-01-04T00:00:00+00:00", "2027-01-11T00:00:00+00:00"]
        );
        let sunday = plan(
            Some(Granularity::Week),
            &tz("UTC"),
            Weekday::Sun,
            t("2026-12-31T12:00:00Z"),
            t("2027-01-05T00:00:00Z"),
            100,
        )
        .unwrap();
        assert_eq!(sunday.edges[0], t("2026-12-27T00:00:00Z"));
        let p = plan_of(Granularity::Month, "Europe/Berlin", "2026-11-15T00:00:00Z", "2027-02-01T00:00:00Z");
        assert_eq!(
            local(&p, "Europe/Berlin"),
            vec![
                "2026-11-01T00:00:00+01:00",
                "2026-12-01T00:00:00+01:00",
                "2027-01-01T00:00:00+01:00",
                "2027-02-01T00:00:00+01:00"
            ]
        );
        assert_eq!(p.end.with_timezone(&tz("Europe/Berlin")).to_rfc3339(), "2027-03-01T00:00:00+01:00");
    }

    #[test]
    fn explicit_granularities_over_the_cap_are_refused_and_auto_stays_under() {
        let err = plan(
            Some(Granularity::Minute),
            &tz("UTC"),
            Weekday::Mon,
            t("2026-01-01T00:00:00Z"),
            t("2026-12-31T00:00:00Z"),
            10_000,
        );
        assert!(matches!(err, Err(PlanError::TooManyPoints { granularity: Granularity::Minute, .. })));
        let p =
            plan(None, &tz("UTC"), Weekday::Mon, t("2026-01-01T00:00:00Z"), t("2026-12-31T00:00:00Z"), 10_000).unwrap();
        assert_eq!(p.granularity, Granularity::Day);
        let p =
            plan(None, &tz("UTC"), Weekday::Mon, t("2026-11-27T00:00:00Z"), t("2026-11-27T06:00:00Z"), 10_000).unwrap();
        assert_eq!(p.granularity, Granularity::Minute);
        assert_eq!(
            plan(None, &tz("UTC"), Weekday::Mon, t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z"), 10).unwrap_err(),
            PlanError::EmptyRange
        );
    }

    proptest::proptest! {
        /// Buckets tile the range with no gap or overlap, each edge sits on
        /// the chosen rollup's grid, and every instant of [from, to) falls
        /// in exactly one bucket.
        #[test]
        fn buckets_tile_the_range_on_the_rollup_grid(
            from in 1_700_000_000i64..1_800_000_000,
            len in 60i64..40_000_000,
            g in 0usize..5,
            zone in proptest::sample::select(vec!["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata",
                "Asia/Kathmandu", "Australia/Lord_Howe", "America/St_Johns", "Pacific/Chatham"]),
        ) {
            let (from, to) = (DateTime::from_timestamp(from, 0).unwrap(), DateTime::from_timestamp(from + len, 0).unwrap());
            let Ok(p) = plan(Some(Granularity::ALL[g]), &tz(zone), Weekday::Mon, from, to, 10_000) else { return Ok(()) };
            proptest::prop_assert!(p.edges[0] <= from && p.end >= to);
            proptest::prop_assert!(p.edges.windows(2).all(|w| w[0] < w[1]));
            proptest::prop_assert!(p.edges.last().copied().unwrap() < p.end);
            for e in p.edges.iter().chain([&p.end]) {
                proptest::prop_assert_eq!(e.timestamp().rem_euclid(p.rollup.secs()), 0);
            }
        }
    }
}
