//! Live views over WebSocket: a snapshot, then deltas, fed only by
//! committed data (the projector's post-commit NOTIFY).
//!
//! Protocol `tokenusage.v1` (docs/LIVE.md): the browser authenticates in the
//! handshake with the subprotocols `tokenusage.v1` and `bearer.<token>` (no
//! token in the URL); a foreign `Origin` is refused before the upgrade. A
//! socket holds several subscriptions, each a view in the REST vocabulary.
//!
//! Exactness without re-reading: every notification carries the committed
//! per-minute increments and the commit's number in `rollup_sequence`
//! (`tokenusage_projector::notify`). A view's snapshot is read together with
//! that number S; the socket then adds, in memory, exactly the increments
//! numbered above S. One hub task per process routes each notice only to
//! the sockets watching its users (or everyone), through a bounded inbox per
//! socket. Whatever cannot be applied that way (an inbox overflowed, a
//! notice too big to carry increments, a gap in the numbers, a lost
//! listener) makes the affected sockets re-read their views: slower, never
//! wrong. Each socket sends what changed at most `--live-updates-per-sec`
//! times a second, with absolute values (a delta can be applied twice);
//! a socket whose outbound queue is full gets a fresh snapshot instead of
//! the deltas it missed, and one stuck for 30 s is closed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use futures::SinkExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokenusage_projector::notify::{Delta, Notice};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::audit::{self, AuditSlot, RequestFacts};
use crate::auth::{self, AuthUser};
use crate::error::ApiError;
use crate::history::cache::SeriesCache;
use crate::history::plan::{GroupBy, Plan};
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
/// Ping, idle, stuck and account checks.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(20);
/// A freshness-only message (no data changed) goes out at most this often.
const FRESHNESS_EVERY: Duration = Duration::from_secs(5);
/// "Not armed" for a timer.
const FAR: Duration = Duration::from_secs(86_400 * 365);
/// Notices queued for one socket; past this it re-reads its views instead.
const INBOX: usize = 32;

/// What the hub hands one socket.
#[derive(Debug)]
enum Update {
    /// Committed increments `rows[range]` of the commit numbered `seq`.
    Rows { seq: i64, rows: Arc<Vec<Delta>>, range: Range<usize> },
    /// Re-read the views (the increments were not sent or may be lost).
    Resync,
}

/// One socket as the hub sees it.
#[derive(Debug)]
struct Member {
    inbox: mpsc::Sender<Update>,
    /// Set when an update was not delivered: the socket re-reads its views.
    resync: Arc<AtomicBool>,
    /// Watches everyone's usage (an admin's `user=*` view).
    all: bool,
    users: Vec<String>,
}

impl Member {
    fn deliver(&self, u: Update) {
        if self.inbox.try_send(u).is_err() {
            self.resync.store(true, Ordering::Release);
        }
    }

    fn resync(&self) {
        self.resync.store(true, Ordering::Release);
        let _ = self.inbox.try_send(Update::Resync);
    }
}

/// Which sockets watch whom.
#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    members: HashMap<u64, Member>,
    by_user: HashMap<String, Vec<u64>>,
    all: HashSet<u64>,
}

impl Registry {
    fn unindex(&mut self, id: u64) {
        let Some(m) = self.members.get(&id) else { return };
        for u in &m.users {
            if let Some(ids) = self.by_user.get_mut(u) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.by_user.remove(u);
                }
            }
        }
        self.all.remove(&id);
    }

    fn set_scope(&mut self, id: u64, all: bool, users: Vec<String>) {
        self.unindex(id);
        let Some(m) = self.members.get_mut(&id) else { return };
        if all {
            self.all.insert(id);
        }
        for u in &users {
            self.by_user.entry(u.clone()).or_default().push(id);
        }
        m.all = all;
        m.users = users;
    }

    fn leave(&mut self, id: u64) {
        self.unindex(id);
        self.members.remove(&id);
    }

    fn resync_all(&self) {
        self.members.values().for_each(Member::resync);
    }

    /// Routes one notice. Each socket gets each row at most once: sockets
    /// watching everyone get the whole notice, the others their users' runs.
    fn route(&self, notice: Notice) {
        if notice.all {
            return self.resync_all();
        }
        if let Some(users) = &notice.users {
            let mut targets: HashSet<u64> = self.all.clone();
            for u in users {
                targets.extend(self.by_user.get(u).into_iter().flatten());
            }
            return targets.iter().filter_map(|id| self.members.get(id)).for_each(Member::resync);
        }
        let (seq, rows) = (notice.seq, Arc::new(notice.rows));
        let mut start = 0;
        while start < rows.len() {
            let user = rows[start].user();
            let end = start + rows[start..].iter().take_while(|r| r.user() == user).count();
            for id in self.by_user.get(user).into_iter().flatten() {
                if let Some(m) = self.members.get(id).filter(|m| !m.all) {
                    m.deliver(Update::Rows { seq, rows: rows.clone(), range: start..end });
                }
            }
            start = end;
        }
        for m in self.all.iter().filter_map(|id| self.members.get(id)) {
            m.deliver(Update::Rows { seq, rows: rows.clone(), range: 0..rows.len() });
        }
    }
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
    registry: Mutex<Registry>,
    freshness_tx: watch::Sender<Freshness>,
    sockets_per_user: Mutex<HashMap<String, usize>>,
}

