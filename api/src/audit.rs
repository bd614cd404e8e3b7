//! The audit trail: every request to `/api/v1` (and every live
//! subscription) leaves exactly one entry in `audit_log`, written before
//! the response is released. If the entry cannot be written, the caller
//! gets a 503 instead of the data (fail closed).
//!
//! Entries form a hash chain: `hash = SHA-256(prev_hash || canonical JSON)`,
//! with a gap-free `seq`. One writer task per process batches entries into
//! short transactions that take a PostgreSQL advisory lock, so several API
//! processes still build one chain. `tokenusage audit verify` walks it.
//!
//! Handlers add what only they know (the action name, whose data, the
//! normalized parameters, how many rows) to the request's [`AuditSlot`];
//! the middleware adds who, from where, the request id and the outcome.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, QueryBuilder};
use tokio::sync::{mpsc, oneshot};

use crate::app::AppState;
use crate::auth::Role;
use tokenusage_contract::text;
use tokenusage_plumbing::failure::{self, Failure};

use crate::error::{ApiError, ApiQuery};

/// Advisory lock key serializing chain appends across processes ("tu-audit").
const CHAIN_LOCK: i64 = 0x7475_2d61_7564_6974;
/// Entries written per transaction at most.
const BATCH: usize = 256;
/// Entries waiting for the writer at most; callers wait beyond that.
const QUEUE: usize = 4096;
const GENESIS: [u8; 32] = [0; 32];
const TEXT_MAX: usize = 512;
const PARAMS_MAX: usize = 2048;

/// One audited happening.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub actor_role: Option<String>,
    pub action: String,
    pub method: String,
    pub endpoint: String,
    /// Whose data was involved.
    pub subject: Option<String>,
    /// Parameters as JSON text.
    pub params: String,
    pub rows: Option<i64>,
    pub outcome: String,
    pub status: i32,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Entry {
    fn sanitize(&mut self) {
        let clean = |s: &mut String| {
            let escaped = text::escape(s);
            if matches!(escaped, std::borrow::Cow::Owned(_)) || s.len() > TEXT_MAX {
                *s = text::truncate(&escaped, TEXT_MAX).to_owned();
            }
        };
        for s in [&mut self.action, &mut self.method, &mut self.endpoint, &mut self.outcome] {
            clean(s);
        }
        for s in [
            &mut self.actor,
            &mut self.actor_role,
            &mut self.subject,
            &mut self.ip,
            &mut self.user_agent,
            &mut self.request_id,
        ]
        .into_iter()
        .flatten()
        {
            clean(s);
        }
        // Params are JSON text: serde escapes control characters, but a NUL
        // survives as `\u0000`, which is storable as text. Bounded like the rest.
        if self.params.len() > PARAMS_MAX {
            self.params = text::truncate(&self.params, PARAMS_MAX).to_owned();
        }
    }
}

/// The bytes hashed for an entry: field order fixed here, time in
/// microseconds (what PostgreSQL stores).
#[derive(Serialize)]
struct Canonical<'a> {
    seq: i64,
    at_us: i64,
    actor: Option<&'a str>,
    actor_role: Option<&'a str>,
    action: &'a str,
    method: &'a str,
    endpoint: &'a str,
    subject: Option<&'a str>,
    params: &'a str,
    rows: Option<i64>,
    outcome: &'a str,
    status: i32,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
}

fn chain_hash(prev: &[u8], seq: i64, e: &Entry) -> Vec<u8> {
    let c = Canonical {
        seq,
        at_us: e.at.timestamp_micros(),
        actor: e.actor.as_deref(),
        actor_role: e.actor_role.as_deref(),
        action: &e.action,
        method: &e.method,
        endpoint: &e.endpoint,
        subject: e.subject.as_deref(),
        params: &e.params,
        rows: e.rows,
        outcome: &e.outcome,
        status: e.status,
        ip: e.ip.as_deref(),
        user_agent: e.user_agent.as_deref(),
        request_id: e.request_id.as_deref(),
    };
    let mut h = Sha256::new();
    h.update(prev);
    h.update(serde_json::to_vec(&c).unwrap_or_default());
    h.finalize().to_vec()
}

