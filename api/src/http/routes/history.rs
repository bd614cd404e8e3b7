//! REST routes over usage history: series, summary, breakdown, CSV export,
//! dimensions, and the admin's top users. Each handler extracts its typed
//! parameters, parses them into a view, records in the request's audit
//! entry whose data it asks for (before authorization decides, so a denied
//! attempt names its subject), authorizes, reads, and presents.

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::Response;
use serde_json::{Value, json};
use tokenusage_plumbing::replica::ReadFrom;
use tokenusage_schema::{Grain, Sums};

use crate::audit::AuditSlot;
use crate::history::params::{self, BreakdownParams, OverviewParams, RangeParams, TopUsersParams, View, ViewParams};
use crate::history::plan::{GroupBy, Plan};
use crate::history::present::{
    BreakdownResponse, DimensionsResponse, OverviewResponse, Ranked, SeriesResponse, SummaryResponse, TopUser,
    TopUsersResponse, fmt_time, series_response, summary_response,
};
use crate::history::read::{self, Subject};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiQuery};
use crate::http::extract::Caller;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(series))
        .routes(routes!(summary))
        .routes(routes!(breakdown))
        .routes(routes!(dimensions))
        .routes(routes!(export_csv))
        .routes(routes!(overview))
        .routes(routes!(top_users))
}

/// A view's parameters as understood, for the audit entry.
fn audit_params(v: &View, plan: Option<&Plan>) -> Value {
    json!({
        "from": v.from, "to": v.to, "granularity": plan.map_or(v.granularity, |p| Some(p.granularity)),
        "tz": v.tz.name(), "group": v.group, "filters": v.filters, "week_start": v.week_start.to_string(),
    })
}

/// The user (or `team:<name>`) a request asks about, as recorded before
/// authorization decides.
fn attempted(user: &Caller, view: &View) -> String {
    match (&view.team, &view.user) {
        (Some(t), _) => format!("team:{t}"),
        (None, Some(u)) => u.clone(),
        (None, None) => user.id.clone(),
    }
}

/// A view parsed, recorded, authorized and planned: the start of every
/// bucketed route.
struct Prepared {
    view: View,
    plan: Plan,
    subject: Subject,
}

async fn prepare(
    state: &AppState,
    slot: &AuditSlot,
    action: &'static str,
    user: &Caller,
    q: &ViewParams,
) -> Result<Prepared, ApiError> {
    let view = View::parse(q, state.config.history.week_start.weekday(), true)?;
    slot.set_detail(action, Some(&attempted(user, &view)), audit_params(&view, None), None);
    let subject = authorize(state, slot, user, &view).await?;
    let plan = params::plan_view(&view, state.config.history.max_points)?;
    slot.set_detail(action, Some(subject.label()), audit_params(&view, Some(&plan)), None);
    slot.set_covers(subject.covers());
    Ok(Prepared { view, plan, subject })
}

/// The view's subject if the caller may see it. A refused team view names
/// the team's members in the entry, so each finds the attempt in "who
/// viewed my usage" (they see only themselves there).
async fn authorize(state: &AppState, slot: &AuditSlot, user: &Caller, view: &View) -> Result<Subject, ApiError> {
    let refused = match user.usage_subject(state, view.user.as_deref(), view.team.as_deref()).await {
        Ok(subject) => return Ok(subject),
        Err(e) => e,
    };
    if let Some(team) = view.team.as_deref()
        && let Ok(Some(members)) = state.teams.members(&state.pool, team).await
    {
        slot.set_covers(&members);
    }
    Err(refused)
}

/// A range route's view (no buckets planned), parsed, recorded, authorized.
async fn prepare_range(
    state: &AppState,
    slot: &AuditSlot,
    action: &'static str,
    user: &Caller,
    q: ViewParams,
) -> Result<(View, Subject), ApiError> {
    let view = View::parse(&q, state.config.history.week_start.weekday(), true)?;
    let recorded = json!({"from": view.from, "to": view.to, "filters": view.filters});
    slot.set_detail(action, Some(&attempted(user, &view)), recorded.clone(), None);
    let subject = authorize(state, slot, user, &view).await?;
    params::require_range(&view)?;
    slot.set_detail(action, Some(subject.label()), recorded, None);
    slot.set_covers(subject.covers());
    Ok((view, subject))
}

/// Token usage per bucket over a range.
#[utoipa::path(get, path = "/api/v1/usage/series", tag = "usage", params(ViewParams),
    security(("bearer" = [])), responses((status = 200, body = SeriesResponse)))]
