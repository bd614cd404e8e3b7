//! The chain: one entry per audited happening, hashed onto the entry
//! before it (`hash = SHA-256(prev_hash || canonical JSON)`, gap-free
//! `seq`), written by one task per process in short batches under an
//! advisory lock, and walked by `verify`.

use chrono::{DateTime, SubsecRound, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, QueryBuilder};
use tokenusage_contract::text;
use tokenusage_plumbing::failure::{self, Failure};
use tokio::sync::{mpsc, oneshot};

/// Advisory lock key serializing chain appends across processes ("tu-audit").
const CHAIN_LOCK: i64 = 0x7475_2d61_7564_6974;
/// Entries written per transaction at most.
const BATCH: usize = 256;
/// Entries waiting for the writer at most; callers wait beyond that.
const QUEUE: usize = 4096;
const GENESIS: [u8; 32] = [0; 32];
pub(super) const TEXT_MAX: usize = 512;
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
    /// The users a view of several people covered (a team's members), so
    /// each of them finds it in "who viewed my usage". Empty otherwise.
    pub covers: Vec<String>,
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
    /// Left out when empty, so entries written before migration 0011 hash
    /// as they did.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    covers: &'a [String],
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
        covers: &e.covers,
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
         outcome, status, ip, user_agent, request_id, covers, prev_hash, hash) ",
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
            .push_bind((!e.covers.is_empty()).then(|| e.covers.clone()))
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

pub(super) const COLUMNS: &str = "seq, at, actor, actor_role, action, method, endpoint, subject, params, rows, outcome, status, \
                       ip, user_agent, request_id, coalesce(covers, '{}') as covers";

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
    /// Users a team view covered (empty for one user's or everyone's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    covers: Vec<String>,
    #[serde(skip)]
    #[sqlx(default)]
    prev_hash: Vec<u8>,
    #[serde(skip)]
    #[sqlx(default)]
    hash: Vec<u8>,
}

impl AuditRow {
    /// What one covered person may know of whom else an entry covered:
    /// only themselves. A team's roster is for its managers and admins, not
    /// for every member reading "who viewed my usage".
    pub(crate) fn covering_only(mut self, user: &str) -> Self {
        self.covers.retain(|c| c == user);
        self
    }

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
            covers: self.covers.clone(),
        }
    }
}
