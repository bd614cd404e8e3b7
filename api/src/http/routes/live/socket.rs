//! One socket's task: it drives its own writes (no writer task, no channel),
//! applies the hub's updates to its views, and sends what changed at most
//! `--live-updates-per-sec` times a second with a leading edge, plus
//! pings, idle and stuck-client cut-offs, token expiry and account checks.
//!
//! The loop is written against any `Sink<Message> + Stream<Item =
//! Result<Message, E>>`, so tests drive it through in-memory channels; what
//! each client message does is in `requests.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::{Sink, SinkExt, Stream};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokenusage_schema::freshness::Freshness;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::audit::RequestFacts;
use crate::http::AppState;
use crate::http::extract::Caller;
use crate::live::hub::{Membership, SocketSlot, Update};
use crate::live::protocol::{MAX_SUBSCRIPTIONS, PROTOCOL, ServerMessage, close};
use crate::live::view::Sub;

/// Messages waiting for the transport at most (plus a close frame); a
/// socket past it is "stuck" and gets snapshots instead of its deltas.
pub(super) const OUT_QUEUE: usize = 32;
/// A socket stuck this long is closed.
const STUCK_LIMIT: Duration = Duration::from_secs(30);
/// Ping, idle, stuck and account checks.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(20);
/// A freshness-only message (no data changed) goes out at most this often.
const FRESHNESS_EVERY: Duration = Duration::from_secs(5);
/// "Not armed" for a timer.
const FAR: Duration = Duration::from_secs(86_400 * 365);
/// Client messages: 10 a second, bursts of 30; past 20 refusals, closed.
const MESSAGES_PER_SEC: u32 = 10;
const MESSAGE_BURST: u32 = 30;
const STRIKES: u32 = 20;

/// When the next send is due. Leading edge: after a quiet spell a change
/// goes out at once; while changes keep coming, at most one data message a
/// `period`. Nothing is armed while nothing waits, so idle sockets cost no
/// wake-ups.
#[derive(Debug)]
pub(super) struct Pacing {
    period: Duration,
    /// The last data message sent.
    last_sent: Instant,
    /// The last attempt, sent or not (a stuck client): retried a period later.
    last_flush: Instant,
    last_freshness_sent: Instant,
    /// The freshness changed since it was last sent.
    pub freshness_pending: bool,
}

impl Pacing {
    pub(super) fn new(updates_per_sec: u32, now: Instant) -> Self {
        let period = Duration::from_millis(1000 / u64::from(updates_per_sec.max(1)));
        Self {
            period,
            last_sent: now - period,
            last_flush: now - period,
            last_freshness_sent: now,
            freshness_pending: false,
        }
    }

