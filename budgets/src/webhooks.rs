//! Webhook endpoints, the notifications owed to them (the outbox table
//! `webhook_deliveries`), their signatures, and the sender.
//!
//! Delivery is at least once with an idempotency key: a delivery is locked
//! (`for update skip locked`) while it is sent and marked delivered in the
//! same transaction once the endpoint answered 2xx, so a sender killed in
//! between leaves it pending and it is sent again, with the same key and
//! the same body. Receivers de-duplicate by `Idempotency-Key`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use sqlx::PgPool;
use tokenusage_plumbing::outbound::{self, Policy, Refused};
use tokio_util::sync::CancellationToken;

use super::board::Board;
use super::window::{ROLLING_WINDOW_START, Window};
use super::{Budget, Measure};

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "tokenusage-signature";

/// An endpoint as admins see it (the secret only when created).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub name: String,
    pub url: String,
    /// `json` (our payload) or `slack` (a Slack-compatible `{"text": ...}`).
    pub format: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// Deliveries waiting, and given up on.
    pub pending: i64,
    pub dead: i64,
}

/// Why an endpoint change was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error("an endpoint named {0:?} exists already")]
    Exists(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Creates an endpoint and returns its signing secret (shown once). The
/// URL must be one `policy` lets outbound calls reach: an inward address
/// literal, a `localhost` name or a name resolving inward is refused here,
/// and every delivery checks again as it connects.
pub async fn create(
    pool: &PgPool,
    policy: &Policy,
    name: &str,
    url: &str,
    format: &str,
    by: &str,
) -> Result<String, WebhookError> {
    if !tokenusage_access::valid_team_name(name) {
        return Err(WebhookError::Invalid(format!(
            "name: 1 to 64 lowercase letters, digits, '-', '_' or '.', not {name:?}"
        )));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| WebhookError::Invalid(format!("url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() || url.len() > 2048 {
        return Err(WebhookError::Invalid(
            "url: an http:// or https:// URL with a host, at most 2048 characters".into(),
        ));
    }
    policy.check_url(&parsed).map_err(|e| WebhookError::Invalid(format!("url: {e}")))?;
    if let Some(host) = parsed.host_str().filter(|_| matches!(parsed.host(), Some(url::Host::Domain(_))))
        && let Err(e @ Refused::Inward { .. }) =
            policy.resolve(host, parsed.port_or_known_default().unwrap_or(443)).await
    {
        // A name that does not resolve now may later; one that resolves
        // inward is refused now (and at every delivery).
        return Err(WebhookError::Invalid(format!("url: {e}")));
    }
    if !matches!(format, "json" | "slack") {
        return Err(WebhookError::Invalid(format!("format: `json` or `slack`, not {format:?}")));
    }
    let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()));
    let r = sqlx::query(
        "insert into webhook_endpoints (name, url, secret, format, created_by) values ($1, $2, $3, $4, $5)",
    )
    .bind(name)
    .bind(url)
    .bind(&secret)
    .bind(format)
    .bind(by)
    .execute(pool)
    .await;
    match r {
        Err(e) if e.as_database_error().is_some_and(|d| d.code().as_deref() == Some("23505")) => {
            Err(WebhookError::Exists(name.to_owned()))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Ok(secret),
    }
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Endpoint>> {
    type Row = (String, String, String, DateTime<Utc>, String, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "select e.name, e.url, e.format, e.created_at, e.created_by, \
         count(*) filter (where d.state = 'pending'), count(*) filter (where d.state = 'dead') \
         from webhook_endpoints e left join webhook_deliveries d on d.endpoint_id = e.id group by e.id order by e.name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, url, format, created_at, created_by, pending, dead)| Endpoint {
            name,
            url: outbound::redacted(&url),
            format,
            created_at,
            created_by,
            pending,
            dead,
        })
        .collect())
}

/// Deletes an endpoint and what it was still owed.
pub async fn delete(pool: &PgPool, name: &str) -> sqlx::Result<bool> {
    Ok(sqlx::query("delete from webhook_endpoints where name = $1").bind(name).execute(pool).await?.rows_affected() > 0)
}

/// One delivery, as admins see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub endpoint: String,
    pub event: String,
    pub idempotency_key: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Deliveries, newest first, optionally in one state.
pub async fn deliveries(pool: &PgPool, state: Option<&str>, limit: i64) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as(
        "select d.id, e.name as endpoint, d.event, d.idempotency_key, d.state, d.attempts, d.next_attempt_at, \
         d.last_error, d.created_at, d.delivered_at from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id \
         where $1::text is null or d.state = $1 order by d.id desc limit $2",
    )
    .bind(state)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await
}

/// Makes a dead (or pending) delivery due now, its attempts counted afresh.
pub async fn retry(pool: &PgPool, id: i64) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "update webhook_deliveries set state = 'pending', attempts = 0, next_attempt_at = now() \
         where id = $1 and state <> 'delivered'",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// The body of a notification (fixed when it is written to the outbox, so
