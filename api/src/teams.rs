//! Teams: named groups of users, each member a `member` or a `manager` of
//! the team. A manager sees the team's usage and each member's, nobody
//! else's; plain members see only their own (authorization is `auth.rs`).
//!
//! Membership is read as it is now for the whole history: a team's view of
//! last year sums last year's usage of today's members (docs/API.md).
//!
//! Storage here is used by the admin routes below and by the CLI. Who
//! manages whom is cached per process for [`REACH_TTL`]; a change made
//! through this process clears its cache at once, other processes see it
//! within the TTL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokenusage_plumbing::cache::TtlCache;

use crate::app::AppState;
use crate::audit::AuditSlot;
use crate::auth::AuthUser;
use crate::error::{ApiError, ApiJson, ApiPath};

/// A member's place in a team.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum TeamRole {
    /// Counted in the team's usage; sees only their own.
    Member,
    /// Counted too; sees the team's usage and each member's.
    Manager,
}

impl TeamRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Member => "member",
            TeamRole::Manager => "manager",
        }
    }
    fn parse(s: &str) -> TeamRole {
        if s == "manager" { TeamRole::Manager } else { TeamRole::Member }
    }
}

/// One member of a team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Member {
    pub user: String,
    pub role: TeamRole,
    /// `local` (CLI, admin API) or `oidc` (the identity provider's groups).
    pub origin: String,
}

/// A team and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Team {
    pub name: String,
    pub members: Vec<Member>,
}

/// Why a team change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TeamError {
    #[error("no team {0:?}")]
    NoSuchTeam(String),
    #[error("a team named {0:?} exists already")]
    Exists(String),
    #[error(
        "a team name is 1 to 64 lowercase letters, digits, '-', '_' or '.' (it is used in URLs and exports), not {0:?}"
    )]
    InvalidName(String),
    #[error("a user id is 1 to 128 characters without control characters, not {0:?}")]
    InvalidUser(String),
    #[error("{0:?} is not a member of team {1:?}")]
    NotAMember(String, String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<TeamError> for ApiError {
    fn from(e: TeamError) -> Self {
        match e {
            TeamError::NoSuchTeam(_) | TeamError::NotAMember(..) => ApiError::NotFound(e.to_string()),
            TeamError::Exists(_) => ApiError::Conflict(e.to_string()),
            TeamError::InvalidName(_) => ApiError::bad_request("invalid_team", e.to_string()),
            TeamError::InvalidUser(_) => ApiError::bad_request("invalid_user", e.to_string()),
            TeamError::Database(e) => e.into(),
        }
    }
}

/// The team name rule (as the `teams_name_rule` check of migration 0011).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn check_name(name: &str) -> Result<(), TeamError> {
    if valid_name(name) { Ok(()) } else { Err(TeamError::InvalidName(name.to_owned())) }
}

fn check_user(user: &str) -> Result<(), TeamError> {
    let n = user.chars().count();
    if n == 0 || n > tokenusage_contract::Limits::ID_MAX_CHARS || user.chars().any(char::is_control) {
        return Err(TeamError::InvalidUser(user.to_owned()));
    }
    Ok(())
}

fn unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.code().as_deref() == Some("23505"))
}

