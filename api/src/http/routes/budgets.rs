//! The budgets API: budgets for users, teams and projects, their state,
//! the gateway check, and (admins) webhook endpoints and deliveries.
//!
//! Who may do what: admins set and see any budget; a team's managers set
//! and see the team's budgets and see its members' personal ones; anyone
//! sets and sees budgets on themselves. Project budgets are admins'. A
//! budget outside the caller's reach is a 404, whether it exists or not.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::access;
use crate::audit::AuditSlot;
use crate::budgets::board::BudgetState;
use crate::budgets::{Budget, NewBudget, Scope, webhooks};
use crate::http::AppState;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::http::extract::{Caller, Role};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list, create))
        .routes(routes!(check))
        .routes(routes!(get, delete))
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(delete_endpoint))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
}

/// Whether `user` may see `b` (and its state): `access::may_see`.
pub(crate) async fn may_see(st: &AppState, user: &Caller, b: &Budget) -> Result<bool, ApiError> {
    Ok(access::may_see(user, &*user.reach(st).await?, &b.scope))
}

/// Whether `user` may set (or remove) budgets on `scope`: `access::may_set`.
async fn may_set(st: &AppState, user: &Caller, scope: &Scope) -> Result<(), ApiError> {
    Ok(access::may_set(user, &*user.reach(st).await?, scope)?)
}

fn with_state(st: &AppState, b: Budget) -> BudgetState {
    let state = st.budgets.states(|x| x.id == b.id).pop().and_then(|s| s.state);
    BudgetState { budget: b, state }
}

/// The budgets the caller can see, with their state.
#[utoipa::path(get, path = "/api/v1/budgets", tag = "budgets", security(("bearer" = [])),
    responses((status = 200, body = Vec<BudgetState>)))]
pub(crate) async fn list(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<Vec<BudgetState>>, ApiError> {
    let reach = user.reach(&st).await?;
    let out: Vec<BudgetState> = crate::budgets::list(&st.pool)
        .await?
        .into_iter()
        .filter(|b| access::may_see(&user, &reach, &b.scope))
        .map(|b| with_state(&st, b))
        .collect();
    slot.set_detail("budgets.list", Some(&user.id), serde_json::json!({}), Some(out.len() as i64));
    slot.set_covers(
        &crate::budgets::shown_people(&st.teams, &st.pool, &user.id, out.iter().map(|b| &b.budget.scope)).await?,
    );
    Ok(Json(out))
}

/// Sets a budget. Everyone may set budgets on themselves, a team's
/// managers on that team, admins on anyone, any team and any project
/// (managers cannot set their members' personal budgets). Thresholds
/// notify once per window each, live, and, for budgets an admin sets, the
/// named webhook endpoints.
#[utoipa::path(post, path = "/api/v1/budgets", tag = "budgets", security(("bearer" = [])), request_body = NewBudget,
    responses((status = 201, body = BudgetState)))]
pub(crate) async fn create(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiJson(req): ApiJson<NewBudget>,
) -> Result<(StatusCode, Json<BudgetState>), ApiError> {
    slot.set_detail(
        "budgets.create",
        Some(req.scope.id()),
        serde_json::json!({"scope": req.scope, "measure": req.measure, "amount": req.amount, "period": req.period,
            "zone": req.zone, "window": req.window, "thresholds": req.thresholds, "webhooks": req.webhooks}),
        None,
    );
    may_set(&st, &user, &req.scope).await?;
    // Webhook endpoints are the admins' channels (admins create them): only
    // an admin may route a budget's alerts to one. Refused before any
    // lookup, the same for every name, so the endpoint list cannot be
    // probed. Everyone still gets alerts in the dashboard.
    if !req.webhooks.is_empty() && user.role != Role::Admin {
        return Err(ApiError::Forbidden("only admins may send a budget's alerts to webhook endpoints"));
    }
    let checked = crate::budgets::check(&req)?;
    let b = crate::budgets::create(&st.pool, &checked, &user.id).await?;
    tracing::info!(budget = b.id, by = %user.id, scope = %b.scope.label(), "budget created");
    st.budgets.touch(crate::budgets::board::Touched::default());
    Ok((StatusCode::CREATED, Json(BudgetState { budget: b, state: None })))
}

