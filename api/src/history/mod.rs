//! Usage history: planning a view (`plan`), reading it from the rollups
//! (`query`), and the REST routes (`routes`).

pub mod cache;
pub mod plan;
pub mod query;
pub(crate) mod routes;