pub async fn create(db: impl sqlx::PgExecutor<'_>, name: &str, by: &str) -> Result<(), TeamError> {
    check_name(name)?;
    match sqlx::query("insert into teams (name, created_by) values ($1, $2)").bind(name).bind(by).execute(db).await {
        Err(e) if unique_violation(&e) => Err(TeamError::Exists(name.to_owned())),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

pub async fn rename(pool: &PgPool, name: &str, new_name: &str) -> Result<(), TeamError> {
    check_name(new_name)?;
    match sqlx::query("update teams set name = $2 where name = $1").bind(name).bind(new_name).execute(pool).await {
        Err(e) if unique_violation(&e) => Err(TeamError::Exists(new_name.to_owned())),
        Ok(r) if r.rows_affected() == 0 => Err(TeamError::NoSuchTeam(name.to_owned())),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// Deletes a team and its memberships (not anyone's usage).
pub async fn delete(pool: &PgPool, name: &str) -> Result<(), TeamError> {
    let r = sqlx::query("delete from teams where name = $1").bind(name).execute(pool).await?;
    if r.rows_affected() == 0 { Err(TeamError::NoSuchTeam(name.to_owned())) } else { Ok(()) }
}

/// Adds a member, or changes their role (the row becomes a local one).
pub async fn set_member(pool: &PgPool, team: &str, user: &str, role: TeamRole) -> Result<(), TeamError> {
    set_members(pool, team, &[user.to_owned()], role).await
}

/// Adds members with one role (or changes theirs), in one statement.
pub async fn set_members(
    db: impl sqlx::PgExecutor<'_>,
    team: &str,
    users: &[String],
    role: TeamRole,
) -> Result<(), TeamError> {
    users.iter().try_for_each(|u| check_user(u))?;
    if users.is_empty() {
        return Ok(());
    }
    let r = sqlx::query(
        "insert into team_members (team_id, user_id, role, origin) \
         select t.id, u, $3, 'local' from teams t, unnest($2::text[]) as u where t.name = $1 \
         on conflict (team_id, user_id) do update set role = excluded.role, origin = 'local'",
    )
    .bind(team)
    .bind(users)
    .bind(role.as_str())
    .execute(db)
    .await?;
    if r.rows_affected() == 0 { Err(TeamError::NoSuchTeam(team.to_owned())) } else { Ok(()) }
}

pub async fn remove_member(pool: &PgPool, team: &str, user: &str) -> Result<(), TeamError> {
    let r = sqlx::query(
        "delete from team_members m using teams t where t.id = m.team_id and t.name = $1 and m.user_id = $2",
    )
    .bind(team)
    .bind(user)
    .execute(pool)
    .await?;
    if r.rows_affected() > 0 {
        return Ok(());
    }
    match get(pool, team).await? {
        None => Err(TeamError::NoSuchTeam(team.to_owned())),
        Some(_) => Err(TeamError::NotAMember(user.to_owned(), team.to_owned())),
    }
}

/// A team and one of its members (user, role, origin), or none (left join).
type TeamRow = (String, Option<String>, Option<String>, Option<String>);

fn assemble(rows: Vec<TeamRow>) -> Vec<Team> {
    let mut out: Vec<Team> = Vec::new();
    for (name, user, role, origin) in rows {
        if out.last().is_none_or(|t| t.name != name) {
            out.push(Team { name, members: Vec::new() });
        }
        if let (Some(team), Some(user), Some(role), Some(origin)) = (out.last_mut(), user, role, origin) {
            team.members.push(Member { user, role: TeamRole::parse(&role), origin });
        }
    }
    out
}

const TEAM_ROWS: &str = "select t.name, m.user_id, m.role, m.origin from teams t \
    left join team_members m on m.team_id = t.id";

/// Every team with its members, by name.
pub async fn list(pool: &PgPool) -> Result<Vec<Team>, TeamError> {
    let rows = sqlx::query_as(&format!("{TEAM_ROWS} order by t.name, m.user_id")).fetch_all(pool).await?;
    Ok(assemble(rows))
}

/// The teams of these names, with their members, by name.
async fn named(pool: &PgPool, names: &[String]) -> Result<Vec<Team>, TeamError> {
    let rows = sqlx::query_as(&format!("{TEAM_ROWS} where t.name = any($1) order by t.name, m.user_id"))
        .bind(names)
        .fetch_all(pool)
        .await?;
    Ok(assemble(rows))
}

pub async fn get(pool: &PgPool, name: &str) -> Result<Option<Team>, TeamError> {
    let rows =
        sqlx::query_as(&format!("{TEAM_ROWS} where t.name = $1 order by m.user_id")).bind(name).fetch_all(pool).await?;
    Ok(assemble(rows).pop())
}

/// The teams a user is in, with their role in each.
pub async fn teams_of(pool: &PgPool, user: &str) -> Result<Vec<(String, TeamRole)>, TeamError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select t.name, m.role from team_members m join teams t on t.id = m.team_id where m.user_id = $1 order by 1",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(t, r)| (t, TeamRole::parse(&r))).collect())
}

/// The members of a team, sorted (one shared list per read).
pub type Members = Arc<[String]>;

/// What a caller may see beyond their own usage: the teams they manage,
/// each with its members.
#[derive(Debug, Clone, Default)]
pub(crate) struct Reach {
    pub manages: BTreeMap<String, Members>,
}

impl Reach {
    /// Whether `user` is a member of a team this caller manages.
    pub(crate) fn covers(&self, user: &str) -> bool {
        self.manages.values().any(|m| m.binary_search_by(|x| x.as_str().cmp(user)).is_ok())
    }
}

/// How long a caller's reach and a team's member list are trusted.
pub(crate) const REACH_TTL: Duration = Duration::from_secs(10);
const CAPACITY: usize = 20_000;
/// Member ids cached at most (the weight of a cached list is its length).
const MAX_CACHED_MEMBERS: usize = 1_000_000;

/// Reach by caller and members by team, cached briefly.
#[derive(Debug)]
pub(crate) struct TeamDirectory {
    reach: TtlCache<String, Arc<Reach>>,
    members: TtlCache<String, Option<Members>>,
    /// The provider's groups last applied per user (so a token's claim is
    /// written once per TTL, not once per request).
    synced: TtlCache<String, Arc<Vec<(String, TeamRole)>>>,
}

impl Default for TeamDirectory {
    fn default() -> Self {
        Self {
            reach: TtlCache::new(REACH_TTL, CAPACITY, MAX_CACHED_MEMBERS),
            members: TtlCache::new(REACH_TTL, CAPACITY, MAX_CACHED_MEMBERS),
            synced: TtlCache::new(Duration::from_secs(60), CAPACITY, CAPACITY),
        }
    }
}

impl TeamDirectory {
    /// The teams `user` manages, with their members.
    pub(crate) async fn reach(&self, pool: &PgPool, user: &str) -> sqlx::Result<Arc<Reach>> {
        if let Some(r) = self.reach.get(&user.to_owned()) {
            return Ok(r);
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "select t.name, o.user_id from team_members m join teams t on t.id = m.team_id \
             join team_members o on o.team_id = m.team_id \
             where m.user_id = $1 and m.role = 'manager' order by 1, 2",
        )
        .bind(user)
        .fetch_all(pool)
        .await?;
        let mut manages: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (team, member) in rows {
            manages.entry(team).or_default().push(member);
        }
        // Sorted here, not by the database: its collation need not be
        // byte order, and membership is checked by binary search.
        manages.values_mut().for_each(|m| m.sort_unstable());
        let weight = manages.values().map(Vec::len).sum::<usize>().max(1);
        let reach = Arc::new(Reach { manages: manages.into_iter().map(|(t, m)| (t, m.into())).collect() });
        self.reach.insert(user.to_owned(), reach.clone(), weight);
        Ok(reach)
    }

    /// A team's members, or `None` if there is no such team.
    pub(crate) async fn members(&self, pool: &PgPool, team: &str) -> sqlx::Result<Option<Members>> {
        if let Some(m) = self.members.get(&team.to_owned()) {
            return Ok(m);
        }
        let rows: Vec<(Option<String>,)> = sqlx::query_as(
            "select m.user_id from teams t left join team_members m on m.team_id = t.id where t.name = $1 order by 1",
        )
        .bind(team)
        .fetch_all(pool)
        .await?;
        let members: Option<Members> = (!rows.is_empty()).then(|| {
            let mut m: Vec<String> = rows.into_iter().filter_map(|(u,)| u).collect();
            m.sort_unstable(); // byte order, for binary search (see `reach`)
            m.into()
        });
        let weight = members.as_ref().map_or(1, |m| m.len().max(1));
        self.members.insert(team.to_owned(), members.clone(), weight);
        Ok(members)
    }

    /// Forgets everything (after a change made through this process).
    pub(crate) fn changed(&self) {
        self.reach.clear();
        self.members.clear();
        self.synced.clear();
    }

    /// Mirrors an identity provider's group claim into `oidc` memberships
    /// of `user`: teams named there are created if missing, `oidc` rows no
    /// longer named are removed, local rows are left as they are.
    pub(crate) async fn sync_oidc(
        &self,
        pool: &PgPool,
        user: &str,
        mut teams: Vec<(String, TeamRole)>,
    ) -> sqlx::Result<()> {
        // One row per team, the higher role winning (managers sort first).
        teams.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        teams.dedup_by(|a, b| a.0 == b.0);
        if self.synced.get(&user.to_owned()).is_some_and(|s| *s == teams) {
            return Ok(());
        }
        let names: Vec<&str> = teams.iter().map(|(t, _)| t.as_str()).collect();
        let roles: Vec<&str> = teams.iter().map(|(_, r)| r.as_str()).collect();
        let mut tx = pool.begin().await?;
        sqlx::query("insert into teams (name, created_by) select unnest($1::text[]), 'oidc' on conflict do nothing")
            .bind(&names)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "delete from team_members m using teams t where t.id = m.team_id and m.user_id = $1 \
             and m.origin = 'oidc' and not (t.name = any($2))",
        )
        .bind(user)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into team_members (team_id, user_id, role, origin) \
             select t.id, $1, r.role, 'oidc' from unnest($2::text[], $3::text[]) as r(name, role) \
             join teams t on t.name = r.name \
             on conflict (team_id, user_id) do update set role = excluded.role \
             where team_members.origin = 'oidc'",
        )
        .bind(user)
        .bind(&names)
        .bind(&roles)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.reach.clear();
        self.members.clear();
        self.synced.insert(user.to_owned(), Arc::new(teams), 1);
        Ok(())
    }
}

// ---- routes ----

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

#[utoipa::path(get, path = "/api/v1/teams", tag = "teams", security(("bearer" = [])),
    responses((status = 200, body = MyTeams)))]
