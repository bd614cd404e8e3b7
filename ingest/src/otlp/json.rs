//! OTLP/JSON read into the same messages as protobuf.

use serde_json::Value;

use super::proto;
use super::proto::any_value::Value as Attr;

/// OTLP/JSON (the protobuf JSON mapping with OTLP's differences: ids in
/// hex, 64-bit integers as strings or numbers), read into the same
/// messages. Field names are accepted in lowerCamelCase and as in the
/// .proto; unknown fields are ignored, as OTLP requires.
pub(super) fn from_json(body: &[u8]) -> Result<proto::ExportTraceServiceRequest, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let mut request = proto::ExportTraceServiceRequest::default();
    for (i, rs) in list(&v, "resourceSpans", "resource_spans", "")?.iter().enumerate() {
        let at = format!("resourceSpans[{i}]");
        let mut out = proto::ResourceSpans::default();
        if let Some(r) = field(rs, "resource", "resource") {
            out.resource = Some(proto::Resource { attributes: attributes(r, &format!("{at}.resource"))? });
        }
        for (j, ss) in list(rs, "scopeSpans", "scope_spans", &at)?.iter().enumerate() {
            let at = format!("{at}.scopeSpans[{j}]");
            let mut scope = proto::ScopeSpans::default();
            if let Some(sc) = field(ss, "scope", "scope") {
                scope.scope = Some(proto::InstrumentationScope { attributes: attributes(sc, &format!("{at}.scope"))? });
            }
            for (k, s) in list(ss, "spans", "spans", &at)?.iter().enumerate() {
                scope.spans.push(json_span(s, &format!("{at}.spans[{k}]"))?);
            }
            out.scope_spans.push(scope);
        }
        request.resource_spans.push(out);
    }
    Ok(request)
}

fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake)).filter(|v| !v.is_null())
}

fn list<'a>(v: &'a Value, camel: &str, snake: &str, at: &str) -> Result<&'a [Value], String> {
    if !v.is_object() {
        return Err(format!("{}: must be an object", if at.is_empty() { "the body" } else { at }));
    }
    match field(v, camel, snake) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => {
            Err(format!("{}{camel}: must be an array", if at.is_empty() { String::new() } else { format!("{at}.") }))
        }
    }
}

fn json_span(s: &Value, at: &str) -> Result<proto::Span, String> {
    if !s.is_object() {
        return Err(format!("{at}: must be an object"));
    }
    let id = |camel: &str, snake: &str| -> Result<Vec<u8>, String> {
        match field(s, camel, snake) {
            None => Ok(Vec::new()),
            Some(Value::String(h)) => hex::decode(h).map_err(|_| format!("{at}.{camel}: must be hex digits")),
            Some(_) => Err(format!("{at}.{camel}: must be a string of hex digits")),
        }
    };
    let nanos = |camel: &str, snake: &str| -> Result<u64, String> {
        match field(s, camel, snake) {
            None => Ok(0),
            Some(Value::String(t)) => {
                t.parse().map_err(|_| format!("{at}.{camel}: must be a whole number of nanoseconds"))
            }
            Some(Value::Number(n)) => {
                n.as_u64().ok_or_else(|| format!("{at}.{camel}: must be a whole number of nanoseconds"))
            }
            Some(_) => Err(format!("{at}.{camel}: must be a whole number of nanoseconds")),
        }
    };
    Ok(proto::Span {
        trace_id: id("traceId", "trace_id")?,
        span_id: id("spanId", "span_id")?,
        name: field(s, "name", "name").and_then(Value::as_str).unwrap_or_default().to_owned(),
        start_time_unix_nano: nanos("startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: nanos("endTimeUnixNano", "end_time_unix_nano")?,
        attributes: attributes(s, at)?,
    })
}

fn attributes(v: &Value, at: &str) -> Result<Vec<proto::KeyValue>, String> {
    let mut out = Vec::new();
    for (i, kv) in list(v, "attributes", "attributes", at)?.iter().enumerate() {
        let Some(key) = kv.get("key").and_then(Value::as_str) else {
            return Err(format!("{at}.attributes[{i}].key: must be a string"));
        };
        let value = kv.get("value").and_then(|v| {
            let read = |camel: &str, snake: &str| field(v, camel, snake);
            let attr = if let Some(s) = read("stringValue", "string_value") {
                Attr::StringValue(s.as_str()?.to_owned())
            } else if let Some(b) = read("boolValue", "bool_value") {
                Attr::BoolValue(b.as_bool()?)
            } else if let Some(n) = read("intValue", "int_value") {
                // int64 is a string in the JSON mapping; numbers are accepted too.
                Attr::IntValue(match n {
                    Value::String(t) => t.parse().ok()?,
                    other => other.as_i64()?,
                })
            } else if let Some(d) = read("doubleValue", "double_value") {
                Attr::DoubleValue(d.as_f64()?)
            } else {
                return None;
            };
            Some(proto::AnyValue { value: Some(attr) })
        });
        out.push(proto::KeyValue { key: key.to_owned(), value });
    }
    Ok(out)
}
