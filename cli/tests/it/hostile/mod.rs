//! Hostile input and faults, against the real server, database and broker:
//! one test per finding of the hostile-input review (issue #14), each
//! written against the main of that day and failing there, plus the suites
//! that keep their classes closed.
//!
//! - `pipeline`: bad records and a database that refuses them or stalls;
//! - `requests`: bad requests, audit gaps, origins, limits, error bodies;
//! - `properties`: arbitrary Unicode in every parameter and event field.

mod pipeline;
mod properties;
mod requests;

use crate::common;

use std::time::Duration;

use common::{TestApp, TestEnv};
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

pub(super) const RANGE: &str = "from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z";

pub(super) async fn audit_count(env: &TestEnv) -> i64 {
    sqlx::query_scalar("select count(*) from audit_log").fetch_one(&env.pool).await.unwrap()
}

/// The audit entry of one request, by its request id.
pub(super) async fn entry_of(env: &TestEnv, request_id: &str) -> (Option<String>, Option<String>, String, i32, String) {
    sqlx::query_as("select actor, subject, outcome, status, params from audit_log where request_id = $1")
        .bind(request_id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// Status, content type, request id and body of a response.
pub(super) async fn parts(r: reqwest::Response) -> (u16, String, String, Value) {
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let rid = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = r.text().await.unwrap_or_default();
    (status, ct, rid, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub(super) fn assert_envelope(what: &str, status: u16, ct: &str, body: &Value) {
    assert!(ct.starts_with("application/json"), "{what}: {status} answered with content type {ct:?}");
    assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{what}: {status} {body}");
}

pub(super) fn event(id: &str, user: &str) -> Value {
    json!({"event_id": id, "user_id": user, "occurred_at": "2026-11-20T10:00:00Z",
           "activity": "chat", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5})
}

pub(super) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn connect(app: &TestApp, token: &str, origin: Option<&str>) -> Result<(Ws, String), u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/live", app.addr).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", format!("tokenusage.v1, bearer.{token}").parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => Ok((ws, resp.headers()["x-request-id"].to_str().unwrap().to_owned())),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

pub(super) async fn next_error(ws: &mut Ws) -> Value {
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    return v;
                }
            }
        }
        Value::Null
    })
    .await
    .unwrap()
}
