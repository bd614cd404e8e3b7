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
    /// Which project the tokens were spent for (optional; the same
    /// characters as `activity`). Views group and filter by it; events
    /// without one are in the project `""` ("no project").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Contract v2: which kinds of token the totals hold (all zero for a v1
    /// event). See [`TokenKinds`] for the subset rule.
    #[serde(flatten)]
    pub kinds: TokenKinds,
    /// How the provider billed the request beyond its tokens: the service
    /// tier and per-request charges (both absent for most events).
    #[serde(flatten)]
    pub billing: Billing,
    /// Contract v2: the cost as the publisher knows it (a gateway that has
    /// the bill). When present it wins over the price book.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<SuppliedCost>,
    /// Small free-form annotations (flat object, bounded by [`Limits`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// The kinds of token inside an event's totals (contract v2), as providers
/// bill them.
///
/// **The subset rule** (the OpenTelemetry GenAI conventions' reading): the
/// input kinds are disjoint parts of `input_tokens`, the output kinds
/// disjoint parts of `output_tokens`. So `cache_read + cache_write +
/// cache_write_1h + audio_input + image_input <= input_tokens` and
/// `reasoning + audio_output + image_output <= output_tokens`; the rest of
/// each total is plain text input or output. Events that break the rule are
/// refused with the field named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKinds {
    /// Input tokens served from a prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_input_tokens: u64,
    /// Input tokens written to a prompt cache at the default (5-minute) rate.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_input_tokens: u64,
    /// Input tokens written to a prompt cache at the 1-hour rate (Anthropic
    /// bills these apart from 5-minute writes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_1h_input_tokens: u64,
    /// Audio input tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_input_tokens: u64,
    /// Image input tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub image_input_tokens: u64,
    /// Output tokens spent on reasoning.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_output_tokens: u64,
    /// Audio output tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audio_output_tokens: u64,
    /// Image output tokens.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub image_output_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenKinds {
    /// The input kinds' sum: at most `input_tokens` by the subset rule.
    pub fn input_parts(&self) -> u64 {
        self.cache_read_input_tokens
            + self.cache_write_input_tokens
            + self.cache_write_1h_input_tokens
            + self.audio_input_tokens
            + self.image_input_tokens
    }

    /// The output kinds' sum: at most `output_tokens` by the subset rule.
    pub fn output_parts(&self) -> u64 {
        self.reasoning_output_tokens + self.audio_output_tokens + self.image_output_tokens
    }
}

/// What the provider bills besides tokens: the service tier that served
/// the request (batch, flex and priority have prices of their own) and
/// server-side tool requests billed per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billing {
    /// The tier that served the request; absent is the standard tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier>,
    /// Web searches the provider ran for the request (Anthropic's
    /// `server_tool_use.web_search_requests`, OpenAI's web search tool
    /// calls), each billed at the model's per-search price.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub web_search_requests: u64,
}

impl Billing {
    pub fn is_empty(&self) -> bool {
        *self == Billing::default()
    }
}

/// A provider's service tier, as the event names it. OpenAI answers
/// `default`, `flex`, `priority` or `scale`, Anthropic `standard`,
/// `priority` or `batch`; the names for the standard price (`standard`,
/// `default`, `auto`, and OpenAI's prepaid `scale`) all read as
/// [`ServiceTier::Standard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTier {
    Standard,
    Batch,
    Flex,
    Priority,
}

impl ServiceTier {
    /// The tiers with prices of their own, in the order prices list them.
    pub const PRICED_APART: [ServiceTier; 3] = [ServiceTier::Batch, ServiceTier::Flex, ServiceTier::Priority];

    pub fn name(self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Batch => "batch",
            ServiceTier::Flex => "flex",
            ServiceTier::Priority => "priority",
        }
    }

    /// Reads a provider's or publisher's name for a tier (case ignored).
    pub fn parse(name: &str) -> Option<ServiceTier> {
        match name.to_ascii_lowercase().as_str() {
            "standard" | "default" | "auto" | "scale" => Some(ServiceTier::Standard),
            "batch" => Some(ServiceTier::Batch),
            "flex" => Some(ServiceTier::Flex),
            "priority" => Some(ServiceTier::Priority),
            _ => None,
        }
    }

    /// The names [`ServiceTier::parse`] accepts, for error messages.
    pub const NAMES: &'static str = "standard, default, auto, scale, batch, flex or priority";
}

/// A cost the publisher supplies, exactly: an amount in nano-units (10^-9)
/// of an ISO 4217 currency. On the wire the amount is a decimal string (or
/// number) with at most 9 decimal places, e.g. `{"amount": "0.0123",
/// "currency": "USD"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppliedCost {
    #[serde(with = "nanos_text")]
    pub amount: i64,
    pub currency: String,
}

/// Nano-units written as the decimal text they stand for ("0.0123"), so
/// the native JSON on Kafka says what the publisher said.
mod nanos_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::money::format_nanos(*n))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        crate::money::parse_nanos(&text).map_err(serde::de::Error::custom)
    }
}

/// The bounds of contract v1. They are part of the contract (documented in
/// `docs/EVENTS.md`), not tuning knobs, so they are constants.
#[derive(Debug, Clone, Copy)]
pub struct Limits;

impl Limits {
    pub const ID_MAX_CHARS: usize = 128;
    pub const SOURCE_MAX_CHARS: usize = 256;
    pub const ACTIVITY_MAX_CHARS: usize = 64;
    pub const PROJECT_MAX_CHARS: usize = 64;
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
    /// A supplied cost is at most a million units of its currency per event
    /// (10^15 nano-units): sums over years stay far inside 64 bits.
    pub const MAX_SUPPLIED_COST_NANOS: i64 = 1_000_000_000_000_000;
    /// Per-request counts (web searches) of one event.
    pub const MAX_REQUESTS: u64 = 100_000;
}

impl UsageEvent {
    /// Total tokens in this event.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// The project as rollups key it: `""` when the event names none.
    pub fn project_key(&self) -> &str {
        self.project.as_deref().unwrap_or("")
    }

    /// The native JSON encoding, as put on the Kafka topic.
    pub fn to_native_json(&self) -> Vec<u8> {
        // Serializing a struct of strings, integers and a JSON map cannot fail.
        serde_json::to_vec(self).expect("UsageEvent serializes")
    }
}