async fn reachable(st: &AppState, slot: &AuditSlot, user: &Caller, id: i64) -> Result<Budget, ApiError> {
    match crate::budgets::get(&st.pool, id).await? {
        Some(b) if may_see(st, user, &b).await? => Ok(b),
        Some(b) => {
            // Someone else's budget: the caller learns nothing (404), the
            // trail records whose it was (and a team's members).
            let covers = crate::budgets::shown_people(&st.teams, &st.pool, &user.id, std::iter::once(&b.scope)).await?;
            slot.set_denied(b.scope.id(), &covers);
            Err(ApiError::NotFound(format!("no budget {id} that you can see")))
        }
        None => Err(ApiError::NotFound(format!("no budget {id} that you can see"))),
    }
}

/// One budget and its state.
#[utoipa::path(get, path = "/api/v1/budgets/{id}", tag = "budgets", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The budget's id")), responses((status = 200, body = BudgetState)))]
pub(crate) async fn get(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<BudgetState>, ApiError> {
    slot.set_detail("budgets.get", None, serde_json::json!({"id": id}), None);
    let b = reachable(&st, &slot, &user, id).await?;
    if let Scope::User(u) = &b.scope {
        slot.set_detail("budgets.get", Some(u), serde_json::json!({"id": id}), Some(1));
    }
    Ok(Json(with_state(&st, b)))
}

/// Removes a budget. Viewers remove their own personal budgets, managers
/// their teams' budgets, admins any; a personal budget an admin set on
/// someone can only be removed by an admin.
#[utoipa::path(delete, path = "/api/v1/budgets/{id}", tag = "budgets", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The budget's id")), responses((status = 204, description = "Removed")))]
pub(crate) async fn delete(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("budgets.delete", None, serde_json::json!({"id": id}), None);
    let b = reachable(&st, &slot, &user, id).await?;
    may_set(&st, &user, &b.scope).await?;
    if user.role != Role::Admin && matches!(b.scope, Scope::User(_)) && b.created_by != user.id {
        return Err(ApiError::Forbidden("this budget was set for you by someone else; an admin can remove it"));
    }
    crate::budgets::delete(&st.pool, id).await?;
    st.budgets.touch(crate::budgets::board::Touched::default());
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CheckQuery {
    /// The user making the call: their budgets and their teams'.
    user: Option<String>,
    /// A team's budgets.
    team: Option<String>,
    /// The project of the call: its budgets.
    project: Option<String>,
}

/// The answer of a gateway check.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CheckAnswer {
    /// Some applicable budget is at or past 100 % in its current window.
    over: bool,
    /// The applicable budgets and their state (as last evaluated).
    budgets: Vec<BudgetState>,
}

/// For LLM gateways, with a publisher API key: whether a call by `user`
/// (for `project`) or by `team` is over a budget. Answered from memory:
/// the state is as of the last evaluation (within a second of the
/// projector's commit under normal load).
#[utoipa::path(get, path = "/api/v1/budgets/check", tag = "budgets", security(("publisher_key" = [])),
    params(CheckQuery), responses((status = 200, body = CheckAnswer)))]
