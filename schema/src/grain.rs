//! The rollup grains: which tables hold the sums, and how an instant is
//! floored to its bucket. The one place that knows the table names.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// A rollup grain. Every bucket starts at a UTC instant that is a whole
/// multiple of the grain since the epoch. Serialized as its table name
/// (the `rollup` a series response says it read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub enum Grain {
    #[serde(rename = "usage_minute")]
    Minute,
    /// 15 minutes: every UTC offset in use today is a multiple of it, so any
    /// IANA zone's hours and days are unions of whole quarter-hour buckets.
    #[serde(rename = "usage_quarter_hour")]
    QuarterHour,
    #[serde(rename = "usage_hour")]
    Hour,
}

impl Grain {
    /// Finest first.
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::QuarterHour, Grain::Hour];

    /// The rollup table of this grain (a fixed identifier, never user input).
    pub fn table(self) -> &'static str {
        match self {
            Grain::Minute => "usage_minute",
            Grain::QuarterHour => "usage_quarter_hour",
            Grain::Hour => "usage_hour",
        }
    }

    pub fn secs(self) -> i64 {
        match self {
            Grain::Minute => 60,
            Grain::QuarterHour => 900,
            Grain::Hour => 3600,
        }
    }

    pub fn width(self) -> TimeDelta {
        TimeDelta::seconds(self.secs())
    }

    /// The start of the bucket holding `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let secs = t.timestamp().div_euclid(self.secs()) * self.secs();
        DateTime::from_timestamp(secs, 0).unwrap_or(t)
    }

    /// Whether `t` is the start of one of this grain's buckets.
    pub fn aligned(self, t: DateTime<Utc>) -> bool {
        t.timestamp().rem_euclid(self.secs()) == 0 && t.timestamp_subsec_nanos() == 0
    }

    /// The SQL expression flooring the `timestamptz` column `column` to this
    /// grain, for rebuilds that recompute rollups in the database. `column`
    /// is a fixed identifier of the caller's, never input.
    pub fn sql_floor(self, column: &str) -> String {
        match self {
            Grain::Minute => format!("date_trunc('minute', {column}, 'UTC')"),
            Grain::QuarterHour => format!("to_timestamp(floor(extract(epoch from {column}) / 900) * 900)"),
            Grain::Hour => format!("date_trunc('hour', {column}, 'UTC')"),
        }
    }

    /// The coarsest grain on whose bucket starts every instant falls: the
    /// table a range with these bounds can be summed from exactly.
    pub fn coarsest_for(instants: impl IntoIterator<Item = DateTime<Utc>>) -> Grain {
        let mut best = Grain::Hour;
        for t in instants {
            while best != Grain::Minute && !best.aligned(t) {
                best = match best {
                    Grain::Hour => Grain::QuarterHour,
                    _ => Grain::Minute,
                };
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn buckets_floor_to_the_grain() {
        let x = t("2026-11-27T10:47:31.5Z");
        assert_eq!(Grain::Minute.floor(x), t("2026-11-27T10:47:00Z"));
        assert_eq!(Grain::QuarterHour.floor(x), t("2026-11-27T10:45:00Z"));
        assert_eq!(Grain::Hour.floor(x), t("2026-11-27T10:00:00Z"));
        assert_eq!(Grain::Hour.floor(t("1969-12-31T23:30:00Z")), t("1969-12-31T23:00:00Z"), "before the epoch too");
    }

    #[test]
    fn the_coarsest_grain_that_tiles_the_bounds_is_chosen() {
        assert_eq!(Grain::coarsest_for([t("2026-11-20T00:00:00Z"), t("2026-11-21T00:00:00Z")]), Grain::Hour);
        assert_eq!(Grain::coarsest_for([t("2026-11-19T18:30:00Z")]), Grain::QuarterHour, "Kolkata midnight");
        assert_eq!(Grain::coarsest_for([t("2026-11-19T18:31:00Z")]), Grain::Minute);
        assert_eq!(serde_json::to_value(Grain::QuarterHour).unwrap(), "usage_quarter_hour");
    }
}
