//! OTLP/HTTP trace ingest: `POST /v1/traces`, protobuf or JSON, plain or
//! gzip, as the OpenTelemetry SDKs' and the Collector's exporters send it.
//!
//! Each span that carries GenAI usage attributes (the semantic
//! conventions' `gen_ai.usage.*`) becomes one usage event; other spans are
//! ignored and counted. The event id is the trace and span id, so an
//! exporter's retry of the same batch is de-duplicated like any resent
//! event. Everything after the mapping is the native endpoint's: the
//! contract's validation, the key's source and rate limit, and the answer
//! only after Kafka acknowledged. Answers follow OTLP/HTTP: 200 with a
//! partial success naming the rejected spans, and errors as a `Status` in
//! the request's encoding, with `Retry-After` where a retry can succeed.

use std::io::Read;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message;
use serde_json::{Map, Value, json};
use tokenusage_contract::{UsageEvent, ValidationErrors, parse_native_value};

use crate::PublishError;
use crate::http::{IngestState, Refusal, admit, authenticate, publish_valid};

/// The OTLP messages this endpoint reads and answers, as published in
/// opentelemetry-proto (`collector/trace/v1`, `trace/v1`, `common/v1`),
/// reduced to the fields used: protobuf skips the others, so newer
/// exporters' fields cost nothing and break nothing.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    /// The instrumentation scope; only its attributes are read.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// Arrays, key-value lists and bytes (tags 5–7) are not read: no usage
    /// attribute is one.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
        pub value: Option<any_value::Value>,
    }

    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportTracePartialSuccess>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTracePartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_spans: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    /// `google.rpc.Status`, the body of every OTLP error answer.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }

    impl KeyValue {
        /// A string attribute (for tests and the load generator).
        pub fn string(key: &str, value: &str) -> Self {
            Self { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
        }

        /// An integer attribute.
        pub fn int(key: &str, value: i64) -> Self {
            Self { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }) }
        }
    }
}

use proto::any_value::Value as Attr;

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// How many rejected spans the partial success's message describes (the
/// count is always exact).
const MAX_REASONS: usize = 5;

/// An OTLP error answer (`google.rpc.Status`), here in JSON; protobuf
/// requests get it in protobuf.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only.
pub struct OtlpStatus {
    /// The gRPC status code: 3 invalid, 8 exhausted (rate, size), 14 unavailable (retry), 16 unauthenticated.
    code: i32,
    /// What was wrong, prefixed by our error code.
    message: String,
}

/// The part of OTLP/JSON's `ExportTraceServiceRequest` the document
/// describes (every other field is read as OTLP defines it).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, non_snake_case)] // Documentation only, in OTLP/JSON's names.
pub struct OtlpTraces {
    /// Spans, grouped by resource then by instrumentation scope.
    #[schema(value_type = Option<Vec<Object>>)]
    resourceSpans: Option<Vec<Value>>,
}

/// Export OpenTelemetry spans (OTLP/HTTP): each span with GenAI usage
/// attributes (`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
/// ...) is counted as one usage event, once, however often the export is
/// retried. `application/x-protobuf` is accepted as well as OTLP/JSON,
/// either gzip-compressed (`Content-Encoding: gzip`). Answers after Kafka
/// acknowledged every counted span; rejected spans are named in the
/// partial success. See docs/PUBLISHING.md.
#[utoipa::path(post, path = "/v1/traces", tag = "ingest",
    request_body(description = "An OTLP ExportTraceServiceRequest", content((OtlpTraces = "application/json"))),
    security(("publisher_key" = [])),
    responses(
        (status = 200, description = "Exported; `partialSuccess` counts and explains rejected spans", body = Object, content_type = "application/json"),
        (status = "default", description = "An OTLP error (`Retry-After` when a retry can succeed)", body = OtlpStatus, content_type = "application/json")))]
