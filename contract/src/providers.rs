//! The providers' own usage objects, mapped to our token totals and kinds.
//!
//! A publisher that holds the response of an LLM API can send its `usage`
//! object as it came (`"usage": {...}` instead of `input_tokens` and
//! `output_tokens`), and this module reads it the way that provider bills:
//! which counts include which, and which kinds they are. The result obeys
//! the subset rule ([`crate::TokenKinds`]) or is refused with the field
//! named. The published test vectors, with their sources, are in
//! `docs/examples/provider-usage-vectors.json` (run as tests below and
//! rendered in docs/PUBLISHING.md).
//!
//! Unknown keys inside a usage object are ignored: providers add counters
//! over time (OpenAI's prediction tokens, Anthropic's server tool use), and
//! an event must not be refused for a counter that does not change its
//! tokens.

use serde_json::{Map, Value};

use crate::event::{Billing, Limits, ServiceTier, TokenKinds};
use crate::validate::{FieldError, kind};

/// Which provider's usage object (`usage_format` on an event; detected from
/// the object's keys when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageFormat {
    /// OpenAI Chat Completions (and Embeddings) `usage`.
    OpenAiChat,
    /// OpenAI Responses `usage`.
    OpenAiResponses,
    /// Anthropic Messages `usage`.
    Anthropic,
    /// Google Gemini `usageMetadata`.
    Gemini,
    /// Amazon Bedrock Converse `usage`.
    Bedrock,
}

impl UsageFormat {
    pub const ALL: [UsageFormat; 5] =
        [Self::OpenAiChat, Self::OpenAiResponses, Self::Anthropic, Self::Gemini, Self::Bedrock];

    /// The name used in `usage_format`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAiChat => "openai.chat",
            Self::OpenAiResponses => "openai.responses",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    pub(crate) fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

/// How a key of a provider's usage object is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Read into our totals or kinds (or checked against them).
    Read,
    /// Deliberately not read, and why.
    Ignored(&'static str),
}

const PLAIN_PART: KeyUse = KeyUse::Ignored("the plain part of its total, what the other kinds leave");
const NOT_A_COUNT: KeyUse = KeyUse::Ignored("not a token count");
const REQUESTS: KeyUse = KeyUse::Ignored("requests without a price in any catalogue we import");

/// Every key the providers' SDKs define in their usage types (pinned in
/// scripts/provider-sdks), and what we do with it. A test fails when a
/// pinned SDK defines a key missing here, and another when a key marked
/// `Read` does not change what is read.
pub const KNOWN_KEYS: &[(UsageFormat, &str, KeyUse)] = {
    use KeyUse::{Ignored, Read};
    use UsageFormat::{Anthropic, OpenAiChat, OpenAiResponses};
    &[
        (OpenAiChat, "prompt_tokens", Read),
        (OpenAiChat, "completion_tokens", Read),
        (OpenAiChat, "total_tokens", Read),
        (OpenAiChat, "prompt_tokens_details.cached_tokens", Read),
        (OpenAiChat, "prompt_tokens_details.cache_write_tokens", Read),
        (OpenAiChat, "prompt_tokens_details.audio_tokens", Read),
        (OpenAiChat, "prompt_tokens_details.image_tokens", Read),
        (OpenAiChat, "prompt_tokens_details.text_tokens", PLAIN_PART),
        (OpenAiChat, "completion_tokens_details.reasoning_tokens", Read),
        (OpenAiChat, "completion_tokens_details.audio_tokens", Read),
        (OpenAiChat, "completion_tokens_details.text_tokens", PLAIN_PART),
        (
            OpenAiChat,
            "completion_tokens_details.accepted_prediction_tokens",
            Ignored("part of completion_tokens, billed as output"),
        ),
        (
            OpenAiChat,
            "completion_tokens_details.rejected_prediction_tokens",
            Ignored("part of completion_tokens, billed as output"),
        ),
        (OpenAiResponses, "input_tokens", Read),
        (OpenAiResponses, "output_tokens", Read),
        (OpenAiResponses, "total_tokens", Read),
        (OpenAiResponses, "input_tokens_details.cached_tokens", Read),
        (OpenAiResponses, "input_tokens_details.cache_write_tokens", Read),
        (
            OpenAiResponses,
            "input_tokens_details.cache_write_tokens_details.ttl_30m_tokens",
            Ignored("a split of cache_write_tokens by lifetime, counted there; no price per OpenAI cache lifetime yet"),
        ),
        (
            OpenAiResponses,
            "input_tokens_details.cache_write_tokens_details.ttl_12h_tokens",
            Ignored("a split of cache_write_tokens by lifetime, counted there; no price per OpenAI cache lifetime yet"),
        ),
        (OpenAiResponses, "output_tokens_details.reasoning_tokens", Read),
        (Anthropic, "input_tokens", Read),
        (Anthropic, "output_tokens", Read),
        (Anthropic, "cache_read_input_tokens", Read),
        (Anthropic, "cache_creation_input_tokens", Read),
        (Anthropic, "cache_creation.ephemeral_5m_input_tokens", Read),
        (Anthropic, "cache_creation.ephemeral_1h_input_tokens", Read),
        (Anthropic, "output_tokens_details.thinking_tokens", Read),
        (Anthropic, "server_tool_use.web_search_requests", Read),
        (Anthropic, "server_tool_use.web_fetch_requests", REQUESTS),
        (Anthropic, "service_tier", Read),
        (Anthropic, "inference_geo", NOT_A_COUNT),
        (Anthropic, "speed", NOT_A_COUNT),
    ]
};

/// Token totals and kinds read from a usage object, before the subset rule
/// is checked (by the caller, with the event's other fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MappedUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub kinds: TokenKinds,
    /// The service tier and web searches, where the object names them
    /// (Anthropic's does).
    pub billing: Billing,
}