pub(crate) async fn series(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<ViewParams>,
) -> Result<Json<SeriesResponse>, ApiError> {
    let p = prepare(&state, &slot, "usage.series", &user, &q).await?;
    let reads = state.reads.pick();
    let snap = state.series_cache.read(reads, &p.subject, &p.plan, p.view.group, &p.view.filters).await?;
    // From the server that answered, never newer than its data: the
    // primary's is polled once a second for live views (at most a second
    // old, so it under-promises); a standby's is read after the data.
    let freshness = match reads.1 {
        ReadFrom::Primary => state.live.freshness().borrow().clone(),
        ReadFrom::Standby { .. } => tokenusage_schema::freshness::read(reads.0).await?,
    };
    let data = &snap.data;
    slot.set_rows((data.totals.len() * data.groups.len().max(1)) as i64);
    Ok(Json(series_response(&p.view, &p.plan, &p.subject, data, Some(freshness))))
}

/// Totals, peak, average and the change against the previous period of
/// the same length.
#[utoipa::path(get, path = "/api/v1/usage/summary", tag = "usage", params(ViewParams),
    security(("bearer" = [])), responses((status = 200, body = SummaryResponse)))]
pub(crate) async fn summary(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<ViewParams>,
) -> Result<Json<SummaryResponse>, ApiError> {
    let p = prepare(&state, &slot, "usage.summary", &user, &q).await?;
    let reads = state.reads.pick();
    let snap = state.series_cache.read(reads, &p.subject, &p.plan, GroupBy::None, &p.view.filters).await?;
    let prev_to = p.plan.start();
    let prev_from = prev_to - (p.plan.end - prev_to);
    let grain = Grain::coarsest_for([prev_from, prev_to]);
    let prev = read::read_total(reads.0, &p.subject, grain, prev_from, prev_to, &p.view.filters).await?;
    slot.set_rows(snap.data.totals.len() as i64);
    Ok(Json(summary_response(&p.view, &p.plan, &p.subject, &snap.data, (prev_from, prev_to, prev))))
}

/// One bucket (or any minute-aligned range) by activity and model: the
/// chart's hover and click detail.
#[utoipa::path(get, path = "/api/v1/usage/breakdown", tag = "usage", params(BreakdownParams),
    security(("bearer" = [])), responses((status = 200, body = BreakdownResponse)))]
pub(crate) async fn breakdown(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<BreakdownParams>,
) -> Result<Json<BreakdownResponse>, ApiError> {
    let (view, subject) = prepare_range(&state, &slot, "usage.breakdown", &user, q.into()).await?;
    if !Grain::Minute.aligned(view.from) || !Grain::Minute.aligned(view.to) {
        return Err(ApiError::bad_request(
            "unaligned_range",
            "`from` and `to` must be whole minutes (a bucket's bounds)",
        ));
    }
    let grain = Grain::coarsest_for([view.from, view.to]);
    let rows = read::read_breakdown(state.reads.pick().0, &subject, grain, view.from, view.to, &view.filters).await?;
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
#[utoipa::path(get, path = "/api/v1/usage/dimensions", tag = "usage", params(RangeParams),
    security(("bearer" = [])), responses((status = 200, body = DimensionsResponse)))]
pub(crate) async fn dimensions(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<RangeParams>,
) -> Result<Json<DimensionsResponse>, ApiError> {
    let (view, subject) = prepare_range(&state, &slot, "usage.dimensions", &user, q.into()).await?;
    let d = read::read_dimensions(state.reads.pick().0, &subject, view.from, view.to).await?;
    slot.set_rows((d.activities.len() + d.models.len() + d.projects.len() + d.sources.len()) as i64);
    Ok(Json(DimensionsResponse {
        user: subject.label().to_owned(),
        activities: d.activities.into_iter().collect(),
        models: d.models.into_iter().collect(),
        projects: d.projects.into_iter().collect(),
        sources: d.sources.into_iter().collect(),
    }))
}

/// The series as CSV: exactly the chart's buckets, zone and filters
/// (RFC 4180, streamed; cells that a spreadsheet would read as a formula
/// are prefixed with `'`).
#[utoipa::path(get, path = "/api/v1/usage/export.csv", tag = "usage", params(ViewParams),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv", body = String,
        description = "Header row, then one row per bucket (per bucket and key with `group`): `start,end[,<group>],input_tokens,output_tokens,total_tokens,events,cache_read_tokens,cache_write_tokens,reasoning_tokens,cost,unpriced_tokens,supplied_events`. `<group>` is the `group` parameter's dimension (activity, model, project, source or user) and absent without it; `cost` is exact decimal text in the price book's currency, empty when tokens were used and none had a price. A test checks this list against the columns written.")))]
