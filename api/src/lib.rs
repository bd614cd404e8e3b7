//! The HTTP API: sign-in, usage history, audit, health, and the embedded
//! dashboard.
//!
//! It owns authentication (strict JWTs, ours or an OIDC provider's),
//! authorization (a viewer sees only their own rows, a team's manager the
//! team's and its members', an admin everyone's), the audit trail (one hash-chained entry per request), and
//! the read queries over the rollup tables. It never writes usage data and
//! never talks to Kafka.

pub mod accounts;
mod admin;
mod app;
pub mod audit;
mod auth;
pub mod budgets;
mod config;
mod error;
pub mod history;
mod hygiene;
pub mod live;
mod oidc;
pub mod openapi;
mod origin;
mod reconciliation;
mod session;
pub mod teams;
mod tokens;

pub use accounts::{Role, hash_password};
pub use app::{AppState, Application, Mounted, Readiness, install_crypto_provider};
pub use config::ApiArgs;
pub use error::ApiError;
