//! The day rows (`usage_day`, migration 0013): one row per user, UTC day
//! and series, at several groupings, holding the day's sums and the
//! running sums over its quarter-hours. The sealer (projector) writes them
//! below each user's seal (`usage_day_seal`); history reads (API) take
//! them below the seal and the fine rollups above it.
//!
//! This module is the one place that knows the groupings' numbering.

/// The dimensions a day row can keep, by their column names.
pub const DIMENSIONS: [&str; 4] = ["activity", "model", "source", "project"];

/// Every dimension kept: the grouping for filters and breakdowns.
pub const ALL_KEPT: i16 = 0;
/// Every dimension summed away: a user's total per day.
pub const NONE_KEPT: i16 = 15;

/// SQL's `grouping(activity, model, source, project)` bit of a dimension:
/// set when the dimension is summed away.
fn bit(dimension: &str) -> Option<i16> {
    match dimension {
        "activity" => Some(8),
        "model" => Some(4),
        "source" => Some(2),
        "project" => Some(1),
        _ => None,
    }
}

/// The `summed` value of the coarsest day rows that still hold every
/// dimension in `kept` (column names; anything else, such as `user_id`, is
/// in every row and ignored): all summed away, one kept, or, for two or
/// more, the full rows.
pub fn summed_keeping<'a>(kept: impl IntoIterator<Item = &'a str>) -> i16 {
    let mut bits: Vec<i16> = kept.into_iter().filter_map(bit).collect();
    bits.sort_unstable();
    bits.dedup();
    match bits.as_slice() {
        [] => NONE_KEPT,
        [one] => NONE_KEPT & !one,
        _ => ALL_KEPT,
    }
}

/// Quarter-hours in a UTC day: a day row's quarters are `0..QUARTERS`.
pub const QUARTERS: i32 = 96;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_grouping_keeps_what_it_is_asked_for() {
        assert_eq!(summed_keeping([]), 15);
        assert_eq!(summed_keeping(["user_id"]), 15, "every row has its user");
        assert_eq!(summed_keeping(["activity"]), 7);
        assert_eq!(summed_keeping(["model", "model"]), 11);
        assert_eq!(summed_keeping(["source"]), 13);
        assert_eq!(summed_keeping(["project"]), 14);
        assert_eq!(summed_keeping(["activity", "model"]), 0);
        // The values the migration's check constraint allows, and no other.
        for d in DIMENSIONS {
            assert!([7, 11, 13, 14].contains(&summed_keeping([d])));
        }
    }
}
