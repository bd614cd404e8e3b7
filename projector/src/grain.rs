//! Rollup grains and their bucket arithmetic.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// The grains rollups are kept at. Every bucket starts at a UTC instant
/// that is a whole multiple of the grain since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Minute,
    /// 15 minutes: every UTC offset in use today is a multiple of it, so any
    /// IANA zone's hours and days are unions of whole quarter-hour buckets.
    QuarterHour,
    Hour,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::QuarterHour, Grain::Hour];

    /// The rollup table of this grain (a fixed identifier, never user input).
    pub fn table(self) -> &'static str {
        match self {
            Grain::Minute => "usage_minute",
            Grain::QuarterHour => "usage_quarter_hour",
            Grain::Hour => "usage_hour",
        }
    }

    pub fn width(self) -> TimeDelta {
        match self {
            Grain::Minute => TimeDelta::minutes(1),
            Grain::QuarterHour => TimeDelta::minutes(15),
            Grain::Hour => TimeDelta::hours(1),
        }
    }

    /// The start of the bucket holding `t`.
    pub fn bucket(self, t: DateTime<Utc>) -> DateTime<Utc> {
        // Truncation by a positive width of at most an hour cannot overflow
        // for timestamps the contract accepts (years 2000 onwards).
        t.duration_trunc(self.width()).expect("bucket truncation in range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_truncate_to_the_grain() {
        let t: DateTime<Utc> = "2026-11-27T10:47:31.5Z".parse().unwrap();
        assert_eq!(Grain::Minute.bucket(t).to_rfc3339(), "2026-11-27T10:47:00+00:00");
        assert_eq!(Grain::QuarterHour.bucket(t).to_rfc3339(), "2026-11-27T10:45:00+00:00");
        assert_eq!(Grain::Hour.bucket(t).to_rfc3339(), "2026-11-27T10:00:00+00:00");
    }
}
