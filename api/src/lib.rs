//! The HTTP API: sign-in, usage history, audit, health, and the embedded
//! dashboard.
//!
//! It owns authentication (strict JWTs, ours or an OIDC provider's),
//! authorization (a viewer sees only their own rows, a team's manager the
//! team's and its members', an admin everyone's), the audit trail (one hash-chained entry per request), and
//! the read queries over the rollup tables. It never writes usage data and
//! never talks to Kafka.

// In the order a request meets them: settings; who is calling (tokens,
// sign-in, accounts, teams) and what they may see (`access`), on the
// record (`audit`) and checked for hygiene; the engines that answer; the
// error shape, the server and its document.
mod config;
mod tokens;
mod oidc;
mod session;
mod auth;
pub mod accounts;
pub mod teams;
pub mod access;
pub mod audit;
mod hygiene;
mod origin;
pub mod history;
pub mod live;
pub mod budgets;
mod reconciliation;
mod admin;
mod error;
mod app;
pub mod openapi;

pub use accounts::{Role, hash_password};
pub use app::{AppState, Application, Mounted, Readiness, install_crypto_provider};
pub use config::ApiArgs;
pub use error::ApiError;
