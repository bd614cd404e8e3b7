//! What every HTTP surface of tokenusage shares (the API and dashboard,
//! and standalone ingest): one JSON error envelope for every error the
//! server sends, internal causes logged once and bounded, request-size
//! limits, security headers, request ids and trace spans.
//!
//! The envelope is `{"error": {"code": "...", "message": "..."}}`. Handlers
//! produce it themselves; [`json_errors`] rewrites whatever else answers
//! with an error (the router's 404 and 405, a timeout's 408, an extractor's
//! plain-text rejection) into it, so no client ever has to parse two shapes.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The body of every error response.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `empty_range`, `unknown_timezone`, `unauthorized`, `not_found`, ...
    pub code: String,
    /// For people: what was wrong and how to fix it.
    pub message: String,
}

/// An error response in the envelope.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.into() } };
    (status, axum::Json(body)).into_response()
}

/// The code and message an error status gets when nothing more specific
/// produced it.
fn generic(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request could not be understood"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "a valid credential is required"),
        StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no such resource; the API is described at /docs"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this resource does not support the method"),
        StatusCode::NOT_ACCEPTABLE => ("not_acceptable", "no representation matches the Accept header"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long and was abandoned; retry"),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body exceeds the limit"),
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the URL is too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "the content type is not accepted"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid_body", "the request body does not have the expected shape"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests; retry later"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ("headers_too_large", "the request headers are too large"),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "temporarily unavailable; retry shortly"),
        s if s.is_server_error() => ("internal", "something went wrong on our side; it has been logged"),
        _ => ("error", "the request failed"),
    }
}

/// An error body a handler encoded on purpose: JSON, or protobuf (OTLP
/// answers protobuf requests' errors with a protobuf `Status`).
fn is_encoded(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("application/x-protobuf"))
}

/// Middleware: rewrites every error response that is not already JSON (or
/// protobuf) into the envelope. A plain-text rejection's own words are kept as the message
/// (they say what was wrong), bounded; its status and headers are kept.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_encoded(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let (code, fallback) = generic(status);
    let said = String::from_utf8_lossy(&text);
    let message = if said.trim().is_empty() || status.is_server_error() {
        fallback.to_owned()
    } else {
        tokenusage_contract::text::truncate(said.trim(), 1000).to_owned()
    };
    let mut out = error_response(status, code, message);
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in &parts.headers {
        out.headers_mut().append(k.clone(), v.clone());
    }
    out
}

/// The cause of a 500, attached to the response by the handler's error type
/// and logged once by [`log_internal_errors`], inside the request's span.
#[derive(Debug, Clone)]
pub struct InternalError(pub std::sync::Arc<anyhow::Error>);

/// Most bytes of one internal error's log line: the cause chain, never a
/// backtrace (a 100-byte request must not write 89 KB of log).
const INTERNAL_LOG_BYTES: usize = 2048;

/// Middleware: logs the cause of an internal error once, with its chain on
/// one line and bounded, and removes it from the response.
pub async fn log_internal_errors(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if let Some(InternalError(e)) = resp.extensions_mut().remove::<InternalError>() {
        let chain = format!("{e:#}");
        tracing::error!(error = %tokenusage_contract::text::truncate(&chain, INTERNAL_LOG_BYTES), "request failed");
    }
    resp
}

/// Bounds on a request's head, below the HTTP parser's own (hyper refuses
/// URIs over 64 KiB, more than 100 headers and heads over ~400 KiB before
/// any of our code runs), so that what is refused is refused by us: with
/// the envelope, and audited under `/api/v1`.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits;

impl HeadLimits {
    pub const URI_BYTES: usize = 8 * 1024;
    pub const HEADERS: usize = 64;
    pub const HEADER_BYTES: usize = 32 * 1024;

    /// The refusal for a request whose head is over a limit, if it is.
    pub fn check(req: &axum::http::request::Parts) -> Option<Response> {
        let uri = req.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if uri > Self::URI_BYTES {
            return Some(error_response(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("the URL is {uri} bytes; the limit is {}", Self::URI_BYTES),
            ));
        }
        let count = req.headers.len();
        let bytes: usize = req.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if count > Self::HEADERS || bytes > Self::HEADER_BYTES {
            return Some(error_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!(
                    "the request has {count} headers of {bytes} bytes; the limits are {} headers and {} bytes",
                    Self::HEADERS,
                    Self::HEADER_BYTES
                ),
            ));
        }
        None
    }
}

/// Middleware: [`HeadLimits`] for routes that are not audited.
pub async fn limit_heads(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(refusal) = HeadLimits::check(&parts) {
        return refusal;
    }
    next.run(Request::from_parts(parts, body)).await
}

