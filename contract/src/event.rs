//! The validated event type and the bounds every field is checked against.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One usage event after validation. Every value in here has passed the
/// checks in [`crate::validate`]; code that holds a `UsageEvent` can trust it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// Who published the event. De-duplication is by (`source`, `event_id`),
    /// so one publisher can never de-duplicate away another's events. Over
    /// HTTP it comes from the API key; on Kafka from the payload.
    pub source: String,
    /// The publisher's id for this event; resending the same id is a no-op.
    pub event_id: String,
    /// The user whose tokens these are.
    pub user_id: String,
    /// When the tokens were consumed (event time), normalised to UTC.
    pub occurred_at: DateTime<Utc>,
    /// What kind of work: `chat`, `embedding`, `agent-run`, ...
    pub activity: String,
    /// Which model, as the publisher names it.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Small free-form annotations (flat object, bounded by [`Limits`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// The bounds of contract v1. They are part of the contract (documented in
/// `docs/EVENTS.md`), not tuning knobs, so they are constants.
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    pub const ID_MAX_CHARS: usize = 128;
    pub const SOURCE_MAX_CHARS: usize = 256;
    pub const ACTIVITY_MAX_CHARS: usize = 64;
    pub const MODEL_MAX_CHARS: usize = 128;
    /// One event can report at most a billion tokens in each direction: far
    /// above any real request, far below where sums over years could overflow
    /// a signed 64-bit column.
    pub const MAX_TOKENS: u64 = 1_000_000_000;
    pub const METADATA_MAX_KEYS: usize = 16;
    pub const METADATA_KEY_MAX_CHARS: usize = 64;
    pub const METADATA_VALUE_MAX_CHARS: usize = 256;
    /// The serialized metadata object, in bytes.
    pub const METADATA_MAX_BYTES: usize = 2048;
    /// Events stamped further in the future than this are refused: a clock
    /// that far off would put tokens in buckets nobody is looking at yet.
    pub const MAX_FUTURE_SECS: i64 = 300;
    /// Events before 2000-01-01 are refused as obviously wrong clocks.
    pub const MIN_YEAR: i32 = 2000;
    /// A whole encoded event (native JSON or CloudEvent), in bytes.
    pub const MAX_EVENT_BYTES: usize = 8 * 1024;
}

impl UsageEvent {
    /// Total tokens in this event.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// The native JSON encoding, as put on the Kafka topic.
    pub fn to_native_json(&self) -> Vec<u8> {
        // Serializing a struct of strings, integers and a JSON map cannot fail.
        serde_json::to_vec(self).expect("UsageEvent serializes")
    }
}
