//! HTTP ingest: `POST /api/v1/events`, one event or a batch, native JSON or
//! CloudEvents (structured and batch). Answers 202 only once Kafka has
//! acknowledged every accepted event.
//!
//! Status codes: 202 all accepted; 207 some accepted, some rejected (per-item
//! results say which and why); 400 nothing valid; 401 bad key; 413 body too
//! large; 415 unknown content type; 429 rate limited or producer queue full;
//! 503 Kafka did not acknowledge (retry: events are de-duplicated by id).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokenusage_contract::wire::content_type;
use tokenusage_contract::{FieldError, UsageEvent, ValidationErrors, parse_cloudevent_value, parse_native_value};

use crate::Publisher;
use crate::admission::{Outcome, Tally, admit, authenticate, publish_valid, with_retry_after};
use crate::keys::KeyCache;

/// HTTP ingest settings.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Address of the standalone ingest server (`tokenusage ingest`); under
    /// `serve` the endpoint shares the API's address.
    #[arg(long = "ingest-listen", env = "TOKENUSAGE_INGEST_LISTEN", default_value = "127.0.0.1:8081")]
    pub ingest_listen: std::net::SocketAddr,
    /// Most events in one request.
    #[arg(long = "ingest-max-batch", env = "TOKENUSAGE_INGEST_MAX_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ingest_max_batch: u32,
    /// Largest ingest request body, in bytes.
    #[arg(long = "ingest-max-body-bytes", env = "TOKENUSAGE_INGEST_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub ingest_max_body_bytes: usize,
    /// How long a key lookup is cached, in seconds: a revoked key stops
    /// working within this time.
    #[arg(long = "ingest-key-cache-secs", env = "TOKENUSAGE_INGEST_KEY_CACHE_SECS", default_value_t = 30)]
    pub ingest_key_cache_secs: u64,
    /// OTLP ingest (`/v1/traces`): the attributes that name a span's user
    /// (comma-separated), looked up on the span, then its scope, then its
    /// resource; the nearest that has any of them wins, in this order.
    #[arg(long = "otlp-user-attributes", env = "TOKENUSAGE_OTLP_USER_ATTRIBUTES", value_delimiter = ',',
          default_value = "user.id,enduser.id", value_parser = attribute_name)]
    pub otlp_user_attributes: Vec<String>,
    /// OTLP ingest: the attributes that name a span's project (optional on
    /// the span; comma-separated).
    #[arg(long = "otlp-project-attributes", env = "TOKENUSAGE_OTLP_PROJECT_ATTRIBUTES", value_delimiter = ',',
          default_value = "project.id", value_parser = attribute_name)]
    pub otlp_project_attributes: Vec<String>,
}

