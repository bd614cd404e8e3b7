//! Calendar buckets in a zone: a "day" in America/New_York is 23 or 25
//! hours around DST changes, an "hour" in Asia/Kathmandu starts at :15 UTC.
//! The one set of rules for history's buckets and budgets' calendar
//! windows.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

/// Bucket widths a view can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Granularity {
    pub const ALL: [Granularity; 5] =
        [Granularity::Minute, Granularity::Hour, Granularity::Day, Granularity::Week, Granularity::Month];

    pub fn parse(s: &str) -> Option<Option<Granularity>> {
        Some(Some(match s {
            "minute" => Granularity::Minute,
            "hour" => Granularity::Hour,
            "day" => Granularity::Day,
            "week" => Granularity::Week,
            "month" => Granularity::Month,
            "auto" => return Some(None),
            _ => return None,
        }))
    }

    /// A typical width, for estimating point counts before building edges.
    pub fn nominal_secs(self) -> i64 {
        match self {
            Granularity::Minute => 60,
            Granularity::Hour => 3600,
            Granularity::Day => 86_400,
            Granularity::Week => 7 * 86_400,
            Granularity::Month => 28 * 86_400,
        }
    }
}

/// The instant local midnight of `date` begins (the first valid instant if
/// a DST change skips midnight).
pub fn local_midnight(tz: &Tz, date: NaiveDate) -> DateTime<Utc> {
    local_instant(tz, date.and_time(NaiveTime::MIN))
}

/// The instant a local wall-clock time begins: the earlier of two when the
/// clock falls back, the first existing minute after it when it springs
/// forward past it.
pub fn local_instant(tz: &Tz, mut naive: NaiveDateTime) -> DateTime<Utc> {
    for _ in 0..=180 {
        if let Some(t) = tz.from_local_datetime(&naive).earliest() {
            return t.with_timezone(&Utc);
        }
        naive += Duration::minutes(1);
    }
    Utc.from_utc_datetime(&naive)
}

/// Seconds in a quarter-hour: since 1972 every zone's offset is a multiple
/// of it, so every local :00 falls on a UTC quarter-hour.
pub const QUARTER: i64 = 900;

/// Whether the local clock reads hh:00:00 at `t`.
pub fn on_the_hour(tz: &Tz, t: DateTime<Utc>) -> bool {
    let l = t.with_timezone(tz);
    l.minute() == 0 && l.second() == 0
}

/// The start of the bucket holding `t`.
pub fn floor(g: Granularity, tz: &Tz, week_start: Weekday, t: DateTime<Utc>) -> DateTime<Utc> {
    let local = t.with_timezone(tz).naive_local();
    match g {
        Granularity::Minute => DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t),
        // The last instant at or before `t` whose local clock reads :00 (a
        // repeated wall-clock hour is two buckets, a skipped one none).
        Granularity::Hour => {
            let mut q = DateTime::from_timestamp(t.timestamp().div_euclid(QUARTER) * QUARTER, 0).unwrap_or(t);
            for _ in 0..8 {
                if on_the_hour(tz, q) {
                    return q;
                }
                q -= Duration::seconds(QUARTER);
            }
            t - Duration::seconds(i64::from(local.minute() * 60 + local.second()))
        }
        Granularity::Day => local_midnight(tz, local.date()),
        Granularity::Week => {
            let back = (local.weekday().num_days_from_monday() + 7 - week_start.num_days_from_monday()) % 7;
            local_midnight(tz, local.date() - Duration::days(i64::from(back)))
        }
        Granularity::Month => local_midnight(tz, local.date().with_day(1).unwrap_or(local.date())),
    }
}

/// The start of the bucket after the one starting at `start`.
pub fn next(g: Granularity, tz: &Tz, start: DateTime<Utc>) -> DateTime<Utc> {
    let local = start.with_timezone(tz).naive_local();
    let candidate = match g {
        Granularity::Minute => return start + Duration::minutes(1),
        Granularity::Hour => {
            // The next instant whose local clock reads :00: an hour on,
            // except where the offset moved by a fraction of an hour in
            // between (Lord Howe's 30 min DST: that bucket is 90 or 30
            // minutes long, and every bucket still starts on a local :00).
            let mut q = start;
            for _ in 0..12 {
                q += Duration::seconds(QUARTER);
                if on_the_hour(tz, q) {
                    return q;
                }
            }
            start + Duration::hours(1)
        }
        Granularity::Day => local_midnight(tz, local.date() + Duration::days(1)),
        Granularity::Week => local_midnight(tz, local.date() + Duration::days(7)),
        Granularity::Month => {
            let d = local.date();
            let (y, m) = if d.month() == 12 { (d.year() + 1, 1) } else { (d.year(), d.month() + 1) };
            local_midnight(tz, NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d))
        }
    };
    // Wall-clock arithmetic can stand still across a fall-back (01:00 EDT +
    // 1 h of wall clock = 01:00 EST's hour); always move forward.
    if candidate <= start { start + Duration::hours(1) } else { candidate }
}

/// The calendar bucket of `g` in `tz` that holds `t`, as `[start, end)`
/// in UTC (budgets' calendar windows use the same rules as views).
pub fn bucket_of(g: Granularity, tz: &Tz, week_start: Weekday, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = floor(g, tz, week_start, t);
    (start, next(g, tz, start))
}
