//! Which window a budget is in, how to sum it from the rollups, and the
//! forecast for its end. No I/O.

use chrono::{DateTime, Duration, Utc, Weekday};
use tokenusage_schema::Grain;

use super::{Budget, Period};
use tokenusage_schema::calendar::{Granularity, bucket_of};

/// Crossings of a rolling window are filed under this start: the window
/// moves with the clock, so one record per threshold is resolved when the
/// spend falls back under it and re-opened (a new episode) when it crosses
/// again.
pub const ROLLING_WINDOW_START: DateTime<Utc> = DateTime::UNIX_EPOCH;

/// A budget's current window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The key its crossings are filed under.
    pub key: DateTime<Utc>,
}

impl Window {
    /// The window of `b` holding `now`. A calendar window is the day, week
    /// (Monday first) or month of the budget's zone, with the same DST rules
    /// as views; a rolling one is the last N minutes, the current minute
    /// included.
    pub fn of(b: &Budget, now: DateTime<Utc>) -> Window {
        let g = match b.period {
            Period::Day => Granularity::Day,
            Period::Week => Granularity::Week,
            Period::Month => Granularity::Month,
            Period::Rolling => {
                let end = Grain::Minute.floor(now) + Duration::minutes(1);
                let start = end - Duration::minutes(i64::from(b.rolling_minutes.unwrap_or(1)));
                return Window { start, end, key: ROLLING_WINDOW_START };
            }
        };
        let (start, end) = bucket_of(g, &b.tz(), Weekday::Mon, now);
        Window { start, end, key: start }
    }

    /// `[start, end)` as whole rollup rows: hours where they fit, quarter
    /// hours where they do not (half- and quarter-hour zones), minutes at
    /// the start of a rolling window. Summing them is exact. A rolling
    /// window is read to the end of the current hour: nothing later than
    /// now exists but events stamped up to 5 minutes ahead (the contract's
    /// limit), which count already, and the hour row replaces up to 59
    /// minute rows per series.
    pub fn pieces(&self) -> Vec<(Grain, DateTime<Utc>, DateTime<Utc>)> {
        let end = if self.key == ROLLING_WINDOW_START { ceil(Grain::Hour, self.end) } else { self.end };
        let mut out = Vec::new();
        split(self.start, end, &mut out);
        out
    }

    /// The spend expected at the window's end at the pace so far (spend ÷
    /// elapsed time × the window's length). None for rolling windows (their
    /// end is always now) and in a window's first minute (no pace yet).
    pub fn forecast(&self, key_is_rolling: bool, spent: i64, now: DateTime<Utc>) -> Option<i64> {
        if key_is_rolling {
            return None;
        }
        let elapsed = (now.min(self.end) - self.start).num_milliseconds();
        let length = (self.end - self.start).num_milliseconds();
        if elapsed < 60_000 {
            return None;
        }
        let f = i128::from(spent) * i128::from(length) / i128::from(elapsed);
        Some(i64::try_from(f).unwrap_or(i64::MAX))
    }
}

fn ceil(g: Grain, t: DateTime<Utc>) -> DateTime<Utc> {
    let f = g.floor(t);
    if f == t { t } else { f + Duration::seconds(g.secs()) }
}

