//! Request parsing: typed parameter structs (unknown names refused by
//! serde), and their reading into a [`View`] with specific 400s.
//!
//! The same structs serve REST query strings and live subscriptions (a JSON
//! object), so a view means the same thing on both.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::plan::{self, Granularity, GroupBy};

/// A list parameter: comma-separated in a query string, or (in a live
/// subscription) a JSON array of strings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = List;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a comma-separated string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<List, E> {
                Ok(List(s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    if !s.trim().is_empty() {
                        out.push(s.trim().to_owned());
                    }
                }
                Ok(List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The parameters of a view: series, summary, CSV and live subscriptions.
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ViewParams {
    /// Start: RFC 3339 instant, or a date (midnight in `tz`). Floored to its bucket.
    #[param(required = true, example = "2026-11-20T00:00:00Z")]
    pub from: Option<String>,
    /// End (exclusive): RFC 3339 instant or date. Extended to the end of its
    /// bucket. Required except in live subscriptions (open-ended views).
    #[param(required = true, example = "2026-11-21")]
    pub to: Option<String>,
    /// `minute`, `hour`, `day`, `week`, `month` or `auto` (default): the finest with at most 1000 buckets.
    pub granularity: Option<String>,
    /// IANA time zone of the buckets (default `UTC`).
    #[param(example = "Europe/Berlin")]
    pub tz: Option<String>,
    /// `none` (default), `activity`, `model`, `project`, `source` or `user`.
    pub group: Option<String>,
    /// Only these activities (comma-separated).
    #[param(value_type = Option<String>)]
    pub activity: Option<List>,
    /// Only these models (comma-separated).
    #[param(value_type = Option<String>)]
    pub model: Option<List>,
    /// Only these projects (comma-separated; `-` for events without one).
    #[param(value_type = Option<String>)]
    pub project: Option<List>,
    /// Only these publishers (sources, comma-separated).
    #[param(value_type = Option<String>)]
    pub source: Option<List>,
    /// Whose usage: yourself (default); a member of a team you manage;
    /// anyone for admins, `*` for everyone.
    pub user: Option<String>,
    /// A team's usage (its members' sum): managers of the team and admins.
    pub team: Option<String>,
    /// `monday` or `sunday` (default from `TOKENUSAGE_WEEK_START`).
    pub week_start: Option<String>,
}

/// A range split by activity and model (`breakdown`).
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BreakdownParams {
    /// Bucket start (a whole minute).
    #[param(required = true)]
    pub from: Option<String>,
    /// Bucket end (a whole minute).
    #[param(required = true)]
    pub to: Option<String>,
    /// IANA zone for date-only bounds and the returned times.
    pub tz: Option<String>,
    /// Only these activities.
    #[param(value_type = Option<String>)]
    pub activity: Option<List>,
    /// Only these models.
    #[param(value_type = Option<String>)]
    pub model: Option<List>,
    /// Only these projects (`-`: none).
    #[param(value_type = Option<String>)]
    pub project: Option<List>,
    /// Only these sources.
    #[param(value_type = Option<String>)]
    pub source: Option<List>,
    /// Whose usage (as for series).
    pub user: Option<String>,
    /// A team's usage (as for series).
    pub team: Option<String>,
}

/// A range (`dimensions`).
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// Range start.
    #[param(required = true)]
    pub from: Option<String>,
    /// Range end.
    #[param(required = true)]
    pub to: Option<String>,
    /// Zone for date-only bounds.
    pub tz: Option<String>,
    /// Whose usage (as for series).
    pub user: Option<String>,
    /// A team's usage (as for series).
    pub team: Option<String>,
}

/// The heaviest users of a range (`admin/usage/top-users`).
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopUsersParams {
    /// Range start.
    #[param(required = true)]
    pub from: Option<String>,
    /// Range end.
    #[param(required = true)]
    pub to: Option<String>,
    /// Zone for date-only bounds and returned times.
    pub tz: Option<String>,
    /// 1 to 1000, default 10.
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

/// The heaviest users, teams, projects and models of a range (`overview`).
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewParams {
    /// Range start.
    #[param(required = true)]
    pub from: Option<String>,
    /// Range end.
    #[param(required = true)]
    pub to: Option<String>,
    /// Zone for date-only bounds and returned times.
    pub tz: Option<String>,
    /// Whose usage (as for series; admins: `*` for everyone).
    pub user: Option<String>,
    /// A team's usage (as for series).
    pub team: Option<String>,
    /// Only these projects (`-`: none).
    #[param(value_type = Option<String>)]
    pub project: Option<List>,
    /// Entries per list, 1 to 1000 (default 10).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
}

impl From<OverviewParams> for ViewParams {
    fn from(p: OverviewParams) -> Self {
        ViewParams {
            from: p.from,
            to: p.to,
            tz: p.tz,
            user: p.user,
            team: p.team,
            project: p.project,
            ..Default::default()
        }
    }
}

impl From<BreakdownParams> for ViewParams {
    fn from(p: BreakdownParams) -> Self {
        ViewParams {
            from: p.from,
            to: p.to,
            tz: p.tz,
            activity: p.activity,
            model: p.model,
            project: p.project,
            source: p.source,
            user: p.user,
            team: p.team,
            ..Default::default()
        }
    }
}

impl From<RangeParams> for ViewParams {
    fn from(p: RangeParams) -> Self {
        ViewParams { from: p.from, to: p.to, tz: p.tz, user: p.user, team: p.team, ..Default::default() }
    }
}

impl From<TopUsersParams> for ViewParams {
    fn from(p: TopUsersParams) -> Self {
        ViewParams { from: p.from, to: p.to, tz: p.tz, ..Default::default() }
    }
}

/// Filters on dimensions (empty = no filter).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
pub struct Filters {
    pub activity: Vec<String>,
    pub model: Vec<String>,
    /// `-` stands for "no project" (stored as `""`).
    pub project: Vec<String>,
    pub source: Vec<String>,
}

impl Filters {
    /// Each filter with the rollup column it applies to.
    pub fn columns(&self) -> [(&'static str, &[String]); 4] {
        [("activity", &self.activity), ("model", &self.model), ("project", &self.project), ("source", &self.source)]
    }

    /// Whether a row with these dimension values passes every filter.
    pub fn admits(&self, activity: &str, model: &str, project: &str, source: &str) -> bool {
        let ok = |f: &[String], v: &str| f.is_empty() || f.iter().any(|x| x == v);
        ok(&self.activity, activity) && ok(&self.model, model) && ok(&self.project, project) && ok(&self.source, source)
    }
}

/// A parsed, validated view request.
#[derive(Debug, Clone)]
pub struct View {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Option<Granularity>,
    pub tz: Tz,
    pub week_start: Weekday,
    pub group: GroupBy,
    pub filters: Filters,
    /// The `user` parameter as given (authorization decides what it means).
    pub user: Option<String>,
    /// The `team` parameter as given.
    pub team: Option<String>,
}

/// Why a request's parameters do not make a view: a specific code and a
/// message naming the parameter (a 400 over HTTP, an error message on a
/// live socket).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadView {
    pub code: &'static str,
    pub message: String,
}

fn bad(code: &'static str, message: impl Into<String>) -> BadView {
    BadView { code, message: message.into() }
}

pub fn parse_tz(v: Option<&str>) -> Result<Tz, BadView> {
    let name = v.unwrap_or("UTC");
    name.parse::<Tz>().map_err(|_| {
        bad(
            "unknown_timezone",
            format!("`tz` is not an IANA time zone: {name:?} (e.g. Europe/Berlin, America/New_York, UTC)"),
        )
    })
}

/// An RFC 3339 instant, or a date (midnight in `tz`). Leap seconds are
/// refused: chrono reads `23:59:60` as a second and a bit of `23:59:59`,
/// and bucket arithmetic would then run one second late.
pub fn parse_time(name: &'static str, v: Option<&str>, tz: &Tz) -> Result<DateTime<Utc>, BadView> {
    let v = v.ok_or_else(|| {
        bad(
            "missing_parameter",
            format!("`{name}` is required (RFC 3339 like 2026-11-27T00:00:00Z, or a date like 2026-11-27)"),
        )
    })?;
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        use chrono::Timelike;
        if t.nanosecond() >= 1_000_000_000 {
            return Err(bad(
                "invalid_time",
                format!(
                    "`{name}` is a leap second ({v:?}), which has no place in the buckets; use :59 or the next minute"
                ),
            ));
        }
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        use chrono::TimeZone;
        if let Some(t) = tz.from_local_datetime(&d.and_time(NaiveTime::MIN)).earliest() {
            return Ok(t.with_timezone(&Utc));
        }
    }
    Err(bad("invalid_time", format!("`{name}` is neither an RFC 3339 timestamp nor a YYYY-MM-DD date: {v:?}")))
}

fn list(v: Option<&List>, name: &str) -> Result<Vec<String>, BadView> {
    let Some(List(items)) = v else { return Ok(Vec::new()) };
    if items.len() > 50 || items.iter().any(|s| s.len() > 128) {
        return Err(bad(
            "invalid_filter",
            format!("`{name}` takes at most 50 comma-separated values of up to 128 characters"),
        ));
    }
    Ok(items.clone())
}

impl View {
    /// Reads the parameters; `to` may be omitted only when `to_required` is
    /// false (a live view grows with time).
    pub fn parse(q: &ViewParams, default_week_start: Weekday, to_required: bool) -> Result<View, BadView> {
        let tz = parse_tz(q.tz.as_deref())?;
        let from = parse_time("from", q.from.as_deref(), &tz)?;
        let to = match &q.to {
            Some(v) => parse_time("to", Some(v), &tz)?,
            None if to_required => return Err(bad("missing_parameter", "`to` is required")),
            None => plan::latest(),
        };
        let granularity = match &q.granularity {
            None => None,
            Some(g) => Granularity::parse(g).ok_or_else(|| {
                bad(
                    "unknown_granularity",
                    format!("`granularity` must be minute, hour, day, week, month or auto, not {g:?}"),
                )
            })?,
        };
        let group = match &q.group {
            None => GroupBy::None,
            Some(g) => GroupBy::parse(g).ok_or_else(|| {
                bad(
                    "unknown_group",
                    format!("`group` must be none, activity, model, project, source or user, not {g:?}"),
                )
            })?,
        };
        let week_start = match q.week_start.as_deref() {
            None => default_week_start,
            Some("monday") => Weekday::Mon,
            Some("sunday") => Weekday::Sun,
            Some(w) => {
                return Err(bad("invalid_week_start", format!("`week_start` must be monday or sunday, not {w:?}")));
            }
        };
        let mut project = list(q.project.as_ref(), "project")?;
        project.iter_mut().filter(|p| *p == "-").for_each(String::clear);
        let filters = Filters {
            activity: list(q.activity.as_ref(), "activity")?,
            model: list(q.model.as_ref(), "model")?,
            project,
            source: list(q.source.as_ref(), "source")?,
        };
        if q.user.is_some() && q.team.is_some() {
            return Err(bad(
                "conflicting_parameters",
                "`user` and `team` cannot be combined: a team view with `group=user` shows each member",
            ));
        }
        Ok(View { from, to, granularity, tz, week_start, group, filters, user: q.user.clone(), team: q.team.clone() })
    }
}

/// The one range check every route applies, planned or not: `from` before
/// `to`, both between 1970-01-01 and 2200-01-01 (`plan::earliest`,
/// `plan::latest`).
pub fn require_range(v: &View) -> Result<(), BadView> {
    if v.from >= v.to {
        return Err(bad("empty_range", "`from` must be before `to`"));
    }
    if v.from < plan::earliest() || v.to > plan::latest() {
        return Err(out_of_range());
    }
    Ok(())
}

pub(crate) fn out_of_range() -> BadView {
    bad("out_of_range", "the range must lie between 1970-01-01 and 2200-01-01")
}

/// Plans a view, mapping planning errors to specific 400s.
pub fn plan_view(v: &View, max_points: usize) -> Result<plan::Plan, BadView> {
    use plan::PlanError;
    require_range(v)?;
    plan::plan(v.granularity, &v.tz, v.week_start, v.from, v.to, max_points).map_err(|e| match e {
        PlanError::EmptyRange => bad("empty_range", "`from` must be before `to`"),
        PlanError::OutOfRange => out_of_range(),
        PlanError::TooManyPoints { granularity, points, max } => bad(
            "too_many_points",
            format!(
                "about {points} {granularity:?} buckets exceed the limit of {max} per response; use a coarser granularity, \
                 `granularity=auto`, or a shorter range"
            )
            .to_lowercase(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ApiError;

    fn parse(json: serde_json::Value) -> Result<View, ApiError> {
        let p: ViewParams = serde_json::from_value(json).map_err(|e| ApiError::from_deserialize(&e.to_string()))?;
        Ok(View::parse(&p, Weekday::Mon, true)?)
    }

    #[test]
    fn lists_come_as_comma_strings_or_arrays_and_unknown_names_are_named() {
        let v = parse(serde_json::json!({"from": "2026-11-20", "to": "2026-11-21", "activity": "chat, embedding"}))
            .unwrap();
        assert_eq!(v.filters.activity, vec!["chat", "embedding"]);
        let v = parse(serde_json::json!({"from": "2026-11-20", "to": "2026-11-21", "model": ["a", " b "]})).unwrap();
        assert_eq!(v.filters.model, vec!["a", "b"]);
        let (code, message) =
            parse(serde_json::json!({"from": "2026-11-20", "colour": "red"})).unwrap_err().code_and_message();
        assert_eq!(code, "unknown_parameter");
        assert!(message.contains("`colour`") && message.contains("from, to, granularity"), "{message}");
        assert_eq!(parse(serde_json::json!({"activities": "x"})).unwrap_err().code_and_message().0, "unknown_filter");
        assert_eq!(parse(serde_json::json!({"from": 5})).unwrap_err().code_and_message().0, "invalid_parameter");
    }

    #[test]
    fn leap_seconds_and_out_of_range_bounds_are_refused() {
        let leap = parse(serde_json::json!({"from": "2016-12-31T23:59:60Z", "to": "2017-01-02"})).unwrap_err();
        assert!(leap.code_and_message().1.contains("leap second"));
        let v = parse(serde_json::json!({"from": "1969-12-31", "to": "1970-01-02"})).unwrap();
        assert_eq!(require_range(&v).unwrap_err().code, "out_of_range");
    }
}
