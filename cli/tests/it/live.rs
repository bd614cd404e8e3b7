//! Live views over WebSocket against the real database (and, where the
//! stream matters, the real broker and projector): isolation between users,
//! handshake security, token expiry, a slow client, WebSocket = REST after a
//! shuffled stream with duplicates and late events, and resubscribing after
//! a restart.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{TEST_JWT_SECRET, TestApp, TestEnv, eventually, test_api_args};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokenusage_api::Role;
use tokenusage_contract::UsageEvent;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub(crate) fn ev(id: &str, user: &str, at: &str, activity: &str, input: u64) -> UsageEvent {
    let line = common::event_line(id, user, at, activity, "m1", input as i64, 1);
    tokenusage_contract::parse_native(line.as_bytes(), "live-test", t("2027-01-01T00:00:00Z")).unwrap()
}

/// Opens a socket with the given credential and Origin; `Err(status)` if
/// the handshake is refused.
pub(crate) async fn connect(app: &TestApp, token: Option<&str>, origin: Option<&str>) -> Result<Ws, u16> {
    connect_to(app.addr, token, origin).await
}

/// As [`connect`], to the API at `addr` (another process's).
pub(crate) async fn connect_to(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, u16> {
    let mut req = format!("ws://{addr}/api/v1/live").into_client_request().unwrap();
    let mut protocols = "tokenusage.v1".to_owned();
    if let Some(t) = token {
        protocols.push_str(&format!(", bearer.{t}"));
    }
    req.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            assert_eq!(resp.headers()["sec-websocket-protocol"], "tokenusage.v1", "the protocol is echoed");
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message of one of `types`, skipping others, within `within`.
pub(crate) async fn next_of(ws: &mut Ws, types: &[&str], within: Duration) -> Option<Value> {
    tokio::time::timeout(within, async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if types.contains(&v["type"].as_str().unwrap_or_default()) {
                    return Some(v);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// A client-side copy of one subscription: snapshot, then deltas applied.
#[derive(Default, Debug)]
pub(crate) struct Mirror {
    pub(crate) starts: Vec<String>,
    pub(crate) totals: Vec<i64>,
    /// Input tokens per group key and bucket (grouped views).
    pub(crate) groups: Groups,
    /// End of the last snapshot's range (open-ended views grow).
    pub(crate) to: String,
}

impl Mirror {
    pub(crate) fn apply(&mut self, msg: &Value) {
        match msg["type"].as_str() {
            Some("snapshot") => {
                let points = msg["series"]["points"].as_array().unwrap();
                self.starts = points.iter().map(|p| p["start"].as_str().unwrap().to_owned()).collect();
                self.totals = points.iter().map(|p| p["total_tokens"].as_i64().unwrap()).collect();
                self.to = msg["series"]["to"].as_str().unwrap().to_owned();
                self.groups = series_groups(&msg["series"]);
            }
            Some("delta") => {
                for b in msg["buckets"].as_array().unwrap() {
                    let i = b["index"].as_u64().unwrap() as usize;
                    assert_eq!(self.starts[i], b["start"].as_str().unwrap(), "a delta names its bucket");
                    self.totals[i] = b["total_tokens"].as_i64().unwrap();
                    for (key, sums) in b["groups"].as_object().unwrap() {
                        let n = self.starts.len();
                        self.groups.entry(key.clone()).or_insert_with(|| vec![0; n])[i] =
                            sums["input_tokens"].as_i64().unwrap();
                    }
                }
            }
            _ => {}
        }
    }

    pub(crate) fn sum(&self) -> i64 {
        self.totals.iter().sum()
    }
}

/// Input tokens per group key and bucket.
pub(crate) type Groups = std::collections::BTreeMap<String, Vec<i64>>;

/// Input tokens per group and bucket of a series response.
pub(crate) fn series_groups(series: &Value) -> Groups {
    series["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let v = g["input_tokens"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
            (g["key"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// The code of the close frame the server sends within `within`, if any.
pub(crate) async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    tokio::time::timeout(within, async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(Some(f)) = m {
                return Some(u16::from(f.code));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Applies updates until the mirror's total is `expected` or time runs out.
pub(crate) async fn follow(ws: &mut Ws, mirror: &mut Mirror, expected: i64, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while mirror.sum() != expected && tokio::time::Instant::now() < deadline {
        if let Some(msg) = next_of(ws, &["delta", "snapshot"], Duration::from_millis(500)).await {
            mirror.apply(&msg);
        }
    }
    mirror.sum() == expected
}

pub(crate) async fn setup(env: &TestEnv) -> (TestApp, String, String) {
    env.add_user("alice", Role::Viewer, "alice-password").await;
    env.add_user("bob", Role::Viewer, "bob-password").await;
    let app = TestApp::spawn_api(env, test_api_args()).await;
    let alice = app.login("alice", "alice-password").await;
    let bob = app.login("bob", "bob-password").await;
    (app, alice, bob)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_receives_only_their_own_deltas() {
    let env = TestEnv::database_only().await;
    let (app, alice, bob) = setup(&env).await;
    let mut a = connect(&app, Some(&alice), None).await.unwrap();
    let mut b = connect(&app, Some(&bob), None).await.unwrap();
    let view = json!({"from": "2026-11-20", "to": "2026-11-21", "granularity": "hour"});
    for ws in [&mut a, &mut b] {
        send(ws, json!({"type": "subscribe", "id": "s1", "view": view})).await;
        let snap = next_of(ws, &["snapshot"], Duration::from_secs(5)).await.unwrap();
        assert_eq!(snap["series"]["total"]["total_tokens"], 0);
    }
    // Alice cannot subscribe to Bob's usage.
    send(&mut a, json!({"type": "subscribe", "id": "s2", "view": {"from": "2026-11-20", "user": "bob"}})).await;
    let err = next_of(&mut a, &["error"], Duration::from_secs(5)).await.unwrap();
    assert_eq!((err["id"].as_str(), err["code"].as_str()), (Some("s2"), Some("forbidden")));

    tokenusage_projector::count_events(&env.pool, vec![ev("a1", "alice", "2026-11-20T09:30:00Z", "chat", 500)])
        .await
        .unwrap();
    let d = next_of(&mut a, &["delta"], Duration::from_secs(5)).await.expect("alice gets her delta");
    assert_eq!(d["buckets"][0]["index"], 9);
    assert_eq!(d["buckets"][0]["total_tokens"], 501);
    assert_eq!(d["total"]["total_tokens"], 501);
    assert!(d["freshness"].is_object());
    assert!(
        next_of(&mut b, &["delta", "snapshot"], Duration::from_secs(2)).await.is_none(),
        "bob gets nothing of alice's"
    );

    tokenusage_projector::count_events(&env.pool, vec![ev("b1", "bob", "2026-11-20T10:00:00Z", "chat", 7)])
        .await
        .unwrap();
    let d = next_of(&mut b, &["delta"], Duration::from_secs(5)).await.expect("bob gets his");
    assert_eq!(d["total"]["total_tokens"], 8);
    assert!(next_of(&mut a, &["delta"], Duration::from_secs(2)).await.is_none());

    // Every subscription is on the record.
    let subs: i64 =
        sqlx::query_scalar("select count(*) from audit_log where action = 'live.subscribe' and outcome = 'ok'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(subs, 2);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_valid_credential_or_from_another_site_are_refused() {
    let env = TestEnv::database_only().await;
    let (app, alice, _) = setup(&env).await;
    let own_origin = format!("http://{}", app.addr);
    assert!(connect(&app, Some(&alice), Some(&own_origin)).await.is_ok(), "same origin is fine");
    assert_eq!(connect(&app, Some(&alice), Some("https://evil.example")).await.err(), Some(403));
    assert_eq!(connect(&app, None, None).await.err(), Some(401));
    assert_eq!(connect(&app, Some("not-a-token"), None).await.err(), Some(401));
    let mut tampered = alice.clone();
    tampered.pop();
    assert_eq!(connect(&app, Some(&tampered), None).await.err(), Some(401));
    // The refusals are audited like any request.
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where endpoint = '/api/v1/live' and outcome in ('denied', 'unauthenticated')",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(refused, 4);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_closes_when_the_token_expires_unless_renewed() {
    let env = TestEnv::database_only().await;
    let (app, alice, _) = setup(&env).await;
    let now = jsonwebtoken::get_current_timestamp();
    let kid = {
        use sha2::Digest;
        let d = sha2::Sha256::digest([b"tokenusage-kid:".as_slice(), TEST_JWT_SECRET.as_bytes()].concat());
        format!("tu-{}", hex::encode(&d[..8]))
    };
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(kid);
    let claims = json!({"sub": "alice", "iss": "tokenusage", "aud": "tokenusage-api", "exp": now + 2, "nbf": now - 1, "iat": now, "role": "viewer"});
    let short =
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes())).unwrap();

    let mut ws = connect(&app, Some(&short), None).await.unwrap();
    let closing = next_of(&mut ws, &["closing"], Duration::from_secs(10)).await.expect("a closing message");
    assert_eq!(closing["code"], 4001);
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(4001));

    // Renewing over the socket keeps it open past the first expiry.
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({"sub": "alice", "iss": "tokenusage", "aud": "tokenusage-api", "exp": now + 3, "nbf": now - 1, "iat": now, "role": "viewer"});
    let short =
        jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes())).unwrap();
    let mut ws = connect(&app, Some(&short), None).await.unwrap();
    send(&mut ws, json!({"type": "auth", "token": alice})).await;
    let ok = next_of(&mut ws, &["authenticated"], Duration::from_secs(5)).await.unwrap();
    assert!(ok["expires_at"].as_u64().unwrap() > now + 60);
    assert!(next_of(&mut ws, &["closing"], Duration::from_secs(4)).await.is_none(), "still open after the old expiry");
    app.stop().await;
    env.cleanup().await;
}

/// Views subscribed while two writers commit concurrently (late events,
/// duplicates, several activities and models): the sequence number read
/// with each snapshot decides which notified increments the socket adds, so
/// every view ends equal to REST, bucket by bucket and group by group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_opened_while_commits_land_end_equal_to_rest() {
    let env = TestEnv::database_only().await;
    let (app, alice, _) = setup(&env).await;
    let views = [
        json!({"from": "2026-11-20", "to": "2026-11-22", "granularity": "hour", "tz": "Asia/Kolkata", "group": "activity"}),
        json!({"from": "2026-11-20T00:00:00Z", "to": "2026-11-20T06:00:00Z", "granularity": "minute",
               "activity": "chat", "group": "model"}),
        json!({"from": "2026-11-01", "to": "2026-12-01", "granularity": "day", "tz": "America/New_York", "model": "m2"}),
    ];
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let pool = env.pool.clone();
            tokio::spawn(async move {
                // A small linear congruential generator: reproducible spread.
                let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ w;
                let mut next = move |m: u64| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    (x >> 33) % m
                };
                for round in 0..40u64 {
                    let events: Vec<UsageEvent> = (0..40u64)
                        .map(|k| {
                            // Every fifth event repeats one of the previous round: a duplicate.
                            let id = if k % 5 == 0 && round > 0 {
                                format!("w{w}-{}-{k}", round - 1)
                            } else {
                                format!("w{w}-{round}-{k}")
                            };
                            let at = t("2026-11-20T00:00:00Z") + chrono::Duration::minutes(next(2 * 24 * 60) as i64);
                            let activity = ["chat", "code", "search"][next(3) as usize];
                            let line = common::event_line(
                                &id,
                                "alice",
                                &at.to_rfc3339(),
                                activity,
                                ["m1", "m2"][next(2) as usize],
                                1 + next(500) as i64,
                                1,
                            );
                            tokenusage_contract::parse_native(line.as_bytes(), "live-race", t("2027-01-01T00:00:00Z"))
                                .unwrap()
                        })
                        .collect();
                    tokenusage_projector::count_events(&pool, events).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            })
        })
        .collect();
    // Sockets subscribe at staggered moments while the writers run.
    let mut sockets = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let mut ws = connect(&app, Some(&alice), None).await.unwrap();
        for (i, v) in views.iter().enumerate() {
            send(&mut ws, json!({"type": "subscribe", "id": format!("v{i}"), "view": v})).await;
        }
        sockets.push(ws);
    }
    for w in writers {
        w.await.unwrap();
    }
    let expected: Vec<(Vec<i64>, Groups)> = {
        let mut out = Vec::new();
        for v in &views {
            let q: Vec<String> =
                v.as_object().unwrap().iter().map(|(k, x)| format!("{k}={}", x.as_str().unwrap())).collect();
            let (status, body) = app.get(&alice, &format!("/api/v1/usage/series?{}", q.join("&"))).await;
            assert_eq!(status, 200, "{body}");
            let totals =
                body["points"].as_array().unwrap().iter().map(|p| p["total_tokens"].as_i64().unwrap()).collect();
            out.push((totals, series_groups(&body)));
        }
        out
    };
    assert!(expected[0].0.iter().sum::<i64>() > 0 && expected[0].1.len() == 3, "the writes landed");
    for (n, ws) in sockets.iter_mut().enumerate() {
        let mut mirrors: Vec<Mirror> = (0..views.len()).map(|_| Mirror::default()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let matches = |m: &[Mirror]| m.iter().zip(&expected).all(|(m, (t, g))| m.totals == *t && m.groups == *g);
        while !matches(&mirrors) && tokio::time::Instant::now() < deadline {
            if let Some(msg) = next_of(ws, &["delta", "snapshot"], Duration::from_millis(500)).await {
                let i: usize = msg["id"].as_str().unwrap()[1..].parse().unwrap();
                mirrors[i].apply(&msg);
            }
        }
        for (i, (m, (totals, groups))) in mirrors.iter().zip(&expected).enumerate() {
            assert_eq!(&m.totals, totals, "socket {n}, view {i}: totals per bucket equal REST");
            assert_eq!(&m.groups, groups, "socket {n}, view {i}: groups equal REST");
        }
    }
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_while_others_keep_receiving() {
    let env = TestEnv::database_only().await;
    let (app, alice, _) = setup(&env).await;
    // Big views: each change re-sends many buckets.
    let view = json!({"from": "2026-11-20T00:00:00Z", "to": "2026-11-26T00:00:00Z", "granularity": "minute"});
    let mut slow = connect(&app, Some(&alice), None).await.unwrap();
    for i in 0..10 {
        send(&mut slow, json!({"type": "subscribe", "id": format!("s{i}"), "view": view})).await;
    }
    let mut fast = connect(&app, Some(&alice), None).await.unwrap();
    send(&mut fast, json!({"type": "subscribe", "id": "f", "view": {"from": "2026-11-20", "to": "2026-11-27", "granularity": "day"}}))
        .await;
    let mut mirror = Mirror::default();
    mirror.apply(&next_of(&mut fast, &["snapshot"], Duration::from_secs(30)).await.unwrap());

    // Keep changing every minute of the range; the slow socket never reads.
    let pool = env.pool.clone();
    let writer = tokio::spawn(async move {
        let mut n = 0u64;
        let mut expected = 0i64;
        for round in 0..60 {
            let events: Vec<UsageEvent> = (0..8640)
                .step_by(3)
                .map(|m| {
                    n += 1;
                    let at = t("2026-11-20T00:00:00Z") + chrono::Duration::minutes(m);
                    ev(&format!("r{round}-{m}"), "alice", &at.to_rfc3339(), "chat", 1)
                })
                .collect();
            expected += events.len() as i64 * 2;
            tokenusage_projector::count_events(&pool, events).await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (n, expected)
    });
    // The fast client sees the totals climb while the slow one is stuck:
    // counted for as long as the writer writes (its 60 commits take 30 s
    // or more, longer on a loaded machine; a time window of its own would
    // count fewer commits the slower the machine).
    let mut deltas = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while !writer.is_finished() && tokio::time::Instant::now() < deadline {
        if let Some(m) = next_of(&mut fast, &["delta", "snapshot"], Duration::from_secs(1)).await {
            mirror.apply(&m);
            deltas += 1;
        }
    }
    assert!(deltas >= 10, "the fast client kept receiving while the writer wrote ({deltas} updates)");
    let (_, expected) = writer.await.unwrap();
    // The fast client ends on the truth.
    assert!(
        follow(&mut fast, &mut mirror, expected, Duration::from_secs(20)).await,
        "fast client: {} of {expected}",
        mirror.sum()
    );
    // The slow socket was cut off as too slow, not left to buffer forever
    // (it cannot be sent a close frame it does not read).
    // Stuck for 30 s, noticed by housekeeping within 20 s more.
    let cut = eventually(Duration::from_secs(90), || async {
        let m = app.http.get(app.url("/metrics")).send().await.ok()?.text().await.ok()?;
        // The counter is exported at 0 from the start: it must have moved.
        m.lines()
            .filter(|l| l.starts_with("tokenusage_live_sockets_closed_total{reason=\"too_slow\"}"))
            .any(|l| l.split_whitespace().last().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v >= 1.0))
            .then_some(())
    })
    .await;
    assert!(cut.is_some(), "the stuck client was not cut off");
    // Reading now, the slow client finds the connection gone.
    let ended =
        tokio::time::timeout(Duration::from_secs(30), async { while let Some(Ok(_)) = slow.next().await {} }).await;
    assert!(ended.is_ok(), "the slow client's connection was closed");
    app.stop().await;
    env.cleanup().await;
}
