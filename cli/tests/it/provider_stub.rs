//! A stand-in for the providers' organisation report APIs (OpenAI Usage and
//! Costs, Anthropic Usage and Cost Admin API), serving their documented
//! shapes (see `providers/src/openai.rs` and `anthropic.rs` for the
//! reference pages and their example responses, which the unit tests there
//! read): daily buckets, cursor pages, group-by fields, and the faults an
//! importer must survive: 429 with Retry-After, 500, a malformed page, a
//! refused key. Our own code, written for these tests.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, TimeDelta};
use serde_json::{Value, json};

/// What the stub does instead of answering the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer this one normally.
    Pass,
    TooMany,
    Unavailable,
    /// A page whose first result has a string where a count belongs.
    Malformed,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// The admin key the stub accepts.
    pub key: String,
    /// Results per daily bucket, in the provider's own result shape.
    pub usage: BTreeMap<NaiveDate, Vec<Value>>,
    pub costs: BTreeMap<NaiveDate, Vec<Value>>,
    pub faults: VecDeque<Fault>,
    /// (path and query, the auth header seen, anthropic-version seen).
    pub requests: Vec<(String, Option<String>, Option<String>)>,
    /// Buckets per page (below the providers' limits, so tests see pages).
    pub page_days: i64,
}

#[derive(Clone)]
pub struct Stub {
    pub ledger: Arc<Mutex<Ledger>>,
    pub base_url: String,
}

impl Stub {
    pub async fn start(key: &str) -> Stub {
        let ledger = Arc::new(Mutex::new(Ledger { key: key.into(), page_days: 7, ..Ledger::default() }));
        let app = axum::Router::new()
            .route("/v1/organization/usage/completions", axum::routing::get(openai_usage))
            .route("/v1/organization/costs", axum::routing::get(openai_costs))
            .route("/v1/organizations/usage_report/messages", axum::routing::get(anthropic_usage))
            .route("/v1/organizations/cost_report", axum::routing::get(anthropic_costs))
            .with_state(ledger.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Stub { ledger, base_url }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut self.ledger.lock().unwrap())
    }
}

type Params = Vec<(String, String)>;

fn param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

enum Flavour {
    OpenAi,
    Anthropic,
}

/// The days of one page: from the cursor (or the range's start) for at
/// most `page_days`, and the next cursor if the range goes on.
fn days(flavour: &Flavour, p: &Params, page_days: i64) -> Result<(Vec<NaiveDate>, Option<String>), String> {
    let day = |s: &str| -> Result<NaiveDate, String> {
        match flavour {
            Flavour::OpenAi => s
                .parse::<i64>()
                .ok()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.date_naive())
                .ok_or(format!("bad time {s}")),
            Flavour::Anthropic => {
                s.parse::<chrono::DateTime<chrono::Utc>>().map(|t| t.date_naive()).map_err(|e| e.to_string())
            }
        }
    };
    let (start, end) = match flavour {
        Flavour::OpenAi => ("start_time", "end_time"),
        Flavour::Anthropic => ("starting_at", "ending_at"),
    };
    let from = day(param(p, start).ok_or("start required")?)?;
    let to = day(param(p, end).ok_or("end required")?)?;
    if param(p, "bucket_width") != Some("1d") {
        return Err("this stub serves bucket_width=1d".into());
    }
    let first = match param(p, "page") {
        Some(c) => c.strip_prefix("page_").and_then(|d| d.parse().ok()).ok_or("bad page cursor")?,
        None => from,
    };
    let last = (first + TimeDelta::days(page_days)).min(to);
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d < last).collect();
    Ok((days, (last < to).then(|| format!("page_{last}"))))
}

