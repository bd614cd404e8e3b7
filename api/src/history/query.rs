//! Parsing a view from request parameters, and reading it from the rollups.
//!
//! The read path sums whole rollup rows into the planned buckets inside
//! PostgreSQL (`width_bucket` over the edge array, one index range scan):
//! it never touches raw events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;
use sqlx::{PgPool, QueryBuilder};

use super::plan::{self, Granularity, GroupBy, Plan, PlanError, Rollup};
use crate::error::ApiError;

/// Token sums.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
pub struct Sums {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub events: i64,
}

impl Sums {
    pub fn new(input: i64, output: i64, events: i64) -> Self {
        Sums { input_tokens: input, output_tokens: output, total_tokens: input + output, events }
    }

    pub fn add(&mut self, o: &Sums) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.total_tokens += o.total_tokens;
        self.events += o.events;
    }
}

/// Whose usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    /// Everyone together (admins).
    All,
}

impl Subject {
    pub fn label(&self) -> &str {
        match self {
            Subject::User(u) => u,
            Subject::All => "*",
        }
    }
}

/// Filters on dimensions (empty = no filter).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Filters {
    pub activity: Vec<String>,
    pub model: Vec<String>,
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
}

/// Parameters every view takes; routes add their own.
pub const VIEW_PARAMS: &[&str] =
    &["from", "to", "granularity", "tz", "group", "activity", "model", "user", "week_start"];

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

/// Refuses any parameter not in `allowed`, naming it.
pub fn check_known(q: &BTreeMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        let code = if matches!(k.as_str(), "activities" | "models" | "filter" | "group_by") {
            "unknown_filter"
        } else {
            "unknown_parameter"
        };
        return Err(bad(code, format!("unknown parameter `{k}`; this endpoint takes: {}", allowed.join(", "))));
    }
    Ok(())
}

pub fn parse_tz(v: Option<&str>) -> Result<Tz, ApiError> {
    let name = v.unwrap_or("UTC");
    name.parse::<Tz>().map_err(|_| {
        bad(
            "unknown_timezone",
            format!("`tz` is not an IANA time zone: {name:?} (e.g. Europe/Berlin, America/New_York, UTC)"),
        )
    })
}

/// An RFC 3339 instant, or a date (midnight in `tz`).
pub fn parse_time(name: &'static str, v: Option<&str>, tz: &Tz) -> Result<DateTime<Utc>, ApiError> {
    let v = v.ok_or_else(|| {
        bad(
            "missing_parameter",
            format!("`{name}` is required (RFC 3339 like 2026-11-27T00:00:00Z, or a date like 2026-11-27)"),
        )
    })?;
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        use chrono::Timelike;
        // chrono reads `23:59:60` as a second and a bit of `23:59:59`;
        // bucket arithmetic would then run one second late.
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

fn list(v: Option<&String>, name: &str) -> Result<Vec<String>, ApiError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let items: Vec<String> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if items.len() > 50 || items.iter().any(|s| s.len() > 128) {
        return Err(bad(
            "invalid_filter",
            format!("`{name}` takes at most 50 comma-separated values of up to 128 characters"),
        ));
    }
    Ok(items)
}

/// Parses the view parameters; `to` may be optional (live views).
pub fn parse_view(
    q: &BTreeMap<String, String>,
    default_week_start: Weekday,
    to_required: bool,
) -> Result<View, ApiError> {
    let tz = parse_tz(q.get("tz").map(String::as_str))?;
    let from = parse_time("from", q.get("from").map(String::as_str), &tz)?;
    let to = match q.get("to") {
        Some(v) => parse_time("to", Some(v), &tz)?,
        None if to_required => return Err(bad("missing_parameter", "`to` is required")),
        None => plan::latest(),
    };
    let granularity = match q.get("granularity") {
        None => None,
        Some(g) => Granularity::parse(g).ok_or_else(|| {
            bad(
                "unknown_granularity",
                format!("`granularity` must be minute, hour, day, week, month or auto, not {g:?}"),
            )
        })?,
    };
    let group = match q.get("group") {
        None => GroupBy::None,
        Some(g) => GroupBy::parse(g)
            .ok_or_else(|| bad("unknown_group", format!("`group` must be none, activity or model, not {g:?}")))?,
    };
    let week_start = match q.get("week_start").map(String::as_str) {
        None => default_week_start,
        Some("monday") => Weekday::Mon,
        Some("sunday") => Weekday::Sun,
        Some(w) => return Err(bad("invalid_week_start", format!("`week_start` must be monday or sunday, not {w:?}"))),
    };
    let filters = Filters { activity: list(q.get("activity"), "activity")?, model: list(q.get("model"), "model")? };
    Ok(View { from, to, granularity, tz, week_start, group, filters, user: q.get("user").cloned() })
}