fn split(from: DateTime<Utc>, to: DateTime<Utc>, out: &mut Vec<(Grain, DateTime<Utc>, DateTime<Utc>)>) {
    if from >= to {
        return;
    }
    for g in [Grain::Hour, Grain::QuarterHour] {
        let (a, b) = (ceil(g, from), g.floor(to));
        if a < b {
            split(from, a, out);
            out.push((g, a, b));
            split(b, to, out);
            return;
        }
    }
    out.push((Grain::Minute, from, to));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Measure, Scope};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn budget(period: Period, zone: &str, rolling: Option<i32>) -> Budget {
        Budget {
            id: 1,
            name: "b".into(),
            scope: Scope::User("u".into()),
            measure: Measure::Tokens,
            amount: 100,
            period,
            zone: zone.into(),
            rolling_minutes: rolling,
            thresholds: vec![80],
            webhooks: vec![],
            created_by: "t".into(),
            created_at: t("2026-01-01T00:00:00Z"),
        }
    }

    #[test]
    fn calendar_windows_close_at_local_midnight() {
        // New York: 23:59 local on 8 March 2026 (EDT starts at 02:00 that
        // day, so the day is 23 hours long) and a minute later.
        let ny = budget(Period::Day, "America/New_York", None);
        let w = Window::of(&ny, t("2026-03-09T03:59:00Z"));
        assert_eq!((w.start, w.end), (t("2026-03-08T05:00:00Z"), t("2026-03-09T04:00:00Z")));
        assert_eq!(Window::of(&ny, t("2026-03-09T04:00:00Z")).start, t("2026-03-09T04:00:00Z"));
        // Kathmandu (+05:45): the day begins at 18:15 UTC, read in quarter
        // hours at both ends.
        let ktm = budget(Period::Day, "Asia/Kathmandu", None);
        let w = Window::of(&ktm, t("2026-06-10T18:14:59Z"));
        assert_eq!((w.start, w.end), (t("2026-06-09T18:15:00Z"), t("2026-06-10T18:15:00Z")));
        assert_eq!(Window::of(&ktm, t("2026-06-10T18:15:00Z")).start, t("2026-06-10T18:15:00Z"));
        assert_eq!(
            w.pieces(),
            vec![
                (Grain::QuarterHour, t("2026-06-09T18:15:00Z"), t("2026-06-09T19:00:00Z")),
                (Grain::Hour, t("2026-06-09T19:00:00Z"), t("2026-06-10T18:00:00Z")),
                (Grain::QuarterHour, t("2026-06-10T18:00:00Z"), t("2026-06-10T18:15:00Z")),
            ]
        );
        // Weeks start on Monday; months on the 1st, in the zone.
        let wk = budget(Period::Week, "UTC", None);
        assert_eq!(Window::of(&wk, t("2026-12-06T12:00:00Z")).start, t("2026-11-30T00:00:00Z"));
        let m = budget(Period::Month, "America/New_York", None);
        let w = Window::of(&m, t("2026-12-01T04:59:00Z"));
        assert_eq!((w.start, w.end), (t("2026-11-01T04:00:00Z"), t("2026-12-01T05:00:00Z")));
    }

    #[test]
    fn rolling_windows_move_with_the_clock_and_are_read_exactly() {
        let r = budget(Period::Rolling, "UTC", Some(24 * 60));
        let w = Window::of(&r, t("2026-06-10T10:07:30Z"));
        assert_eq!(
            (w.start, w.end, w.key),
            (t("2026-06-09T10:08:00Z"), t("2026-06-10T10:08:00Z"), ROLLING_WINDOW_START)
        );
        let p = w.pieces();
        assert_eq!(p.first().unwrap(), &(Grain::Minute, t("2026-06-09T10:08:00Z"), t("2026-06-09T10:15:00Z")));
        assert_eq!(p.last().unwrap(), &(Grain::Hour, t("2026-06-09T11:00:00Z"), t("2026-06-10T11:00:00Z")));
        // The pieces tile the window without gaps or overlaps.
        assert!(p.windows(2).all(|x| x[0].2 == x[1].1));
        assert_eq!(w.forecast(true, 50, t("2026-06-10T10:07:30Z")), None);
    }

    #[test]
    fn the_forecast_is_the_pace_so_far() {
        let m = budget(Period::Day, "UTC", None);
        let w = Window::of(&m, t("2026-06-10T06:00:00Z"));
        assert_eq!(w.forecast(false, 250, t("2026-06-10T06:00:00Z")), Some(1000));
        assert_eq!(w.forecast(false, 250, t("2026-06-10T00:00:30Z")), None);
        assert_eq!(
            w.forecast(false, 250, t("2026-06-11T06:00:00Z")),
            Some(250),
            "a closed window's forecast is its spend"
        );
    }
}
