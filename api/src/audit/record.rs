//! What a request contributes to its entry: the facts of the request, what
//! the handler adds (action, whose data, the parameters as understood,
//! rows), and the middleware that writes the entry before the response
//! leaves; plus actions on live sockets, recorded with the facts of the
//! request that opened them.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, MatchedPath};
use axum::http::request::Parts;
use chrono::Utc;
use tokenusage_contract::text;

use super::chain::{AuditUnavailable, Entry, TEXT_MAX};
use crate::access::Role;

/// What a handler knows about its request, for the entry.
#[derive(Debug, Default)]
pub(crate) struct Detail {
    actor: Option<String>,
    actor_role: Option<Role>,
    action: Option<&'static str>,
    subject: Option<String>,
    params: Option<serde_json::Value>,
    rows: Option<i64>,
    covers: Vec<String>,
    /// The request reached someone's data it may not see, whatever status
    /// hides that from the caller (a 404 for another's budget id).
    denied: bool,
}

/// The request's audit details, filled in by extractors and handlers.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Detail>>);

impl AuditSlot {
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Detail) -> R) -> R {
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

    /// The users a view of several people covers (see `Entry::covers`).
    pub fn set_covers(&self, users: &[String]) {
        self.with(|d| d.covers = users.to_vec());
    }

    /// Records that the request tried to reach `subject`'s data (and the
    /// people `covers` names) and was refused, even where the caller is told
    /// 404 so as not to learn the data exists: the owner and the admins'
    /// `outcome=denied` search find it.
    pub fn set_denied(&self, subject: &str, covers: &[String]) {
        self.with(|d| {
            d.subject = Some(truncate(subject));
            d.covers = covers.to_vec();
            d.denied = true;
        });
    }

    /// How many rows the request returned (after `set_detail`).
    pub fn set_rows(&self, rows: i64) {
        self.with(|d| d.rows = Some(rows));
    }

    /// Whether a handler (or the extractor) named the caller.
    pub(crate) fn has_actor(&self) -> bool {
        self.with(|d| d.actor.is_some())
    }

    pub(crate) fn take(&self) -> Detail {
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
    /// Users a team view covered.
    pub covers: &'a [String],
    /// The HTTP status the outcome corresponds to (200 served, 400
    /// rejected, 401 unauthenticated, 403 denied, 429 rate limited).
    pub status: u16,
}

/// Records an [`Action`].
pub(crate) async fn record_action(
    log: &super::AuditLog,
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
        covers: a.covers.to_vec(),
        denied: false,
    };
    log.record(entry_for(facts.clone(), detail, a.status)).await
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
        outcome: if detail.denied { "denied" } else { outcome(status) }.to_owned(),
        status: i32::from(status),
        ip: facts.ip,
        user_agent: facts.user_agent,
        request_id: facts.request_id,
        covers: detail.covers,
    }
}
