//! Live views over WebSocket: a snapshot, then deltas, fed only by
//! committed data (the projector's post-commit NOTIFY).
//!
//! Protocol `tokenusage.v1` (docs/LIVE.md): the browser authenticates in the
//! handshake with the subprotocols `tokenusage.v1` and `bearer.<token>` (no
//! token in the URL); a foreign `Origin` is refused before the upgrade. A
//! socket holds several subscriptions, each a view in the REST vocabulary.
//!
//! One hub task per process turns notifications into [`Change`]s on a
//! bounded broadcast channel. Each socket marks the affected subscriptions
//! dirty and, at most `--live-updates-per-sec` times a second, re-reads
//! only the dirty buckets from the rollups and sends those that changed,
//! with absolute values (a delta can be applied twice). A socket that falls
//! behind (broadcast lag, or a full outbound queue) gets a fresh snapshot
//! instead of the deltas it missed; one stuck for 30 s is closed.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::audit::{self, AuditSlot, RequestFacts};
use crate::auth::{self, AuthUser};
use crate::error::ApiError;
use crate::history::plan::Plan;
use crate::history::query::{self, SeriesData, Subject, Sums, VIEW_PARAMS, View};
use crate::history::routes::{fmt_time, resolve_subject, series_response};

/// The subprotocol, echoed in the handshake.
pub const PROTOCOL: &str = "tokenusage.v1";
const BEARER_PREFIX: &str = "bearer.";

/// Close codes (docs/LIVE.md).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const ACCOUNT_DISABLED: u16 = 4003;
    pub const IDLE: u16 = 4008;
    pub const TOO_SLOW: u16 = 4009;
}

const OUT_QUEUE: usize = 32;
const MAX_MESSAGE_BYTES: usize = 16 * 1024;
const MAX_SUBSCRIPTIONS: usize = 10;
const STUCK_LIMIT: Duration = Duration::from_secs(30);
const PING_EVERY: Duration = Duration::from_secs(30);
const STATUS_EVERY: Duration = Duration::from_secs(20);
const HUB_CAPACITY: usize = 1024;
/// Views up to this many buckets are re-read whole on a change (shared
/// through the series cache); larger ones only over the dirty range.
const SHARED_READ_BUCKETS: usize = 2000;

/// A change to the rollups, from one committed projector batch.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// These users' data changed between `from` and `to` (inclusive).
    Users { users: Arc<std::collections::HashSet<String>>, from: DateTime<Utc>, to: DateTime<Utc> },
    /// Many users' data changed in that range.
    All { from: DateTime<Utc>, to: DateTime<Utc> },
    /// Unknown (a notification may have been missed): refresh everything.
    Everything,
}

/// How current the rollups are.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Freshness {
    /// Every record the broker held at this time is counted (minimum over
    /// partitions); null until the projector's probe has run.
    pub complete_through: Option<DateTime<Utc>>,
    /// Records on the broker not yet counted, summed over partitions.
    pub lag_records: i64,
}

/// Live state shared by the sockets of one process.
#[derive(Debug)]
pub(crate) struct Live {
    changes: broadcast::Sender<Change>,
    freshness_tx: watch::Sender<Freshness>,
    sockets_per_user: Mutex<HashMap<String, usize>>,
}