pub async fn export(
    State(st): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The answer's encoding follows the request's, as OTLP asks; unknown
    // types are answered in JSON.
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    let encoding = match mime.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Some(Encoding::Protobuf),
        Some("application/json") => Some(Encoding::Json),
        _ => None,
    };
    let answer = |r: Refusal| status_response(encoding.unwrap_or(Encoding::Json), r);
    let publisher = match authenticate(&st, &headers).await {
        Ok(p) => p,
        Err(r) => return answer(r),
    };
    let Some(encoding) = encoding else {
        return answer(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {} is not OTLP; send application/x-protobuf or application/json",
                mime.map_or("(none)".to_owned(), |m| format!("`{m}`"))
            ),
        ));
    };
    let body = match body {
        Ok(b) => b,
        Err(rej) => return answer(Refusal::new(StatusCode::BAD_REQUEST, "unreadable_body", rej.body_text())),
    };
    let body = match decompress(&headers, body, st.max_body_bytes) {
        Ok(b) => b,
        Err(r) => return answer(r),
    };
    let request = match encoding {
        Encoding::Protobuf => proto::ExportTraceServiceRequest::decode(body.as_ref())
            .map_err(|e| format!("the body is not an OTLP ExportTraceServiceRequest in protobuf: {e}")),
        Encoding::Json => from_json(&body),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => return answer(Refusal::new(StatusCode::BAD_REQUEST, "invalid_otlp", message)),
    };

    let now = Utc::now();
    let mut spans = Vec::new();
    let mut ignored = 0usize;
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref().map_or(&[][..], |s| &s.attributes[..]);
            for span in &ss.spans {
                match to_event(span, Context { scope, resource }, &st.otlp, &publisher.source, now) {
                    None => ignored += 1,
                    Some(r) => spans.push((span, r)),
                }
            }
        }
    }
    metrics::counter!("tokenusage_otlp_spans_total", "outcome" => "ignored").increment(ignored as u64);
    if spans.len() > st.max_batch {
        return answer(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "the export holds {} spans with usage; the limit is {} (set the exporter's or the Collector batch processor's maximum batch size at most this)",
                spans.len(),
                st.max_batch
            ),
        ));
    }
    let valid = spans.iter().filter(|(_, r)| r.is_ok()).count();
    if let Err(r) = admit(&publisher, valid) {
        return answer(r);
    }
    let outcomes = publish_valid(&st, &headers, spans.iter().map(|(_, r)| r.as_ref().ok())).await;

    let (mut accepted, mut rejected, mut unavailable, mut queue_full) = (0usize, 0usize, 0usize, 0usize);
    let mut reasons = Vec::new();
    for ((span, parsed), sent) in spans.iter().zip(outcomes) {
        let reason = match (parsed, sent) {
            (Ok(_), Some(Ok(_))) => {
                accepted += 1;
                continue;
            }
            (Ok(_), Some(Err(PublishError::QueueFull))) => {
                queue_full += 1;
                continue;
            }
            (Ok(_), Some(Err(PublishError::Unavailable(e)))) => {
                tracing::warn!(error = %e, "span's usage not acknowledged by Kafka");
                unavailable += 1;
                continue;
            }
            (Ok(_), Some(Err(PublishError::Backlogged(_)))) => {
                unavailable += 1;
                continue;
            }
            (Ok(_), Some(Err(e @ PublishError::Refused(_)))) => e.to_string(),
            (Err(errors), _) => errors.to_string(),
            (Ok(_), None) => unreachable!("every valid span is sent"),
        };
        rejected += 1;
        if reasons.len() < MAX_REASONS {
            reasons.push(format!("span {}: {reason}", span_name(span)));
        }
    }
    for (name, n) in [("accepted", accepted), ("rejected", rejected), ("failed", unavailable + queue_full)] {
        metrics::counter!("tokenusage_otlp_spans_total", "outcome" => name).increment(n as u64);
    }
    // A retry resends the whole export: the spans Kafka has are
    // de-duplicated by their ids, the rest counted then.
    if unavailable > 0 {
        return answer(
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("Kafka did not acknowledge {unavailable} spans' usage; retry the export"),
            )
            .retry_after(5),
        );
    }
    if queue_full > 0 {
        return answer(
            Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!("the server's queue to Kafka is full ({queue_full} spans not sent); retry the export"),
            )
            .retry_after(1),
        );
    }
    let partial = (rejected > 0).then(|| {
        let more = rejected.saturating_sub(reasons.len());
        let mut message = reasons.join("; ");
        if more > 0 {
            message.push_str(&format!("; and {more} more"));
        }
        proto::ExportTracePartialSuccess { rejected_spans: rejected as i64, error_message: message }
    });
    if rejected > 0 {
        tracing::info!(source = %publisher.source, rejected = rejected, accepted = accepted, "OTLP export partly rejected");
    }
    let response = proto::ExportTraceServiceResponse { partial_success: partial };
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => match &response.partial_success {
            None => b"{}".to_vec(),
            Some(p) => json!({"partialSuccess": {"rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message}})
                .to_string()
                .into_bytes(),
        },
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

/// An error as OTLP asks: a `google.rpc.Status` in the request's encoding
/// (its code the gRPC one for the HTTP status), with `Retry-After` when a
/// retry can succeed.
fn status_response(encoding: Encoding, r: Refusal) -> Response {
    let code = match r.status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 3, // INVALID_ARGUMENT
        StatusCode::UNAUTHORIZED => 16,                                    // UNAUTHENTICATED
        StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE => 8, // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14,                             // UNAVAILABLE
        _ => 2,                                                            // UNKNOWN
    };
    let message = format!("{}: {}", r.code, r.message);
    let body = match encoding {
        Encoding::Protobuf => proto::Status { code, message }.encode_to_vec(),
        Encoding::Json => json!({"code": code, "message": message}).to_string().into_bytes(),
    };
    let mut resp = (r.status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response();
    if let Some(secs) = r.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if r.status == StatusCode::UNAUTHORIZED {
        // Every authentication failure says how to authenticate (SECURITY.md).
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// The body, gunzipped if `Content-Encoding: gzip`, never more than `limit`
/// bytes decoded (a small compressed body can expand without bound).
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Refusal> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") => Ok(body),
        Some("gzip") => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limit));
            let read = flate2::read::GzDecoder::new(body.as_ref()).take(limit as u64 + 1).read_to_end(&mut out);
            match read {
                Err(e) => Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_gzip",
                    format!("the body is not valid gzip: {e}"),
                )),
                Ok(n) if n > limit => Err(Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the decompressed body exceeds the limit of {limit} bytes; send smaller batches"),
                )),
                Ok(_) => Ok(out.into()),
            }
        }
        Some(other) => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("content encoding `{other}` is not supported; send gzip or no encoding"),
        )),
    }
}