/// The one range check every route applies, planned or not: `from` before
/// `to`, both between 1970-01-01 and 2200-01-01 (`plan::earliest`,
/// `plan::latest`).
pub fn require_range(v: &View) -> Result<(), ApiError> {
    if v.from >= v.to {
        return Err(bad("empty_range", "`from` must be before `to`"));
    }
    if v.from < plan::earliest() || v.to > plan::latest() {
        return Err(out_of_range());
    }
    Ok(())
}

fn out_of_range() -> ApiError {
    bad("out_of_range", "the range must lie between 1970-01-01 and 2200-01-01")
}

/// Plans a view, mapping planning errors to specific 400s.
pub fn plan_view(v: &View, max_points: usize) -> Result<Plan, ApiError> {
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

fn push_filters(qb: &mut QueryBuilder<'_, sqlx::Postgres>, subject: &Subject, filters: &Filters) {
    if let Subject::User(u) = subject {
        qb.push(" and user_id = ").push_bind(u.clone());
    }
    if !filters.activity.is_empty() {
        qb.push(" and activity = any(").push_bind(filters.activity.clone()).push(")");
    }
    if !filters.model.is_empty() {
        qb.push(" and model = any(").push_bind(filters.model.clone()).push(")");
    }
}

/// A series read: totals per bucket and, when grouped, per key.
#[derive(Debug, Clone, Default)]
pub struct SeriesData {
    pub totals: Vec<Sums>,
    /// Group key to per-bucket sums (empty when not grouped).
    pub groups: BTreeMap<String, Vec<Sums>>,
}

impl SeriesData {
    pub fn total(&self) -> Sums {
        let mut t = Sums::default();
        self.totals.iter().for_each(|s| t.add(s));
        t
    }
}

/// A series read and the rollup sequence it includes (migration 0007):
/// every change numbered up to `seq`, none above.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub data: SeriesData,
    pub seq: i64,
}

/// Reads a planned view together with the rollup sequence, in one
/// repeatable-read snapshot, so live views know which notified changes
/// the numbers already hold.
pub async fn read_snapshot(
    pool: &PgPool,
    subject: &Subject,
    plan: &Plan,
    group: GroupBy,
    filters: &Filters,
) -> sqlx::Result<Snapshot> {
    let mut tx = pool.begin_with("begin isolation level repeatable read read only").await?;
    let seq: i64 = sqlx::query_scalar("select seq from rollup_sequence").fetch_one(&mut *tx).await?;
    let data = read_series(&mut *tx, subject, plan, group, filters).await?;
    tx.commit().await?;
    Ok(Snapshot { data, seq })
}

