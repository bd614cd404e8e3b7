//! OTLP/HTTP's answers: in the request's encoding, errors as a
//! `google.rpc.Status` with the gRPC code of their HTTP status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::{Value, json};

use super::proto;
use crate::admission::Refusal;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// How many rejected spans the partial success's message describes (the
/// count is always exact).
pub(super) const MAX_REASONS: usize = 5;

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

/// An error as OTLP asks: a `google.rpc.Status` in the request's encoding
/// (its code the gRPC one for the HTTP status), with `Retry-After` when a
/// retry can succeed.
pub(super) fn status_response(encoding: Encoding, r: Refusal) -> Response {
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
