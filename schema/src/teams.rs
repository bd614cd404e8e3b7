//! Team membership as stored: the one query of who is in which team, read
//! by the API's team directory (a team's view, a manager's reach) and by
//! budget evaluation (a team budget's members), so both see the same
//! members.

use sqlx::PgExecutor;

/// A team and its members, in byte order (binary-searchable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamMembers {
    pub id: i64,
    pub name: String,
    pub members: Vec<String>,
}

const SELECT: &str = "select t.id, t.name, \
     coalesce(array_agg(m.user_id) filter (where m.user_id is not null), '{}') \
     from teams t left join team_members m on m.team_id = t.id";

fn sorted((id, name, mut members): (i64, String, Vec<String>)) -> TeamMembers {
    members.sort_unstable();
    TeamMembers { id, name, members }
}

/// Every team with its members.
pub async fn all(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<TeamMembers>> {
    let rows: Vec<(i64, String, Vec<String>)> =
        sqlx::query_as(&format!("{SELECT} group by t.id, t.name")).fetch_all(db).await?;
    Ok(rows.into_iter().map(sorted).collect())
}

/// One team with its members, or `None` if there is no such team.
pub async fn named(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<TeamMembers>> {
    let row: Option<(i64, String, Vec<String>)> =
        sqlx::query_as(&format!("{SELECT} where t.name = $1 group by t.id, t.name"))
            .bind(name)
            .fetch_optional(db)
            .await?;
    Ok(row.map(sorted))
}
