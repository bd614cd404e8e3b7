//! The routes, one module per feature; each exposes `routes()`, where a
//! route and its OpenAPI entry are registered together (utoipa-axum), so
//! the document cannot name a route that is not served or miss one that is.

pub(crate) mod session;
pub(crate) mod live;
pub(crate) mod history;
pub(crate) mod budgets;
pub(crate) mod teams;
pub(crate) mod audit;
pub(crate) mod admin;
pub(crate) mod reconciliation;
pub(crate) mod ops;

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// Everything under `/api/v1` (audited), with full paths.
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .merge(session::routes())
        .merge(live::routes())
        .merge(history::routes())
        .merge(budgets::routes())
        .merge(teams::routes())
        .merge(audit::routes())
        .merge(admin::routes())
        .merge(reconciliation::routes())
}

/// The operational routes beside the API (not audited).
pub(crate) fn operational() -> OpenApiRouter<AppState> {
    ops::routes()
}
