//! The teams' REST routes: the caller's teams, and the admins' management.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::access::Scope;
use crate::audit::AuditSlot;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiJson, ApiPath};
use crate::http::extract::Caller;
use crate::teams::*;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(my_teams))
        .routes(routes!(admin_list, admin_create))
        .routes(routes!(admin_get, admin_rename, admin_delete))
        .routes(routes!(admin_set_member, admin_remove_member))
}

/// The teams the caller can look at: every team for an admin, the teams
/// they manage for a manager, none for anyone else; and the teams the
/// caller is in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MyTeams {
    /// Teams whose usage the caller may read, with their members.
    visible: Vec<Team>,
    /// The teams the caller belongs to, and their role in each.
    member_of: Vec<MemberOf>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MemberOf {
    team: String,
    role: TeamRole,
}

/// The teams whose usage `caller` may read (`access::visible_scopes`;
/// admins: every team).
pub(crate) async fn visible_teams(st: &AppState, caller: &Caller) -> Result<Vec<Team>, ApiError> {
    let visible = crate::access::visible_scopes(caller, &*caller.reach(st).await?);
    if visible.everything {
        return Ok(list(&st.pool).await?);
    }
    let names: Vec<String> =
        visible.scopes.into_iter().filter_map(|s| matches!(s, Scope::Team(_)).then(|| s.id().to_owned())).collect();
    Ok(named(&st.pool, &names).await?)
}

#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = MyTeams)))]
pub(crate) async fn my_teams(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<MyTeams>, ApiError> {
    slot.set_detail("teams.mine", Some(&user.id), serde_json::json!({}), None);
    let visible = visible_teams(&st, &user).await?;
    let member_of =
        teams_of(&st.pool, &user.id).await?.into_iter().map(|(team, role)| MemberOf { team, role }).collect();
    slot.set_rows(visible.len() as i64);
    Ok(Json(MyTeams { visible, member_of }))
}

#[utoipa::path(get, path = "/api/v1/admin/teams", tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = Vec<Team>)))]
pub(crate) async fn admin_list(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<Vec<Team>>, ApiError> {
    slot.set_detail("admin.teams.list", None, serde_json::json!({}), None);
    user.require_admin()?;
    let teams = list(&st.pool).await?;
    slot.set_rows(teams.len() as i64);
    Ok(Json(teams))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTeam {
    /// 1 to 64 lowercase letters, digits, '-', '_' or '.'.
    name: String,
    /// Members to add at once, as `member`s.
    #[serde(default)]
    members: Vec<String>,
    /// Managers to add at once.
    #[serde(default)]
    managers: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/admin/teams", tag = "teams", security(("bearer" = [])), request_body = NewTeam,
    responses((status = 201, body = Team), (status = 409, body = crate::http::error::ErrorBody)))]
pub(crate) async fn admin_create(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiJson(req): ApiJson<NewTeam>,
) -> Result<(StatusCode, Json<Team>), ApiError> {
    slot.set_detail(
        "admin.teams.create",
        None,
        serde_json::json!({"name": req.name, "members": req.members, "managers": req.managers}),
        None,
    );
    user.require_admin()?;
    if req.members.len() + req.managers.len() > 10_000 {
        return Err(ApiError::bad_request("too_many_members", "at most 10000 members per request"));
    }
    for u in req.members.iter().chain(&req.managers) {
        check_user(u)?;
    }
    // The team and its first members, all or nothing.
    let mut tx = st.pool.begin().await?;
    create(&mut *tx, &req.name, &user.id).await?;
    set_members(&mut *tx, &req.name, &req.members, TeamRole::Member).await?;
    set_members(&mut *tx, &req.name, &req.managers, TeamRole::Manager).await?;
    tx.commit().await?;
    st.teams.changed();
    let team = get(&st.pool, &req.name).await?.ok_or_else(|| TeamError::NoSuchTeam(req.name.clone()))?;
    Ok((StatusCode::CREATED, Json(team)))
}

#[utoipa::path(get, path = "/api/v1/admin/teams/{team}", tag = "teams", security(("bearer" = [])),
    params(("team" = String, Path)), responses((status = 200, body = Team), (status = 404, body = crate::http::error::ErrorBody)))]
pub(crate) async fn admin_get(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<Json<Team>, ApiError> {
    slot.set_detail("admin.teams.get", None, serde_json::json!({"team": team}), None);
    user.require_admin()?;
    let t = get(&st.pool, &team).await?.ok_or(TeamError::NoSuchTeam(team))?;
    slot.set_rows(t.members.len() as i64);
    Ok(Json(t))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameTeam {
    /// The new name.
    name: String,
}

#[utoipa::path(patch, path = "/api/v1/admin/teams/{team}", tag = "teams", security(("bearer" = [])),
    params(("team" = String, Path)), request_body = RenameTeam, responses((status = 200, body = Team)))]
pub(crate) async fn admin_rename(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(team): ApiPath<String>,
    ApiJson(req): ApiJson<RenameTeam>,
) -> Result<Json<Team>, ApiError> {
    slot.set_detail("admin.teams.rename", None, serde_json::json!({"team": team, "name": req.name}), None);
    user.require_admin()?;
    rename(&st.pool, &team, &req.name).await?;
    st.teams.changed();
    Ok(Json(get(&st.pool, &req.name).await?.ok_or(TeamError::NoSuchTeam(req.name))?))
}

#[utoipa::path(delete, path = "/api/v1/admin/teams/{team}", tag = "teams", security(("bearer" = [])),
    params(("team" = String, Path)), responses((status = 204, description = "Deleted (usage stays)")))]
pub(crate) async fn admin_delete(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(team): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.teams.delete", None, serde_json::json!({"team": team}), None);
    user.require_admin()?;
    delete(&st.pool, &team).await?;
    st.teams.changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetMember {
    /// `member` (default) or `manager`.
    role: Option<TeamRole>,
}

#[utoipa::path(put, path = "/api/v1/admin/teams/{team}/members/{user}", tag = "teams", security(("bearer" = [])),
    params(("team" = String, Path), ("user" = String, Path)), request_body = SetMember,
    responses((status = 200, body = Team)))]
pub(crate) async fn admin_set_member(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath((team, member)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<SetMember>,
) -> Result<Json<Team>, ApiError> {
    let role = req.role.unwrap_or(TeamRole::Member);
    slot.set_detail(
        "admin.teams.set_member",
        Some(&member),
        serde_json::json!({"team": team, "user": member, "role": role}),
        None,
    );
    user.require_admin()?;
    set_member(&st.pool, &team, &member, role).await?;
    st.teams.changed();
    Ok(Json(get(&st.pool, &team).await?.ok_or(TeamError::NoSuchTeam(team))?))
}

#[utoipa::path(delete, path = "/api/v1/admin/teams/{team}/members/{user}", tag = "teams", security(("bearer" = [])),
    params(("team" = String, Path), ("user" = String, Path)), responses((status = 204, description = "Removed")))]
pub(crate) async fn admin_remove_member(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath((team, member)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail(
        "admin.teams.remove_member",
        Some(&member),
        serde_json::json!({"team": team, "user": member}),
        None,
    );
    user.require_admin()?;
    remove_member(&st.pool, &team, &member).await?;
    st.teams.changed();
    Ok(StatusCode::NO_CONTENT)
}