/// Reads a planned view.
pub async fn read_series(
    db: impl sqlx::PgExecutor<'_>,
    subject: &Subject,
    plan: &Plan,
    group: GroupBy,
    filters: &Filters,
) -> sqlx::Result<SeriesData> {
    // Table and group column come from enums, never from input.
    let mut qb = QueryBuilder::new("select width_bucket(bucket, ");
    qb.push_bind(plan.edges.clone());
    qb.push(format!(
        ")::int4 as i, {key} as key, sum(input_tokens)::int8, sum(output_tokens)::int8, sum(events)::int8 \
         from {table} where bucket >= ",
        key = group.column(),
        table = plan.rollup.table()
    ));
    qb.push_bind(plan.start()).push(" and bucket < ").push_bind(plan.end);
    push_filters(&mut qb, subject, filters);
    qb.push(" group by 1, 2");
    let rows: Vec<(i32, String, i64, i64, i64)> = qb.build_query_as().fetch_all(db).await?;
    let n = plan.edges.len();
    let mut data = SeriesData { totals: vec![Sums::default(); n], groups: BTreeMap::new() };
    for (i, key, input, output, events) in rows {
        // width_bucket: 1-based index of the last edge <= bucket.
        let Some(idx) = usize::try_from(i).ok().and_then(|i| i.checked_sub(1)).filter(|i| *i < n) else { continue };
        let s = Sums::new(input, output, events);
        data.totals[idx].add(&s);
        if group != GroupBy::None {
            data.groups.entry(key).or_insert_with(|| vec![Sums::default(); n])[idx].add(&s);
        }
    }
    Ok(data)
}

/// `<select> from <rollup> where bucket in [from, to)` and the subject's and
/// filters' conditions, ready for a `group by`.
fn ranged<'a>(
    select: &str,
    rollup: Rollup,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    subject: &Subject,
    filters: &Filters,
) -> QueryBuilder<'a, sqlx::Postgres> {
    // The table comes from an enum, never from input.
    let mut qb = QueryBuilder::new(format!("{select} from {} where bucket >= ", rollup.table()));
    qb.push_bind(from).push(" and bucket < ").push_bind(to);
    push_filters(&mut qb, subject, filters);
    qb
}

/// Sums over `[from, to)`, which must lie on `rollup`'s grid.
pub async fn read_total(
    pool: &PgPool,
    subject: &Subject,
    rollup: Rollup,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
) -> sqlx::Result<Sums> {
    let select = "select coalesce(sum(input_tokens), 0)::int8, coalesce(sum(output_tokens), 0)::int8, \
                  coalesce(sum(events), 0)::int8";
    let (i, o, e): (i64, i64, i64) =
        ranged(select, rollup, from, to, subject, filters).build_query_as().fetch_one(pool).await?;
    Ok(Sums::new(i, o, e))
}

/// One row of a breakdown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BreakdownRow {
    pub activity: String,
    pub model: String,
    #[serde(flatten)]
    pub sums: Sums,
}

/// Sums per activity and model over `[from, to)` (on `rollup`'s grid).
pub async fn read_breakdown(
    pool: &PgPool,
    subject: &Subject,
    rollup: Rollup,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
) -> sqlx::Result<Vec<BreakdownRow>> {
    let select = "select activity, model, sum(input_tokens)::int8, sum(output_tokens)::int8, sum(events)::int8";
    let mut qb = ranged(select, rollup, from, to, subject, filters);
    qb.push(" group by 1, 2 order by sum(input_tokens + output_tokens) desc, 1, 2");
    let rows: Vec<(String, String, i64, i64, i64)> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(activity, model, i, o, e)| BreakdownRow { activity, model, sums: Sums::new(i, o, e) })
        .collect())
}

/// Activities and models seen in a range (hour grid, widened to whole hours).
pub async fn read_dimensions(
    pool: &PgPool,
    subject: &Subject,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let from = DateTime::from_timestamp(from.timestamp().div_euclid(3600) * 3600, 0).unwrap_or(from);
    let mut qb = QueryBuilder::new("select distinct activity, model from usage_hour where bucket >= ");
    qb.push_bind(from).push(" and bucket < ").push_bind(to);
    push_filters(&mut qb, subject, &Filters::default());
    let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().unzip())
}

/// Users by total tokens over `[from, to)` (on `rollup`'s grid).
pub async fn read_top_users(
    pool: &PgPool,
    rollup: Rollup,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<(String, Sums)>> {
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "select user_id, sum(input_tokens)::int8, sum(output_tokens)::int8, sum(events)::int8 from {} \
         where bucket >= $1 and bucket < $2 group by 1 order by sum(input_tokens + output_tokens) desc, 1 limit $3",
        rollup.table()
    ))
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(u, i, o, e)| (u, Sums::new(i, o, e))).collect())
}
