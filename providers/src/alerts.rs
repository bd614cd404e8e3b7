//! Alerts when a provider's day differs from ours by more than a
//! connection's percentage: after each scheduled import, every whole day of
//! the range is checked, and a day past the percentage (tokens or cost)
//! becomes one `reconciliation.difference` notification per webhook
//! endpoint in the budgets' outbox (`webhook_deliveries`: signed, retried
//! and delivered once by the API's sender), once per connection and day.

/// The NOTIFY channel told when alerts were queued.
pub const CHANNEL: &str = "tokenusage_reconciliation";

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::PgPool;

use crate::reconcile::{self, Reason};
use crate::store::StoreError;

/// Sets (or with `None`, turns off) a connection's alert.
pub async fn set(pool: &PgPool, name: &str, percent: Option<Decimal>, webhooks: &[String]) -> Result<(), StoreError> {
    if percent.is_some_and(|p| p.is_sign_negative() || p > Decimal::from(100)) {
        return Err(StoreError::Invalid("the alert percentage is 0 to 100".into()));
    }
    if percent.is_some() && webhooks.is_empty() {
        return Err(StoreError::Invalid(
            "name at least one webhook endpoint to notify (tokenusage webhooks add)".into(),
        ));
    }
    let known: Vec<String> = sqlx::query_scalar("select name from webhook_endpoints where name = any($1)")
        .bind(webhooks)
        .fetch_all(pool)
        .await?;
    if let Some(missing) = webhooks.iter().find(|w| !known.contains(w)) {
        return Err(StoreError::Invalid(format!("no webhook endpoint named {missing:?}")));
    }
    let n =
        sqlx::query("update provider_connections set alert_percent = $2::numeric, alert_webhooks = $3 where name = $1")
            .bind(name)
            .bind(percent.map(|p| p.to_string()))
            .bind(if percent.is_some() { webhooks.to_vec() } else { Vec::new() })
            .execute(pool)
            .await?
            .rows_affected();
    if n == 0 {
        return Err(StoreError::NoSuchConnection(name.to_owned()));
    }
    Ok(())
}

/// One day of one connection, summed over its lines.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DayTotals {
    pub reported_tokens: i64,
    pub our_tokens: i64,
    pub billed_nanos: i64,
    pub our_cost_nanos: i64,
    pub reasons: Vec<Reason>,
}

/// Checks days `from .. to` of connection `name`; returns how many
/// notifications were newly queued.
pub async fn check(pool: &PgPool, name: &str, from: NaiveDate, to: NaiveDate) -> Result<u64, sqlx::Error> {
    let row: Option<(String, Option<String>, Vec<String>)> = sqlx::query_as(
        "select provider, alert_percent::text, alert_webhooks from provider_connections where name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    let Some((provider, Some(percent), webhooks)) = row else { return Ok(0) };
    let Ok(percent) = tokenusage_contract::money::parse_decimal(&percent) else { return Ok(0) };
    if webhooks.is_empty() || to <= from {
        return Ok(0);
    }
    let report = reconcile::reconcile(pool, from, to).await?;
    let mut days: std::collections::BTreeMap<NaiveDate, DayTotals> = Default::default();
    for l in report.lines.iter().filter(|l| l.connection.as_deref() == Some(name)) {
        let d = days.entry(l.day).or_default();
        d.reported_tokens += l.reported.map(|r| r.tokens.total()).unwrap_or(0);
        d.our_tokens += l.ours.map(|c| c.tokens.total()).unwrap_or(0);
        d.our_cost_nanos += l.ours.map(|c| c.cost_nanos).unwrap_or(0);
        if let Some(b) = l.billed.as_ref().filter(|b| b.currency == report.currency) {
            d.billed_nanos += b.amount_nanos;
        }
        for r in &l.reasons {
            if !d.reasons.contains(r) {
                d.reasons.push(*r);
            }
        }
    }
    let mut queued = 0;
    for (day, t) in days {
        let tokens_off = reconcile::past(t.reported_tokens - t.our_tokens, t.reported_tokens, percent);
        let cost_off = reconcile::past(t.billed_nanos - t.our_cost_nanos, t.billed_nanos, percent);
        if !tokens_off && !cost_off {
            continue;
        }
        let key = format!("reconciliation:{name}:{day}");
        let money = tokenusage_contract::money::format_nanos;
        let payload = serde_json::json!({
            "type": "reconciliation.difference",
            "idempotency_key": key,
            "occurred_at": chrono::Utc::now(),
            "connection": name,
            "provider": provider,
            "day": day,
            "threshold_percent": percent.to_string(),
            "tokens": {"reported": t.reported_tokens, "ours": t.our_tokens, "difference": t.reported_tokens - t.our_tokens},
            "cost": {"billed": money(t.billed_nanos.max(0)), "ours": money(t.our_cost_nanos),
                     "difference": reconcile::signed_nanos(t.billed_nanos - t.our_cost_nanos), "currency": report.currency},
            "reasons": t.reasons,
        });
        queued += sqlx::query(
            "insert into webhook_deliveries (endpoint_id, event, idempotency_key, payload) \
             select e.id, 'reconciliation.difference', $2, $3 from webhook_endpoints e where e.name = any($1) \
             on conflict (endpoint_id, idempotency_key) do nothing",
        )
        .bind(&webhooks)
        .bind(&key)
        .bind(payload)
        .execute(pool)
        .await?
        .rows_affected();
    }
    if queued > 0 {
        // Admins watching live (`watch_reconciliation`) in every API process.
        sqlx::query("select pg_notify($1, '')").bind(CHANNEL).execute(pool).await?;
    }
    // The API's sender polls the outbox twice a second.
    Ok(queued)
}
