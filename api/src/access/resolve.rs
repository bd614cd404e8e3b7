//! The rule applied with the team directory's answers: the caller's reach
//! (cached briefly) and, for an admin's team view, its members.

use std::sync::Arc;

use sqlx::PgPool;

use super::{Caller, Denied, Grant, Reach, Subject, subject_for};
use crate::teams::TeamDirectory;

/// Why a view's subject could not be granted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubjectError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no team {0:?}")]
    NoTeam(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The teams `caller` manages (none for an admin, who needs none).
pub(crate) async fn reach_of(dir: &TeamDirectory, pool: &PgPool, caller: &Caller) -> sqlx::Result<Arc<Reach>> {
    if caller.is_admin() { Ok(Arc::default()) } else { dir.reach(pool, &caller.id).await }
}

/// Whose usage `caller`'s request for `user` / `team` reads
/// ([`subject_for`]), with a team's members looked up.
pub(crate) async fn subject(
    dir: &TeamDirectory,
    pool: &PgPool,
    caller: &Caller,
    user: Option<&str>,
    team: Option<&str>,
) -> Result<Subject, SubjectError> {
    // One's own usage needs no look-up at all.
    let own = team.is_none() && user.is_none_or(|u| u == caller.id);
    let reach = if own { Arc::default() } else { reach_of(dir, pool, caller).await? };
    Ok(match subject_for(caller, &reach, user, team)? {
        Grant::User(u) => Subject::User(u),
        Grant::Everyone => Subject::All,
        Grant::Team { name, members: Some(m) } => Subject::team(&name, m),
        Grant::Team { name, members: None } => match dir.members(pool, &name).await? {
            Some(m) => Subject::team(&name, m),
            None => return Err(SubjectError::NoTeam(name)),
        },
    })
}