/// The audit writing failed; the caller must not serve the data.
#[derive(Debug, thiserror::Error)]
#[error("the audit trail cannot be written: {0}")]
pub struct AuditUnavailable(String);

type Job = (Entry, oneshot::Sender<Result<i64, String>>);

/// Handle on the process's audit writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
}

impl AuditLog {
    /// Starts the writer task; it ends when the last handle is dropped.
    pub fn spawn(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(pool, rx));
        Self { tx }
    }

    /// Appends an entry and waits until it is committed; returns its `seq`.
    ///
    /// Every text is escaped first (`contract::text::escape`: lossless,
    /// printable, storable) and bounded, so no value a caller controls (a
    /// user name with a NUL, a user agent) can make the entry, or the batch
    /// it is written in, fail.
    pub async fn record(&self, mut e: Entry) -> Result<i64, AuditUnavailable> {
        e.at = e.at.trunc_subsecs(6);
        e.sanitize();
        let (reply, done) = oneshot::channel();
        self.tx.send((e, reply)).await.map_err(|_| AuditUnavailable("the writer stopped".into()))?;
        match done.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(AuditUnavailable(e)),
            Err(_) => Err(AuditUnavailable("the writer stopped".into())),
        }
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let entries: Vec<&Entry> = jobs.iter().map(|(e, _)| e).collect();
        let result = append(&pool, &entries).await;
        match result {
            Ok(first) => {
                for (i, (_, reply)) in jobs.drain(..).enumerate() {
                    let _ = reply.send(Ok(first + i as i64));
                }
            }
            // The database refused something in the rows themselves: write
            // them one by one, so only the request whose entry it was is
            // refused, never the others batched with it.
            Err(e) if Failure::of(&e) == Failure::Data && jobs.len() > 1 => {
                tracing::warn!(error = %failure::describe(&e), entries = jobs.len(), "an audit batch was refused; writing its entries one by one");
                for (entry, reply) in jobs.drain(..) {
                    let r = append(&pool, &[&entry]).await;
                    if let Err(e) = &r {
                        tracing::error!(error = %failure::describe(e), "an audit entry was not written; its request is refused");
                    }
                    let _ = reply.send(r.map_err(|e| failure::describe(&e)));
                }
            }
            Err(e) => {
                tracing::error!(error = %failure::describe(&e), entries = jobs.len(), "audit entries not written; their requests are refused");
                for (_, reply) in jobs.drain(..) {
                    let _ = reply.send(Err(failure::describe(&e)));
                }
            }
        }
    }
}

/// Appends entries to the chain in one transaction; returns the first `seq`.
async fn append(pool: &PgPool, entries: &[&Entry]) -> sqlx::Result<i64> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut *tx).await?;
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("select seq, hash from audit_log order by seq desc limit 1").fetch_optional(&mut *tx).await?;
    let (mut seq, mut prev) = head.unwrap_or((0, GENESIS.to_vec()));
    let first = seq + 1;
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        seq += 1;
        let hash = chain_hash(&prev, seq, e);
        rows.push((seq, *e, std::mem::replace(&mut prev, hash.clone()), hash));
    }
    let mut qb = QueryBuilder::new(
        "insert into audit_log (seq, at, actor, actor_role, action, method, endpoint, subject, params, rows, \
         outcome, status, ip, user_agent, request_id, prev_hash, hash) ",
    );
    qb.push_values(rows, |mut b, (seq, e, prev, hash)| {
        b.push_bind(seq)
            .push_bind(e.at)
            .push_bind(e.actor.clone())
            .push_bind(e.actor_role.clone())
            .push_bind(e.action.clone())
            .push_bind(e.method.clone())
            .push_bind(e.endpoint.clone())
            .push_bind(e.subject.clone())
            .push_bind(e.params.clone())
            .push_bind(e.rows)
            .push_bind(e.outcome.clone())
            .push_bind(e.status)
            .push_bind(e.ip.clone())
            .push_bind(e.user_agent.clone())
            .push_bind(e.request_id.clone())
            .push_bind(prev)
            .push_bind(hash);
    });
    qb.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(first)
}

/// What `audit verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    /// `seq` and hex hash of the last entry: keep it elsewhere to detect a
    /// later truncation of the tail.
    pub head: Option<(i64, String)>,
    pub problems: Vec<String>,
}