fn span_name(span: &proto::Span) -> String {
    format!("{}/{}", hex::encode(&span.trace_id), hex::encode(&span.span_id))
}

fn attribute<'a>(attrs: &'a [proto::KeyValue], key: &str) -> Option<&'a Attr> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

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

/// OTLP/JSON (the protobuf JSON mapping with OTLP's differences: ids in
/// hex, 64-bit integers as strings or numbers), read into the same
/// messages. Field names are accepted in lowerCamelCase and as in the
/// .proto; unknown fields are ignored, as OTLP requires.
fn from_json(body: &[u8]) -> Result<proto::ExportTraceServiceRequest, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proto::KeyValue as Kv;

    fn mapping() -> OtlpMapping {
        OtlpMapping {
            user_attributes: vec!["user.id".into(), "enduser.id".into()],
            project_attributes: vec!["project.id".into()],
        }
    }

    fn span(attrs: Vec<Kv>) -> proto::Span {
        proto::Span {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            name: "chat gpt-4o".into(),
            start_time_unix_nano: 1_795_000_000_000_000_000,
            end_time_unix_nano: 1_795_000_001_500_000_000,
            attributes: attrs,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_796_000_000, 0).unwrap()
    }

    #[test]
    fn a_genai_span_becomes_one_event_with_its_kinds() {
        let s = span(vec![
            Kv::string("gen_ai.operation.name", "chat"),
            Kv::string("gen_ai.request.model", "gpt-4o"),
            Kv::string("gen_ai.response.model", "gpt-4o-2024-08-06"),
            Kv::int("gen_ai.usage.input_tokens", 1200),
            Kv::int("gen_ai.usage.output_tokens", 300),
            Kv::int("gen_ai.usage.cache_read.input_tokens", 1000),
            Kv::int("gen_ai.usage.cache_creation.input_tokens", 100),
            Kv::int("gen_ai.usage.reasoning.output_tokens", 200),
            Kv::string("project.id", "search"),
        ]);
        let resource = [Kv::string("enduser.id", "alice")];
        let e = to_event(&s, Context { scope: &[], resource: &resource }, &mapping(), "svc", now()).unwrap().unwrap();
        assert_eq!(e.event_id, "0102030405060708090a0b0c0d0e0f10-0102030405060708");
        assert_eq!((e.user_id.as_str(), e.activity.as_str(), e.model.as_str()), ("alice", "chat", "gpt-4o-2024-08-06"));
        assert_eq!(e.project.as_deref(), Some("search"));
        assert_eq!((e.input_tokens, e.output_tokens), (1200, 300));
        assert_eq!(
            (e.kinds.cache_read_input_tokens, e.kinds.cache_write_input_tokens, e.kinds.reasoning_output_tokens),
            (1000, 100, 200)
        );
        assert_eq!(e.occurred_at, DateTime::from_timestamp_nanos(1_795_000_001_500_000_000));
        assert_eq!(e.source, "svc");
    }

    /// `openai.response.service_tier` (or its earlier name) becomes the
    /// event's service tier; a name we do not know is refused naming the
    /// attribute, never priced as standard.
    #[test]
    fn the_response_service_tier_is_read_and_checked() {
        let with = |attr: &str, tier: &str| {
            let s = span(vec![
                Kv::string("user.id", "bob"),
                Kv::string("gen_ai.request.model", "gpt-5"),
                Kv::int("gen_ai.usage.input_tokens", 10),
                Kv::int("gen_ai.usage.output_tokens", 3),
                Kv::string(attr, tier),
            ]);
            to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap()
        };
        let e = with("openai.response.service_tier", "flex").unwrap();
        assert_eq!(e.billing.service_tier, Some(tokenusage_contract::ServiceTier::Flex));
        let e = with("gen_ai.openai.response.service_tier", "default").unwrap();
        assert_eq!(e.billing.service_tier, Some(tokenusage_contract::ServiceTier::Standard));
        let err = with("openai.response.service_tier", "turbo").unwrap_err();
        assert_eq!(err.0[0].field, "openai.response.service_tier");
        assert!(err.0[0].reason.contains("turbo"));
    }

    #[test]
    fn spans_without_usage_are_ignored_and_bad_ones_name_the_attribute() {
        let plain = span(vec![Kv::string("http.method", "GET")]);
        assert!(to_event(&plain, Context::default(), &mapping(), "svc", now()).is_none());
        let bad = span(vec![
            Kv::string("user.id", "bob"),
            Kv::int("gen_ai.usage.input_tokens", -5),
            Kv::int("gen_ai.usage.output_tokens", 3),
            Kv::int("gen_ai.usage.reasoning.output_tokens", 9),
        ]);
        let errs = to_event(&bad, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
        assert!(errs.contains("gen_ai.request.model: is required"), "{errs}");
        assert!(errs.contains("gen_ai.usage.input_tokens: must not be negative, got -5"), "{errs}");
        let mut anon = span(vec![Kv::string("gen_ai.request.model", "m"), Kv::int("gen_ai.usage.input_tokens", 1)]);
        anon.trace_id = vec![0; 16];
        let errs = to_event(&anon, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
        assert!(errs.contains("traceId: must be 16 bytes, not all zero"), "{errs}");
        assert!(errs.contains("user: no string or integer attribute user.id or enduser.id"), "{errs}");
    }

    /// The precedence rule, as a table: for each placement of the user
    /// attributes over span, scope and resource, who the usage is counted
    /// for. The nearest layer naming any of the user attributes wins.
    #[test]
    fn attributes_are_looked_up_on_the_span_then_its_scope_then_its_resource() {
        let usage = || vec![Kv::string("gen_ai.request.model", "m"), Kv::int("gen_ai.usage.input_tokens", 10)];
        type Layer = &'static [(&'static str, &'static str)];
        let cases: [(Layer, Layer, Layer, Option<&str>); 8] = [
            (&[("enduser.id", "span")], &[], &[("user.id", "resource")], Some("span")),
            (&[("user.id", "span")], &[("user.id", "scope")], &[("user.id", "resource")], Some("span")),
            (&[], &[("enduser.id", "scope")], &[("user.id", "resource")], Some("scope")),
            (&[], &[], &[("enduser.id", "resource")], Some("resource")),
            (&[("enduser.id", "span-end")], &[], &[("enduser.id", "res-end")], Some("span-end")),
            // Within one layer, the mapping's order decides.
            (&[("enduser.id", "second"), ("user.id", "first")], &[], &[], Some("first")),
            (&[("project.id", "p")], &[("user.id", "scope")], &[], Some("scope")),
            (&[], &[], &[], None),
        ];
        for (span_attrs, scope, resource, want) in cases {
            let kv = |l: Layer| l.iter().map(|(k, v)| Kv::string(k, v)).collect::<Vec<_>>();
            let mut attrs = usage();
            attrs.extend(kv(span_attrs));
            let (scope, resource) = (kv(scope), kv(resource));
            let got = to_event(&span(attrs), Context { scope: &scope, resource: &resource }, &mapping(), "svc", now())
                .unwrap()
                .ok()
                .map(|e| e.user_id);
            assert_eq!(got.as_deref(), want, "span {span_attrs:?}, scope {scope:?}, resource {resource:?}");
        }
    }

    #[test]
    fn a_token_count_that_is_not_an_int64_is_refused_by_name_never_zero() {
        for bad in ["9223372036854775808", "1e3", "0x10", " 5", "5.0", ""] {
            let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708",
            "endTimeUnixNano": "1795000001500000000",
            "attributes": [
                {"key": "user.id", "value": {"stringValue": "u"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": bad}},
            ]}]}]}]});
            let req = from_json(body.to_string().as_bytes()).unwrap();
            let s = &req.resource_spans[0].scope_spans[0].spans[0];
            let errs = to_event(s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
            assert!(errs.contains("gen_ai.usage.output_tokens: has no readable value"), "{bad:?}: {errs}");
        }
        // A usage attribute with no value at all, alone on the span: not ignored.
        let mut s = span(vec![Kv::string("user.id", "u"), Kv::string("gen_ai.request.model", "m")]);
        s.attributes.push(Kv { key: "gen_ai.usage.input_tokens".into(), value: None });
        assert!(to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().is_err());
    }

    #[test]
    fn a_span_ending_after_2262_is_out_of_range_not_missing() {
        let mut s = span(vec![
            Kv::string("user.id", "u"),
            Kv::string("gen_ai.request.model", "m"),
            Kv::int("gen_ai.usage.input_tokens", 1),
        ]);
        s.end_time_unix_nano = 16_725_225_600_000_000_000; // 2500-01-01
        let errs = to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
        assert!(errs.contains("endTimeUnixNano: is out of range"), "{errs}");
        s.end_time_unix_nano = 0;
        s.start_time_unix_nano = 0;
        let errs = to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
        assert!(errs.contains("endTimeUnixNano: is required"), "{errs}");
    }

    #[test]
    fn the_cache_write_name_of_util_genai_is_a_cache_write() {
        let s = span(vec![
            Kv::string("user.id", "u"),
            Kv::string("gen_ai.request.model", "m"),
            Kv::int("gen_ai.usage.input_tokens", 100),
            Kv::int("gen_ai.usage.cache_write.input_tokens", 40),
        ]);
        let e = to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap();
        assert_eq!(e.kinds.cache_write_input_tokens, 40);
    }

    #[test]
    fn json_and_protobuf_read_the_same_export() {
        let s = span(vec![
            Kv::string("user.id", "carol"),
            Kv::string("gen_ai.request.model", "claude"),
            Kv::int("gen_ai.usage.input_tokens", 7),
            Kv::int("gen_ai.usage.output_tokens", 2),
        ]);
        let req = proto::ExportTraceServiceRequest {
            resource_spans: vec![proto::ResourceSpans {
                resource: Some(proto::Resource { attributes: vec![Kv::string("service.name", "bot")] }),
                scope_spans: vec![proto::ScopeSpans {
                    scope: Some(proto::InstrumentationScope::default()),
                    spans: vec![s],
                }],
            }],
        };
        let decoded = proto::ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, req);
        let body = json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
            "scopeSpans": [{"scope": {"name": "x"}, "spans": [{
                "traceId": "0102030405060708090A0B0C0D0E0F10", "spanId": "0102030405060708",
                "name": "chat gpt-4o", "kind": 3, "startTimeUnixNano": "1795000000000000000",
                "endTimeUnixNano": 1_795_000_001_500_000_000u64,
                "attributes": [
                    {"key": "user.id", "value": {"stringValue": "carol"}},
                    {"key": "gen_ai.request.model", "value": {"stringValue": "claude"}},
                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 2}}]}]}]}]});
        assert_eq!(from_json(body.to_string().as_bytes()).unwrap(), req);
        for (bad, says) in [
            (json!([]), "the body: must be an object"),
            (json!({"resourceSpans": {}}), "resourceSpans: must be an array"),
            (
                json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}),
                "spans[0].traceId: must be hex",
            ),
            (
                json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": "-1"}]}]}]}),
                "endTimeUnixNano: must be",
            ),
        ] {
            let e = from_json(bad.to_string().as_bytes()).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
