//! REST routes over usage history: series, summary, breakdown, CSV export,
//! dimensions, and the admin's top users. Every route resolves whose data
//! from the token (admins may name anyone, or `*` for everyone) and records
//! what it returned in the request's audit entry.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::plan::{Granularity, GroupBy, Plan, Rollup};
use super::query::{self, Filters, SeriesData, Subject, Sums, VIEW_PARAMS, View};
use crate::app::AppState;
use crate::audit::AuditSlot;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiQuery};

type Params = ApiQuery<BTreeMap<String, String>>;

/// The parameters of a view (series, summary, CSV and live subscriptions).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only: handlers parse the raw map to name unknown parameters.
pub struct ViewQuery {
    /// Start: RFC 3339 instant, or a date (midnight in `tz`). Floored to its bucket.
    from: String,
    /// End (exclusive): RFC 3339 instant or date. Extended to the end of its bucket.
    to: String,
    /// `minute`, `hour`, `day`, `week`, `month` or `auto` (default): the finest with at most 1000 buckets.
    granularity: Option<String>,
    /// IANA time zone of the buckets (default `UTC`).
    tz: Option<String>,
    /// `none` (default), `activity` or `model`.
    group: Option<String>,
    /// Only these activities (comma-separated).
    activity: Option<String>,
    /// Only these models (comma-separated).
    model: Option<String>,
    /// Admins: whose usage (`*` for everyone). Others may only name themselves.
    user: Option<String>,
    /// `monday` or `sunday` (default from `TOKENUSAGE_WEEK_START`).
    week_start: Option<String>,
}

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
    /// The rollup table read.
    pub rollup: Rollup,
    pub points: Vec<Point>,
    /// Per group (empty unless `group` is set).
    pub series: Vec<GroupSeries>,
    pub total: Sums,
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
    pub rows: Vec<query::BreakdownRow>,
    pub total: Sums,
}

/// Activities and models present in a range.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DimensionsResponse {
    pub user: String,
    pub activities: Vec<String>,
    pub models: Vec<String>,
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

/// Whose data a caller may read for the `user` parameter.
pub fn resolve_subject(user: &AuthUser, requested: Option<&str>) -> Result<Subject, ApiError> {
    match requested {
        Some("*") => {
            user.require_admin().map_err(|_| ApiError::Forbidden("only admins can see all users together"))?;
            Ok(Subject::All)
        }
        r => Ok(Subject::User(user.subject_for(r)?)),
    }
}

pub fn fmt_time(t: DateTime<Utc>, tz: &Tz) -> String {
    t.with_timezone(tz).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A view's parameters as understood, for the audit entry.
fn view_params(v: &View) -> Value {
    json!({
        "from": v.from, "to": v.to, "granularity": v.granularity, "tz": v.tz.name(),
        "group": v.group, "filters": v.filters, "week_start": v.week_start.to_string(),
    })
}

/// Like [`view_params`], with the granularity the plan chose.
fn planned_params(v: &View, plan: &Plan) -> Value {
    let mut p = view_params(v);
    p["granularity"] = json!(plan.granularity);
    p
}

/// A view parsed, authorized and planned: the common start of the routes.
struct Prepared {
    view: View,
    plan: Plan,
    subject: Subject,
}

/// The user a request asks about, as recorded before authorization
/// decides: an attempt on someone else's data is on *their* record too
/// ("who viewed my usage" lists denied attempts).
fn attempted<'a>(user: &'a AuthUser, view: &'a View) -> &'a str {
    view.user.as_deref().unwrap_or(&user.id)
}

fn prepare(
    state: &AppState,
    slot: &AuditSlot,
    action: &'static str,
    user: &AuthUser,
    q: &BTreeMap<String, String>,
    extra: &[&str],
) -> Result<Prepared, ApiError> {
    let allowed: Vec<&str> = VIEW_PARAMS.iter().chain(extra).copied().collect();
    query::check_known(q, &allowed)?;
    let view = query::parse_view(q, state.config.week_start.weekday(), true)?;
    slot.set_detail(action, Some(attempted(user, &view)), view_params(&view), None);
    let subject = resolve_subject(user, view.user.as_deref())?;
    let plan = query::plan_view(&view, state.config.max_points)?;
    slot.set_detail(action, Some(subject.label()), planned_params(&view, &plan), None);
    Ok(Prepared { view, plan, subject })
}

/// A range route's view (no buckets planned), parsed, recorded and authorized.
fn prepare_range(
    state: &AppState,
    slot: &AuditSlot,
    action: &'static str,
    user: &AuthUser,
    q: &BTreeMap<String, String>,
    known: &[&str],
) -> Result<(View, Subject), ApiError> {
    query::check_known(q, known)?;
    let view = query::parse_view(q, state.config.week_start.weekday(), true)?;
    let params = json!({"from": view.from, "to": view.to, "filters": view.filters});
    slot.set_detail(action, Some(attempted(user, &view)), params.clone(), None);
    let subject = resolve_subject(user, view.user.as_deref())?;
    query::require_range(&view)?;
    slot.set_detail(action, Some(subject.label()), params, None);
    Ok((view, subject))
}

/// A series response: the same shape REST and live snapshots use.
pub fn series_response(view: &View, plan: &Plan, subject: &Subject, data: &SeriesData) -> SeriesResponse {
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
    }
}