/// An OpenTelemetry attribute name: not empty, no spaces or control characters.
fn attribute_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{s}` is not an attribute name (1 to 255 characters, no spaces)"));
    }
    Ok(s.to_owned())
}

impl Default for IngestArgs {
    /// The declared defaults (`plumbing::config::defaults`).
    fn default() -> Self {
        tokenusage_plumbing::config::defaults()
    }
}

#[derive(Clone, Debug)]
pub struct IngestState {
    pub(crate) publisher: Publisher,
    pub(crate) pool: PgPool,
    pub(crate) keys: Arc<KeyCache>,
    pub(crate) max_batch: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) otlp: crate::otlp::OtlpMapping,
}

/// One usage event in the native encoding, for the OpenAPI document (the
/// contract itself, with every bound, is docs/EVENTS.md and
/// docs/schema/usage-event-v1.schema.json; validation is `contract`'s).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Documentation only.
pub struct NativeEvent {
    /// The publisher's id for the event, 1 to 128 characters; resending it is a no-op.
    event_id: String,
    /// Whose tokens, 1 to 128 characters.
    user_id: String,
    /// RFC 3339 with an offset; from 2000 to at most 5 minutes ahead.
    #[schema(format = DateTime)]
    occurred_at: String,
    /// Lowercase letters, digits, `-`, `_`, `.`; up to 64.
    activity: String,
    /// Letters, digits and `- _ . : / @ +`; up to 128.
    model: String,
    /// 0 to 1000000000. Required unless `usage` is sent.
    input_tokens: Option<u64>,
    /// 0 to 1000000000. Required unless `usage` is sent.
    output_tokens: Option<u64>,
    /// Instead of the token fields: a provider's own usage object as it
    /// came (OpenAI, Anthropic, Gemini, Bedrock; docs/PUBLISHING.md).
    #[schema(value_type = Option<Object>)]
    usage: Option<serde_json::Value>,
    /// Which provider's `usage` it is: openai.chat, openai.responses,
    /// anthropic, gemini or bedrock (detected from its keys when absent).
    usage_format: Option<String>,
    /// Flat annotations: up to 16 keys, values strings (≤ 256), numbers, booleans or null.
    metadata: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Ignored over HTTP: the key decides the source.
    source: Option<String>,
    /// 1 if given.
    schema_version: Option<u32>,
}

/// The routes [`router`] serves, for the OpenAPI document's completeness test.
pub const ROUTES: &[(&str, &str)] = &[("POST", "/api/v1/events"), ("POST", "/v1/traces")];

/// The OpenAPI description of [`router`], merged into the served document
/// wherever ingest is mounted (`serve`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(ingest, crate::otlp::export),
        components(schemas(NativeEvent, crate::otlp::OtlpTraces, crate::otlp::OtlpStatus)),
        modifiers(&PublisherKey),
        tags((name = "ingest", description = "Publishing usage events (publisher API keys)"))
    )]
    struct IngestDoc;

    struct PublisherKey;
    impl utoipa::Modify for PublisherKey {
        fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
            use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
            openapi.components.get_or_insert_with(Default::default).add_security_scheme(
                "publisher_key",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("tu_<prefix>_<secret>")
                        .description(Some("A publisher API key (`tokenusage keys create`)"))
                        .build(),
                ),
            );
        }
    }
    <IngestDoc as utoipa::OpenApi>::openapi()
}

/// The `# HELP` lines of ingest's metrics, and its outcome counters at zero.
fn describe_metrics() {
    metrics::describe_counter!(
        "tokenusage_ingest_events_total",
        metrics::Unit::Count,
        "Events received over HTTP, by outcome: accepted (Kafka has it), rejected (invalid), failed (not acknowledged; retry)"
    );
    metrics::describe_histogram!(
        "tokenusage_ingest_ack_seconds",
        metrics::Unit::Seconds,
        "Per request, time from sending its valid events to Kafka's last acknowledgement"
    );
    for outcome in ["accepted", "rejected", "failed"] {
        metrics::counter!("tokenusage_ingest_events_total", "outcome" => outcome).increment(0);
    }
    metrics::describe_counter!(
        "tokenusage_otlp_spans_total",
        metrics::Unit::Count,
        "OTLP spans received, by outcome: accepted (usage in Kafka), rejected (invalid usage), ignored (no usage), failed (not acknowledged; the export is retried)"
    );
    for outcome in ["accepted", "rejected", "ignored", "failed"] {
        metrics::counter!("tokenusage_otlp_spans_total", "outcome" => outcome).increment(0);
    }
}

/// The ingest routes, ready to merge into a server.
pub fn router(args: &IngestArgs, publisher: Publisher, pool: PgPool) -> axum::Router {
    describe_metrics();
    let keys = Arc::new(KeyCache::new(Duration::from_secs(args.ingest_key_cache_secs)));
    keys.follow_revocations(pool.clone());
    let state = IngestState {
        publisher,
        pool,
        keys,
        max_batch: args.ingest_max_batch as usize,
        max_body_bytes: args.ingest_max_body_bytes,
        otlp: crate::otlp::OtlpMapping {
            user_attributes: args.otlp_user_attributes.clone(),
            project_attributes: args.otlp_project_attributes.clone(),
        },
    };
    let routes =
        axum::Router::new().route("/api/v1/events", post(ingest)).route("/v1/traces", post(crate::otlp::export));
    tokenusage_plumbing::http::limit_bodies(routes, args.ingest_max_body_bytes, "; send smaller batches")
        .with_state(state)
}

/// What happened to one item of a request.
#[derive(Debug, Serialize)]
struct ItemResult {
    index: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    tokenusage_plumbing::http::error_response(status, code, message)
}

enum Shape {
    Native,
    CloudEvent,
    CloudEventBatch,
}

/// Publish usage events: one native event, a JSON array of them, one
/// CloudEvent (`application/cloudevents+json`) or a CloudEvents batch
/// (`application/cloudevents-batch+json`). The contract is in
/// docs/EVENTS.md and docs/schema/usage-event-v1.schema.json. Answers only
/// once Kafka acknowledged every accepted event.
#[utoipa::path(post, path = "/api/v1/events", tag = "ingest",
    request_body(description = "A usage event, or (application/json) a JSON array of up to --ingest-max-batch of them",
        content((NativeEvent = "application/json"), (Object = "application/cloudevents+json"),
            (Vec<Object> = "application/cloudevents-batch+json"))),
    security(("publisher_key" = [])),
    responses(
        (status = 202, description = "Every event was accepted (Kafka has it)", body = Object),
        (status = 207, description = "Some accepted, some rejected: per-item results say which and why", body = Object),
        (status = 400, description = "Nothing valid; per-item field errors", body = Object)))]