fn page(flavour: Flavour, which: &str, st: &Arc<Mutex<Ledger>>, uri: &Uri, h: &HeaderMap, p: &Params) -> Response {
    let mut l = st.lock().unwrap();
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let auth = match flavour {
        Flavour::OpenAi => header("authorization"),
        Flavour::Anthropic => header("x-api-key"),
    };
    l.requests.push((uri.to_string(), auth.clone(), header("anthropic-version")));
    let want = match flavour {
        Flavour::OpenAi => format!("Bearer {}", l.key),
        Flavour::Anthropic => l.key.clone(),
    };
    if auth.as_deref() != Some(want.as_str()) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"message": "invalid admin key"}})))
            .into_response();
    }
    let fault = l.faults.pop_front();
    match fault {
        Some(Fault::TooMany) => {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")], "slow down").into_response();
        }
        Some(Fault::Unavailable) => return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        _ => {}
    }
    let (days, next) = match days(&flavour, p, l.page_days) {
        Ok(d) => d,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let source = if which == "usage" { &l.usage } else { &l.costs };
    let mut data: Vec<Value> = days
        .iter()
        .map(|d| {
            let results = source.get(d).cloned().unwrap_or_default();
            let start = d.and_hms_opt(0, 0, 0).unwrap().and_utc();
            let end = start + TimeDelta::days(1);
            match flavour {
                Flavour::OpenAi => json!({"object": "bucket", "start_time": start.timestamp(), "end_time": end.timestamp(), "results": results}),
                Flavour::Anthropic => json!({"starting_at": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "ending_at": end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "results": results}),
            }
        })
        .collect();
    if matches!(fault, Some(Fault::Malformed)) {
        let field = if which == "usage" { "output_tokens" } else { "amount" };
        if let Some(r) = data.iter_mut().find_map(|b| b["results"].as_array_mut().and_then(|r| r.first_mut())) {
            r[field] = json!({"not": "a number"});
        }
    }
    let mut body = json!({"data": data, "has_more": next.is_some(), "next_page": next});
    if let Flavour::OpenAi = flavour {
        body["object"] = json!("page");
    }
    axum::Json(body).into_response()
}

async fn openai_usage(
    State(st): State<Arc<Mutex<Ledger>>>,
    uri: Uri,
    h: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    page(Flavour::OpenAi, "usage", &st, &uri, &h, &p)
}
async fn openai_costs(
    State(st): State<Arc<Mutex<Ledger>>>,
    uri: Uri,
    h: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    page(Flavour::OpenAi, "costs", &st, &uri, &h, &p)
}
async fn anthropic_usage(
    State(st): State<Arc<Mutex<Ledger>>>,
    uri: Uri,
    h: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    page(Flavour::Anthropic, "usage", &st, &uri, &h, &p)
}
async fn anthropic_costs(
    State(st): State<Arc<Mutex<Ledger>>>,
    uri: Uri,
    h: HeaderMap,
    Query(p): Query<Params>,
) -> Response {
    page(Flavour::Anthropic, "costs", &st, &uri, &h, &p)
}

/// An OpenAI completions usage result (the reference's field names).
pub fn openai_usage_result(
    project: &str,
    key: &str,
    model: &str,
    input: i64,
    cached: i64,
    output: i64,
    requests: i64,
) -> Value {
    json!({"object": "organization.usage.completions.result", "input_tokens": input, "output_tokens": output,
           "input_cached_tokens": cached, "input_audio_tokens": 0, "output_audio_tokens": 0,
           "num_model_requests": requests, "project_id": project, "user_id": null, "api_key_id": key,
           "model": model, "batch": false})
}

/// An OpenAI costs result: `value` in dollars, as a JSON number.
pub fn openai_cost_result(project: &str, model: &str, what: &str, dollars: &str) -> Value {
    let value: serde_json::Number = dollars.parse().unwrap();
    json!({"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
           "line_item": format!("{model}, {what}"), "project_id": project})
}

/// An Anthropic usage result.
pub fn anthropic_usage_result(
    workspace: Option<&str>,
    model: &str,
    uncached: i64,
    w5m: i64,
    w1h: i64,
    read: i64,
    output: i64,
) -> Value {
    json!({"uncached_input_tokens": uncached, "cache_creation": {"ephemeral_5m_input_tokens": w5m, "ephemeral_1h_input_tokens": w1h},
           "cache_read_input_tokens": read, "output_tokens": output, "server_tool_use": {"web_search_requests": 0},
           "api_key_id": "apikey_01", "workspace_id": workspace, "model": model, "service_tier": "standard", "context_window": "0-200k"})
}

/// An Anthropic cost result: `amount` in cents, as decimal text.
pub fn anthropic_cost_result(workspace: Option<&str>, model: &str, token_type: &str, cents: &str) -> Value {
    json!({"currency": "USD", "amount": cents, "workspace_id": workspace, "description": format!("{model} - {token_type}"),
           "cost_type": "tokens", "context_window": "0-200k", "model": model, "service_tier": "standard", "token_type": token_type})
}