/// Token usage per bucket over a range.
#[utoipa::path(get, path = "/api/v1/usage/series", tag = "usage", params(ViewQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SeriesResponse), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn series(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: AuthUser,
    ApiQuery(q): Params,
) -> Result<Json<SeriesResponse>, ApiError> {
    let p = prepare(&state, &slot, "usage.series", &user, &q, &[])?;
    let snap = state.series_cache.read(&state.pool, &p.subject, &p.plan, p.view.group, &p.view.filters).await?;
    let data = &snap.data;
    slot.set_rows((data.totals.len() * data.groups.len().max(1)) as i64);
    Ok(Json(series_response(&p.view, &p.plan, &p.subject, data)))
}

/// Totals, peak, average and the change against the previous period of
/// the same length.
#[utoipa::path(get, path = "/api/v1/usage/summary", tag = "usage", params(ViewQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SummaryResponse), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn summary(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: AuthUser,
    ApiQuery(q): Params,
) -> Result<Json<SummaryResponse>, ApiError> {
    let p = prepare(&state, &slot, "usage.summary", &user, &q, &[])?;
    let snap = state.series_cache.read(&state.pool, &p.subject, &p.plan, GroupBy::None, &p.view.filters).await?;
    let data = &snap.data;
    let total = data.total();
    let peak = data
        .totals
        .iter()
        .enumerate()
        .filter(|(_, s)| s.total_tokens > 0)
        .max_by_key(|(i, s)| (s.total_tokens, std::cmp::Reverse(*i)))
        .map(|(i, s)| Peak {
            start: fmt_time(p.plan.edges[i], &p.view.tz),
            end: fmt_time(p.plan.bucket_end(i), &p.view.tz),
            total_tokens: s.total_tokens,
        });
    let buckets = data.totals.len();
    let prev_to = p.plan.start();
    let prev_from = prev_to - (p.plan.end - prev_to);
    let prev = query::read_total(
        &state.pool,
        &p.subject,
        Rollup::coarsest_for([prev_from, prev_to]),
        prev_from,
        prev_to,
        &p.view.filters,
    )
    .await?;
    let change = |now: i64, before: i64| Change {
        absolute: now - before,
        ratio: (before != 0).then(|| (now - before) as f64 / before as f64),
    };
    slot.set_rows(buckets as i64);
    Ok(Json(SummaryResponse {
        user: p.subject.label().to_owned(),
        from: fmt_time(p.plan.start(), &p.view.tz),
        to: fmt_time(p.plan.end, &p.view.tz),
        timezone: p.view.tz.name().to_owned(),
        granularity: p.plan.granularity,
        buckets,
        total,
        peak,
        average_per_bucket: if buckets == 0 { 0.0 } else { total.total_tokens as f64 / buckets as f64 },
        previous: PreviousPeriod {
            from: fmt_time(prev_from, &p.view.tz),
            to: fmt_time(prev_to, &p.view.tz),
            total: prev,
        },
        change: Changes {
            total_tokens: change(total.total_tokens, prev.total_tokens),
            events: change(total.events, prev.events),
        },
    }))
}