const MAX_PROBLEMS: usize = 100;

/// Walks the whole chain in order (streamed, constant memory).
pub async fn verify(pool: &PgPool) -> anyhow::Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let sql = format!("select {COLUMNS}, prev_hash, hash from audit_log order by seq");
    let mut rows = sqlx::query_as::<_, AuditRow>(&sql).fetch(pool);
    let mut expected_seq = 1_i64;
    let mut prev = GENESIS.to_vec();
    while let Some(r) = rows.try_next().await? {
        report.entries += 1;
        let mut problem = |p: String| {
            if report.problems.len() < MAX_PROBLEMS {
                report.problems.push(p);
            }
        };
        if r.seq != expected_seq {
            problem(format!("entries {expected_seq}..{} are missing (deleted)", r.seq - 1));
        }
        if r.prev_hash != prev {
            problem(format!(
                "entry {}: does not follow the entry before it (reordered, or its predecessor was changed or removed)",
                r.seq
            ));
        }
        let entry = r.entry();
        if chain_hash(&r.prev_hash, r.seq, &entry) != r.hash {
            problem(format!("entry {}: its contents were edited after it was written", r.seq));
        }
        expected_seq = r.seq + 1;
        prev = r.hash.clone();
        report.head = Some((r.seq, hex::encode(&r.hash)));
    }
    Ok(report)
}

const COLUMNS: &str = "seq, at, actor, actor_role, action, method, endpoint, subject, params, rows, outcome, status, \
                       ip, user_agent, request_id";

#[derive(Debug, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditRow {
    seq: i64,
    at: DateTime<Utc>,
    actor: Option<String>,
    actor_role: Option<String>,
    action: String,
    method: String,
    endpoint: String,
    subject: Option<String>,
    params: String,
    rows: Option<i64>,
    outcome: String,
    status: i32,
    ip: Option<String>,
    user_agent: Option<String>,
    request_id: Option<String>,
    #[serde(skip)]
    #[sqlx(default)]
    prev_hash: Vec<u8>,
    #[serde(skip)]
    #[sqlx(default)]
    hash: Vec<u8>,
}

impl AuditRow {
    fn entry(&self) -> Entry {
        Entry {
            at: self.at,
            actor: self.actor.clone(),
            actor_role: self.actor_role.clone(),
            action: self.action.clone(),
            method: self.method.clone(),
            endpoint: self.endpoint.clone(),
            subject: self.subject.clone(),
            params: self.params.clone(),
            rows: self.rows,
            outcome: self.outcome.clone(),
            status: self.status,
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// What a handler knows about its request, for the entry.
#[derive(Debug, Default)]
pub(crate) struct Detail {
    actor: Option<String>,
    actor_role: Option<Role>,
    action: Option<&'static str>,
    subject: Option<String>,
    params: Option<serde_json::Value>,
    rows: Option<i64>,
}

/// The request's audit details, filled in by extractors and handlers.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Detail>>);

impl AuditSlot {
    fn with<R>(&self, f: impl FnOnce(&mut Detail) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn set_actor(&self, id: &str, role: Option<Role>) {
        self.with(|d| {
            d.actor = Some(truncate(id));
            d.actor_role = role;
        });
    }

    /// Names the action and records whose data, which parameters (as
    /// understood, after validation) and how many rows were returned.
    pub fn set_detail(
        &self,
        action: &'static str,
        subject: Option<&str>,
        params: serde_json::Value,
        rows: Option<i64>,
    ) {
        self.with(|d| {
            d.action = Some(action);
            d.subject = subject.map(truncate);
            d.params = Some(params);
            d.rows = rows;
        });
    }

    /// How many rows the request returned (after `set_detail`).
    pub fn set_rows(&self, rows: i64) {
        self.with(|d| d.rows = Some(rows));
    }

    fn take(&self) -> Detail {
        self.with(std::mem::take)
    }
}

fn truncate(s: &str) -> String {
    text::truncate(s, TEXT_MAX).to_owned()
}

/// The client's address: the peer, or behind a declared TLS proxy, the
/// last hop the proxy appended to `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

pub(crate) fn client_ip(parts: &Parts, behind_proxy: bool) -> Option<IpAddr> {
    if behind_proxy
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
    {
        return Some(ip);
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state.config.behind_tls_proxy)))
    }
}

/// Facts about the request itself, gathered before the handler runs.
///
/// Of the query, only the parameter *names* are kept: a value reaches the
/// record only once a handler has parsed it (`AuditSlot::set_detail`), so
/// a credential pasted into a URL (`?access_token=...`) is never stored.
#[derive(Debug, Clone)]
pub(crate) struct RequestFacts {
    pub method: String,
    pub endpoint: String,
    pub parameter_names: Vec<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// Parameter names recorded at most, and their length.
const NAMES_MAX: usize = 20;
const NAME_MAX: usize = 64;

impl RequestFacts {
    pub(crate) fn of(parts: &Parts, behind_proxy: bool) -> Self {
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(truncate);
        let mut parameter_names: Vec<String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let name = p.split('=').next().unwrap_or_default();
                text::truncate(&text::escape(name), NAME_MAX).to_owned()
            })
            .collect();
        parameter_names.sort();
        parameter_names.dedup();
        parameter_names.truncate(NAMES_MAX);
        Self {
            method: parts.method.to_string(),
            endpoint: parts
                .extensions
                .get::<MatchedPath>()
                .map_or_else(|| parts.uri.path().to_owned(), |m| m.as_str().to_owned()),
            parameter_names,
            ip: client_ip(parts, behind_proxy).map(|i| i.to_string()),
            user_agent: header("user-agent"),
            request_id: header("x-request-id"),
        }
    }
}

