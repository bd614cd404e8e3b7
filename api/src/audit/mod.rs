//! The audit trail: every request to `/api/v1` (and every live
//! subscription) leaves exactly one entry in `audit_log`, written before
//! the response is released. If the entry cannot be written, the caller
//! gets a 503 instead of the data (fail closed).
//!
//! Entries form a hash chain: `hash = SHA-256(prev_hash || canonical JSON)`,
//! with a gap-free `seq`. One writer task per process batches entries into
//! short transactions that take a PostgreSQL advisory lock, so several API
//! processes still build one chain. `tokenusage audit verify` walks it.
//!
//! Handlers add what only they know (the action name, whose data, the
//! normalized parameters, how many rows) to the request's [`AuditSlot`];
//! the middleware adds who, from where, the request id and the outcome.
//!
//! The parts: `chain` (the entry, its hash, the writer, `verify`), `record`
//! (what a request contributes, the middleware, socket actions) and
//! `search` (the admin search and "who viewed my usage").

mod chain;
mod record;
pub(crate) mod search;

pub(crate) use chain::AuditRow;
pub use chain::{AuditLog, AuditUnavailable, Entry, VerifyReport, verify};
pub(crate) use record::{Action, RequestFacts, client_ip, entry_for, record_action};
pub use record::{AuditSlot, ClientIp};
