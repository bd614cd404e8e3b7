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
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokenusage_contract::wire::content_type;
use tokenusage_contract::{FieldError, UsageEvent, ValidationErrors, parse_cloudevent_value, parse_native_value};

use crate::keys::{KeyCache, KeyHolder};
use crate::{PublishError, Publisher};

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
    publisher: Publisher,
    pool: PgPool,
    keys: Arc<KeyCache>,
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

/// A request refused as a whole, before any per-event result. Each
/// endpoint answers it in its own encoding: ours, or OTLP's `Status`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub(crate) fn into_response(self) -> Response {
        let r = error(self.status, self.code, self.message);
        match self.retry_after {
            Some(secs) => with_retry_after(r, secs),
            None => r,
        }
    }
}

/// The publisher of a request, from its `Authorization: Bearer` key.
pub(crate) async fn authenticate(st: &IngestState, headers: &HeaderMap) -> Result<Arc<KeyHolder>, Refusal> {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a publisher API key as `Authorization: Bearer tu_...`",
            )
        })?;
    match st.keys.lookup(&st.pool, key).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown or revoked API key")),
        Err(e) => {
            tracing::error!(error = %e, "API key lookup failed");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "cannot check the API key right now; retry",
            )
            .retry_after(2))
        }
    }
}

/// Takes `valid` events out of the key's rate allowance, or says when to
/// come back (or that the batch can never fit in one second's allowance).
pub(crate) fn admit(publisher: &KeyHolder, valid: usize) -> Result<(), Refusal> {
    let Some(n) = std::num::NonZeroU32::new(u32::try_from(valid).unwrap_or(u32::MAX)) else {
        return Ok(());
    };
    match publisher.limiter.check_n(n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("key {} is over its rate limit; retry later", publisher.prefix),
            )
            .retry_after(wait.as_secs() + 1))
        }
        Err(_) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_exceeds_rate",
            format!("{valid} events exceed the one-second allowance of key {}; send smaller batches", publisher.prefix),
        )),
    }
}

/// Sends every valid event (`Some`) to Kafka at once and waits for each
/// acknowledgement; `None` items stay `None`.
pub(crate) async fn publish_valid<'a>(
    st: &IngestState,
    headers: &HeaderMap,
    events: impl Iterator<Item = Option<&'a UsageEvent>>,
) -> Vec<Option<Result<(i32, i64), PublishError>>> {
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    let sends = events.map(|e| async move {
        match e {
            Some(e) => Some(st.publisher.publish(e, request_id).await),
            None => None,
        }
    });
    let sent_at = std::time::Instant::now();
    let outcomes = futures::future::join_all(sends).await;
    metrics::histogram!("tokenusage_ingest_ack_seconds").record(sent_at.elapsed().as_secs_f64());
    outcomes
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

fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
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
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a `content-type` header: application/json, application/cloudevents+json or \
             application/cloudevents-batch+json",
        );
    };
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
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

    let (mut accepted, mut rejected, mut unavailable, mut queue_full) = (0usize, 0usize, 0usize, 0usize);
    let mut results = Vec::with_capacity(items.len());
    for (index, (parsed, outcome)) in parsed.into_iter().zip(outcomes).enumerate() {
        let (status, event_id, errors) = match (parsed, outcome) {
            (Ok(e), Some(Ok(_))) => {
                accepted += 1;
                ("accepted", Some(e.event_id), vec![])
            }
            (Ok(e), Some(Err(err))) => {
                let reason = err.to_string();
                match err {
                    PublishError::QueueFull => queue_full += 1,
                    PublishError::Unavailable(_) | PublishError::Backlogged(_) => unavailable += 1,
                    PublishError::Refused(_) => rejected += 1,
                }
                tracing::warn!(error = %reason, "event not acknowledged by Kafka");
                ("failed", Some(e.event_id), vec![FieldError { field: String::new(), reason }])
            }
            (Err(errs), _) => {
                rejected += 1;
                ("rejected", None, errs.0)
            }
            (Ok(_), None) => unreachable!("every valid event is sent"),
        };
        results.push(ItemResult { index, status, event_id, errors });
    }

    // Per event, by outcome: accepted (Kafka has it), rejected (invalid),
    // failed (valid but not acknowledged: retry).
    for (outcome, n) in [("accepted", accepted), ("rejected", rejected), ("failed", unavailable + queue_full)] {
        metrics::counter!("tokenusage_ingest_events_total", "outcome" => outcome).increment(n as u64);
    }
    let status = if unavailable > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else if queue_full > 0 {
        StatusCode::TOO_MANY_REQUESTS
    } else if rejected == 0 {
        StatusCode::ACCEPTED
    } else if accepted == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::MULTI_STATUS
    };
    let body = if is_batch {
        json!({ "accepted": accepted, "rejected": rejected, "failed": unavailable + queue_full, "results": results })
    } else {
        let r = &results[0];
        json!({ "status": r.status, "event_id": r.event_id, "errors": r.errors })
    };
    let resp = (status, Json(body)).into_response();
    if unavailable + queue_full > 0 { with_retry_after(resp, if unavailable > 0 { 5 } else { 1 }) } else { resp }
}
