//! The HTTP API: sign-in, usage history, health, and the embedded dashboard.
//!
//! It owns authentication (strict JWTs), authorization (a viewer sees only
//! their own rows, an admin sees everyone's), and the read queries over the
//! rollup tables. It never writes usage data and never talks to Kafka.

mod admin;
mod app;
mod auth;
mod config;
mod error;
mod security;
mod usage;

pub use app::{AppState, Application, with_common_layers};
pub use auth::{Role, hash_password};
pub use config::ApiArgs;
pub use error::ApiError;