pub async fn ingest(
    State(st): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Authenticate first: an anonymous caller learns nothing about the body.
    let publisher = match authenticate(&st, &headers).await {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match body {
        Ok(b) => b,
        Err(rej) => return error(StatusCode::BAD_REQUEST, "unreadable_body", rej.body_text()),
    };
    // No default: a body of unknown type is refused, not guessed at.
    let Some(mime) = tokenusage_plumbing::http::media_type(&headers) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a `content-type` header: application/json, application/cloudevents+json or \
             application/cloudevents-batch+json",
        );
    };
    let shape = match mime.as_str() {
        content_type::NATIVE => Shape::Native,
        content_type::CLOUDEVENT => Shape::CloudEvent,
        content_type::CLOUDEVENT_BATCH => Shape::CloudEventBatch,
        other => {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "content type `{other}` is not accepted; use application/json, application/cloudevents+json or application/cloudevents-batch+json"
                ),
            );
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not valid JSON: {e}"));
        }
    };
    let (items, is_batch): (Vec<Value>, bool) = match (shape, value) {
        (Shape::CloudEventBatch, Value::Array(a)) => (a, true),
        (Shape::CloudEventBatch, _) => {
            return error(StatusCode::BAD_REQUEST, "invalid_batch", "a CloudEvents batch must be a JSON array");
        }
        (Shape::Native, Value::Array(a)) => (a, true),
        (_, v) => (vec![v], false),
    };
    if items.is_empty() {
        return error(StatusCode::BAD_REQUEST, "empty_batch", "the batch holds no events");
    }
    if items.len() > st.max_batch {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("the batch holds {} events; the limit is {}", items.len(), st.max_batch),
        );
    }
    let cloud = matches!(mime.as_str(), content_type::CLOUDEVENT | content_type::CLOUDEVENT_BATCH);
    let now = Utc::now();
    let parsed: Vec<Result<UsageEvent, ValidationErrors>> = items
        .iter()
        .map(|v| {
            let r = if cloud { parse_cloudevent_value(v, now) } else { parse_native_value(v, &publisher.source, now) };
            // The key decides the source: no publisher can write, or
            // de-duplicate away, another's events.
            r.map(|mut e| {
                e.source.clone_from(&publisher.source);
                e
            })
        })
        .collect();
    let valid = parsed.iter().filter(|r| r.is_ok()).count();
    if let Err(refusal) = admit(&publisher, valid) {
        return refusal.into_response();
    }
    let outcomes = publish_valid(&st, &headers, parsed.iter().map(|r| r.as_ref().ok())).await;
    let tally = Tally::of(&outcomes);
    tally.record("tokenusage_ingest_events_total");

    let results: Vec<ItemResult> = parsed
        .into_iter()
        .zip(&outcomes)
        .enumerate()
        .map(|(index, (parsed, outcome))| {
            let (status, event_id, errors) = match (parsed, outcome) {
                (Ok(e), Outcome::Accepted) => ("accepted", Some(e.event_id), vec![]),
                (Ok(e), o) => {
                    let reason = o.reason().unwrap_or_default().to_owned();
                    ("failed", Some(e.event_id), vec![FieldError { field: String::new(), reason }])
                }
                (Err(errs), _) => ("rejected", None, errs.0),
            };
            ItemResult { index, status, event_id, errors }
        })
        .collect();

    let Tally { accepted, rejected, .. } = tally;
    let status = match tally.retry() {
        Some((status, _)) => status,
        None if rejected == 0 => StatusCode::ACCEPTED,
        None if accepted == 0 => StatusCode::BAD_REQUEST,
        None => StatusCode::MULTI_STATUS,
    };
    let body = if is_batch {
        json!({ "accepted": accepted, "rejected": rejected, "failed": tally.failed(), "results": results })
    } else {
        let r = &results[0];
        json!({ "status": r.status, "event_id": r.event_id, "errors": r.errors })
    };
    let resp = (status, Json(body)).into_response();
    match tally.retry() {
        Some((_, secs)) => with_retry_after(resp, secs),
        None => resp,
    }
}