    /// The earliest instant something should be sent: pending data after
    /// the rate limit, pending freshness after `FRESHNESS_EVERY`, an
    /// open-ended view's next bucket when it begins.
    pub(super) fn due(&self, pending_data: bool, subscribed: bool, next_growth: Option<Instant>) -> Option<Instant> {
        [
            pending_data.then_some(self.last_flush.max(self.last_sent) + self.period),
            (self.freshness_pending && subscribed).then_some(self.last_freshness_sent + FRESHNESS_EVERY),
            next_growth.map(|g| g.max(self.last_flush + self.period)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether data may go out now (the rate limit has passed).
    pub(super) fn may_send(&self, now: Instant) -> bool {
        now.duration_since(self.last_sent) >= self.period
    }

    pub(super) fn attempted(&mut self, now: Instant) {
        self.last_flush = now;
    }

    pub(super) fn sent(&mut self, now: Instant) {
        self.last_sent = now;
        self.freshness_pending = false;
    }

    pub(super) fn freshness_due(&self, now: Instant) -> bool {
        self.freshness_pending && now.duration_since(self.last_freshness_sent) >= FRESHNESS_EVERY
    }

    pub(super) fn freshness_sent(&mut self, now: Instant) {
        self.last_freshness_sent = now;
        self.freshness_pending = false;
    }
}

/// One live socket.
pub(crate) struct Socket {
    pub(super) state: AppState,
    pub(super) user: Caller,
    pub(super) facts: RequestFacts,
    pub(super) subs: BTreeMap<String, Sub>,
    pub(super) membership: Membership,
    inbox: mpsc::Receiver<Update>,
    /// Set by the hub when an update could not be delivered.
    resync: Arc<AtomicBool>,
    /// Messages not yet handed to the transport.
    pub(super) out: VecDeque<Message>,
    /// A close frame is queued: nothing else is sent.
    closing: bool,
    pub(super) stuck_since: Option<Instant>,
    pub(super) last_freshness: Option<Freshness>,
    /// Why the server closed the socket (`client` if it did not).
    closed_for: &'static str,
    /// Budget changes, once the client asked for them.
    pub(super) budgets_watch: Option<tokio::sync::watch::Receiver<u64>>,
    pub(super) last_budgets: Option<Vec<crate::budgets::board::BudgetState>>,
    /// The people whose budgets this socket's pushes have shown and the
    /// audit trail already names (a push showing someone new records them).
    pub(super) budgets_covered: std::collections::BTreeSet<String>,
    /// A `watch_budgets` was asked for and its answer is not on record yet.
    pub(super) budgets_watch_asked: bool,
    /// Reconciliation alerts, once an admin asked for them, and the last
    /// outbox row pushed.
    pub(super) reconciliation_watch: Option<tokio::sync::watch::Receiver<u64>>,
    pub(super) reconciliation_seen: i64,
}

/// The next budget change, or never when budgets are not watched.
async fn budget_change(w: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = w
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// What happened on the transport.
enum Io<E> {
    Read(Option<Result<Message, E>>),
    WriteFailed,
}

/// Hands queued messages to the transport while it accepts them, flushes,
/// and returns when a message arrives (or writing failed).
fn poll_io<S, E>(
    ws: &mut S,
    out: &mut VecDeque<Message>,
    unflushed: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Io<E>>
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
{
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

impl Socket {
    pub(crate) fn new(
        state: AppState,
        user: Caller,
        facts: RequestFacts,
        membership: Membership,
        inbox: mpsc::Receiver<Update>,
        resync: Arc<AtomicBool>,
    ) -> Self {
        Self {
            state,
            user,
            facts,
            subs: BTreeMap::new(),
            membership,
            inbox,
            resync,
            out: VecDeque::new(),
            closing: false,
            stuck_since: None,
            last_freshness: None,
            closed_for: "client",
            budgets_watch: None,
            last_budgets: None,
            budgets_covered: std::collections::BTreeSet::new(),
            budgets_watch_asked: false,
            reconciliation_watch: None,
            reconciliation_seen: 0,
        }
    }

    /// Queues a message; false if the queue is full (the views then re-read
    /// once the client catches up).
    pub(super) fn send(&mut self, m: &ServerMessage<'_>) -> bool {
        self.send_encoded(m.encode())
    }

    /// [`Socket::send`] of an encoded message.
    pub(super) fn send_encoded(&mut self, m: Message) -> bool {
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
        self.out.push_back(m);
        true
    }

    pub(super) fn error(&mut self, id: Option<&str>, code: &str, message: &str) {
        self.send(&ServerMessage::Error { id, code, message });
    }

    pub(super) fn close(&mut self, code: u16, reason: &'static str) {
        self.closed_for = close::reason(code);
        if !self.closing {
            self.closing = true;
            self.out.push_back(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) })));
        }
    }

    pub(super) fn until_expiry(&self) -> Duration {
        let now = jsonwebtoken::get_current_timestamp();
        Duration::from_secs(self.user.expires_at.saturating_sub(now))
    }

    /// When the next bucket of an open-ended view begins.
    fn next_growth(&self) -> Option<Instant> {
        let end = self.subs.values().filter(|s| s.open_ended).map(|s| s.plan.end).min()?;
        let wait = (end - chrono::Utc::now()).to_std().unwrap_or_default();
        Some(Instant::now() + wait)
    }

    fn has_pending_data(&self) -> bool {
        self.subs.values().any(Sub::has_changes)
    }

    /// Hears exactly the subjects of the current subscriptions.
    pub(super) fn rescope(&self) {
        self.membership.set_scope(self.subs.values().map(|s| &s.subject));
    }

    /// Applies everything queued at once (one send covers it), then marks
    /// every view for a re-read if an update could not be delivered.
    pub(super) fn take_updates(&mut self) {
        while let Ok(u) = self.inbox.try_recv() {
            self.on_update(u);
        }
        if self.resync.swap(false, Ordering::AcqRel) {
            self.subs.values_mut().for_each(|s| s.needs_snapshot = true);
        }
    }

    pub(super) fn on_update(&mut self, u: Update) {
        match u {
            Update::Rows { seq, rows, range } => {
                let rows = &rows[range];
                self.subs.values_mut().for_each(|s| s.apply(seq, rows));
            }
            Update::Resync => self.subs.values_mut().for_each(|s| s.needs_snapshot = true),
        }
    }

    /// Runs the socket until either side closes it.
    pub(crate) async fn run<S, E>(mut self, mut ws: S, _place: SocketSlot)
    where
        S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
        E: std::fmt::Display,
    {
        metrics::gauge!("tokenusage_live_sockets").increment(1.0);
        let shutdown = self.state.shutdown.clone();
        let mut freshness = self.state.live.freshness();
        let mut pacing = Pacing::new(self.state.config.live.updates_per_sec, Instant::now());
        let timer = tokio::time::sleep(FAR);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
        let limiter: DefaultDirectRateLimiter = RateLimiter::direct(
            Quota::per_second(NonZeroU32::new(MESSAGES_PER_SEC).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(MESSAGE_BURST).unwrap_or(NonZeroU32::MIN)),
        );
        let idle = Duration::from_secs(self.state.config.live.idle_secs);
        let mut last_heard = Instant::now();
        let mut strikes = 0u32;
        let expiry = tokio::time::sleep(self.until_expiry());
        tokio::pin!(expiry);
        let (id, role, expires_at) = (self.user.id.clone(), self.user.role, self.user.expires_at);
        self.send(&ServerMessage::Hello {
            protocol: PROTOCOL,
            user: &id,
            role,
            expires_at,
            max_subscriptions: MAX_SUBSCRIPTIONS,
        });
        let mut unflushed = false;
        while !self.closing {
            let due = pacing.due(self.has_pending_data(), !self.subs.is_empty(), self.next_growth());
            if due != armed {
                armed = due;
                timer.as_mut().reset(due.unwrap_or_else(|| Instant::now() + FAR));
            }
            tokio::select! {
                () = shutdown.cancelled() => self.close(close::GOING_AWAY, "server shutting down"),
                io = std::future::poll_fn(|cx| poll_io(&mut ws, &mut self.out, &mut unflushed, cx)) => match io {
                    Io::WriteFailed => break,
                    Io::Read(Some(Ok(Message::Text(t)))) => {
                        last_heard = Instant::now();
                        if limiter.check().is_err() {
                            strikes += 1;
                            Box::pin(self.refuse_rate_limited()).await;
                            if strikes > STRIKES {
                                self.close(close::POLICY, "too many messages");
                            }
                            continue;
                        }
                        if let Some(new_expiry) = Box::pin(self.on_client(&t)).await {
                            expiry.as_mut().reset(Instant::now() + new_expiry);
                        }
                    }
                    Io::Read(Some(Ok(Message::Binary(_)))) => Box::pin(self.refuse_binary()).await,
                    Io::Read(Some(Ok(Message::Pong(_) | Message::Ping(_)))) => last_heard = Instant::now(),
                    Io::Read(Some(Ok(Message::Close(_))) | None) => break,
                    Io::Read(Some(Err(e))) => {
                        tracing::debug!(error = %e, "live socket read failed");
                        break;
                    }
                },
                u = self.inbox.recv() => {
                    let Some(u) = u else { break };
                    self.on_update(u);
                    self.take_updates();
                    let now = Instant::now();
                    if pacing.may_send(now) {
                        let current = freshness.borrow_and_update().clone();
                        pacing.attempted(now);
                        if self.flush_logged(&current).await {
                            pacing.sent(Instant::now());
                        }
                    }
                }
                () = &mut timer => {
                    armed = None;
                    self.take_updates();
                    let current = freshness.borrow_and_update().clone();
                    let now = Instant::now();
                    let may_send = pacing.may_send(now);
                    if may_send {
                        pacing.attempted(now);
                    }
                    if may_send && self.flush_logged(&current).await {
                        pacing.sent(Instant::now());
                    } else if pacing.freshness_due(now) {
                        if self.last_freshness.as_ref() != Some(&current) && !self.subs.is_empty() {
                            self.send(&ServerMessage::Freshness { freshness: &current });
                            self.last_freshness = Some(current);
                        }
                        pacing.freshness_sent(now);
                    }
                }
                () = budget_change(&mut self.budgets_watch) => Box::pin(self.push_budgets()).await,
                () = budget_change(&mut self.reconciliation_watch) => Box::pin(self.push_reconciliation()).await,
                r = freshness.changed() => {
                    // The sender lives as long as the process.
                    if r.is_ok() {
                        pacing.freshness_pending = self.last_freshness.as_ref() != Some(&*freshness.borrow());
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
                    self.send(&ServerMessage::Closing { code: close::TOKEN_EXPIRED, reason: "token expired" });
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
                    if ws.feed(m).await.is_err() {
                        return;
                    }
                }
                let _ = ws.flush().await;
            })
            .await;
        }
        metrics::gauge!("tokenusage_live_sockets").decrement(1.0);
        metrics::counter!("tokenusage_live_sockets_closed_total", "reason" => self.closed_for).increment(1);
    }
}

#[cfg(test)]
mod tests;