/// every attempt sends the same bytes).
#[allow(clippy::too_many_arguments)]
pub fn payload(
    b: &Budget,
    w: &Window,
    threshold: i32,
    event: &str,
    key: &str,
    spent: i64,
    unpriced: i64,
    currency: &str,
    now: DateTime<Utc>,
) -> serde_json::Value {
    let cost = b.measure == Measure::Cost;
    let text = |n: i64| {
        if cost { serde_json::json!(tokenusage_contract::money::format_nanos(n)) } else { serde_json::json!(n) }
    };
    serde_json::json!({
        "type": event,
        "idempotency_key": key,
        "occurred_at": now,
        "budget": {
            "id": b.id,
            "name": b.name,
            "scope": b.scope,
            "measure": b.measure,
            "amount": text(b.amount),
            "period": b.period,
            "zone": b.zone,
            "rolling_minutes": b.rolling_minutes,
        },
        "window": {
            "start": w.start,
            "end": (w.key != ROLLING_WINDOW_START).then_some(w.end),
        },
        "threshold_percent": threshold,
        "spent": text(spent),
        "percent": (super::evaluate::percent(spent, b.amount) * 100.0).round() / 100.0,
        "currency": cost.then_some(currency),
        "unpriced_tokens": unpriced,
    })
}

/// A Slack-compatible body for a stored payload.
fn slack_text(p: &serde_json::Value) -> serde_json::Value {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if p["type"] == "reconciliation.difference" {
        // Every field here is ours or a date: the connection's name is
        // a-z0-9._- only.
        let (t, c) = (&p["tokens"], &p["cost"]);
        return serde_json::json!({
            "text": format!(
                "Provider `{}` ({}) on {}: billed {} {}, we counted {} {} (difference {}); tokens {} reported, {} counted (past {} %).",
                s(&p["connection"]), s(&p["provider"]), s(&p["day"]), s(&c["billed"]), s(&c["currency"]),
                s(&c["ours"]), s(&c["currency"]), s(&c["difference"]), t["reported"], t["ours"], s(&p["threshold_percent"])
            )
        });
    }
    let b = &p["budget"];
    let unit = if b["measure"] == "cost" { s(&p["currency"]) } else { "tokens".into() };
    // The budget's name is chosen by whoever set the budget: it goes into
    // the admins' channel as quoted code, so it cannot pose as our text,
    // format itself or become a link (Slack's `&`, `<`, `>` escaped, no
    // backticks or line breaks, bounded).
    let quoted = |v: &serde_json::Value| {
        let clean: String = s(v)
            .chars()
            .filter(|c| !c.is_control() && *c != '`')
            .take(80)
            .collect::<String>()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        format!("`{clean}`")
    };
    let verb = if p["type"] == "budget.resolved" { "is back under" } else { "crossed" };
    serde_json::json!({
        "text": format!(
            "Budget {} ({}:{}) {verb} {} %: {} of {} {unit} ({} %).",
            quoted(&b["name"]), s(&b["scope"]["kind"]), quoted(&b["scope"]["id"]), p["threshold_percent"],
            s(&p["spent"]), s(&b["amount"]), p["percent"]
        )
    })
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// When attempt `n` (1-based) failed, the next is due after this long:
/// 2, 4, 8, … seconds, at most 10 minutes, with up to 20 % jitter.
pub fn backoff(n: i32) -> Duration {
    let base = 2u64.saturating_pow(n.clamp(1, 20) as u32).min(600);
    let jitter = rand::random::<f64>() * 0.2;
    Duration::from_secs_f64(base as f64 * (1.0 + jitter))
}

/// The sender's settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Attempts before a delivery is dead.
    pub max_attempts: i32,
    pub timeout: Duration,
    pub workers: usize,
    /// Which addresses deliveries may reach.
    pub policy: Arc<Policy>,
}

type Due = (i64, String, String, String, String, String, serde_json::Value, i32);

/// Sends one due delivery, if there is one. Returns whether it found one.
async fn send_one(pool: &PgPool, http: &outbound::Client, cfg: &SenderConfig) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let due: Option<Due> = sqlx::query_as(
        "select d.id, e.url, e.secret, e.format, d.event, d.idempotency_key, d.payload, d.attempts \
         from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id \
         where d.state = 'pending' and d.next_attempt_at <= now() order by d.next_attempt_at, d.id limit 1 \
         for update of d skip locked",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, url, secret, format, event, key, payload, attempts)) = due else { return Ok(false) };
    let body = if format == "slack" { slack_text(&payload) } else { payload };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let t = Utc::now().timestamp();
    let attempt = attempts + 1;
    let request = match http.post(&url) {
        Ok(r) => r,
        Err(refused) => {
            // Stored before the rule existed, or an allowance withdrawn.
            fail(&mut tx, id, attempt, cfg, format!("refused: {refused}")).await?;
            tx.commit().await?;
            return Ok(true);
        }
    };
    let answer = request
        .timeout(cfg.timeout)
        .header("content-type", "application/json")
        .header("idempotency-key", &key)
        .header("tokenusage-event", &event)
        .header("tokenusage-delivery", id.to_string())
        .header("tokenusage-attempt", attempt.to_string())
        .header(SIGNATURE_HEADER, sign(&secret, t, &bytes))
        .body(bytes)
        .send()
        .await;
    let failure = match answer {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Some(bounded(&e.to_string())),
    };
    match failure {
        None => {
            sqlx::query(
                "update webhook_deliveries set state = 'delivered', attempts = $2, delivered_at = now(), last_error = null \
                 where id = $1",
            )
            .bind(id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
            metrics::counter!("tokenusage_webhook_deliveries_total", "outcome" => "delivered").increment(1);
        }
        Some(err) => fail(&mut tx, id, attempt, cfg, err).await?,
    }
    tx.commit().await?;
    Ok(true)
}

