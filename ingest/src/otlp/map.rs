//! A span into a usage event: which attributes hold the usage, the user and
//! the project, looked up on the span, then its scope, then its resource;
//! errors named by the span's attributes, not our fields.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokenusage_contract::{UsageEvent, ValidationErrors, parse_native_value};

use super::proto;
use super::proto::any_value::Value as Attr;

/// Which attributes name the user and the project of a span.
#[derive(Debug, Clone)]
pub struct OtlpMapping {
    pub user_attributes: Vec<String>,
    pub project_attributes: Vec<String>,
}

/// The activity of a span without `gen_ai.operation.name`.
pub const UNSPECIFIED_ACTIVITY: &str = "unspecified";

/// The GenAI usage attributes and the contract fields they fill. The
/// `prompt`/`completion` names are the conventions' earlier spelling,
/// still sent by older instrumentations.
const TOKEN_ATTRIBUTES: [(&str, &str); 8] = [
    ("gen_ai.usage.input_tokens", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"),
    ("gen_ai.usage.prompt_tokens", "input_tokens"),
    ("gen_ai.usage.completion_tokens", "output_tokens"),
    ("gen_ai.usage.cache_read.input_tokens", "cache_read_input_tokens"),
    ("gen_ai.usage.cache_creation.input_tokens", "cache_write_input_tokens"),
    // What opentelemetry-util-genai emits for the same count.
    ("gen_ai.usage.cache_write.input_tokens", "cache_write_input_tokens"),
    ("gen_ai.usage.reasoning.output_tokens", "reasoning_output_tokens"),
];

/// Where a span says which service tier served it: the OpenAI registry's
/// `openai.response.service_tier`, then its earlier name.
const SERVICE_TIER_ATTRIBUTES: [&str; 2] = ["openai.response.service_tier", "gen_ai.openai.response.service_tier"];

/// Where a span's attributes are looked up after the span's own, nearest
/// first: its instrumentation scope's, then its resource's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub scope: &'a [proto::KeyValue],
    pub resource: &'a [proto::KeyValue],
}

