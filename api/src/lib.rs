//! The HTTP API: sign-in, usage history, live views, budgets, audit,
//! health, and the embedded dashboard.
//!
//! It owns authentication (strict JWTs, ours or an OIDC provider's),
//! authorization (a viewer sees only their own rows, a team's manager the
//! team's and its members', an admin everyone's), the audit trail (one
//! hash-chained entry per request), and the read queries over the rollup
//! tables. It never writes usage data and never talks to Kafka.

// In the order a request meets them: settings; who is calling (tokens,
// accounts, sessions, teams) and what they may see (`access`), on the
// record (`audit`); the engines that answer (`history`, `live`,
// `budgets`); and `http`, the shell that wires them to requests. Engines
// never import `http` (checked by `module_graph`).
mod config;
mod tokens;
mod oidc;
pub mod accounts;
mod session;
pub mod teams;
pub mod access;
pub mod audit;
pub mod history;
pub mod live;
pub mod budgets;
mod http;
#[cfg(test)]
mod module_graph;

pub use accounts::{Role, hash_password};
pub use config::ApiArgs;
pub use http::error::ApiError;
pub use http::openapi;
pub use http::{AppState, Application, Mounted, Readiness, install_crypto_provider};
