//! Teams: named groups of users, each member a `member` or a `manager` of
//! the team. A manager sees the team's usage and each member's, nobody
//! else's; plain members see only their own (authorization is `auth.rs`).
//!
//! Membership is read as it is now for the whole history: a team's view of
//! last year sums last year's usage of today's members (docs/API.md).
//!
//! Storage here is used by the routes (`crate::http::routes::teams`) and
//! by the CLI. Who
//! manages whom is cached per process for [`REACH_TTL`]; a change made
//! through this process clears its cache at once, other processes see it
//! within the TTL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokenusage_plumbing::cache::TtlCache;

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

/// The team name rule (`access::valid_team_name`).
pub use tokenusage_access::valid_team_name as valid_name;

fn check_name(name: &str) -> Result<(), TeamError> {
    if valid_name(name) { Ok(()) } else { Err(TeamError::InvalidName(name.to_owned())) }
}

pub(crate) fn check_user(user: &str) -> Result<(), TeamError> {
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
pub(crate) async fn named(pool: &PgPool, names: &[String]) -> Result<Vec<Team>, TeamError> {
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

pub use tokenusage_access::{Members, Reach};

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
        // In byte order, for binary search (see `reach`).
        let members: Option<Members> = tokenusage_schema::teams::named(pool, team).await?.map(|t| t.members.into());
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

#[cfg(test)]
mod tests;
