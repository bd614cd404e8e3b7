//! What history looks like on the wire: the response shapes, shared by the
//! REST routes and the live views (a live snapshot is a REST series), and
//! the formatting of bucket bounds in the viewer's zone.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use tokenusage_schema::freshness::Freshness;
use tokenusage_schema::{Grain, Sums};

use super::params::{Filters, View};
use super::plan::{Granularity, GroupBy, Plan};
use super::read::{self, SeriesData, Subject};

/// One bucket's sums.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Point {
    /// Bucket start, RFC 3339 in the view's zone.
    pub start: String,
    /// Bucket end (exclusive).
    pub end: String,
    #[serde(flatten)]
    pub sums: Sums,
}

/// One group's values, bucket by bucket (aligned with `points`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct GroupSeries {
    pub key: String,
    pub input_tokens: Vec<i64>,
    pub output_tokens: Vec<i64>,
    pub events: Vec<i64>,
    /// Exact cost per bucket, nano-units of the price book's currency.
    pub cost_nanos: Vec<i64>,
    /// Tokens without a price per bucket (their cost is unknown, not 0).
    pub unpriced_tokens: Vec<i64>,
}

/// A usage series.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SeriesResponse {
    /// Whose usage (`*`: everyone).
    pub user: String,
    /// Start of the first bucket.
    pub from: String,
    /// End of the last bucket.
    pub to: String,
    pub timezone: String,
    pub granularity: Granularity,
    pub group: GroupBy,
    pub filters: Filters,
    /// The finest rollup the buckets need. Views of days and longer read
    /// the days before the subject's seal from the day rows (`usage_day`)
    /// and the rest from this table.
    pub rollup: Grain,
    pub points: Vec<Point>,
    /// Per group (empty unless `group` is set).
    pub series: Vec<GroupSeries>,
    pub total: Sums,
    /// The currency every cost is in (ISO 4217).
    pub currency: String,
    /// How current these numbers are: what the server that answered held
    /// (the read standby, which may be a few seconds behind, or the
    /// primary). In REST answers; a live message carries it beside the series.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
}

/// The busiest bucket.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Peak {
    pub start: String,
    pub end: String,
    pub total_tokens: i64,
}

/// The period of equal length just before.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PreviousPeriod {
    pub from: String,
    pub to: String,
    pub total: Sums,
}

/// Change against the previous period.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Change {
    pub absolute: i64,
    /// `(now - before) / before`; null when before was 0.
    pub ratio: Option<f64>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Changes {
    pub total_tokens: Change,
    pub events: Change,
}

/// Summary figures of a view.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SummaryResponse {
    pub user: String,
    pub from: String,
    pub to: String,
    pub timezone: String,
    pub granularity: Granularity,
    pub buckets: usize,
    pub total: Sums,
    /// Null when there was no usage.
    pub peak: Option<Peak>,
    /// Total tokens per bucket.
    pub average_per_bucket: f64,
    pub previous: PreviousPeriod,
    pub change: Changes,
}

/// A range split by activity and model.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct BreakdownResponse {
    pub user: String,
    pub from: String,
    pub to: String,
    pub rows: Vec<read::BreakdownRow>,
    pub total: Sums,
}

/// Activities and models present in a range.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DimensionsResponse {
    pub user: String,
    pub activities: Vec<String>,
    pub models: Vec<String>,
    /// `""` stands for events without a project.
    pub projects: Vec<String>,
    pub sources: Vec<String>,
}

/// One ranked value of an overview.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Ranked {
    /// The user, team, project (`""`: none) or model.
    pub key: String,
    pub total: Sums,
}

/// The heaviest users, teams, projects and models of a range.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OverviewResponse {
    /// Whose usage: a user, `team:<name>`, or `*`.
    pub subject: String,
    pub from: String,
    pub to: String,
    pub total: Sums,
    /// Empty for one user's view.
    pub users: Vec<Ranked>,
    /// Only in an admin's view of everyone; a member of several teams counts in each.
    pub teams: Vec<Ranked>,
    pub projects: Vec<Ranked>,
    pub models: Vec<Ranked>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TopUser {
    pub user: String,
    pub total: Sums,
}

/// The heaviest users of a range.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TopUsersResponse {
    pub from: String,
    pub to: String,
    pub users: Vec<TopUser>,
}

/// An instant in the view's zone, RFC 3339 to the second.
pub fn fmt_time(t: DateTime<Utc>, tz: &Tz) -> String {
    t.with_timezone(tz).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A series response: the same shape REST and live snapshots use.
pub fn series_response(
    view: &View,
    plan: &Plan,
    subject: &Subject,
    data: &SeriesData,
    freshness: Option<Freshness>,
) -> SeriesResponse {
    let points = data
        .totals
        .iter()
        .enumerate()
        .map(|(i, s)| Point {
            start: fmt_time(plan.edges[i], &view.tz),
            end: fmt_time(plan.bucket_end(i), &view.tz),
            sums: *s,
        })
        .collect();
    let series = data
        .groups
        .iter()
        .map(|(key, sums)| GroupSeries {
            key: key.clone(),
            input_tokens: sums.iter().map(|s| s.input_tokens).collect(),
            output_tokens: sums.iter().map(|s| s.output_tokens).collect(),
            events: sums.iter().map(|s| s.events).collect(),
            cost_nanos: sums.iter().map(|s| s.cost_nanos).collect(),
            unpriced_tokens: sums.iter().map(|s| s.unpriced_tokens).collect(),
        })
        .collect();
    SeriesResponse {
        user: subject.label().to_owned(),
        from: fmt_time(plan.start(), &view.tz),
        to: fmt_time(plan.end, &view.tz),
        timezone: view.tz.name().to_owned(),
        granularity: plan.granularity,
        group: view.group,
        filters: view.filters.clone(),
        rollup: plan.rollup,
        points,
        series,
        total: data.total(),
        currency: data.currency.clone(),
        freshness,
    }
}

/// The summary of a series and of the period of equal length before it.
pub fn summary_response(
    view: &View,
    plan: &Plan,
    subject: &Subject,
    data: &SeriesData,
    previous: (DateTime<Utc>, DateTime<Utc>, Sums),
) -> SummaryResponse {
    let total = data.total();
    let peak = data
        .totals
        .iter()
        .enumerate()
        .filter(|(_, s)| s.total_tokens > 0)
        .max_by_key(|(i, s)| (s.total_tokens, std::cmp::Reverse(*i)))
        .map(|(i, s)| Peak {
            start: fmt_time(plan.edges[i], &view.tz),
            end: fmt_time(plan.bucket_end(i), &view.tz),
            total_tokens: s.total_tokens,
        });
    let buckets = data.totals.len();
    let (prev_from, prev_to, prev) = previous;
    let change = |now: i64, before: i64| Change {
        absolute: now - before,
        ratio: (before != 0).then(|| (now - before) as f64 / before as f64),
    };
    SummaryResponse {
        user: subject.label().to_owned(),
        from: fmt_time(plan.start(), &view.tz),
        to: fmt_time(plan.end, &view.tz),
        timezone: view.tz.name().to_owned(),
        granularity: plan.granularity,
        buckets,
        total,
        peak,
        average_per_bucket: if buckets == 0 { 0.0 } else { total.total_tokens as f64 / buckets as f64 },
        previous: PreviousPeriod { from: fmt_time(prev_from, &view.tz), to: fmt_time(prev_to, &view.tz), total: prev },
        change: Changes {
            total_tokens: change(total.total_tokens, prev.total_tokens),
            events: change(total.events, prev.events),
        },
    }
}