impl FromRequestParts<AppState> for RequestFacts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(RequestFacts::of(parts, state.config.behind_tls_proxy))
    }
}

/// An action audited outside an HTTP request's own entry: a message on a
/// live socket, recorded with the facts of the request that opened it.
#[derive(Debug)]
pub(crate) struct Action<'a> {
    pub actor: (&'a str, Role),
    pub action: &'static str,
    /// Whose data was involved, or would have been.
    pub subject: Option<&'a str>,
    pub params: serde_json::Value,
    pub rows: Option<i64>,
    /// The HTTP status the outcome corresponds to (200 served, 400
    /// rejected, 401 unauthenticated, 403 denied, 429 rate limited).
    pub status: u16,
}

/// Records an [`Action`].
pub(crate) async fn record_action(
    state: &AppState,
    facts: &RequestFacts,
    a: Action<'_>,
) -> Result<i64, AuditUnavailable> {
    let detail = Detail {
        actor: Some(a.actor.0.to_owned()),
        actor_role: Some(a.actor.1),
        action: Some(a.action),
        subject: a.subject.map(str::to_owned),
        params: Some(a.params),
        rows: a.rows,
    };
    state.audit.record(entry_for(facts.clone(), detail, a.status)).await
}

fn outcome(status: u16) -> &'static str {
    match status {
        // 101: a WebSocket was opened.
        100..=399 => "ok",
        401 => "unauthenticated",
        403 => "denied",
        429 => "rate_limited",
        400..=499 => "rejected",
        _ => "failed",
    }
}

/// Builds the entry of a finished request from its facts and details.
pub(crate) fn entry_for(facts: RequestFacts, detail: Detail, status: u16) -> Entry {
    let params = detail.params.unwrap_or_else(|| serde_json::json!({ "parameters": facts.parameter_names }));
    Entry {
        at: Utc::now(),
        actor: detail.actor,
        actor_role: detail.actor_role.map(|r| r.as_str().to_owned()),
        action: detail.action.map_or_else(|| format!("{} {}", facts.method, facts.endpoint), str::to_owned),
        method: facts.method,
        endpoint: facts.endpoint,
        subject: detail.subject,
        params: truncate(&params.to_string()),
        rows: detail.rows,
        outcome: outcome(status).to_owned(),
        status: i32::from(status),
        ip: facts.ip,
        user_agent: facts.user_agent,
        request_id: facts.request_id,
    }
}