pub(crate) async fn export_csv(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<ViewParams>,
) -> Result<Response, ApiError> {
    let p = prepare(&state, &slot, "usage.export_csv", &user, &q).await?;
    let snap = state.series_cache.read(state.reads.pick(), &p.subject, &p.plan, p.view.group, &p.view.filters).await?;
    let rows = crate::history::csv::rows(&p.view, &p.plan, &snap.data);
    slot.set_rows(rows.len() as i64);
    Ok(crate::history::csv::response(&p.view, &p.plan, &p.subject, rows))
}

/// The heaviest users in a range (admins).
#[utoipa::path(get, path = "/api/v1/admin/usage/top-users", tag = "admin", params(TopUsersParams),
    security(("bearer" = [])), responses((status = 200, body = TopUsersResponse)))]
pub(crate) async fn top_users(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<TopUsersParams>,
) -> Result<Json<TopUsersResponse>, ApiError> {
    let limit = q.limit.clone();
    let view = View::parse(&q.into(), state.config.history.week_start.weekday(), true)?;
    slot.set_detail("admin.top_users", Some("*"), json!({"from": view.from, "to": view.to}), None);
    user.require_admin()?;
    let limit = parse_limit(limit.as_deref())?;
    params::require_range(&view)?;
    let (from, to) = (Grain::Minute.floor(view.from), Grain::Minute.floor(view.to));
    let grain = Grain::coarsest_for([from, to]);
    let by_user = read::Ranked::By(GroupBy::User);
    let rows =
        read::read_top(state.reads.pick().0, &Subject::All, grain, from, to, &Default::default(), by_user, limit)
            .await?;
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

/// Text, so a non-number gets the same answer as one out of range (the
/// one rule, `error::page_limit`).
fn parse_limit(limit: Option<&str>) -> Result<i64, ApiError> {
    match limit.map(|l| (l, l.parse::<i64>())) {
        None => crate::http::error::page_limit(None, 10, 1000),
        Some((_, Ok(n))) => crate::http::error::page_limit(Some(n), 10, 1000),
        Some((l, Err(_))) => {
            Err(ApiError::bad_request("invalid_limit", format!("`limit` must be a number from 1 to 1000, not {l:?}")))
        }
    }
}

/// The heaviest users, teams, projects and models of a range, within what
/// the caller may see: their own usage by default, a team they manage
/// (`team=`), or, for admins, anyone's or everyone's (`user=*`). Users
/// appear only when the view spans several people; teams only in an
/// admin's view of everyone (a member of several teams counts in each).
#[utoipa::path(get, path = "/api/v1/usage/overview", tag = "usage", params(OverviewParams),
    security(("bearer" = [])), responses((status = 200, body = OverviewResponse)))]
pub(crate) async fn overview(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<OverviewParams>,
) -> Result<Json<OverviewResponse>, ApiError> {
    let limit = q.limit.clone();
    let (view, subject) = prepare_range(&state, &slot, "usage.overview", &user, q.into()).await?;
    let limit = parse_limit(limit.as_deref())?;
    let (from, to) = (Grain::Minute.floor(view.from), Grain::Minute.floor(view.to));
    if from >= to {
        return Err(ApiError::bad_request("empty_range", "`from` must be at least a minute before `to`"));
    }
    let grain = Grain::coarsest_for([from, to]);
    let db = state.reads.pick().0;
    let top = |ranked| read::read_top(db, &subject, grain, from, to, &view.filters, ranked, limit);
    let several = !matches!(subject, Subject::User(_));
    let entries = |rows: Vec<(String, Sums)>| rows.into_iter().map(|(key, total)| Ranked { key, total }).collect();
    let users = if several { entries(top(read::Ranked::By(GroupBy::User)).await?) } else { Vec::new() };
    let teams = if subject == Subject::All { entries(top(read::Ranked::Team).await?) } else { Vec::new() };
    let projects = entries(top(read::Ranked::By(GroupBy::Project)).await?);
    let models = entries(top(read::Ranked::By(GroupBy::Model)).await?);
    let total = read::read_total(db, &subject, grain, from, to, &view.filters).await?;
    slot.set_rows((users.len() + teams.len() + projects.len() + models.len()) as i64);
    Ok(Json(OverviewResponse {
        subject: subject.label().to_owned(),
        from: fmt_time(from, &view.tz),
        to: fmt_time(to, &view.tz),
        total,
        users,
        teams,
        projects,
        models,
    }))
}