/// How much of a body past its limit is still read (and thrown away)
/// before the 413 goes out, and for how long. A server that answers while
/// the client is still sending and then closes makes the client's write
/// fail with a reset before it reads the answer: the caller sees "connection
/// reset", not "too large, send less". Reading the rest first (as nginx's
/// lingering close does) gets the answer through; the bounds stop a client
/// from making us read forever.
const DRAIN_BYTES: u64 = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A body limit and what to advise a client that went over it.
#[derive(Debug, Clone, Copy)]
struct BodyLimit {
    bytes: usize,
    advice: &'static str,
}

/// Bounds every request body of `router`'s routes at `limit` bytes. A body
/// within it is buffered and handed on (handlers buffer it anyway); one over
/// it is answered 413 in the envelope, after the rest has been read within
/// [`DRAIN_BYTES`] and [`DRAIN_TIME`] so the client receives the answer.
/// `advice` ends the message ("send smaller batches").
pub fn limit_bodies<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limit: usize,
    advice: &'static str,
) -> Router<S> {
    router
        .layer(axum::middleware::from_fn_with_state(BodyLimit { bytes: limit, advice }, bound_body))
        // The extractors' own limit, so the buffered body is never refused
        // again below a limit set higher than axum's default.
        .layer(axum::extract::DefaultBodyLimit::max(limit))
}

async fn bound_body(
    axum::extract::State(limit): axum::extract::State<BodyLimit>,
    req: Request,
    next: Next,
) -> Response {
    use axum::body::HttpBody;
    use futures::StreamExt;

    if req.body().size_hint().exact() == Some(0) {
        return next.run(req).await;
    }
    let too_large = |limit: BodyLimit| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds the limit of {} bytes{}", limit.bytes, limit.advice),
        )
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > limit.bytes as u64 + DRAIN_BYTES) {
        // Too far over to be worth reading: answer now and close.
        let mut r = too_large(limit);
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n.min(limit.bytes as u64) as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    format!("the request body could not be read: {e}"),
                );
            }
        };
        if buf.len() + chunk.len() > limit.bytes {
            let mut drained = chunk.len() as u64;
            let drain = async {
                while let Some(Ok(c)) = stream.next().await {
                    drained += c.len() as u64;
                    if drained > DRAIN_BYTES {
                        return false;
                    }
                }
                true
            };
            let complete = tokio::time::timeout(DRAIN_TIME, drain).await.unwrap_or(false);
            let mut r = too_large(limit);
            if !complete {
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
        buf.extend_from_slice(&chunk);
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(buf))).await
}

/// Response headers that hold for every route: a strict CSP (no inline
/// script or style anywhere in the dashboard), no framing, no sniffing, no
/// referrer leakage.
fn security_headers() -> Vec<SetResponseHeaderLayer<HeaderValue>> {
    let h = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(HeaderName::from_static(name), HeaderValue::from_static(value))
    };
    vec![
        h(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        h("x-content-type-options", "nosniff"),
        h("x-frame-options", "DENY"),
        h("referrer-policy", "no-referrer"),
        h("cross-origin-opener-policy", "same-origin"),
    ]
}

