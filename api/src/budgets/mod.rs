//! Budgets and alerts (`tokenusage-budgets`: the model, windows,
//! evaluation, the board and webhooks), with what the API adds: the people
//! a list of budgets showed, for the audit trail. Their routes are
//! `crate::http::routes::budgets`.

pub use tokenusage_budgets::*;

use sqlx::PgPool;

/// The people whose spend a list of budgets showed, besides `caller`: a
/// user budget's user, a team budget's members. Recorded as an audit
/// entry's `covers` (budget lists, live pushes, refused probes), so each
/// finds the view in "who viewed my usage".
pub(crate) async fn shown_people<'a>(
    teams: &crate::teams::TeamDirectory,
    pool: &PgPool,
    caller: &str,
    scopes: impl Iterator<Item = &'a Scope>,
) -> sqlx::Result<Vec<String>> {
    let mut people = std::collections::BTreeSet::new();
    for scope in scopes {
        match scope {
            Scope::User(u) => {
                people.insert(u.clone());
            }
            Scope::Team(t) => {
                if let Some(m) = teams.members(pool, t).await? {
                    people.extend(m.iter().cloned());
                }
            }
            Scope::Project(_) => {}
        }
    }
    people.remove(caller);
    Ok(people.into_iter().collect())
}
