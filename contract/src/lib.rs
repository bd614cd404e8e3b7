//! The usage-event contract, version 2 (v1 events are v2 events without
//! token kinds or cost): what a publisher sends and what the
//! projector accepts.
//!
//! This crate owns the event type, its validation (which field is wrong and
//! why), the native JSON and CloudEvents 1.0 encodings, and the names used on
//! the Kafka topic (topic, key, headers). It does no I/O and must not grow
//! any: ingest, the projector, the CLI and direct producers' documentation all
//! lean on it, so it stays small and pure. `docs/EVENTS.md` and
//! `docs/schema/usage-event-v1.schema.json` describe the same rules for people
//! and for other languages.

// In the order an event meets them: what it is, how it is read (native,
// a provider's usage object, CloudEvents), how it travels; then the rules
// its amounts and text follow.
mod event;
mod validate;
pub mod providers;
mod cloudevents;
pub mod wire;
pub mod money;
pub mod text;

pub use cloudevents::{CE_SPEC_VERSION, CE_TYPE, parse_cloudevent, parse_cloudevent_value, to_cloudevent};
pub use event::{Billing, Limits, ServiceTier, SuppliedCost, TokenKinds, UsageEvent};
pub use validate::{
    FieldError, PROVIDER_SOURCE_PREFIX, ValidationErrors, check_publisher_source, normalise_leap_second, parse_native,
    parse_native_value, valid_project,
};
pub use wire::{Encoding, decode_kafka};
