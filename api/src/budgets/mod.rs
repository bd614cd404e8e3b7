//! Budgets and alerts (`tokenusage-budgets`: the model, windows,
//! evaluation, the board and webhooks) and their REST routes (`routes`),
//! with what the API adds: errors as HTTP answers and the people a list of
//! budgets showed, for the audit trail.

pub mod routes;

pub use tokenusage_budgets::*;

use sqlx::PgPool;

use crate::error::ApiError;

impl From<tokenusage_budgets::BudgetError> for ApiError {
    fn from(e: tokenusage_budgets::BudgetError) -> Self {
        match e {
            tokenusage_budgets::BudgetError::Invalid(code, msg) => ApiError::bad_request(code, msg),
            tokenusage_budgets::BudgetError::NoSuchTeam(_) | tokenusage_budgets::BudgetError::NoSuchWebhook(_) => {
                ApiError::bad_request("invalid_budget", e.to_string())
            }
            tokenusage_budgets::BudgetError::Database(e) => e.into(),
        }
    }
}

impl From<tokenusage_budgets::webhooks::WebhookError> for ApiError {
    fn from(e: tokenusage_budgets::webhooks::WebhookError) -> Self {
        match e {
            tokenusage_budgets::webhooks::WebhookError::Invalid(m) => ApiError::bad_request("invalid_webhook", m),
            tokenusage_budgets::webhooks::WebhookError::Exists(_) => ApiError::Conflict(e.to_string()),
            tokenusage_budgets::webhooks::WebhookError::Database(e) => e.into(),
        }
    }
}

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
