//! A provider's report rows in our terms: one UTC day, one group (scope,
//! API key, model, tier, context window), token kinds as our events count
//! them (`input_tokens` is the whole input, cached and cache-written parts
//! included; `cache_write_tokens` is 5-minute and 1-hour writes together).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// One day's usage of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub day: NaiveDate,
    pub key: UsageKey,
    pub tokens: UsageTokens,
}

/// What a usage row is grouped by; `""` is "none" (the default project or
/// workspace, usage without an API key, a tier the provider did not name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UsageKey {
    pub scope: String,
    pub api_key: String,
    pub model: String,
    pub service_tier: String,
    pub context_window: String,
}

/// Token counts by our kinds, and request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageTokens {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub cache_write_1h: i64,
    pub audio_input: i64,
    pub audio_output: i64,
    pub requests: i64,
    pub web_search_requests: i64,
}

impl UsageTokens {
    pub fn add(&mut self, o: &UsageTokens) {
        self.input += o.input;
        self.output += o.output;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
        self.cache_write_1h += o.cache_write_1h;
        self.audio_input += o.audio_input;
        self.audio_output += o.audio_output;
        self.requests += o.requests;
        self.web_search_requests += o.web_search_requests;
    }
}

/// One day's billed amount of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostRow {
    pub day: NaiveDate,
    pub key: CostKey,
    /// ISO 4217, upper case.
    pub currency: String,
    /// Nano-units of `currency`; negative for a credit.
    pub amount_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CostKey {
    pub scope: String,
    /// OpenAI's `line_item`, Anthropic's `description`.
    pub line_item: String,
    pub model: String,
    pub service_tier: String,
    pub context_window: String,
}

/// `path` under the connection's base URL, keeping any path the base has
/// (a proxy serving the API under a prefix).
pub fn endpoint(base: &reqwest::Url, path: &str) -> reqwest::Url {
    let mut u = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    u.set_path(&joined);
    u.set_query(None);
    u
}

/// One page of a report: its rows and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub rows: Vec<T>,
    pub next_page: Option<String>,
}

/// The cursor of the next page: both providers answer `has_more` and
/// `next_page`; more without a cursor is malformed.
pub fn next_page(has_more: bool, next_page: Option<String>) -> Result<Option<String>, Malformed> {
    match (has_more, next_page) {
        (true, Some(p)) if !p.is_empty() => Ok(Some(p)),
        (true, _) => Err(Malformed("has_more is true but next_page is empty".into())),
        (false, _) => Ok(None),
    }
}

/// Why a page cannot be read. The import stops and keeps what it stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed report page: {0}")]
pub struct Malformed(pub String);

/// Reads a page body into `T`, naming the path of the first field that
/// does not fit.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Malformed> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| Malformed(format!("at {}: {}", e.path(), e.inner())))
}

/// The day a daily bucket covers: it must start at 00:00 UTC and last
/// exactly one day.
pub fn day_of(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<NaiveDate, Malformed> {
    let day = start.date_naive();
    if start != day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc() || end - start != TimeDelta::days(1) {
        return Err(Malformed(format!("a daily bucket must cover one UTC day, got {start} .. {end}")));
    }
    Ok(day)
}

/// A count the provider reported, as an `i64`.
pub fn count(n: u64, what: &str) -> Result<i64, Malformed> {
    i64::try_from(n).map_err(|_| Malformed(format!("{what}: {n} is out of range")))
}

/// An amount of `scale`-th parts of a unit (cents: 2) as nano-units,
/// rounded half to even where the provider gives more precision than a
/// nano-unit (amounts computed in floating point do).
pub fn nanos(amount: Decimal, scale: u32) -> Result<i64, Malformed> {
    let n = amount
        .checked_mul(Decimal::from(10i64.pow(9 - scale)))
        .ok_or_else(|| Malformed(format!("amount {amount} is out of range")))?;
    n.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .ok_or_else(|| Malformed(format!("amount {amount} is out of range")))
}

/// Rows with the same key on the same day summed (a provider may split a
/// group across results); the order is the primary key's.
pub fn merge_usage(rows: Vec<UsageRow>) -> Vec<UsageRow> {
    let mut m: BTreeMap<(NaiveDate, UsageKey), UsageTokens> = BTreeMap::new();
    for r in rows {
        m.entry((r.day, r.key)).or_default().add(&r.tokens);
    }
    m.into_iter().map(|((day, key), tokens)| UsageRow { day, key, tokens }).collect()
}

/// As [`merge_usage`], for costs. Rows of one key in two currencies are
/// malformed (a bill is in one currency).
pub fn merge_costs(rows: Vec<CostRow>) -> Result<Vec<CostRow>, Malformed> {
    let mut m: BTreeMap<(NaiveDate, CostKey), (String, i64)> = BTreeMap::new();
    for r in rows {
        let slot = m.entry((r.day, r.key.clone())).or_insert_with(|| (r.currency.clone(), 0));
        if slot.0 != r.currency {
            return Err(Malformed(format!(
                "line {:?} on {} is in both {} and {}",
                r.key.line_item, r.day, slot.0, r.currency
            )));
        }
        slot.1 = slot.1.checked_add(r.amount_nanos).ok_or_else(|| Malformed("amount out of range".into()))?;
    }
    Ok(m.into_iter()
        .map(|((day, key), (currency, amount_nanos))| CostRow { day, key, currency, amount_nanos })
        .collect())
}

/// A currency as the provider wrote it ("usd", "USD") as ISO 4217.
pub fn currency(code: &str) -> Result<String, Malformed> {
    let up = code.to_ascii_uppercase();
    if tokenusage_contract::money::is_currency_code(&up) {
        Ok(up)
    } else {
        Err(Malformed(format!("currency {code:?} is not an ISO 4217 code")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_become_nanos_exactly_or_rounded_half_even_past_a_nano() {
        let d = |s: &str| tokenusage_contract::money::parse_decimal(s).unwrap();
        assert_eq!(nanos(d("123.78912"), 2), Ok(1_237_891_200)); // cents
        assert_eq!(nanos(d("0.06"), 0), Ok(60_000_000));
        assert_eq!(nanos(d("0.30000000000000004"), 0), Ok(300_000_000));
        assert_eq!(nanos(d("0.0000000025"), 0), Ok(2));
        assert_eq!(nanos(d("-1.5"), 0), Ok(-1_500_000_000)); // a credit
    }

    #[test]
    fn a_daily_bucket_is_one_utc_day() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(day_of(t("2025-08-01T00:00:00Z"), t("2025-08-02T00:00:00Z")).is_ok());
        assert!(day_of(t("2025-08-01T01:00:00Z"), t("2025-08-02T01:00:00Z")).is_err());
        assert!(day_of(t("2025-08-01T00:00:00Z"), t("2025-08-01T01:00:00Z")).is_err());
    }
}
