//! Names on the Kafka topic and the decoding of a Kafka record into an event.
//!
//! A record's key is the user id, so one user's events stay in one partition
//! and in order. The payload is native JSON, a structured CloudEvent, or the
//! `data` of a binary-mode CloudEvent whose attributes travel in `ce_*`
//! headers (the CloudEvents Kafka protocol binding).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::UsageEvent;
use crate::cloudevents::cloudevent_from_object;
use crate::validate::{ValidationErrors, native_from_object, parse_object};

/// The topic usage events are published to unless configured otherwise.
pub const DEFAULT_TOPIC: &str = "tokenusage.usage.v1";
/// The `source` given to native events that arrive on Kafka without one.
pub const DEFAULT_KAFKA_SOURCE: &str = "kafka";

/// Header names. Kafka headers are case-sensitive; we write lowercase.
pub mod header {
    /// `application/json` (native) or `application/cloudevents+json`.
    pub const CONTENT_TYPE: &str = "content-type";
    /// The request id that follows an event from HTTP ingest to the projector.
    pub const REQUEST_ID: &str = "request-id";
    /// The contract version of a native payload: `usage.v1`.
    pub const SCHEMA: &str = "tu-schema";
    /// Prefix of binary-mode CloudEvents attributes.
    pub const CE_PREFIX: &str = "ce_";
}

/// Content types on the wire.
pub mod content_type {
    pub const NATIVE: &str = "application/json";
    pub const CLOUDEVENT: &str = "application/cloudevents+json";
    pub const CLOUDEVENT_BATCH: &str = "application/cloudevents-batch+json";
}

/// The value of the [`header::SCHEMA`] header for this contract.
pub const SCHEMA_V1: &str = "usage.v1";

/// How a record was encoded, for metrics and dead-letter reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Native,
    CloudEventStructured,
    CloudEventBinary,
}

/// Decodes one Kafka record. `headers` are (name, value) pairs in record order.
pub fn decode_kafka(
    payload: &[u8],
    headers: &[(&str, &[u8])],
    now: DateTime<Utc>,
) -> Result<(UsageEvent, Encoding), ValidationErrors> {
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v);
    if header("ce_specversion").is_some() {
        // Binary mode: attributes from headers, the payload is `data`.
        let mut obj = Map::new();
        for (k, v) in headers {
            if let Some(attr) = k.strip_prefix(header::CE_PREFIX) {
                let Ok(s) = std::str::from_utf8(v) else {
                    return Err(ValidationErrors::whole(format!("header {k} is not UTF-8")));
                };
                obj.insert(attr.to_ascii_lowercase(), Value::String(s.to_owned()));
            }
        }
        let data = parse_object(payload)?;
        obj.insert("data".into(), Value::Object(data));
        return cloudevent_from_object(&obj, now).map(|e| (e, Encoding::CloudEventBinary));
    }
    let obj = parse_object(payload)?;
    let says_ce = header(header::CONTENT_TYPE).is_some_and(|ct| ct.starts_with(content_type::CLOUDEVENT.as_bytes()));
    if says_ce || obj.contains_key("specversion") {
        cloudevent_from_object(&obj, now).map(|e| (e, Encoding::CloudEventStructured))
    } else {
        native_from_object(&obj, DEFAULT_KAFKA_SOURCE, now).map(|e| (e, Encoding::Native))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn native_structured_and_binary_records_decode_to_the_same_event() {
        let native = json!({"source": "s", "event_id": "1", "user_id": "u", "occurred_at": "2026-11-27T11:00:00Z",
            "activity": "chat", "model": "m", "input_tokens": 3, "output_tokens": 4});
        let (a, enc) = decode_kafka(native.to_string().as_bytes(), &[], now()).unwrap();
        assert_eq!(enc, Encoding::Native);
        let ce = crate::to_cloudevent(&a);
        let (b, enc) = decode_kafka(ce.to_string().as_bytes(), &[], now()).unwrap();
        assert_eq!((enc, &b), (Encoding::CloudEventStructured, &a));
        let data = ce["data"].to_string();
        let headers: Vec<(&str, &[u8])> = vec![
            ("ce_specversion", b"1.0"),
            ("ce_id", b"1"),
            ("ce_source", b"s"),
            ("ce_type", crate::CE_TYPE.as_bytes()),
            ("ce_subject", b"u"),
            ("ce_time", b"2026-11-27T11:00:00Z"),
            ("content-type", b"application/json"),
        ];
        let (c, enc) = decode_kafka(data.as_bytes(), &headers, now()).unwrap();
        assert_eq!((enc, c), (Encoding::CloudEventBinary, a));
    }

    #[test]
    fn native_events_without_source_get_the_kafka_default() {
        let native = json!({"event_id": "1", "user_id": "u", "occurred_at": "2026-11-27T11:00:00Z",
            "activity": "chat", "model": "m", "input_tokens": 3, "output_tokens": 4});
        let (e, _) = decode_kafka(native.to_string().as_bytes(), &[], now()).unwrap();
        assert_eq!(e.source, DEFAULT_KAFKA_SOURCE);
    }
}