/// One bucket (or any minute-aligned range) by activity and model: the
/// chart's hover and click detail.
#[utoipa::path(get, path = "/api/v1/usage/breakdown", tag = "usage",
    params(("from" = String, Query, description = "Bucket start (whole minute)"),
        ("to" = String, Query, description = "Bucket end (whole minute)"),
        ("tz" = Option<String>, Query, description = "IANA zone for the returned times"),
        ("activity" = Option<String>, Query, description = "Only these activities"),
        ("model" = Option<String>, Query, description = "Only these models"),
        ("user" = Option<String>, Query, description = "Admins: whose usage, `*` for everyone")),
    security(("bearer" = [])),
    responses((status = 200, body = BreakdownResponse), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn breakdown(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: AuthUser,
    ApiQuery(q): Params,
) -> Result<Json<BreakdownResponse>, ApiError> {
    let (view, subject) =
        prepare_range(&state, &slot, "usage.breakdown", &user, &q, &["from", "to", "tz", "activity", "model", "user"])?;
    if view.from.timestamp() % 60 != 0 || view.to.timestamp() % 60 != 0 {
        return Err(ApiError::bad_request(
            "unaligned_range",
            "`from` and `to` must be whole minutes (a bucket's bounds)",
        ));
    }
    let rollup = Rollup::coarsest_for([view.from, view.to]);
    let rows = query::read_breakdown(&state.pool, &subject, rollup, view.from, view.to, &view.filters).await?;
    let mut total = Sums::default();
    rows.iter().for_each(|r| total.add(&r.sums));
    slot.set_rows(rows.len() as i64);
    Ok(Json(BreakdownResponse {
        user: subject.label().to_owned(),
        from: fmt_time(view.from, &view.tz),
        to: fmt_time(view.to, &view.tz),
        rows,
        total,
    }))
}

/// The activities and models that appear in a range, for filter pickers.
#[utoipa::path(get, path = "/api/v1/usage/dimensions", tag = "usage",
    params(("from" = String, Query, description = "Range start"), ("to" = String, Query, description = "Range end"),
        ("tz" = Option<String>, Query, description = "Zone for date-only bounds"),
        ("user" = Option<String>, Query, description = "Admins: whose usage, `*` for everyone")),
    security(("bearer" = [])),
    responses((status = 200, body = DimensionsResponse), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn dimensions(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: AuthUser,
    ApiQuery(q): Params,
) -> Result<Json<DimensionsResponse>, ApiError> {
    let (view, subject) = prepare_range(&state, &slot, "usage.dimensions", &user, &q, &["from", "to", "tz", "user"])?;
    let (activities, models) = query::read_dimensions(&state.pool, &subject, view.from, view.to).await?;
    slot.set_rows((activities.len() + models.len()) as i64);
    Ok(Json(DimensionsResponse {
        user: subject.label().to_owned(),
        activities: activities.into_iter().collect(),
        models: models.into_iter().collect(),
    }))
}

/// A CSV cell that a spreadsheet cannot mistake for a formula.
fn safe_cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() }
}

const CSV_CHUNK_ROWS: usize = 1000;

