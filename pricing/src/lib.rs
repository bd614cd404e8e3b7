//! The price book and exact cost.
//!
//! Prices are integers: nano-units (10^-9) of the book's currency per
//! million tokens, per token kind (`book::Price`), each entry in force from
//! `effective_from` (and until `effective_to`, if set). An event is priced
//! with the entries in force at its `occurred_at` (`book::Book::charge`):
//! its cost is the exact sum over its token kinds, rounded once, half to
//! even, to a whole nano-unit. Tokens of a kind that has no price are
//! **unpriced**, never free.
//!
//! `import` reads LiteLLM's catalogue and our own export format;
//! `catalogue` is the default book shipped with the binary; `store` keeps
//! the book in PostgreSQL (migration 0010) with a version number that every
//! projector commit checks, so no event is ever priced with a book older
//! than the one in force when it is committed.

// In the order prices travel: a catalogue, read, stored, charged.
pub mod catalogue;
pub mod import;
pub mod store;
pub mod book;

pub use book::{Book, Charge, Entry, Kind, Price, Tier};