pub(crate) async fn my_teams(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
) -> Result<Json<MyTeams>, ApiError> {
    slot.set_detail("teams.mine", Some(&user.id), serde_json::json!({}), None);
    let visible = if user.role == crate::auth::Role::Admin {
        list(&st.pool).await?
    } else {
        let reach = st.teams.reach(&st.pool, &user.id).await?;
        named(&st.pool, &reach.manages.keys().cloned().collect::<Vec<_>>()).await?
    };
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
    user: AuthUser,
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
    responses((status = 201, body = Team), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn admin_create(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
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
    params(("team" = String, Path)), responses((status = 200, body = Team), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn admin_get(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: AuthUser,
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
    user: AuthUser,
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
    user: AuthUser,
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
    user: AuthUser,
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
    user: AuthUser,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_activity_rule_and_reach_covers_only_managed_members() {
        assert!(valid_name("platform-2.eu_west"));
        for bad in ["", "Platform", "a b", "x/y", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let reach = Reach {
            manages: [("a".to_owned(), Members::from(vec!["alice".to_owned(), "bob".to_owned()]))]
                .into_iter()
                .collect(),
        };
        assert!(reach.covers("alice") && reach.covers("bob"));
        assert!(!reach.covers("carol") && !reach.covers("ali"));
    }
}
