//! The CloudEvents 1.0 mapping of a usage event (structured JSON mode; the
//! Kafka binary mode is folded into this in [`crate::wire`]).
//!
//! `id` is the event id, `source` the publisher, `subject` the user, `time`
//! the event time, and `data` carries activity, model, tokens and metadata.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::event::{Limits, UsageEvent};
use crate::validate::{
    ACTIVITY_CHARS, FieldReader, MODEL_CHARS, ValidationErrors, activity_char, kind, model_char, parse_object,
};

/// The only CloudEvents version we speak.
pub const CE_SPEC_VERSION: &str = "1.0";
/// The CloudEvents `type` of a usage event. Contract v2 only adds optional
/// `data` fields, so the type keeps its v1 name.
pub const CE_TYPE: &str = "dev.tokenusage.usage.v1";

/// Renders an event as a structured-mode CloudEvent.
pub fn to_cloudevent(e: &UsageEvent) -> Value {
    let mut data = json!({
        "activity": e.activity,
        "model": e.model,
        "input_tokens": e.input_tokens,
        "output_tokens": e.output_tokens,
    });
    // The v2 kinds (only those present) and the supplied cost, named as in
    // the native encoding.
    if let Ok(Value::Object(kinds)) = serde_json::to_value(e.kinds) {
        data.as_object_mut().into_iter().for_each(|d| d.extend(kinds.clone()));
    }
    if let Ok(Value::Object(billing)) = serde_json::to_value(e.billing) {
        data.as_object_mut().into_iter().for_each(|d| d.extend(billing.clone()));
    }
    if let Some(c) = &e.cost {
        data["cost"] = serde_json::to_value(c).unwrap_or(Value::Null);
    }
    if let Some(p) = &e.project {
        data["project"] = Value::String(p.clone());
    }
    if let Some(m) = &e.metadata {
        data["metadata"] = Value::Object(m.clone());
    }
    json!({
        "specversion": CE_SPEC_VERSION,
        "id": e.event_id,
        "source": e.source,
        "type": CE_TYPE,
        "subject": e.user_id,
        "time": e.occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// Parses and validates one structured-mode CloudEvent.
pub fn parse_cloudevent(bytes: &[u8], now: DateTime<Utc>) -> Result<UsageEvent, ValidationErrors> {
    cloudevent_from_object(&parse_object(bytes)?, now)
}

/// Like [`parse_cloudevent`], for an already-parsed JSON value (one item of
/// a CloudEvents batch).
pub fn parse_cloudevent_value(value: &Value, now: DateTime<Utc>) -> Result<UsageEvent, ValidationErrors> {
    match value {
        Value::Object(obj) => cloudevent_from_object(obj, now),
        other => Err(ValidationErrors::whole(format!("a CloudEvent must be a JSON object, got {}", kind(other)))),
    }
}

pub(crate) fn cloudevent_from_object(
    obj: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<UsageEvent, ValidationErrors> {
    let mut r = FieldReader::new(obj, "");
    match obj.get("specversion").and_then(Value::as_str) {
        Some(CE_SPEC_VERSION) => {}
        Some(v) => r.fail("specversion", format!("must be \"{CE_SPEC_VERSION}\", got \"{v}\"")),
        None => r.fail("specversion", format!("is required and must be \"{CE_SPEC_VERSION}\"")),
    }
    match obj.get("type").and_then(Value::as_str) {
        Some(CE_TYPE) => {}
        Some(t) => r.fail("type", format!("must be \"{CE_TYPE}\", got \"{t}\"")),
        None => r.fail("type", format!("is required and must be \"{CE_TYPE}\"")),
    }
    if let Some(ct) = obj.get("datacontenttype").and_then(Value::as_str)
        && !ct.starts_with("application/json")
    {
        r.fail("datacontenttype", format!("must be application/json, got \"{ct}\""));
    }
    let event_id = r.string("id", Limits::ID_MAX_CHARS, None);
    let source = r.string("source", Limits::SOURCE_MAX_CHARS, None);
    if let Some(s) = &source
        && let Err(why) = crate::validate::check_publisher_source(s)
    {
        r.fail("source", why);
    }
    let user_id = r.string("subject", Limits::ID_MAX_CHARS, None);
    let occurred_at = r.time("time", now);
    // Structured mode carries binary data as `data_base64` (what the SDKs
    // write for bytes): the same JSON object, base64-encoded.
    let decoded = match (obj.get("data"), obj.get("data_base64")) {
        (Some(_), Some(_)) => {
            r.fail("data_base64", "must not be given together with data (CloudEvents allows one of them)");
            None
        }
        (None, Some(Value::String(b64))) => {
            use base64::Engine as _;
            match base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()) {
                Err(e) => {
                    r.fail("data_base64", format!("must be base64 (RFC 4648): {e}"));
                    None
                }
                Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        r.fail("data_base64", format!("must decode to a JSON object: {e}"));
                        None
                    }
                },
            }
        }
        (None, Some(other)) => {
            r.fail("data_base64", format!("must be a base64 string, got {}", kind(other)));
            None
        }
        _ => None,
    };
    let data = obj.get("data").or(decoded.as_ref());
    let given_data_base64 = obj.contains_key("data_base64");
    let mut fields = None;
    match data {
        Some(Value::Object(d)) => {
            let mut dr = FieldReader::new(d, "data.");
            let activity = dr.string("activity", Limits::ACTIVITY_MAX_CHARS, Some((ACTIVITY_CHARS, activity_char)));
            let model = dr.string("model", Limits::MODEL_MAX_CHARS, Some((MODEL_CHARS, model_char)));
            let project = dr.project();
            let tokens = dr.token_fields();
            let cost = dr.cost("cost");
            let metadata = dr.metadata("metadata");
            dr.reject_unknown();
            r.errors.append(&mut dr.errors);
            fields = (|| Some((activity?, model?, project?, tokens?, cost?, metadata?)))();
        }
        Some(other) => r.fail("data", format!("must be an object, got {}", kind(other))),
        None if given_data_base64 => {}
        None => r.fail("data", "is required (or data_base64)"),
    }
    // CloudEvents allows extension attributes; we ignore them but insist on
    // the spec's naming rule so a misspelt core attribute is not mistaken for one.
    for key in obj.keys() {
        let core = matches!(
            key.as_str(),
            "specversion"
                | "type"
                | "datacontenttype"
                | "dataschema"
                | "id"
                | "source"
                | "subject"
                | "time"
                | "data"
                | "data_base64"
        );
        let valid_ext =
            !key.is_empty() && key.len() <= 20 && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !core && !valid_ext {
            r.fail(key, "is not a CloudEvents attribute (extension names are 1-20 lowercase letters or digits)");
        }
    }
    let event = (|| {
        let (activity, model, project, (input_tokens, output_tokens, kinds, billing), cost, metadata) = fields?;
        Some(UsageEvent {
            source: source?,
            event_id: event_id?,
            user_id: user_id?,
            occurred_at: occurred_at?,
            activity,
            model,
            project,
            input_tokens,
            output_tokens,
            kinds,
            billing,
            cost,
            metadata,
        })
    })();
    r.finish(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn sample() -> UsageEvent {
        UsageEvent {
            source: "billing-svc".into(),
            event_id: "evt-9".into(),
            user_id: "bob".into(),
            occurred_at: "2026-11-27T10:15:00Z".parse().unwrap(),
            activity: "agent-run".into(),
            model: "claude-sonnet-4".into(),
            input_tokens: 1000,
            output_tokens: 250,
            kinds: crate::TokenKinds {
                cache_read_input_tokens: 600,
                reasoning_output_tokens: 50,
                ..Default::default()
            },
            billing: crate::Billing { service_tier: Some(crate::ServiceTier::Priority), web_search_requests: 2 },
            cost: Some(crate::SuppliedCost { amount: 12_300_000, currency: "USD".into() }),
            project: None,
            metadata: Some([("team".to_string(), json!("search"))].into_iter().collect()),
        }
    }

    #[test]
    fn a_cloudevent_round_trips() {
        let ce = to_cloudevent(&sample());
        assert_eq!(ce["subject"], "bob");
        assert_eq!(ce["type"], CE_TYPE);
        let back = parse_cloudevent(ce.to_string().as_bytes(), now()).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn cloudevent_errors_name_data_fields_and_core_attributes() {
        let mut ce = to_cloudevent(&sample());
        ce["type"] = json!("com.example.other");
        ce["data"]["input_tokens"] = json!(-1);
        ce["Subject"] = json!("x");
        let errs = parse_cloudevent(ce.to_string().as_bytes(), now()).unwrap_err().0;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["type", "data.input_tokens", "Subject"]);
    }

    #[test]
    fn extension_attributes_are_allowed() {
        let mut ce = to_cloudevent(&sample());
        ce["traceparent"] = json!("00-abc-def-01");
        assert!(parse_cloudevent(ce.to_string().as_bytes(), now()).is_ok());
    }

    #[test]
    fn data_base64_carries_the_same_event() {
        use base64::Engine as _;
        let mut ce = to_cloudevent(&sample());
        let data = ce.as_object_mut().unwrap().remove("data").unwrap();
        ce["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(data.to_string()));
        assert_eq!(parse_cloudevent(ce.to_string().as_bytes(), now()).unwrap(), sample());
        // Both at once, not base64, or not JSON: refused, by name.
        let mut both = ce.clone();
        both["data"] = data;
        let bad = [
            both,
            {
                let mut c = ce.clone();
                c["data_base64"] = json!("***");
                c
            },
            {
                let mut c = ce.clone();
                c["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode("not json"));
                c
            },
        ];
        for c in bad {
            let errs = parse_cloudevent(c.to_string().as_bytes(), now()).unwrap_err().0;
            assert_eq!(errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["data_base64"], "{c}");
        }
    }
}