/// Reads `usage` as `format`, or as the format its keys show when `None`.
/// Errors name fields as `usage.<path>`.
pub fn map_usage(format: Option<UsageFormat>, usage: &Map<String, Value>) -> Result<MappedUsage, Vec<FieldError>> {
    let format = match format {
        Some(f) => f,
        None => detect(usage).map_err(|reason| vec![FieldError { field: "usage".into(), reason }])?,
    };
    let mut r = Counts { obj: usage, errors: Vec::new() };
    let mapped = match format {
        UsageFormat::OpenAiChat => openai_chat(&mut r),
        UsageFormat::OpenAiResponses => openai_responses(&mut r),
        UsageFormat::Anthropic => anthropic(&mut r),
        UsageFormat::Gemini => gemini(&mut r),
        UsageFormat::Bedrock => bedrock(&mut r),
    };
    if r.errors.is_empty() { Ok(mapped) } else { Err(r.errors) }
}

/// Which format the keys show. Each provider's object has keys no other
/// has; an object with the keys of two is refused rather than guessed at.
pub fn detect(usage: &Map<String, Value>) -> Result<UsageFormat, String> {
    let has = |keys: &[&str]| keys.iter().any(|k| usage.get(*k).is_some_and(|v| !v.is_null()));
    let nested = |outer: &str, inner: &str| {
        usage.get(outer).and_then(Value::as_object).and_then(|o| o.get(inner)).is_some_and(|v| !v.is_null())
    };
    let gemini = has(&["promptTokenCount", "candidatesTokenCount", "totalTokenCount", "thoughtsTokenCount"]);
    let bedrock = has(&["inputTokens", "outputTokens", "totalTokens", "cacheReadInputTokens", "cacheWriteInputTokens"]);
    let chat = has(&["prompt_tokens", "completion_tokens"]);
    // Anthropic's SDK (2.17) also has `output_tokens_details` (with
    // `thinking_tokens`, where OpenAI Responses has `reasoning_tokens`) and
    // `server_tool_use`: the details object alone names neither provider.
    let anthropic =
        has(&["cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation", "server_tool_use"])
            || nested("output_tokens_details", "thinking_tokens");
    let responses = (has(&["input_tokens_details", "total_tokens"])
        || nested("output_tokens_details", "reasoning_tokens"))
        && !chat;
    // Plain `input_tokens`/`output_tokens` mean the same to Anthropic and
    // OpenAI Responses when nothing else is there.
    let plain = has(&["input_tokens", "output_tokens"]);
    let found: Vec<UsageFormat> = [
        (gemini, UsageFormat::Gemini),
        (bedrock, UsageFormat::Bedrock),
        (chat, UsageFormat::OpenAiChat),
        (anthropic, UsageFormat::Anthropic),
        (responses, UsageFormat::OpenAiResponses),
    ]
    .into_iter()
    .filter_map(|(yes, f)| yes.then_some(f))
    .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] if plain => Ok(UsageFormat::OpenAiResponses),
        [] => Err(format!(
            "holds no token counts this server knows; send a provider's usage object as it came, with usage_format one of {}",
            UsageFormat::names()
        )),
        several => Err(format!(
            "has the keys of several providers' usage objects ({}); set usage_format to say which",
            several.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Reads non-negative whole counts out of a usage object, recording every
/// problem.
struct Counts<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl Counts<'_> {
    fn fail(&mut self, path: &str, reason: String) {
        let e = FieldError { field: format!("usage.{path}"), reason };
        // Two counts under one malformed details object report it once.
        if !self.errors.contains(&e) {
            self.errors.push(e);
        }
    }

    /// The count at `path` (`a` or `a.b` for a nested details object);
    /// absent or null is `None`.
    fn get(&mut self, path: &str) -> Option<u64> {
        let parts: Vec<&str> = path.split('.').collect();
        let mut obj = self.obj;
        for (i, part) in parts.iter().enumerate() {
            let v = obj.get(*part).filter(|v| !v.is_null())?;
            if i + 1 == parts.len() {
                return self.count(path, v);
            }
            match v {
                Value::Object(inner) => obj = inner,
                other => {
                    self.fail(&parts[..=i].join("."), format!("must be an object, got {}", kind(other)));
                    return None;
                }
            }
        }
        None
    }

    fn count(&mut self, path: &str, v: &Value) -> Option<u64> {
        let n = v.as_number();
        match n.and_then(|n| n.as_u64()) {
            Some(u) if u <= Limits::MAX_TOKENS => Some(u),
            Some(u) => {
                self.fail(path, format!("must be at most {}, got {u}", Limits::MAX_TOKENS));
                None
            }
            None if n.and_then(|n| n.as_i64()).is_some() => {
                self.fail(path, format!("must not be negative, got {v}"));
                None
            }
            None => {
                self.fail(
                    path,
                    format!("must be a whole number, got {}", if n.is_some() { "a fraction" } else { kind(v) }),
                );
                None
            }
        }
    }

    fn or_zero(&mut self, path: &str) -> u64 {
        self.get(path).unwrap_or(0)
    }

    /// A count the object must have.
    fn required(&mut self, path: &str) -> u64 {
        let present = self.obj.get(path).is_some_and(|v| !v.is_null());
        let n = self.get(path);
        if !present {
            self.fail(path, "is required in this usage object".into());
        }
        n.unwrap_or(0)
    }

    /// A provider's own total, when sent, must equal the parts it sums: a
    /// mismatch means the object was read as the wrong format.
    fn check_total(&mut self, path: &str, expected: u64, parts: &str) {
        if let Some(total) = self.get(path)
            && total != expected
        {
            self.fail(path, format!("is {total}, but {parts} is {expected}; is usage_format right?"));
        }
    }
}

/// `prompt_tokens` includes the cached and audio prompt tokens;
/// `completion_tokens` includes reasoning and audio output (OpenAI's
/// reading is the subset rule's).
fn openai_chat(r: &mut Counts) -> MappedUsage {
    let input = r.required("prompt_tokens");
    // Embeddings answer without completion tokens.
    let output = r.or_zero("completion_tokens");
    r.check_total("total_tokens", input + output, "prompt_tokens + completion_tokens");
    MappedUsage {
        billing: Billing::default(),
        input_tokens: input,
        output_tokens: output,
        kinds: TokenKinds {
            cache_read_input_tokens: r.or_zero("prompt_tokens_details.cached_tokens"),
            cache_write_input_tokens: r.or_zero("prompt_tokens_details.cache_write_tokens"),
            audio_input_tokens: r.or_zero("prompt_tokens_details.audio_tokens"),
            image_input_tokens: r.or_zero("prompt_tokens_details.image_tokens"),
            reasoning_output_tokens: r.or_zero("completion_tokens_details.reasoning_tokens"),
            audio_output_tokens: r.or_zero("completion_tokens_details.audio_tokens"),
            ..TokenKinds::default()
        },
    }
}

fn openai_responses(r: &mut Counts) -> MappedUsage {
    let input = r.required("input_tokens");
    let output = r.or_zero("output_tokens");
    r.check_total("total_tokens", input + output, "input_tokens + output_tokens");
    MappedUsage {
        billing: Billing::default(),
        input_tokens: input,
        output_tokens: output,
        kinds: TokenKinds {
            cache_read_input_tokens: r.or_zero("input_tokens_details.cached_tokens"),
            cache_write_input_tokens: r.or_zero("input_tokens_details.cache_write_tokens"),
            reasoning_output_tokens: r.or_zero("output_tokens_details.reasoning_tokens"),
            ..TokenKinds::default()
        },
    }
}

/// Anthropic's `input_tokens` are only the tokens after the last cache
/// breakpoint: cache reads and writes are counted beside it, so our input
/// total is the sum of the three. Writes split by lifetime when the
/// `cache_creation` object is there (5-minute and 1-hour writes are billed
/// at different rates).
fn anthropic(r: &mut Counts) -> MappedUsage {
    let uncached = r.required("input_tokens");
    let output = r.or_zero("output_tokens");
    let read = r.or_zero("cache_read_input_tokens");
    let created = r.get("cache_creation_input_tokens");
    let (w5m, w1h) =
        (r.get("cache_creation.ephemeral_5m_input_tokens"), r.get("cache_creation.ephemeral_1h_input_tokens"));
    let (write, write_1h) = match (created, w5m, w1h) {
        (created, None, None) => (created.unwrap_or(0), 0),
        (created, w5m, w1h) => {
            let (w5m, w1h) = (w5m.unwrap_or(0), w1h.unwrap_or(0));
            if let Some(c) = created
                && c != w5m + w1h
            {
                r.fail(
                    "cache_creation",
                    format!("holds {w5m} + {w1h} written tokens, but cache_creation_input_tokens is {c}"),
                );
            }
            (w5m, w1h)
        }
    };
    let service_tier = match r.obj.get("service_tier") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            let t = ServiceTier::parse(name);
            if t.is_none() {
                r.fail("service_tier", format!("must be one of {}, got {name:?}", ServiceTier::NAMES));
            }
            t
        }
        Some(other) => {
            r.fail("service_tier", format!("must be a string, got {}", kind(other)));
            None
        }
    };
    let billing = Billing { service_tier, web_search_requests: r.or_zero("server_tool_use.web_search_requests") };
    MappedUsage {
        billing,
        input_tokens: uncached + read + write + write_1h,
        output_tokens: output,
        kinds: TokenKinds {
            cache_read_input_tokens: read,
            cache_write_input_tokens: write,
            cache_write_1h_input_tokens: write_1h,
            // Thinking is billed as output and counted in `output_tokens`.
            reasoning_output_tokens: r.or_zero("output_tokens_details.thinking_tokens"),
            ..TokenKinds::default()
        },
    }
}