pub(crate) async fn check(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<CheckQuery>,
) -> Result<Json<CheckAnswer>, ApiError> {
    slot.set_detail(
        "budgets.check",
        q.user.as_deref(),
        serde_json::json!({"user": q.user, "team": q.team, "project": q.project}),
        None,
    );
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or(ApiError::Unauthorized)?;
    let key = st.budgets.publisher(&st.pool, token).await?.ok_or(ApiError::Unauthorized)?;
    slot.set_actor(&format!("key:{key}"), None);
    if q.user.is_none() && q.team.is_none() && q.project.is_none() {
        return Err(ApiError::bad_request("invalid_parameter", "name a `user`, a `team` or a `project` to check"));
    }
    let budgets = st.budgets.applicable(q.user.as_deref(), q.team.as_deref(), q.project.as_deref());
    let over = budgets.iter().any(|b| b.state.as_ref().is_some_and(|s| s.over));
    slot.set_rows(budgets.len() as i64);
    Ok(Json(CheckAnswer { over, budgets }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEndpoint {
    /// 1 to 64 lowercase letters, digits, '-', '_' or '.'.
    name: String,
    url: String,
    /// `json` (default) or `slack`.
    format: Option<String>,
}

/// The new endpoint's signing secret, shown this once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedEndpoint {
    name: String,
    secret: String,
}

/// Webhook endpoints, with how many deliveries wait and how many are dead.
#[utoipa::path(get, path = "/api/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<webhooks::Endpoint>)))]
pub(crate) async fn list_endpoints(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<Vec<webhooks::Endpoint>>, ApiError> {
    slot.set_detail("admin.webhooks.list", None, serde_json::json!({}), None);
    user.require_admin()?;
    let rows = webhooks::list(&st.pool).await?;
    slot.set_rows(rows.len() as i64);
    Ok(Json(rows))
}

/// Adds a webhook endpoint; the answer holds its signing secret.
#[utoipa::path(post, path = "/api/v1/admin/webhooks", tag = "admin", security(("bearer" = [])),
    request_body = NewEndpoint, responses((status = 201, body = CreatedEndpoint)))]
pub(crate) async fn create_endpoint(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiJson(req): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    slot.set_detail("admin.webhooks.create", None, serde_json::json!({"name": req.name, "format": req.format}), None);
    user.require_admin()?;
    let format = req.format.as_deref().unwrap_or("json");
    let policy = st.config.budgets.outbound.policy();
    let secret = webhooks::create(&st.pool, &policy, &req.name, &req.url, format, &user.id).await?;
    Ok((StatusCode::CREATED, Json(CreatedEndpoint { name: req.name, secret })))
}

/// Removes an endpoint and the deliveries it was still owed.
#[utoipa::path(delete, path = "/api/v1/admin/webhooks/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "The endpoint's name")), responses((status = 204, description = "Removed")))]
pub(crate) async fn delete_endpoint(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.webhooks.delete", None, serde_json::json!({"name": name}), None);
    user.require_admin()?;
    if webhooks::delete(&st.pool, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no webhook endpoint {name:?}")))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveryQuery {
    /// `pending`, `delivered` or `dead` (default: all).
    state: Option<String>,
    /// At most this many, newest first (1 to 10000, default 100).
    limit: Option<i64>,
}

/// Notifications and how their delivery went, newest first.
#[utoipa::path(get, path = "/api/v1/admin/webhooks/deliveries", tag = "admin", security(("bearer" = [])),
    params(DeliveryQuery), responses((status = 200, body = Vec<webhooks::Delivery>)))]
pub(crate) async fn list_deliveries(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Vec<webhooks::Delivery>>, ApiError> {
    slot.set_detail("admin.webhooks.deliveries", None, serde_json::json!({"state": q.state, "limit": q.limit}), None);
    user.require_admin()?;
    if let Some(s) = q.state.as_deref().filter(|s| !matches!(*s, "pending" | "delivered" | "dead")) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("state: pending, delivered or dead, not {s:?}"),
        ));
    }
    let limit = crate::http::error::page_limit(q.limit, 100, 10_000)?;
    let rows = webhooks::deliveries(&st.pool, q.state.as_deref(), limit).await?;
    slot.set_rows(rows.len() as i64);
    Ok(Json(rows))
}

/// Sends a dead delivery again (its attempts start over).
#[utoipa::path(post, path = "/api/v1/admin/webhooks/deliveries/{id}/retry", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The delivery's id")), responses((status = 202, description = "Due now")))]
pub(crate) async fn retry_delivery(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.webhooks.retry", None, serde_json::json!({"id": id}), None);
    user.require_admin()?;
    if webhooks::retry(&st.pool, id).await? {
        st.budgets.deliveries_due();
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::NotFound(format!("no undelivered delivery {id}")))
    }
}
