//! The socket loop driven through in-memory channels, with no database: the
//! greeting, the protocol's small answers, refusals, shutdown, token
//! expiry, and a committed increment reaching a subscribed view as a delta.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokenusage_schema::notice::{Delta, Notice};

use super::Socket;
use crate::accounts::Role;
use crate::audit::RequestFacts;
use crate::history::cache::SeriesCache;
use crate::history::params::Filters;
use crate::history::plan::GroupBy;
use crate::history::read::Subject;
use crate::http::AppState;
use crate::http::extract::{Caller, Issuer};

/// The server's end of an in-memory socket.
struct Duplex {
    to_client: UnboundedSender<Message>,
    from_client: UnboundedReceiver<Result<Message, std::io::Error>>,
}

impl Sink<Message> for Duplex {
    type Error = std::io::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), Self::Error> {
        self.to_client.unbounded_send(m).map_err(std::io::Error::other)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl Stream for Duplex {
    type Item = Result<Message, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.from_client).poll_next(cx)
    }
}

/// The client's end.
struct Client {
    send: UnboundedSender<Result<Message, std::io::Error>>,
    recv: UnboundedReceiver<Message>,
}

impl Client {
    async fn send_text(&mut self, t: &str) {
        self.send.send(Ok(Message::Text(Utf8Bytes::from(t.to_owned())))).await.unwrap();
    }

    /// The next frame, within 5 s.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(5), self.recv.next()).await.expect("a frame in time").expect("open")
    }

    /// The next frame that is not a ping (housekeeping's first tick is
    /// immediate, so a ping may come at any point).
    async fn frame(&mut self) -> Message {
        loop {
            match self.next().await {
                Message::Ping(_) => continue,
                other => return other,
            }
        }
    }

    /// The next JSON message, skipping pings.
    async fn json(&mut self) -> Value {
        match self.frame().await {
            Message::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }
}

fn facts() -> RequestFacts {
    RequestFacts {
        method: "GET".into(),
        endpoint: "/api/v1/live".into(),
        parameter_names: Vec::new(),
        ip: None,
        user_agent: None,
        request_id: None,
    }
}

/// A socket of alice's, running; its state, and the client's end.
fn start(expires_in: u64, prepare: impl FnOnce(&mut Socket)) -> (AppState, Client) {
    let state = AppState::without_database();
    let user = Caller(crate::access::Caller {
        id: "alice".into(),
        role: Role::Viewer,
        issuer: Issuer::Local,
        expires_at: jsonwebtoken::get_current_timestamp() + expires_in,
    });
    let (membership, inbox, resync) = state.live.join();
    let mut socket = Socket::new(state.clone(), user, facts(), membership, inbox, resync);
    prepare(&mut socket);
    let place = state.live.take_socket_slot("alice", 10).unwrap();
    let (to_client, recv) = unbounded();
    let (send, from_client) = unbounded();
    tokio::spawn(socket.run(Duplex { to_client, from_client }, place));
    (state, Client { send, recv })
}

#[tokio::test]
async fn a_socket_says_hello_and_answers_pings() {
    let (_, mut c) = start(300, |_| {});
    let hello = c.json().await;
    assert_eq!((hello["type"].as_str(), hello["user"].as_str()), (Some("hello"), Some("alice")));
    c.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(c.json().await["type"], "pong");
}

#[tokio::test]
async fn unknown_and_binary_messages_are_refused_with_an_error_each() {
    let (_, mut c) = start(300, |_| {});
    c.json().await;
    c.send_text("not json").await;
    assert_eq!(c.json().await["code"], "invalid_message");
    c.send.send(Ok(Message::Binary(vec![1, 2].into()))).await.unwrap();
    assert_eq!(c.json().await["code"], "unsupported");
    c.send_text(r#"{"type":"unsubscribe","id":"nope"}"#).await;
    let e = c.json().await;
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("unknown_subscription"), Some("nope")));
}

#[tokio::test]
async fn shutdown_closes_the_socket_with_going_away() {
    let (state, mut c) = start(300, |_| {});
    c.json().await;
    state.shutdown.cancel();
    match c.frame().await {
        Message::Close(Some(f)) => assert_eq!(f.code, super::close::GOING_AWAY),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expiring_token_is_announced_then_the_socket_closes_with_4001() {
    let (_, mut c) = start(1, |_| {});
    c.json().await;
    let closing = c.json().await;
    assert_eq!((closing["type"].as_str(), closing["code"].as_u64()), (Some("closing"), Some(4001)));
    match c.frame().await {
        Message::Close(Some(f)) => assert_eq!(f.code, super::close::TOKEN_EXPIRED),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_committed_increment_reaches_a_subscribed_view_as_a_delta() {
    let (state, mut c) = start(300, |s| {
        s.subs.insert("v".into(), crate::live::view::tests::sub(GroupBy::Activity, Filters::default()));
        s.membership.set_scope([Subject::User("alice".into())].iter());
    });
    c.json().await;
    let at = crate::live::view::tests::t("2026-11-20T07:30:00Z").timestamp();
    let rows = vec![
        Delta(
            "alice".into(),
            "chat".into(),
            "m".into(),
            at,
            tokenusage_schema::Sums::new(40, 2, 1).to_array(),
            "s".into(),
            String::new(),
        ),
        Delta(
            "bob".into(),
            "chat".into(),
            "m".into(),
            at,
            tokenusage_schema::Sums::new(999, 0, 1).to_array(),
            "s".into(),
            String::new(),
        ),
    ];
    state.live.publish(&SeriesCache::new(0), Notice { seq: 11, rows, users: None, all: false });
    let d = c.json().await;
    assert_eq!((d["type"].as_str(), d["id"].as_str()), (Some("delta"), Some("v")));
    assert_eq!(d["buckets"][0]["index"], 7);
    assert_eq!(d["buckets"][0]["groups"]["chat"]["input_tokens"], 40, "bob's row never reaches alice");
    assert_eq!(d["total"]["total_tokens"], 42);
    let _ = Arc::clone(&state.live);
}