/// Gemini's `promptTokenCount` includes the cached content;
/// `candidatesTokenCount` excludes the thoughts, which are billed as
/// output; tool-use prompt tokens are input. Modality breakdowns are not
/// read: Gemini's per-modality counts overlap its cached count, which the
/// subset rule's disjoint kinds cannot hold.
fn gemini(r: &mut Counts) -> MappedUsage {
    let prompt = r.required("promptTokenCount");
    let tool_prompt = r.or_zero("toolUsePromptTokenCount");
    let thoughts = r.or_zero("thoughtsTokenCount");
    let candidates = r.or_zero("candidatesTokenCount");
    MappedUsage {
        billing: Billing::default(),
        input_tokens: prompt + tool_prompt,
        output_tokens: candidates + thoughts,
        kinds: TokenKinds {
            cache_read_input_tokens: r.or_zero("cachedContentTokenCount"),
            reasoning_output_tokens: thoughts,
            ..TokenKinds::default()
        },
    }
}

/// Bedrock Converse reports cache reads and writes beside `inputTokens`.
/// Whether `inputTokens` already holds them has differed between models;
/// `totalTokens` tells: if it equals input + output + cache reads + cache
/// writes, they are not in `inputTokens` and are added; if it equals
/// input plus output, they are. Without a total they are taken as not
/// included (the Anthropic models' reading).
fn bedrock(r: &mut Counts) -> MappedUsage {
    let input = r.required("inputTokens");
    let output = r.or_zero("outputTokens");
    let read = r.or_zero("cacheReadInputTokens");
    let write = r.or_zero("cacheWriteInputTokens");
    let total = r.get("totalTokens");
    let input_total = match total {
        Some(t) if t == input + output => input,
        Some(t) if t == input + output + read + write => input + read + write,
        Some(t) => {
            r.fail(
                "totalTokens",
                format!(
                    "is {t}, but inputTokens + outputTokens is {} and with the cache tokens {}",
                    input + output,
                    input + output + read + write
                ),
            );
            input
        }
        None => input + read + write,
    };
    MappedUsage {
        billing: Billing::default(),
        input_tokens: input_total,
        output_tokens: output,
        kinds: TokenKinds { cache_read_input_tokens: read, cache_write_input_tokens: write, ..TokenKinds::default() },
    }
}

#[cfg(test)]
mod tests;