impl Live {
    pub(crate) fn new() -> Self {
        Self {
            changes: broadcast::channel(HUB_CAPACITY).0,
            freshness_tx: watch::channel(Freshness::default()).0,
            sockets_per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the notification listener and the freshness poller.
    pub(crate) fn spawn_hub(
        self: &Arc<Self>,
        pool: PgPool,
        shutdown: CancellationToken,
        cache: Arc<crate::history::cache::SeriesCache>,
    ) {
        tokio::spawn(listen(pool.clone(), self.changes.clone(), shutdown.clone(), cache));
        tokio::spawn(poll_freshness(pool, self.freshness_tx.clone(), shutdown));
    }
}

#[derive(Deserialize)]
struct Notification {
    users: Option<Vec<String>>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

/// Invalidates the series cache for a change, then announces it: in this
/// order, so no socket can re-read a view from the cache and get numbers
/// older than the change it was woken for.
fn publish(tx: &broadcast::Sender<Change>, cache: &crate::history::cache::SeriesCache, change: Change) {
    match &change {
        Change::Users { users, .. } => cache.invalidate_users(users.iter()),
        Change::All { .. } | Change::Everything => cache.invalidate_all(),
    }
    let _ = tx.send(change);
}

async fn listen(
    pool: PgPool,
    tx: broadcast::Sender<Change>,
    shutdown: CancellationToken,
    cache: Arc<crate::history::cache::SeriesCache>,
) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "live updates: cannot listen for changes; retrying");
                tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        if let Err(e) = listener.listen(tokenusage_projector::NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "live updates: LISTEN failed; retrying");
            continue;
        }
        // Anything may have changed while we were not listening.
        publish(&tx, &cache, Change::Everything);
        loop {
            let n = tokio::select! {
                () = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(Some(n)) => {
                    let change = match serde_json::from_str::<Notification>(n.payload()) {
                        Ok(Notification { users: Some(users), from: Some(from), to: Some(to) }) => {
                            // A set: every socket checks its subject against it.
                            Change::Users { users: Arc::new(users.into_iter().collect()), from, to }
                        }
                        Ok(Notification { users: None, from: Some(from), to: Some(to) }) => Change::All { from, to },
                        _ => Change::Everything,
                    };
                    publish(&tx, &cache, change);
                }
                // The connection dropped; it reconnects on the next call.
                Ok(None) => publish(&tx, &cache, Change::Everything),
                Err(e) => {
                    tracing::warn!(error = %e, "live updates: listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn poll_freshness(pool: PgPool, tx: watch::Sender<Freshness>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! { () = shutdown.cancelled() => return, _ = tick.tick() => {} }
        let row: Result<(Option<DateTime<Utc>>, i64, i64), _> = sqlx::query_as(
            "select min(caught_up_at), count(*) filter (where caught_up_at is null), coalesce(sum(lag), 0)::int8 \
             from projector_offsets",
        )
        .fetch_one(&pool)
        .await;
        if let Ok((min, unknown, lag)) = row {
            let f = Freshness { complete_through: if unknown > 0 { None } else { min }, lag_records: lag };
            tx.send_if_modified(|cur| {
                if *cur == f {
                    false
                } else {
                    *cur = f;
                    true
                }
            });
        }
    }
}

/// Counts a user's sockets; the count drops with the guard.
struct SocketSlot {
    live: Arc<Live>,
    user: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut m = self.live.sockets_per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// Whether a browser's `Origin` may open a socket: the same host, or one
/// of `--live-allowed-origins`. No `Origin`: not a browser, so not a
/// cross-site hijack.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, h)| !host.is_empty() && h.eq_ignore_ascii_case(host))
}

/// `GET /api/v1/live`: the WebSocket endpoint, authenticated before the upgrade.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    facts: RequestFacts,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !origin_allowed(&headers, &state.config.live_allowed_origins) {
        return Err(ApiError::Forbidden("cross-site WebSocket refused: Origin is not allowed"));
    }
    let offered: Vec<String> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()))
        .collect();
    if !offered.iter().any(|p| p == PROTOCOL) {
        return Err(ApiError::bad_request("unsupported_protocol", format!("offer the `{PROTOCOL}` subprotocol")));
    }
    let token = offered.iter().find_map(|p| p.strip_prefix(BEARER_PREFIX)).ok_or(ApiError::Unauthorized)?;
    let user = auth::authenticate(&state, token).await?;
    slot.set_actor(&user.id, Some(user.role));
    slot.set_detail("live.connect", Some(&user.id), json!({}), None);
    {
        let mut m = state.live.sockets_per_user.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(user.id.clone()).or_insert(0);
        if *n >= state.config.live_max_sockets_per_user {
            return Err(ApiError::TooManyRequests { retry_after_secs: 5 });
        }
        *n += 1;
    }
    let guard = SocketSlot { live: state.live.clone(), user: user.id.clone() };
    Ok(ws
        .protocols([PROTOCOL])
        .read_buffer_size(1024)
        .write_buffer_size(1024)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let tracker = state.sockets.clone();
            tracker.track_future(Socket::new(state, user, facts).run(socket, guard)).await;
        }))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Subscribe { id: String, view: BTreeMap<String, Value> },
    Unsubscribe { id: String },
    Auth { token: String },
    Ping,
}