impl<'a> Context<'a> {
    /// The one precedence rule for every attribute looked up by a list of
    /// names: the span's attributes first (any of the names), then the
    /// scope's, then the resource's. The nearest layer that names it wins,
    /// whichever name it uses: a span's `enduser.id` is the user even when
    /// the resource carries the service's `user.id`.
    fn lookup<T>(
        self,
        span: &'a [proto::KeyValue],
        names: &[String],
        read: impl Fn(&'a Attr) -> Option<T>,
    ) -> Option<T> {
        [span, self.scope, self.resource]
            .into_iter()
            .find_map(|layer| names.iter().find_map(|n| attribute(layer, n).and_then(&read)))
    }
}

/// The usage event a span holds: `None` for a span without usage
/// attributes (ignored), otherwise the contract's verdict on it, with the
/// errors naming the span's attributes rather than our fields.
pub fn to_event(
    span: &proto::Span,
    context: Context<'_>,
    mapping: &OtlpMapping,
    source: &str,
    now: DateTime<Utc>,
) -> Option<Result<UsageEvent, ValidationErrors>> {
    let attrs = &span.attributes[..];
    if !attrs.iter().any(|kv| TOKEN_ATTRIBUTES[..4].iter().any(|(a, _)| kv.key == *a)) {
        return None;
    }
    let mut errors = Vec::new();
    let mut obj = Map::new();
    let id_ok = |id: &[u8], len: usize| id.len() == len && id.iter().any(|b| *b != 0);
    if !id_ok(&span.trace_id, 16) {
        errors.push(("traceId", "must be 16 bytes, not all zero".to_owned()));
    }
    if !id_ok(&span.span_id, 8) {
        errors.push(("spanId", "must be 8 bytes, not all zero".to_owned()));
    }
    obj.insert("event_id".into(), json!(format!("{}-{}", hex::encode(&span.trace_id), hex::encode(&span.span_id))));
    let end = if span.end_time_unix_nano != 0 { span.end_time_unix_nano } else { span.start_time_unix_nano };
    match i64::try_from(end).ok().filter(|n| *n > 0).map(DateTime::from_timestamp_nanos) {
        Some(t) => {
            obj.insert("occurred_at".into(), json!(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)));
        }
        None if end == 0 => {
            errors.push(("endTimeUnixNano", "is required (the span has no end or start time)".to_owned()));
        }
        None => errors.push(("endTimeUnixNano", format!("is out of range ({end} ns is after 2262-04-11)"))),
    }
    let text = |a: &Attr| match a {
        Attr::StringValue(s) => Some(s.clone()),
        _ => None,
    };
    // Ids may be numbers in the publisher's system: an integer names a
    // user or project as its decimal text.
    let name = |a: &Attr| match a {
        Attr::IntValue(i) => Some(i.to_string()),
        other => text(other),
    };
    let first = |names: &[String]| context.lookup(attrs, names, name);
    match first(&mapping.user_attributes) {
        Some(u) => {
            obj.insert("user_id".into(), json!(u));
        }
        None => errors.push((
            "user",
            format!(
                "no string or integer attribute {} on the span, its scope or its resource",
                mapping.user_attributes.join(" or ")
            ),
        )),
    }
    if let Some(p) = first(&mapping.project_attributes) {
        obj.insert("project".into(), json!(p));
    }
    let activity = attribute(attrs, "gen_ai.operation.name").and_then(text).map(|a| a.to_ascii_lowercase());
    obj.insert("activity".into(), json!(activity.unwrap_or_else(|| UNSPECIFIED_ACTIVITY.to_owned())));
    let model =
        ["gen_ai.response.model", "gen_ai.request.model"].iter().find_map(|a| attribute(attrs, a).and_then(text));
    match model {
        Some(m) => {
            obj.insert("model".into(), json!(m));
        }
        None => errors.push(("gen_ai.request.model", "is required (or gen_ai.response.model)".to_owned())),
    }
    for (attr, field) in TOKEN_ATTRIBUTES {
        let Some(v) = attribute(attrs, attr) else {
            // Named but without a value we can read (an int64 out of
            // range, "1e3", " 5", no value at all): a refusal naming it,
            // never a silent 0 that a corrected re-export could not undo.
            if attrs.iter().any(|kv| kv.key == attr) {
                errors
                    .push((attr, "has no readable value: a token count must be a non-negative 64-bit integer".into()));
            }
            continue;
        };
        if obj.contains_key(field) {
            continue; // The current name wins over the earlier spelling.
        }
        let n = match v {
            Attr::IntValue(i) => json!(i),
            // JavaScript exporters send whole numbers as doubles.
            Attr::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 1e15 => json!(*d as i64),
            Attr::DoubleValue(d) => json!(d),
            Attr::StringValue(s) => s.parse::<u64>().map_or_else(|_| json!(s), |n| json!(n)),
            Attr::BoolValue(b) => json!(b),
        };
        obj.insert(field.into(), n);
    }
    for field in ["input_tokens", "output_tokens"] {
        obj.entry(field).or_insert(json!(0));
    }
    // The tier that served the request (OpenAI's instrumentations set it;
    // the value is checked like an event's `service_tier`).
    if let Some(tier) = SERVICE_TIER_ATTRIBUTES.iter().find_map(|a| attribute(attrs, a).and_then(text)) {
        obj.insert("service_tier".into(), json!(tier));
    }
    let parsed = parse_native_value(&Value::Object(obj), source, now).map_err(|ValidationErrors(list)| {
        ValidationErrors(
            list.into_iter()
                .map(|mut e| {
                    e.field = attribute_name(&e.field).to_owned();
                    e
                })
                .collect(),
        )
    });
    Some(if errors.is_empty() {
        parsed.map(|mut e| {
            e.source = source.to_owned();
            e
        })
    } else {
        let mut all: Vec<_> =
            errors.into_iter().map(|(f, r)| tokenusage_contract::FieldError { field: f.into(), reason: r }).collect();
        if let Err(ValidationErrors(more)) = parsed {
            let fresh: Vec<_> = more.into_iter().filter(|e| !all.iter().any(|a| a.field == e.field)).collect();
            all.extend(fresh);
        }
        Err(ValidationErrors(all))
    })
}

/// The span attribute a contract field came from, for error messages.
fn attribute_name(field: &str) -> &str {
    match field {
        "event_id" => "traceId/spanId",
        "occurred_at" => "endTimeUnixNano",
        "activity" => "gen_ai.operation.name",
        "model" => "gen_ai.request.model",
        "user_id" => "user",
        "service_tier" => SERVICE_TIER_ATTRIBUTES[0],
        other => TOKEN_ATTRIBUTES.iter().find(|(_, f)| *f == other).map_or(other, |(a, _)| a),
    }
}

pub(super) fn span_name(span: &proto::Span) -> String {
    format!("{}/{}", hex::encode(&span.trace_id), hex::encode(&span.span_id))
}

fn attribute<'a>(attrs: &'a [proto::KeyValue], key: &str) -> Option<&'a Attr> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}