/// The credential of `Authorization: Bearer <token>`, if the request has
/// one. The scheme is case-insensitive (RFC 9110 §11.1), for every surface
/// alike; anything but one scheme and one token is no credential.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The media type of a request's body: the `Content-Type` header's essence
/// (before any parameter), lower-cased; `None` without the header.
pub fn media_type(headers: &axum::http::HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// The request id header, set when absent, returned, logged and carried to
/// Kafka.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The layers every HTTP surface shares: security headers, the JSON error
/// envelope for every error, a request timeout, request ids (set, logged,
/// returned), a trace span per request that logs the path but never the
/// query, internal errors logged once inside it, and redaction of
/// credentials in logged headers.
pub fn with_common_layers(mut app: Router) -> Router {
    // Inner to outer: the cause of a 500 is logged inside the span; the
    // timeout's 408 is rewritten into the envelope like any error; every
    // answer, rewritten or not, gets the security headers.
    app = app
        .layer(axum::middleware::from_fn(log_internal_errors))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .layer(axum::middleware::from_fn(json_errors));
    for layer in security_headers() {
        app = app.layer(layer);
    }
    app.layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // Path only: a query string could carry something sensitive.
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(SetSensitiveHeadersLayer::new([header::AUTHORIZATION, header::COOKIE, header::SET_COOKIE]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_schemes_are_case_insensitive_and_need_a_token() {
        let h = |v: &str| {
            let mut m = axum::http::HeaderMap::new();
            m.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
            m
        };
        for ok in ["Bearer tu_x", "bearer tu_x", "BEARER  tu_x ", " Bearer tu_x"] {
            assert_eq!(super::bearer(&h(ok)), Some("tu_x"), "{ok:?}");
        }
        for no in ["Basic tu_x", "Bearer", "Bearer ", "Bearertu_x", "tu_x"] {
            assert_eq!(super::bearer(&h(no)), None, "{no:?}");
        }
        assert_eq!(super::bearer(&axum::http::HeaderMap::new()), None);
    }

    use super::*;
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    /// Log output captured in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn call(app: Router, uri: &str) -> (StatusCode, String, serde_json::Value) {
        let resp = app.oneshot(axum::http::Request::get(uri).body(axum::body::Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let ct = resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, ct, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    fn app() -> Router {
        let huge = "a cause that goes on and on ".repeat(4000);
        with_common_layers(
            Router::new()
                .route(
                    "/boom",
                    axum::routing::get(move || {
                        let huge = huge.clone();
                        async move {
                            let e = anyhow::anyhow!(huge).context("reading the rollups");
                            let mut r = error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "logged");
                            r.extensions_mut().insert(InternalError(Arc::new(e)));
                            r
                        }
                    }),
                )
                .route("/plain", axum::routing::get(|| async { (StatusCode::BAD_REQUEST, "plain words") })),
        )
    }

    #[test]
    fn an_internal_error_is_logged_once_bounded_and_never_sent() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt().with_writer({
            let out = out.clone();
            move || out.clone()
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, _, body) =
            tracing::subscriber::with_default(subscriber.finish(), || rt.block_on(call(app(), "/boom")));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert!(!body.to_string().contains("goes on and on"), "the cause is not sent");
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.matches("request failed").count(), 1, "{log}");
        assert!(log.contains("reading the rollups: a cause"), "the chain, on one line: {log}");
        assert!(log.len() < INTERNAL_LOG_BYTES + 1024, "a 112 KB cause wrote {} bytes of log", log.len());
    }

    #[tokio::test]
    async fn plain_errors_and_fallbacks_become_the_envelope() {
        let (status, ct, body) = call(app(), "/plain").await;
        assert_eq!((status, ct.as_str()), (StatusCode::BAD_REQUEST, "application/json"));
        assert_eq!(
            (body["error"]["code"].as_str(), body["error"]["message"].as_str()),
            (Some("bad_request"), Some("plain words"))
        );
        let (status, _, body) = call(app(), "/nowhere").await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
        let long = format!("/plain?{}", "x".repeat(HeadLimits::URI_BYTES));
        let limited = app().layer(axum::middleware::from_fn(limit_heads));
        let (status, _, body) = call(limited, &long).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::URI_TOO_LONG, Some("uri_too_long")));
    }

    /// Serves `limit_bodies(echo, limit)` on a real socket.
    async fn serve_limited(limit: usize) -> std::net::SocketAddr {
        let echo = Router::new()
            .route("/echo", axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }));
        let app = limit_bodies(echo, limit, "; send less");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// Writes the whole request (head, then the body in pieces), then reads
    /// the answer: what a client that does not watch for early answers does.
    async fn raw_post(addr: std::net::SocketAddr, body: &[u8], chunked: bool) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let framing =
            if chunked { "transfer-encoding: chunked".to_owned() } else { format!("content-length: {}", body.len()) };
        s.write_all(format!("POST /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{framing}\r\n\r\n").as_bytes())
            .await?;
        for piece in body.chunks(64 * 1024) {
            if chunked {
                s.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
                s.write_all(piece).await?;
                s.write_all(b"\r\n").await?;
            } else {
                s.write_all(piece).await?;
            }
            // Let the server run between pieces, as a real network would.
            tokio::task::yield_now().await;
        }
        if chunked {
            s.write_all(b"0\r\n\r\n").await?;
        }
        let mut answer = String::new();
        s.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_body_is_read_before_the_413_so_the_client_gets_it() {
        let addr = serve_limited(16 * 1024).await;
        // Several times over the socket buffers: a server that answered at
        // the limit and closed would reset this client's writes.
        let big = vec![b'x'; 4 * 1024 * 1024];
        for chunked in [false, true] {
            for _ in 0..5 {
                let answer = raw_post(addr, &big, chunked).await.expect("the client reads an answer, not a reset");
                assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
                assert!(answer.contains(r#""code":"body_too_large""#), "{answer}");
                assert!(answer.contains("exceeds the limit of 16384 bytes; send less"), "{answer}");
            }
        }
        // Within the limit the body reaches the handler whole.
        let answer = raw_post(addr, &vec![b'y'; 16 * 1024], true).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("16384"), "{answer}");
    }
}
