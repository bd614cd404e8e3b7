//! The rows the reconciliation reads: the provider's reported and billed
//! rows with their mapped targets, and our counted ones.

use chrono::NaiveDate;

use super::Target;

#[derive(sqlx::FromRow)]
pub(super) struct ReportedRow {
    pub(super) connection_id: i64,
    pub(super) day: NaiveDate,
    pub(super) model: String,
    pub(super) target_source: Option<String>,
    pub(super) target_project: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) input: i64,
    pub(super) output: i64,
    pub(super) cache_read: i64,
    pub(super) cache_write: i64,
    pub(super) requests: i64,
    pub(super) long_context: bool,
    pub(super) other_tier: bool,
}

#[derive(sqlx::FromRow)]
pub(super) struct BilledRow {
    pub(super) connection_id: i64,
    pub(super) day: NaiveDate,
    pub(super) model: String,
    pub(super) target_source: Option<String>,
    pub(super) target_project: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) currency: String,
    pub(super) amount: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct OursRow {
    pub(super) target_source: Option<String>,
    pub(super) target_project: Option<String>,
    pub(super) day: NaiveDate,
    pub(super) model: String,
    pub(super) input: i64,
    pub(super) output: i64,
    pub(super) cache_read: i64,
    pub(super) cache_write: i64,
    pub(super) events: i64,
    pub(super) cost: i64,
    pub(super) unpriced: i64,
}

fn target_of(source: &Option<String>, project: &Option<String>, scope: &Option<String>) -> Option<Target> {
    (scope.is_none()).then(|| Target { source: source.clone(), project: project.clone() })
}

impl ReportedRow {
    pub(super) fn target(&self) -> Option<Target> {
        target_of(&self.target_source, &self.target_project, &self.scope)
    }
}

impl BilledRow {
    pub(super) fn target(&self) -> Option<Target> {
        target_of(&self.target_source, &self.target_project, &self.scope)
    }
}