/// Records a failed attempt: retried later with backoff, dead after the last.
async fn fail(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: i64,
    attempt: i32,
    cfg: &SenderConfig,
    err: String,
) -> sqlx::Result<()> {
    let err = bounded(&err);
    let dead = attempt >= cfg.max_attempts;
    let next = Utc::now() + chrono::Duration::from_std(backoff(attempt)).unwrap_or_default();
    sqlx::query(
        "update webhook_deliveries set attempts = $2, last_error = $3, next_attempt_at = $4, \
         state = case when $5 then 'dead' else 'pending' end where id = $1",
    )
    .bind(id)
    .bind(attempt)
    .bind(&err)
    .bind(next)
    .bind(dead)
    .execute(&mut **tx)
    .await?;
    let outcome = if dead { "dead" } else { "failed" };
    metrics::counter!("tokenusage_webhook_deliveries_total", "outcome" => outcome).increment(1);
    tracing::warn!(delivery = id, attempt, error = %err, dead, "webhook delivery failed");
    Ok(())
}

/// An error kept for admins: one line, at most 300 characters.
fn bounded(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Runs `cfg.workers` senders until `shutdown`.
pub async fn run(pool: PgPool, board: Arc<Board>, cfg: SenderConfig, shutdown: CancellationToken) {
    let http = match cfg.policy.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook sender: no HTTP client; notifications stay in the outbox");
            return;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cfg.workers.max(1) {
        let (pool, board, cfg, http, shutdown) =
            (pool.clone(), board.clone(), cfg.clone(), http.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                let found = tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = send_one(&pool, &http, &cfg) => r,
                };
                match found {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "webhook sender: database error; retrying"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = board.deliveries_notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_timestamp_and_body() {
        // The expected value is from Python's hmac module:
        // hmac.new(b"Jefe", b"1.what do ya want for nothing?", sha256).
        let s = sign("Jefe", 1, b"what do ya want for nothing?");
        assert_eq!(s, "t=1,v1=a9049465ce89cfb8e9aac62333abda66f80e3403f51f57f6bae3c3a4485eca38");
    }

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert!((2.0..2.41).contains(&backoff(1).as_secs_f64()));
        assert!((8.0..9.61).contains(&backoff(3).as_secs_f64()));
        assert!((600.0..720.1).contains(&backoff(30).as_secs_f64()));
    }

    #[test]
    fn slack_bodies_say_what_was_crossed() {
        let p = serde_json::json!({"type": "budget.crossed", "threshold_percent": 80, "spent": "8.50", "percent": 85.0,
            "currency": "USD", "budget": {"name": "ml month", "scope": {"kind": "team", "id": "ml"}, "measure": "cost", "amount": "10.00"}});
        assert_eq!(slack_text(&p)["text"], "Budget `ml month` (team:`ml`) crossed 80 %: 8.50 of 10.00 USD (85.0 %).");
    }

    #[test]
    fn slack_bodies_say_which_provider_day_differs() {
        let p = serde_json::json!({"type": "reconciliation.difference", "connection": "oai", "provider": "openai",
            "day": "2026-10-16", "threshold_percent": "1", "tokens": {"reported": 17600, "ours": 0, "difference": 17600},
            "cost": {"billed": "0.5", "ours": "0", "difference": "0.5", "currency": "USD"}});
        assert_eq!(
            slack_text(&p)["text"],
            "Provider `oai` (openai) on 2026-10-16: billed 0.5 USD, we counted 0 USD (difference 0.5); tokens 17600 reported, 0 counted (past 1 %)."
        );
    }

    /// A name chosen by whoever set the budget cannot pose as our text in the
    /// admins' channel: quoted as code, no links, no line breaks.
    #[test]
    fn a_budget_name_cannot_pose_as_instructions() {
        let p = serde_json::json!({"type": "budget.crossed", "threshold_percent": 50, "spent": "1", "percent": 50.0,
            "budget": {"name": "`URGENT`: admins must re-login at <http://evil.example/login|here>\n&now",
                "scope": {"kind": "user", "id": "eve"}, "measure": "tokens", "amount": "2"}});
        let text = slack_text(&p)["text"].as_str().unwrap().to_owned();
        assert_eq!(
            text,
            "Budget `URGENT: admins must re-login at &lt;http://evil.example/login|here&gt;&amp;now` (user:`eve`) crossed 50 %: 1 of 2 tokens (50.0 %)."
        );
    }
}