impl Live {
    pub(crate) fn new() -> Self {
        Self {
            registry: Mutex::new(Registry::default()),
            freshness_tx: watch::channel(Freshness::default()).0,
            sockets_per_user: Mutex::new(HashMap::new()),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the notification listener and the freshness poller.
    pub(crate) fn spawn_hub(self: &Arc<Self>, pool: PgPool, shutdown: CancellationToken, cache: Arc<SeriesCache>) {
        tokio::spawn(listen(self.clone(), pool.clone(), shutdown.clone(), cache));
        tokio::spawn(poll_freshness(pool, self.freshness_tx.clone(), shutdown));
    }

    /// Joins the hub; the socket leaves with the returned guard.
    fn join(self: &Arc<Self>) -> (Membership, mpsc::Receiver<Update>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(INBOX);
        let resync = Arc::new(AtomicBool::new(false));
        let mut r = self.registry();
        r.next_id += 1;
        let id = r.next_id;
        r.members.insert(id, Member { inbox: tx, resync: resync.clone(), all: false, users: Vec::new() });
        (Membership { live: self.clone(), id }, rx, resync)
    }

    /// Applies a notice: the series cache first, then the sockets, in this
    /// order, so no socket can re-read a view from the cache and get
    /// numbers older than the change it was told about.
    fn publish(&self, cache: &SeriesCache, notice: Notice) {
        if notice.all {
            cache.invalidate_all();
        } else if let Some(users) = &notice.users {
            cache.invalidate_users(users.iter());
        } else {
            let mut users: Vec<&String> = notice.rows.iter().map(|r| &r.0).collect();
            users.dedup();
            cache.invalidate_users(users.into_iter());
        }
        self.registry().route(notice);
    }

    /// Anything may have changed: every view is re-read.
    fn resync_everything(&self, cache: &SeriesCache) {
        cache.invalidate_all();
        self.registry().resync_all();
    }
}

/// A socket's place in the hub.
struct Membership {
    live: Arc<Live>,
    id: u64,
}

impl Membership {
    /// Whose notices this socket receives, from its subscriptions' subjects.
    fn set_scope<'a>(&self, subjects: impl Iterator<Item = &'a Subject>) {
        let mut all = false;
        let mut users: Vec<String> = Vec::new();
        for s in subjects {
            match s {
                Subject::All => all = true,
                Subject::User(u) if !users.contains(u) => users.push(u.clone()),
                Subject::User(_) => {}
            }
        }
        self.live.registry().set_scope(self.id, all, users);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.live.registry().leave(self.id);
    }
}

async fn listen(live: Arc<Live>, pool: PgPool, shutdown: CancellationToken, cache: Arc<SeriesCache>) {
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
            tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
        }
        // Listening now: every later commit will be heard. Anything before
        // may have been missed, so every view is re-read.
        let mut last: i64 = match sqlx::query_scalar("select seq from rollup_sequence").fetch_one(&pool).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "live updates: cannot read the rollup sequence; retrying");
                tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        live.resync_everything(&cache);
        loop {
            let n = tokio::select! {
                () = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(Some(n)) => match Notice::decode(n.payload()) {
                    // Commits are numbered without gaps and heard in order
                    // (a commit's notices share its number): a gap means
                    // notices were lost.
                    Some(notice) if notice.seq <= last + 1 => {
                        last = last.max(notice.seq);
                        live.publish(&cache, notice);
                    }
                    Some(notice) => {
                        tracing::warn!(
                            expected = last + 1,
                            got = notice.seq,
                            "live updates: notifications were missed; re-reading every view"
                        );
                        last = notice.seq;
                        live.resync_everything(&cache);
                    }
                    None => {
                        tracing::warn!("live updates: a notification was not understood; re-reading every view");
                        live.resync_everything(&cache);
                    }
                },
                // The connection dropped and was re-established: notices
                // may have been lost meanwhile.
                Ok(None) => {
                    if let Ok(s) =
                        sqlx::query_scalar::<_, i64>("select seq from rollup_sequence").fetch_one(&pool).await
                    {
                        last = s;
                    }
                    live.resync_everything(&cache);
                }
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

/// The live WebSocket: authenticated before the upgrade with the
/// subprotocols `tokenusage.v1` and `bearer.<access token>` (never a token
/// in the URL). Its messages are in docs/asyncapi.yaml and docs/LIVE.md.
#[utoipa::path(get, path = "/api/v1/live", tag = "live",
    params(("sec-websocket-protocol" = String, Header, description = "`tokenusage.v1, bearer.<access token>`")),
    responses((status = 101, description = "Switched to the WebSocket protocol `tokenusage.v1`")))]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    facts: RequestFacts,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !crate::origin::allowed(&headers, state.config.tls_in_front(), &state.config.live_allowed_origins) {
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
            let (membership, inbox, resync) = state.live.join();
            let fut = Socket::new(state, user, facts, membership).run(socket, guard, inbox, resync);
            tracker.track_future(fut).await;
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

/// A client message the socket refuses, for the audit trail and the client.
struct Refusal {
    action: &'static str,
    /// The subscription it was about, if any.
    id: Option<String>,
    /// Whose data it asked for, if any.
    subject: Option<String>,
    status: u16,
    code: &'static str,
    message: String,
}

/// One subscription's view and what the client has been sent.
struct Sub {
    view: View,
    plan: Plan,
    subject: Subject,
    open_ended: bool,
    data: SeriesData,
    /// The rollup sequence `data` includes: later increments are added.
    seq: i64,
    /// Buckets changed since the last send.
    changed: Vec<usize>,
    needs_snapshot: bool,
}

impl Sub {
    fn new(view: View, plan: Plan, subject: Subject, open_ended: bool, snap: &query::Snapshot) -> Self {
        Sub {
            view,
            plan,
            subject,
            open_ended,
            data: snap.data.clone(),
            seq: snap.seq,
            changed: Vec::new(),
            needs_snapshot: false,
        }
    }

    fn reset(&mut self, snap: &query::Snapshot) {
        self.data = snap.data.clone();
        self.seq = snap.seq;
        self.changed.clear();
        self.needs_snapshot = false;
    }

    /// Adds committed increments numbered `seq` that fall in this view (the
    /// same rows, filters and buckets the REST read sums).
    fn apply(&mut self, seq: i64, rows: &[Delta]) {
        if seq <= self.seq || self.needs_snapshot {
            return;
        }
        let n = self.plan.edges.len();
        let f = &self.view.filters;
        for d in rows {
            if matches!(&self.subject, Subject::User(u) if u != d.user())
                || !(f.activity.is_empty() || f.activity.iter().any(|a| a == d.activity()))
                || !(f.model.is_empty() || f.model.iter().any(|m| m == d.model()))
            {
                continue;
            }
            let Some(t) = DateTime::from_timestamp(d.minute(), 0) else { continue };
            if t < self.plan.start() || t >= self.plan.end {
                continue;
            }
            let i = self.plan.edges.partition_point(|e| *e <= t) - 1;
            let (input, output, events) = d.sums();
            let sums = Sums::new(input, output, events);
            self.data.totals[i].add(&sums);
            let key = match self.view.group {
                GroupBy::None => None,
                GroupBy::Activity => Some(d.activity()),
                GroupBy::Model => Some(d.model()),
            };
            if let Some(key) = key {
                match self.data.groups.get_mut(key) {
                    Some(v) => v[i].add(&sums),
                    None => {
                        let mut v = vec![Sums::default(); n];
                        v[i] = sums;
                        self.data.groups.insert(key.to_owned(), v);
                    }
                }
            }
            if self.changed.last() != Some(&i) {
                self.changed.push(i);
                if self.changed.len() > 4 * n.max(64) {
                    self.changed.sort_unstable();
                    self.changed.dedup();
                }
            }
        }
    }
}

struct Socket {
    state: AppState,
    user: AuthUser,
    facts: RequestFacts,
    subs: BTreeMap<String, Sub>,
    membership: Membership,
    /// Messages not yet handed to the WebSocket (at most `OUT_QUEUE`, plus
    /// a close frame).
    out: VecDeque<Message>,
    /// A close frame is queued: nothing else is sent.
    closing: bool,
    stuck_since: Option<Instant>,
    last_freshness: Option<Freshness>,
    /// Why the server closed the socket (`client` if it did not).
    closed_for: &'static str,
}

/// What happened on the WebSocket.
enum Io {
    Read(Option<Result<Message, axum::Error>>),
    WriteFailed,
}

/// Drives one socket's I/O from its own task: hands queued messages to the
/// WebSocket while it accepts them, flushes, and returns when a message
/// arrives (or writing failed). One task per socket, no writer task and no
/// channel between them: less memory and one wake-up less per message.
fn poll_io(
    ws: &mut WebSocket,
    out: &mut VecDeque<Message>,
    unflushed: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Io> {
    use futures::{Sink, Stream};
    use std::task::Poll;
    while !out.is_empty() {
        match Pin::new(&mut *ws).poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                let Some(m) = out.pop_front() else { break };
                if Pin::new(&mut *ws).start_send(m).is_err() {
                    return Poll::Ready(Io::WriteFailed);
                }
                *unflushed = true;
            }
            Poll::Ready(Err(_)) => return Poll::Ready(Io::WriteFailed),
            Poll::Pending => break,
        }
    }
    if *unflushed {
        match Pin::new(&mut *ws).poll_flush(cx) {
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(_)) => return Poll::Ready(Io::WriteFailed),
            Poll::Pending => {}
        }
    }
    Pin::new(&mut *ws).poll_next(cx).map(Io::Read)
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
    fn new(state: AppState, user: AuthUser, facts: RequestFacts, membership: Membership) -> Self {
        Self {
            state,
            user,
            facts,
            subs: BTreeMap::new(),
            membership,
            out: VecDeque::new(),
            closing: false,
            stuck_since: None,
            last_freshness: None,
            closed_for: "client",
        }
    }

    /// Queues a message; false if the queue is full (the caller resyncs later).
    fn send(&mut self, v: &Value) -> bool {
        if self.closing {
            return false;
        }
        if self.out.len() >= OUT_QUEUE {
            self.stuck_since.get_or_insert_with(Instant::now);
            for s in self.subs.values_mut() {
                s.needs_snapshot = true;
            }
            return false;
        }
        self.out.push_back(text(v));
        true
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
        if !self.closing {
            self.closing = true;
            self.out.push_back(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })));
        }
    }

    async fn run(
        mut self,
        mut ws: WebSocket,
        _guard: SocketSlot,
        mut inbox: mpsc::Receiver<Update>,
        resync: Arc<AtomicBool>,
    ) {
        metrics::gauge!("tokenusage_live_sockets").increment(1.0);
        let shutdown = self.state.shutdown.clone();
        let mut freshness = self.state.live.freshness_tx.subscribe();
        let rate = self.state.config.live_updates_per_sec.max(1);
        let period = Duration::from_millis(1000 / u64::from(rate));
        // Leading edge: after a quiet spell a change goes out at once; while
        // changes keep coming, at most `rate` data messages a second. The
        // timer is armed only while something waits (10k idle sockets
        // cost no wake-ups).
        let mut last_sent = Instant::now() - period;
        // The last attempt, sent or not (a stuck client): retried a period later.
        let mut last_flush = last_sent;
        let mut last_freshness_sent = Instant::now();
        let mut freshness_pending = false;
        let timer = tokio::time::sleep(FAR);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
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
        let mut unflushed = false;
        while !self.closing {
            // When the next send is due: data after the rate limit, a
            // freshness-only message at most every FRESHNESS_EVERY, an
            // open-ended view's next bucket when it begins.
            let due = [
                self.has_pending_data().then_some(last_flush.max(last_sent) + period),
                (freshness_pending && !self.subs.is_empty()).then_some(last_freshness_sent + FRESHNESS_EVERY),
                self.next_growth().map(|g| g.max(last_flush + period)),
            ]
            .into_iter()
            .flatten()
            .min();
            if due != armed {
                armed = due;
                timer
                    .as_mut()
                    .reset(due.map_or_else(|| tokio::time::Instant::now() + FAR, tokio::time::Instant::from_std));
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    self.close(close::GOING_AWAY, "server shutting down");
                }
                io = std::future::poll_fn(|cx| poll_io(&mut ws, &mut self.out, &mut unflushed, cx)) => match io {
                    Io::WriteFailed => break,
                    Io::Read(Some(Ok(Message::Text(t)))) => {
                        last_heard = Instant::now();
                        if limiter.check().is_err() {
                            strikes += 1;
                            let refusal = Refusal { action: "live.message", id: None, subject: None, status: 429,
                                code: "rate_limited", message: "too many messages; slow down".into() };
                            Box::pin(self.refuse(refusal)).await;
                            if strikes > 20 {
                                self.close(close::POLICY, "too many messages");
                            }
                            continue;
                        }
                        if let Some(new_expiry) = Box::pin(self.on_client(&t)).await {
                            expiry.as_mut().reset(tokio::time::Instant::now() + new_expiry);
                        }
                    }
                    Io::Read(Some(Ok(Message::Binary(_)))) => {
                        let refusal = Refusal { action: "live.message", id: None, subject: None, status: 400,
                            code: "unsupported", message: "binary messages are not part of the protocol".into() };
                        Box::pin(self.refuse(refusal)).await;
                    }
                    Io::Read(Some(Ok(Message::Pong(_) | Message::Ping(_)))) => last_heard = Instant::now(),
                    Io::Read(Some(Ok(Message::Close(_))) | None) => break,
                    Io::Read(Some(Err(e))) => {
                        tracing::debug!(error = %e, "live socket read failed");
                        break;
                    }
                },
                u = inbox.recv() => {
                    let Some(u) = u else { break };
                    self.on_update(u);
                    self.take_updates(&mut inbox, &resync);
                    if last_sent.elapsed() >= period {
                        let current = freshness.borrow_and_update().clone();
                        last_flush = Instant::now();
                        if self.flush_logged(&current).await {
                            last_sent = Instant::now();
                            freshness_pending = false;
                        }
                    }
                }
                () = &mut timer => {
                    armed = None;
                    self.take_updates(&mut inbox, &resync);
                    let current = freshness.borrow_and_update().clone();
                    let flush = last_sent.elapsed() >= period;
                    if flush {
                        last_flush = Instant::now();
                    }
                    if flush && self.flush_logged(&current).await {
                        last_sent = Instant::now();
                        freshness_pending = false;
                    } else if freshness_pending && last_freshness_sent.elapsed() >= FRESHNESS_EVERY {
                        if self.last_freshness.as_ref() != Some(&current) && !self.subs.is_empty() {
                            self.send(&json!({"type": "freshness", "freshness": current}));
                            last_freshness_sent = Instant::now();
                            self.last_freshness = Some(current);
                        }
                        freshness_pending = false;
                    }
                }
                r = freshness.changed() => {
                    // The sender lives as long as the process.
                    if r.is_ok() {
                        freshness_pending = self.last_freshness.as_ref() != Some(&*freshness.borrow());
                    }
                }
                _ = housekeeping.tick() => {
                    if last_heard.elapsed() > idle {
                        self.close(close::IDLE, "idle");
                    } else if self.stuck_since.is_some_and(|t| t.elapsed() > STUCK_LIMIT) {
                        self.close(close::TOO_SLOW, "the client does not keep up");
                    } else if matches!(Box::pin(self.state.users.status(&self.state.pool, &self.user.id)).await,
                        Ok(Some(s)) if s.disabled) {
                        self.close(close::ACCOUNT_DISABLED, "account disabled");
                    } else if self.out.len() < OUT_QUEUE {
                        self.out.push_back(Message::Ping(Default::default()));
                    }
                }
                () = &mut expiry => {
                    self.send(&json!({"type": "closing", "code": close::TOKEN_EXPIRED, "reason": "token expired"}));
                    self.close(close::TOKEN_EXPIRED, "token expired");
                }
            }
        }
        // Send what is queued (the close frame last); a client that does
        // not read cannot be sent it, so past a short grace the connection
        // is simply dropped.
        if self.closing {
            let out = std::mem::take(&mut self.out);
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                for m in out {
                    ws.feed(m).await?;
                }
                ws.flush().await
            })
            .await;
        }
        metrics::gauge!("tokenusage_live_sockets").decrement(1.0);
        metrics::counter!("tokenusage_live_sockets_closed_total", "reason" => self.closed_for).increment(1);
    }

    /// When the next bucket of an open-ended view begins.
    fn next_growth(&self) -> Option<Instant> {
        let end = self.subs.values().filter(|s| s.open_ended).map(|s| s.plan.end).min()?;
        let wait = (end - Utc::now()).to_std().unwrap_or_default();
        Some(Instant::now() + wait)
    }

    /// Hears exactly the subjects of the current subscriptions.
    fn rescope(&self) {
        self.membership.set_scope(self.subs.values().map(|s| &s.subject));
    }

    fn has_pending_data(&self) -> bool {
        self.subs.values().any(|s| s.needs_snapshot || !s.changed.is_empty())
    }

    /// `flush`, logging a failed read; true if data went out.
    async fn flush_logged(&mut self, freshness: &Freshness) -> bool {
        match Box::pin(self.flush(freshness)).await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(error = %e, "live update failed");
                self.send(&error_msg(None, "update_failed", "could not read the latest numbers; retrying"));
                false
            }
        }
    }

    fn until_expiry(&self) -> Duration {
        let now = jsonwebtoken::get_current_timestamp();
        Duration::from_secs(self.user.expires_at.saturating_sub(now))
    }

    /// Audits a refused message, then tells the client. Refusals are on the
    /// record like any request (docs/SECURITY.md); if the record cannot be
    /// written the client is still told no, and nothing is served.
    async fn refuse(&mut self, r: Refusal) {
        let action = audit::Action {
            actor: (&self.user.id, self.user.role),
            action: r.action,
            subject: r.subject.as_deref(),
            params: json!({ "id": r.id, "code": r.code }),
            rows: None,
            status: r.status,
        };
        if let Err(e) = audit::record_action(&self.state, &self.facts, action).await {
            tracing::warn!(error = %e, "a refused live message could not be audited");
        }
        self.send(&error_msg(r.id.as_deref(), r.code, &r.message));
    }

    /// Handles a client message; returns a new time-to-expiry after re-authentication.
    async fn on_client(&mut self, raw: &str) -> Option<Duration> {
        let msg: ClientMessage = match serde_json::from_str(raw) {
            Ok(m) => m,
            Err(e) => {
                let message = format!("not a protocol message: {e}");
                let refusal = Refusal {
                    action: "live.message",
                    id: None,
                    subject: None,
                    status: 400,
                    code: "invalid_message",
                    message,
                };
                self.refuse(refusal).await;
                return None;
            }
        };
        match msg {
            ClientMessage::Ping => {
                self.send(&json!({"type": "pong"}));
            }
            ClientMessage::Unsubscribe { id } => {
                if self.subs.remove(&id).is_some() {
                    self.rescope();
                    self.send(&json!({"type": "unsubscribed", "id": id}));
                } else {
                    let refusal = Refusal {
                        action: "live.unsubscribe",
                        id: Some(id),
                        subject: None,
                        status: 400,
                        code: "unknown_subscription",
                        message: "no subscription with this id".into(),
                    };
                    self.refuse(refusal).await;
                }
            }
            ClientMessage::Auth { token } => {
                let outcome = auth::authenticate(&self.state, &token).await;
                let status = match &outcome {
                    Ok(u) if u.id == self.user.id => 200,
                    Ok(_) => 403,
                    Err(_) => 401,
                };
                if status == 200 {
                    let action = audit::Action {
                        actor: (&self.user.id, self.user.role),
                        action: "live.auth",
                        subject: Some(&self.user.id),
                        params: json!({}),
                        rows: None,
                        status,
                    };
                    if audit::record_action(&self.state, &self.facts, action).await.is_err() {
                        self.send(&error_msg(None, "audit_unavailable", "cannot record the renewal; retry shortly"));
                        return None;
                    }
                    if let Ok(u) = outcome {
                        self.user = u;
                    }
                    self.send(&json!({"type": "authenticated", "expires_at": self.user.expires_at}));
                    return Some(self.until_expiry());
                }
                let (code, message) = if status == 403 {
                    ("wrong_user", "the new token belongs to someone else")
                } else {
                    ("unauthorized", "the token is not valid")
                };
                let refusal =
                    Refusal { action: "live.auth", id: None, subject: None, status, code, message: message.into() };
                self.refuse(refusal).await;
            }
            ClientMessage::Subscribe { id, view } => {
                if let Err(e) = self.subscribe(&id, &view).await {
                    let (code, message) = e.code_and_message();
                    // The user the view asked about, whether or not it was allowed.
                    let subject = match view.get("user") {
                        Some(Value::String(u)) => u.clone(),
                        _ => self.user.id.clone(),
                    };
                    let status = e.status().as_u16();
                    let refusal = Refusal {
                        action: "live.subscribe",
                        id: Some(id),
                        subject: Some(subject),
                        status,
                        code,
                        message,
                    };
                    self.refuse(refusal).await;
                }
            }
        }
        None
    }

    async fn subscribe(&mut self, id: &str, raw: &BTreeMap<String, Value>) -> Result<(), ApiError> {
        if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
            return Err(ApiError::bad_request("invalid_id", "`id` must be 1 to 64 printable characters"));
        }
        if !self.subs.contains_key(id) && self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::bad_request(
                "too_many_subscriptions",
                format!("at most {MAX_SUBSCRIPTIONS} per socket"),
            ));
        }
        let params = view_params(raw);
        crate::hygiene::check_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
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
        // Hear this subject's changes before reading, so none committed
        // after the read can be missed (those before it are skipped by seq).
        self.membership.set_scope(self.subs.values().map(|s| &s.subject).chain([&subject]));
        let snap =
            match self.state.series_cache.read(&self.state.pool, &subject, &plan, view.group, &view.filters).await {
                Ok(snap) => snap,
                Err(e) => {
                    self.rescope();
                    return Err(e.into());
                }
            };
        let audit_params = json!({"id": id, "from": view.from, "to": if open_ended { Value::Null } else { json!(view.to) },
            "granularity": plan.granularity, "tz": view.tz.name(), "group": view.group, "filters": view.filters});
        let action = audit::Action {
            actor: (&self.user.id, self.user.role),
            action: "live.subscribe",
            subject: Some(subject.label()),
            params: audit_params,
            rows: Some(snap.data.totals.len() as i64),
            status: 200,
        };
        audit::record_action(&self.state, &self.facts, action).await.map_err(|_| {
            self.rescope();
            ApiError::AuditUnavailable
        })?;
        let sub = Sub::new(view, plan, subject, open_ended, &snap);
        let current = self.state.live.freshness_tx.borrow().clone();
        let snapshot = snapshot_msg(id, &sub, &current);
        self.subs.insert(id.to_owned(), sub);
        self.send(&snapshot);
        Ok(())
    }

    fn on_update(&mut self, u: Update) {
        match u {
            Update::Rows { seq, rows, range } => {
                let rows = &rows[range];
                self.subs.values_mut().for_each(|s| s.apply(seq, rows));
            }
            Update::Resync => self.subs.values_mut().for_each(|s| s.needs_snapshot = true),
        }
    }

    /// Applies everything queued at once (one send covers it), then marks
    /// every view for a re-read if an update could not be delivered.
    fn take_updates(&mut self, inbox: &mut mpsc::Receiver<Update>, resync: &AtomicBool) {
        while let Ok(u) = inbox.try_recv() {
            self.on_update(u);
        }
        if resync.swap(false, Ordering::AcqRel) {
            self.subs.values_mut().for_each(|s| s.needs_snapshot = true);
        }
    }

    /// Sends what changed since the last send; true if data went out.
    async fn flush(&mut self, freshness: &Freshness) -> Result<bool, sqlx::Error> {
        if self.out.len() < OUT_QUEUE / 2 {
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
                sub.reset(&fresh);
                let msg = snapshot_msg(&id, sub, freshness);
                sent_data |= self.send(&msg);
                continue;
            }
            if let Some(delta) = delta(&id, sub, freshness) {
                sent_data |= self.send(&delta);
            }
        }
        if sent_data {
            self.last_freshness = Some(freshness.clone());
        }
        Ok(sent_data)
    }
}