/// One subscription's view and what the client has been sent.
struct Sub {
    view: View,
    plan: Plan,
    subject: Subject,
    open_ended: bool,
    data: SeriesData,
    /// The range whose buckets may have changed since the last send.
    dirty: Option<(DateTime<Utc>, DateTime<Utc>)>,
    needs_snapshot: bool,
}

impl Sub {
    fn touches(&self, users: &std::collections::HashSet<String>) -> bool {
        match &self.subject {
            Subject::All => true,
            Subject::User(u) => users.contains(u),
        }
    }

    fn mark(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        if to < self.plan.start() || from >= self.plan.end {
            return;
        }
        self.dirty = Some(match self.dirty {
            None => (from, to),
            Some((a, b)) => (a.min(from), b.max(to)),
        });
    }
}

struct Socket {
    state: AppState,
    user: AuthUser,
    facts: RequestFacts,
    subs: BTreeMap<String, Sub>,
    out: Option<mpsc::Sender<Message>>,
    stuck_since: Option<Instant>,
    last_freshness: Option<Freshness>,
    /// Why the server closed the socket (`client` if it did not).
    closed_for: &'static str,
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn error_msg(id: Option<&str>, code: &str, message: &str) -> Value {
    json!({"type": "error", "id": id, "code": code, "message": message})
}

/// A view's parameters from JSON values (strings, numbers or lists).
fn view_params(view: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    view.iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect()
}

impl Socket {
    fn new(state: AppState, user: AuthUser, facts: RequestFacts) -> Self {
        Self {
            state,
            user,
            facts,
            subs: BTreeMap::new(),
            out: None,
            stuck_since: None,
            last_freshness: None,
            closed_for: "client",
        }
    }

    /// Queues a message; false if the queue is full (the caller resyncs later).
    fn send(&mut self, v: &Value) -> bool {
        let Some(out) = &self.out else { return false };
        match out.try_send(text(v)) {
            Ok(()) => true,
            Err(_) => {
                self.stuck_since.get_or_insert_with(Instant::now);
                for s in self.subs.values_mut() {
                    s.needs_snapshot = true;
                }
                false
            }
        }
    }

