//! Live views over WebSocket: a snapshot, then deltas, fed only by
//! committed data (the projector's post-commit NOTIFY).
//!
//! Protocol `tokenusage.v1` (docs/LIVE.md): the browser authenticates in the
//! handshake with the subprotocols `tokenusage.v1` and `bearer.<token>` (no
//! token in the URL); a foreign `Origin` is refused before the upgrade. A
//! socket holds several subscriptions, each a view in the REST vocabulary.
//!
//! Exactness without re-reading: every notification carries the committed
//! per-minute increments and the commit's number in `rollup_sequence`
//! (`schema::notice`). A view's snapshot is read together with that number
//! S; the socket then adds, in memory, exactly the increments numbered above
//! S. Whatever cannot be applied that way (an inbox overflowed, a notice too
//! big to carry increments, a gap in the numbers, a lost listener) makes
//! the affected sockets re-read their views: slower, never wrong.
//!
//! The parts, in the order a change travels:
//! - `feed`: LISTENs for the notices (and polls freshness);
//! - `hub`: routes each notice to the sockets watching its users;
//! - `view`: the arithmetic of one subscription;
//! - `protocol`: the messages both ways, typed, and the close codes.
//!
//! The socket itself (the handshake, one task per socket with its loop and
//! pacing, and what each client message does) is HTTP's:
//! `crate::http::routes::live`.

mod feed;
pub(crate) mod hub;
pub(crate) mod view;
pub mod protocol;

pub use hub::Live;
pub use protocol::{PROTOCOL, close};