fn snapshot_msg(id: &str, sub: &Sub, freshness: &Freshness) -> Value {
    let series = series_response(&sub.view, &sub.plan, &sub.subject, &sub.data);
    json!({"type": "snapshot", "id": id, "live": sub.open_ended, "series": series, "freshness": freshness})
}

/// The buckets changed since the last send, with absolute values, or `None`.
fn delta(id: &str, sub: &mut Sub, freshness: &Freshness) -> Option<Value> {
    if sub.changed.is_empty() {
        return None;
    }
    let mut changed = std::mem::take(&mut sub.changed);
    changed.sort_unstable();
    changed.dedup();
    let buckets: Vec<Value> = changed
        .into_iter()
        .map(|i| {
            let sums = &sub.data.totals[i];
            let groups: serde_json::Map<String, Value> = sub
                .data
                .groups
                .iter()
                .map(|(key, vals)| (key.clone(), serde_json::to_value(vals[i]).unwrap_or_default()))
                .collect();
            json!({
                "index": i, "start": fmt_time(sub.plan.edges[i], &sub.view.tz), "end": fmt_time(sub.plan.bucket_end(i), &sub.view.tz),
                "input_tokens": sums.input_tokens, "output_tokens": sums.output_tokens, "total_tokens": sums.total_tokens,
                "events": sums.events, "groups": groups,
            })
        })
        .collect();
    Some(json!({"type": "delta", "id": id, "buckets": buckets, "total": sub.data.total(), "freshness": freshness}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, minute: i64, input: i64) -> Delta {
        Delta(user.into(), "chat".into(), "m".into(), minute, input, 0, 1)
    }

    fn member(r: &mut Registry, capacity: usize) -> (u64, mpsc::Receiver<Update>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(capacity);
        let resync = Arc::new(AtomicBool::new(false));
        r.next_id += 1;
        r.members.insert(r.next_id, Member { inbox: tx, resync: resync.clone(), all: false, users: Vec::new() });
        (r.next_id, rx, resync)
    }

    /// Every row a socket received, flattened.
    fn received(rx: &mut mpsc::Receiver<Update>) -> Vec<(i64, Delta)> {
        let mut out = Vec::new();
        while let Ok(u) = rx.try_recv() {
            if let Update::Rows { seq, rows, range } = u {
                out.extend(rows[range].iter().map(|d| (seq, d.clone())));
            }
        }
        out
    }

    #[test]
    fn notices_reach_only_their_users_sockets_and_each_row_once() {
        let mut r = Registry::default();
        let (alice, mut alice_rx, _) = member(&mut r, 8);
        let (bob, mut bob_rx, _) = member(&mut r, 8);
        let (admin, mut admin_rx, _) = member(&mut r, 8);
        r.set_scope(alice, false, vec!["alice".into()]);
        r.set_scope(bob, false, vec!["bob".into()]);
        // An admin watching alice and everyone at once gets each row once.
        r.set_scope(admin, true, vec!["alice".into()]);
        let rows = vec![row("alice", 60, 1), row("alice", 120, 2), row("carol", 60, 3)];
        r.route(Notice { seq: 5, rows: rows.clone(), users: None, all: false });
        assert_eq!(received(&mut alice_rx), vec![(5, rows[0].clone()), (5, rows[1].clone())]);
        assert!(received(&mut bob_rx).is_empty(), "bob hears nothing of alice or carol");
        assert_eq!(received(&mut admin_rx).len(), 3);
        // Leaving unindexes: nothing is routed to a closed socket.
        r.leave(alice);
        assert!(r.by_user.get("alice").is_some_and(|ids| ids == &vec![admin]));
    }

    #[test]
    fn a_full_inbox_or_a_notice_without_increments_asks_for_a_re_read() {
        let mut r = Registry::default();
        let (alice, mut rx, resync) = member(&mut r, 1);
        r.set_scope(alice, false, vec!["alice".into()]);
        r.route(Notice { seq: 1, rows: vec![row("alice", 60, 1)], users: None, all: false });
        assert!(!resync.load(Ordering::Acquire));
        r.route(Notice { seq: 2, rows: vec![row("alice", 60, 1)], users: None, all: false });
        assert!(resync.swap(false, Ordering::AcqRel), "the second notice did not fit: re-read");
        let _ = received(&mut rx);
        r.route(Notice { seq: 3, rows: Vec::new(), users: Some(vec!["bob".into()]), all: false });
        assert!(!resync.load(Ordering::Acquire), "bob's re-read is not alice's");
        r.route(Notice { seq: 4, rows: Vec::new(), users: Some(vec!["alice".into()]), all: false });
        assert!(resync.swap(false, Ordering::AcqRel));
        r.route(Notice { seq: 5, rows: Vec::new(), users: None, all: true });
        assert!(resync.load(Ordering::Acquire));
    }
}
