//! The HTTP shell around the engines: what every request shares (`state`),
//! what a handler extracts from a request (`extract`: the caller; `audit`:
//! the middleware that records it), how engines' errors become answers
//! (`error`, with `hygiene` and `origin` for what is refused before any
//! engine runs), the routes by feature (`routes`), the table and layers
//! (`router`), the server (`server`) and its document (`openapi`).
//!
//! Engines (`history`, `live`, `budgets`, `audit`, `teams`, `accounts`,
//! `session`, `access`) import nothing from here; `module_graph` in the
//! tests checks it, and that no import circle remains among the crate's
//! modules (docs/ARCHITECTURE.md).

mod state;
pub(crate) mod extract;
pub(crate) mod audit;
pub(crate) mod error;
pub(crate) mod hygiene;
pub(crate) mod origin;
pub(crate) mod routes;
mod router;
mod server;
pub mod openapi;

pub use server::{Application, Mounted, install_crypto_provider};
pub use state::{AppState, Readiness};