/// The series as CSV: exactly the chart's buckets, zone and filters
/// (RFC 4180, streamed; cells that a spreadsheet would read as a formula
/// are prefixed with `'`).
#[utoipa::path(get, path = "/api/v1/usage/export.csv", tag = "usage", params(ViewQuery),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String,
            description = "start,end[,activity|model],input_tokens,output_tokens,total_tokens,events"),
        (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: AuthUser,
    ApiQuery(q): Params,
) -> Result<Response, ApiError> {
    let p = prepare(&state, &slot, "usage.export_csv", &user, &q, &[])?;
    let snap = state.series_cache.read(&state.pool, &p.subject, &p.plan, p.view.group, &p.view.filters).await?;
    let data = &snap.data;
    let key_column = match p.view.group {
        GroupBy::None => None,
        GroupBy::Activity => Some("activity"),
        GroupBy::Model => Some("model"),
    };
    // One row per bucket, or per bucket and key when grouped.
    let mut rows: Vec<Vec<String>> = Vec::new();
    for i in 0..p.plan.edges.len() {
        let bounds = [fmt_time(p.plan.edges[i], &p.view.tz), fmt_time(p.plan.bucket_end(i), &p.view.tz)];
        let sums_row =
            |s: &Sums| [s.input_tokens, s.output_tokens, s.total_tokens, s.events].map(|n| n.to_string()).to_vec();
        if key_column.is_some() {
            for (key, sums) in &data.groups {
                rows.push([bounds.to_vec(), vec![safe_cell(key)], sums_row(&sums[i])].concat());
            }
        } else {
            rows.push([bounds.to_vec(), sums_row(&data.totals[i])].concat());
        }
    }
    slot.set_rows(rows.len() as i64);
    let mut header_row = vec!["start", "end"];
    header_row.extend(key_column);
    header_row.extend(["input_tokens", "output_tokens", "total_tokens", "events"]);
    let header_line = csv_bytes(std::iter::once(header_row.into_iter().map(str::to_owned).collect()));
    // Rows are encoded a chunk at a time, as the client reads.
    let mut rows = rows.into_iter().peekable();
    let chunks =
        std::iter::from_fn(move || rows.peek().is_some().then(|| csv_bytes(rows.by_ref().take(CSV_CHUNK_ROWS))));
    let body = futures::stream::iter(std::iter::once(header_line).chain(chunks).map(Ok::<_, std::io::Error>));
    let filename = format!(
        "tokenusage-{}-{}-{}.csv",
        p.subject.label().replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        p.plan.start().with_timezone(&p.view.tz).format("%Y%m%d"),
        serde_json::to_value(p.plan.granularity).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8; header=present".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn csv_bytes(rows: impl Iterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    for r in rows {
        // Writing to memory cannot fail.
        let _ = w.write_record(&r);
    }
    w.into_inner().unwrap_or_default()
}

/// The heaviest users in a range (admins).
#[utoipa::path(get, path = "/api/v1/admin/usage/top-users", tag = "admin",
    params(("from" = String, Query, description = "Range start"), ("to" = String, Query, description = "Range end"),
        ("tz" = Option<String>, Query, description = "Zone for date-only bounds and returned times"),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 10")),
    security(("bearer" = [])),
    responses((status = 200, body = TopUsersResponse), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn top_users(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: AuthUser,
    ApiQuery(q): Params,
) -> Result<Json<TopUsersResponse>, ApiError> {
    query::check_known(&q, &["from", "to", "tz", "limit"])?;
    let view = query::parse_view(&q, state.config.week_start.weekday(), true)?;
    slot.set_detail("admin.top_users", Some("*"), json!({"from": view.from, "to": view.to}), None);
    user.require_admin()?;
    let limit: i64 = match q.get("limit") {
        None => 10,
        Some(l) => l.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
            ApiError::bad_request("invalid_limit", format!("`limit` must be a number from 1 to 1000, not {l:?}"))
        })?,
    };
    query::require_range(&view)?;
    let (from, to) = (floor_minute(view.from), floor_minute(view.to));
    let rows = query::read_top_users(&state.pool, Rollup::coarsest_for([from, to]), from, to, limit).await?;
    slot.set_detail(
        "admin.top_users",
        Some("*"),
        json!({"from": from, "to": to, "limit": limit}),
        Some(rows.len() as i64),
    );
    Ok(Json(TopUsersResponse {
        from: fmt_time(from, &view.tz),
        to: fmt_time(to, &view.tz),
        users: rows.into_iter().map(|(user, total)| TopUser { user, total }).collect(),
    }))
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_cannot_start_a_formula() {
        assert_eq!(safe_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(safe_cell("+1"), "'+1");
        assert_eq!(safe_cell("@sum"), "'@sum");
        assert_eq!(safe_cell("chat"), "chat");
        let out = String::from_utf8(csv_bytes(std::iter::once(vec!["a,b".into(), "say \"hi\"".into()]))).unwrap();
        assert_eq!(out, "\"a,b\",\"say \"\"hi\"\"\"\r\n");
    }
}