/// Middleware: one entry per request, committed before the response leaves.
///
/// It wraps every route of `/api/v1` and its fallback, so unknown paths
/// (404), wrong methods (405), oversized heads (414, 431) and unprintable
/// parameters (400) are on the record like everything else. When no
/// handler named the caller, a bearer token is checked here so the entry
/// still says who it was.
pub(crate) async fn audit_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let facts = RequestFacts::of(&parts, state.config.behind_tls_proxy);
    let slot = AuditSlot::default();
    parts.extensions.insert(slot.clone());
    let refused = tokenusage_plumbing::http::HeadLimits::check(&parts)
        .or_else(|| crate::hygiene::check(&parts).err().map(IntoResponse::into_response));
    let response = match refused {
        Some(r) => r,
        None => {
            let bearer = crate::auth::bearer(&parts).map(str::to_owned);
            let response = next.run(Request::from_parts(parts, body)).await;
            if slot.with(|d| d.actor.is_none())
                && let Some(token) = bearer
                && let Ok(user) = crate::auth::authenticate(&state, &token).await
            {
                slot.set_actor(&user.id, Some(user.role));
            }
            response
        }
    };
    let entry = entry_for(facts, slot.take(), response.status().as_u16());
    match state.audit.record(entry).await {
        Ok(_) => response,
        Err(e) => {
            tracing::error!(error = %e, "refusing to answer a request that could not be audited");
            ApiError::AuditUnavailable.into_response()
        }
    }
}

/// Filters of an audit search.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    actor: Option<String>,
    subject: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    /// Entries with a `seq` below this (paging backwards).
    before: Option<i64>,
    limit: Option<i64>,
}

pub(crate) async fn search(pool: &PgPool, q: &AuditQuery, only_views_of: Option<&str>) -> sqlx::Result<Vec<AuditRow>> {
    let mut qb = QueryBuilder::new(format!("select {COLUMNS} from audit_log where true"));
    if let Some(s) = only_views_of {
        // Someone else looked at this user's data, tried to and was denied,
        // or read everyone's at once (an admin's `user=*`, which covers
        // this user too).
        qb.push(" and (subject = ").push_bind(s.to_owned()).push(" or subject = '*')");
        qb.push(" and actor is distinct from ").push_bind(s.to_owned());
        qb.push(" and outcome in ('ok', 'denied')");
    }
    for (col, v) in [("actor", &q.actor), ("subject", &q.subject), ("action", &q.action), ("outcome", &q.outcome)] {
        if let Some(v) = v {
            qb.push(format!(" and {col} = ")).push_bind(v.clone());
        }
    }
    if let Some(t) = q.from {
        qb.push(" and at >= ").push_bind(t);
    }
    if let Some(t) = q.to {
        qb.push(" and at < ").push_bind(t);
    }
    if let Some(b) = q.before {
        qb.push(" and seq < ").push_bind(b);
    }
    qb.push(" order by seq desc limit ").push_bind(q.limit.unwrap_or(100).clamp(1, 1000));
    qb.build_query_as().fetch_all(pool).await
}

/// Search the audit trail, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditRow>), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn admin_search(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: crate::auth::AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<Vec<AuditRow>>, ApiError> {
    slot.set_detail("audit.search", q.subject.as_deref(), search_params(&q), None);
    user.require_admin()?;
    let rows = search(&state.pool, &q, None).await?;
    slot.set_detail("audit.search", q.subject.as_deref(), search_params(&q), Some(rows.len() as i64));
    Ok(axum::Json(rows))
}

/// Who else looked at the caller's usage, newest first.
#[utoipa::path(get, path = "/api/v1/audit/views", tag = "audit", params(AuditQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditRow>), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn views_of_me(
    State(state): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: crate::auth::AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<axum::Json<Vec<AuditRow>>, ApiError> {
    let q =
        AuditQuery { actor: q.actor, from: q.from, to: q.to, before: q.before, limit: q.limit, ..Default::default() };
    let rows = search(&state.pool, &q, Some(&user.id)).await?;
    slot.set_detail("audit.views_of_me", Some(&user.id), search_params(&q), Some(rows.len() as i64));
    Ok(axum::Json(rows))
}

fn search_params(q: &AuditQuery) -> serde_json::Value {
    serde_json::json!({
        "actor": q.actor, "subject": q.subject, "action": q.action, "outcome": q.outcome,
        "from": q.from, "to": q.to, "before": q.before, "limit": q.limit,
    })
}