    fn close(&mut self, code: u16, reason: &'static str) {
        self.closed_for = match code {
            close::GOING_AWAY => "shutdown",
            close::POLICY => "policy",
            close::TOKEN_EXPIRED => "token_expired",
            close::ACCOUNT_DISABLED => "account_disabled",
            close::IDLE => "idle",
            close::TOO_SLOW => "too_slow",
            _ => "other",
        };
        if let Some(out) = self.out.take() {
            let _ = out.try_send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })));
        }
    }

    async fn run(mut self, socket: WebSocket, _guard: SocketSlot) {
        let (mut sink, mut stream) = socket.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
        self.out = Some(out_tx);
        let mut writer = tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let closing = matches!(m, Message::Close(_));
                match tokio::time::timeout(STUCK_LIMIT, sink.send(m)).await {
                    Ok(Ok(())) if !closing => {}
                    _ => break,
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), sink.close()).await;
        });
        metrics::gauge!("tokenusage_live_sockets").increment(1.0);
        let shutdown = self.state.shutdown.clone();
        let mut changes = self.state.live.changes.subscribe();
        let mut freshness = self.state.live.freshness_tx.subscribe();
        let rate = self.state.config.live_updates_per_sec.max(1);
        let period = Duration::from_millis(1000 / u64::from(rate));
        let mut tick = tokio::time::interval(period);
        // Leading edge: after a quiet spell a change goes out at once; while
        // changes keep coming, the tick sends them at most `rate` times a second.
        // When data was last sent: the rate limit counts data, not ticks.
        let mut last_sent = Instant::now() - period;
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut status = tokio::time::interval(STATUS_EVERY);
        let limiter: DefaultDirectRateLimiter = RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN)),
        );
        let idle = Duration::from_secs(self.state.config.live_idle_secs);
        let mut last_heard = Instant::now();
        let mut strikes = 0u32;
        let expiry = tokio::time::sleep(self.until_expiry());
        tokio::pin!(expiry);
        self.send(&json!({
            "type": "hello", "protocol": PROTOCOL, "user": self.user.id, "role": self.user.role,
            "expires_at": self.user.expires_at, "max_subscriptions": MAX_SUBSCRIPTIONS,
        }));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.close(close::GOING_AWAY, "server shutting down");
                    break;
                }
                m = stream.next() => match m {
                    Some(Ok(Message::Text(t))) => {
                        last_heard = Instant::now();
                        if limiter.check().is_err() {
                            strikes += 1;
                            self.send(&error_msg(None, "rate_limited", "too many messages; slow down"));
                            if strikes > 20 {
                                self.close(close::POLICY, "too many messages");
                                break;
                            }
                            continue;
                        }
                        if let Some(new_expiry) = self.on_client(&t).await {
                            expiry.as_mut().reset(tokio::time::Instant::now() + new_expiry);
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        self.send(&error_msg(None, "unsupported", "binary messages are not part of the protocol"));
                    }
                    Some(Ok(Message::Pong(_) | Message::Ping(_))) => last_heard = Instant::now(),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "live socket read failed");
                        break;
                    }
                },
                c = changes.recv() => {
                    match c {
                        Ok(change) => self.on_change(&change),
                        Err(broadcast::error::RecvError::Lagged(_)) => self.on_change(&Change::Everything),
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                    if last_sent.elapsed() >= period {
                        let current = freshness.borrow().clone();
                        match self.flush(&current).await {
                            Ok(true) => last_sent = Instant::now(),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "live update failed"),
                        }
                    }
                }
                _ = tick.tick() => {
                    if last_sent.elapsed() < period {
                        continue;
                    }
                    let current = freshness.borrow_and_update().clone();
                    match self.flush(&current).await {
                        Ok(true) => last_sent = Instant::now(),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "live update failed");
                            self.send(&error_msg(None, "update_failed", "could not read the latest numbers; retrying"));
                        }
                    }
                    if self.stuck_since.is_some_and(|t| t.elapsed() > STUCK_LIMIT) {
                        self.close(close::TOO_SLOW, "the client does not keep up");
                        break;
                    }
                }
                _ = freshness.changed() => {}
                _ = ping.tick() => {
                    if last_heard.elapsed() > idle {
                        self.close(close::IDLE, "idle");
                        break;
                    }
                    if let Some(out) = &self.out {
                        let _ = out.try_send(Message::Ping(Default::default()));
                    }
                }
                _ = status.tick() => {
                    let disabled = matches!(self.state.users.status(&self.state.pool, &self.user.id).await,
                        Ok(Some(s)) if s.disabled);
                    if disabled {
                        self.close(close::ACCOUNT_DISABLED, "account disabled");
                        break;
                    }
                }
                () = &mut expiry => {
                    self.send(&json!({"type": "closing", "code": close::TOKEN_EXPIRED, "reason": "token expired"}));
                    self.close(close::TOKEN_EXPIRED, "token expired");
                    break;
                }
            }
        }
        self.out = None;
        // A client that does not read cannot be sent a close frame; past a
        // short grace its connection is simply dropped.
        if tokio::time::timeout(Duration::from_secs(5), &mut writer).await.is_err() {
            writer.abort();
        }
        metrics::gauge!("tokenusage_live_sockets").decrement(1.0);
        metrics::counter!("tokenusage_live_sockets_closed_total", "reason" => self.closed_for).increment(1);
    }

    fn until_expiry(&self) -> Duration {
        let now = jsonwebtoken::get_current_timestamp();
        Duration::from_secs(self.user.expires_at.saturating_sub(now))
    }

    /// Handles a client message; returns a new time-to-expiry after re-authentication.
    async fn on_client(&mut self, raw: &str) -> Option<Duration> {
        let msg: ClientMessage = match serde_json::from_str(raw) {
            Ok(m) => m,
            Err(e) => {
                self.send(&error_msg(None, "invalid_message", &format!("not a protocol message: {e}")));
                return None;
            }
        };
        match msg {
            ClientMessage::Ping => {
                self.send(&json!({"type": "pong"}));
            }
            ClientMessage::Unsubscribe { id } => {
                if self.subs.remove(&id).is_some() {
                    self.send(&json!({"type": "unsubscribed", "id": id}));
                } else {
                    self.send(&error_msg(Some(&id), "unknown_subscription", "no subscription with this id"));
                }
            }
            ClientMessage::Auth { token } => match auth::authenticate(&self.state, &token).await {
                Ok(u) if u.id == self.user.id => {
                    self.user = u;
                    self.send(&json!({"type": "authenticated", "expires_at": self.user.expires_at}));
                    return Some(self.until_expiry());
                }
                Ok(_) => {
                    self.send(&error_msg(None, "wrong_user", "the new token belongs to someone else"));
                }
                Err(_) => {
                    self.send(&error_msg(None, "unauthorized", "the token is not valid"));
                }
            },
            ClientMessage::Subscribe { id, view } => {
                if let Err(e) = self.subscribe(&id, &view).await {
                    let (code, message) = e.code_and_message();
                    self.send(&error_msg(Some(&id), code, &message));
                }
            }
        }
        None
    }

    async fn subscribe(&mut self, id: &str, raw: &BTreeMap<String, Value>) -> Result<(), ApiError> {
        if id.is_empty() || id.len() > 64 {
            return Err(ApiError::bad_request("invalid_id", "`id` must be 1 to 64 characters"));
        }
        if !self.subs.contains_key(id) && self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::bad_request(
                "too_many_subscriptions",
                format!("at most {MAX_SUBSCRIPTIONS} per socket"),
            ));
        }
        let params = view_params(raw);
        query::check_known(&params, VIEW_PARAMS)?;
        let mut view = query::parse_view(&params, self.state.config.week_start.weekday(), false)?;
        let open_ended = !params.contains_key("to");
        if open_ended {
            view.to = Utc::now().max(view.from + chrono::Duration::seconds(1));
        }
        let subject = resolve_subject(&self.user, view.user.as_deref())?;
        let plan = query::plan_view(&view, self.state.config.max_points)?;
        // Later re-plans (open-ended views grow) keep the granularity.
        view.granularity = Some(plan.granularity);
        let data = self.state.series_cache.read(&self.state.pool, &subject, &plan, view.group, &view.filters).await?;
        let data = SeriesData::clone(&data);
        let audit_params = json!({"id": id, "from": view.from, "to": if open_ended { Value::Null } else { json!(view.to) },
            "granularity": plan.granularity, "tz": view.tz.name(), "group": view.group, "filters": view.filters});
        audit::record_action(
            &self.state,
            &self.facts,
            (&self.user.id, self.user.role),
            "live.subscribe",
            Some(subject.label()),
            audit_params,
            Some(data.totals.len() as i64),
        )
        .await
        .map_err(|_| ApiError::AuditUnavailable)?;
        let sub = Sub { view, plan, subject, open_ended, data, dirty: None, needs_snapshot: false };
        let current = self.state.live.freshness_tx.borrow().clone();
        let snapshot = snapshot_msg(id, &sub, &current);
        self.subs.insert(id.to_owned(), sub);
        self.send(&snapshot);
        Ok(())
    }

    fn on_change(&mut self, change: &Change) {
        for s in self.subs.values_mut() {
            match change {
                Change::Users { users, from, to } if s.touches(users) => {
                    s.mark(*from, *to + chrono::Duration::minutes(1));
                }
                Change::Users { .. } => {}
                Change::All { from, to } => s.mark(*from, *to + chrono::Duration::minutes(1)),
                Change::Everything => s.needs_snapshot = true,
            }
        }
    }

    /// Sends what changed since the last send; true if data went out.
    async fn flush(&mut self, freshness: &Freshness) -> Result<bool, sqlx::Error> {
        if self.out.as_ref().is_some_and(|o| o.capacity() > OUT_QUEUE / 2) {
            self.stuck_since = None;
        } else if self.stuck_since.is_some() {
            return Ok(false);
        }
        let now = Utc::now();
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        let mut sent_data = false;
        for id in ids {
            let Some(sub) = self.subs.get_mut(&id) else { continue };
            if sub.open_ended && now >= sub.plan.end {
                sub.view.to = now + chrono::Duration::seconds(1);
                match query::plan_view(&sub.view, self.state.config.max_points) {
                    Ok(p) => sub.plan = p,
                    Err(_) => {
                        self.subs.remove(&id);
                        self.send(&error_msg(
                            Some(&id),
                            "too_many_points",
                            "the live view grew past the point limit; subscribe again with a later start",
                        ));
                        continue;
                    }
                }
                sub.needs_snapshot = true;
            }
            if sub.needs_snapshot {
                // Sockets watching the same view share one read (the cache).
                let fresh = self
                    .state
                    .series_cache
                    .read(&self.state.pool, &sub.subject, &sub.plan, sub.view.group, &sub.view.filters)
                    .await?;
                sub.data = SeriesData::clone(&fresh);
                sub.needs_snapshot = false;
                sub.dirty = None;
                let msg = snapshot_msg(&id, sub, freshness);
                sent_data |= self.send(&msg);
                continue;
            }
            let Some((from, to)) = sub.dirty.take() else { continue };
            if let Some(delta) = delta(&self.state, &id, sub, from, to, freshness).await? {
                sent_data |= self.send(&delta);
            }
        }
        if !sent_data && self.last_freshness.as_ref() != Some(freshness) && !self.subs.is_empty() {
            self.send(&json!({"type": "freshness", "freshness": freshness}));
        }
        self.last_freshness = Some(freshness.clone());
        Ok(sent_data)
    }
}

