//! Usage history over the rollup tables, for the caller (or, for an admin,
//! any user). Times are UTC in this version; `docs/DECISIONS.md` records why
//! the rollup grains make other zones a matter of grouping, not new tables.

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::audit::AuditSlot;
use crate::auth::AuthUser;
use crate::error::ApiError;

/// Bucket widths a series can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Granularity {
    Minute,
    QuarterHour,
    Hour,
    Day,
}

impl Granularity {
    fn width(self) -> TimeDelta {
        match self {
            Granularity::Minute => TimeDelta::minutes(1),
            Granularity::QuarterHour => TimeDelta::minutes(15),
            Granularity::Hour => TimeDelta::hours(1),
            Granularity::Day => TimeDelta::days(1),
        }
    }

    /// The coarsest rollup table whose buckets tile this granularity, and
    /// the SQL expression mapping a row's bucket to the response bucket.
    fn source(self) -> (&'static str, &'static str) {
        match self {
            Granularity::Minute => ("usage_minute", "bucket"),
            Granularity::QuarterHour => ("usage_quarter_hour", "bucket"),
            Granularity::Hour => ("usage_hour", "bucket"),
            Granularity::Day => ("usage_hour", "date_trunc('day', bucket, 'UTC')"),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct SeriesQuery {
    from: Option<String>,
    to: Option<String>,
    granularity: Option<Granularity>,
    /// Admins only: whose usage.
    user: Option<String>,
}

#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Sums {
    input_tokens: i64,
    output_tokens: i64,
    events: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Point {
    start: DateTime<Utc>,
    #[serde(flatten)]
    sums: Sums,
}

#[derive(Debug, Serialize)]
pub(crate) struct Series {
    user: String,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    granularity: Granularity,
    timezone: &'static str,
    points: Vec<Point>,
    total: Sums,
}

fn parse_time(name: &'static str, v: Option<&str>) -> Result<DateTime<Utc>, ApiError> {
    let v = v.ok_or_else(|| {
        ApiError::bad_request(
            "missing_parameter",
            format!("`{name}` is required (RFC 3339, e.g. 2026-11-27T00:00:00Z)"),
        )
    })?;
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ApiError::bad_request("invalid_time", format!("`{name}` is not an RFC 3339 timestamp: {e}")))
}

/// Floors `t` to a multiple of `width` since the epoch.
fn floor(t: DateTime<Utc>, width: TimeDelta) -> DateTime<Utc> {
    let w = width.num_seconds();
    let s = t.timestamp().div_euclid(w) * w;
    DateTime::from_timestamp(s, 0).unwrap_or(t)
}

/// `GET /api/v1/usage/series`: token sums per bucket over `[from, to)`.
pub(crate) async fn series(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<Series>, ApiError> {
    let subject = user.subject_for(q.user.as_deref())?;
    let granularity = q.granularity.unwrap_or(Granularity::Hour);
    let width = granularity.width();
    let from = floor(parse_time("from", q.from.as_deref())?, width);
    let to = parse_time("to", q.to.as_deref())?;
    if from >= to {
        return Err(ApiError::bad_request("empty_range", "`from` must be before `to`"));
    }
    let points = ((to - from).num_seconds() + width.num_seconds() - 1) / width.num_seconds();
    if points as usize > state.config.max_points {
        return Err(ApiError::bad_request(
            "too_many_points",
            format!(
                "{points} {granularity:?} buckets exceed the limit of {}; pick a coarser granularity or a shorter range",
                state.config.max_points
            ),
        ));
    }
    let (table, expr) = granularity.source();
    // Table and bucket expression come from a fixed enum, never from input.
    let sql = format!(
        r#"
        select {expr} as start, sum(input_tokens)::int8 as input_tokens,
               sum(output_tokens)::int8 as output_tokens, sum(events)::int8 as events
        from {table}
        where user_id = $1 and bucket >= $2 and bucket < $3
        group by 1 order by 1
        "#
    );
    let rows: Vec<(DateTime<Utc>, i64, i64, i64)> =
        sqlx::query_as(&sql).bind(&subject).bind(from).bind(to).fetch_all(&state.pool).await?;
    let mut filled = Vec::with_capacity(points as usize);
    let mut rows = rows.into_iter().peekable();
    let mut total = Sums::default();
    let mut t = from;
    while t < to {
        let mut sums = Sums::default();
        if let Some((start, i, o, e)) = rows.peek().copied()
            && start == t
        {
            sums = Sums { input_tokens: i, output_tokens: o, events: e };
            rows.next();
        }
        total.input_tokens += sums.input_tokens;
        total.output_tokens += sums.output_tokens;
        total.events += sums.events;
        filled.push(Point { start: t, sums });
        t += width;
    }
    slot.set_detail(
        "usage.series",
        Some(&subject),
        serde_json::json!({ "from": from, "to": to, "granularity": granularity }),
        Some(filled.len() as i64),
    );
    Ok(Json(Series { user: subject, from, to, granularity, timezone: "UTC", points: filled, total }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct BreakdownQuery {
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct BreakdownRow {
    activity: String,
    model: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    sums: Sums,
}

/// `GET /api/v1/usage/breakdown`: sums per activity and model over `[from, to)`.
pub(crate) async fn breakdown(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
    Query(q): Query<BreakdownQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let subject = user.subject_for(q.user.as_deref())?;
    let from = floor(parse_time("from", q.from.as_deref())?, TimeDelta::minutes(1));
    let to = parse_time("to", q.to.as_deref())?;
    if from >= to {
        return Err(ApiError::bad_request("empty_range", "`from` must be before `to`"));
    }
    let rows: Vec<BreakdownRow> = sqlx::query_as(
        r#"
        select activity, model, sum(input_tokens)::int8 as input_tokens,
               sum(output_tokens)::int8 as output_tokens, sum(events)::int8 as events
        from usage_minute
        where user_id = $1 and bucket >= $2 and bucket < $3
        group by activity, model order by activity, model
        "#,
    )
    .bind(&subject)
    .bind(from)
    .bind(to)
    .fetch_all(&state.pool)
    .await?;
    slot.set_detail(
        "usage.breakdown",
        Some(&subject),
        serde_json::json!({ "from": from, "to": to }),
        Some(rows.len() as i64),
    );
    Ok(Json(serde_json::json!({ "user": subject, "from": from, "to": to, "rows": rows })))
}
