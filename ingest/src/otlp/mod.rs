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

mod json;
mod map;
pub mod proto;
mod reply;
#[cfg(test)]
mod tests;

use std::io::Read;

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use prost::Message;
use serde_json::json;

pub use map::{Context, OtlpMapping, UNSPECIFIED_ACTIVITY, to_event};
pub use reply::{OtlpStatus, OtlpTraces};

use crate::admission::{self, Refusal};
use crate::http::IngestState;
use json::from_json;
use map::span_name;
use reply::{Encoding, MAX_REASONS, status_response};

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
    let mime = tokenusage_plumbing::http::media_type(&headers);
    let encoding = match mime.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => Some(Encoding::Protobuf),
        Some("application/json") => Some(Encoding::Json),
        _ => None,
    };
    let answer = |r: Refusal| status_response(encoding.unwrap_or(Encoding::Json), r);
    let publisher = match admission::authenticate(&st, &headers).await {
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
    if let Err(r) = admission::admit(&publisher, valid) {
        return answer(r);
    }
    let outcomes = admission::publish_valid(&st, &headers, spans.iter().map(|(_, r)| r.as_ref().ok())).await;
    let tally = admission::Tally::of(&outcomes);
    tally.record("tokenusage_otlp_spans_total");
    let (accepted, rejected) = (tally.accepted, tally.rejected);
    // Why each rejected span was: its own errors, or Kafka's refusal.
    let reasons: Vec<String> = spans
        .iter()
        .zip(&outcomes)
        .filter_map(|((span, parsed), outcome)| match (parsed, outcome) {
            (Err(errors), _) => Some(format!("span {}: {errors}", span_name(span))),
            (Ok(_), admission::Outcome::Refused(reason)) => Some(format!("span {}: {reason}", span_name(span))),
            _ => None,
        })
        .take(MAX_REASONS)
        .collect();
    // A retry resends the whole export: the spans Kafka has are
    // de-duplicated by their ids, the rest counted then.
    if let Some((status, secs)) = tally.retry() {
        let message = if tally.unavailable > 0 {
            format!("Kafka did not acknowledge {} spans' usage; retry the export", tally.unavailable)
        } else {
            format!("the server's queue to Kafka is full ({} spans not sent); retry the export", tally.queue_full)
        };
        let code = if tally.unavailable > 0 { "unavailable" } else { "queue_full" };
        return answer(Refusal::new(status, code, message).retry_after(secs));
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