fn snapshot_msg(id: &str, sub: &Sub, freshness: &Freshness) -> Value {
    let series = series_response(&sub.view, &sub.plan, &sub.subject, &sub.data);
    json!({"type": "snapshot", "id": id, "live": sub.open_ended, "series": series, "freshness": freshness})
}

/// Re-reads the buckets overlapping `[from, to)` and returns a delta with
/// those whose numbers changed (absolute values), or `None`.
async fn delta(
    state: &AppState,
    id: &str,
    sub: &mut Sub,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    freshness: &Freshness,
) -> Result<Option<Value>, sqlx::Error> {
    let n = sub.plan.edges.len();
    // Small views are re-read whole: every socket watching the same view
    // then asks the cache the same question and one read serves them all.
    let (first, last) = if n <= SHARED_READ_BUCKETS {
        (0, n)
    } else {
        (
            sub.plan.edges.partition_point(|e| *e <= from).saturating_sub(1),
            sub.plan.edges.partition_point(|e| *e < to).min(n),
        )
    };
    if first >= last {
        return Ok(None);
    }
    let part = Plan {
        granularity: sub.plan.granularity,
        edges: sub.plan.edges[first..last].to_vec(),
        end: sub.plan.bucket_end(last - 1),
        rollup: sub.plan.rollup,
    };
    let fresh = state.series_cache.read(&state.pool, &sub.subject, &part, sub.view.group, &sub.view.filters).await?;
    let mut buckets = Vec::new();
    for (j, sums) in fresh.totals.iter().enumerate() {
        let i = first + j;
        let mut groups = serde_json::Map::new();
        let mut changed = sub.data.totals[i] != *sums;
        for (key, vals) in &fresh.groups {
            let cached = sub.data.groups.entry(key.clone()).or_insert_with(|| vec![Sums::default(); n]);
            changed |= cached[i] != vals[j];
            cached[i] = vals[j];
        }
        if !changed {
            continue;
        }
        sub.data.totals[i] = *sums;
        for (key, vals) in &sub.data.groups {
            groups.insert(key.clone(), serde_json::to_value(vals[i]).unwrap_or_default());
        }
        buckets.push(json!({
            "index": i, "start": fmt_time(sub.plan.edges[i], &sub.view.tz), "end": fmt_time(sub.plan.bucket_end(i), &sub.view.tz),
            "input_tokens": sums.input_tokens, "output_tokens": sums.output_tokens, "total_tokens": sums.total_tokens,
            "events": sums.events, "groups": groups,
        }));
    }
    if buckets.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({"type": "delta", "id": id, "buckets": buckets, "total": sub.data.total(), "freshness": freshness})))
}
