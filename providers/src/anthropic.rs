//! Anthropic's Usage and Cost Admin API (an admin key, `sk-ant-admin…`,
//! sent as `x-api-key` with `anthropic-version: 2023-06-01`).
//!
//! - `GET /v1/organizations/usage_report/messages`: `starting_at` /
//!   `ending_at` (RFC 3339), `bucket_width=1d` (at most 31 buckets a page),
//!   `group_by[]` of `api_key_id`, `workspace_id`, `model`, `service_tier`,
//!   `context_window`; per result `uncached_input_tokens`,
//!   `cache_creation.ephemeral_5m_input_tokens` and
//!   `.ephemeral_1h_input_tokens`, `cache_read_input_tokens`,
//!   `output_tokens`, `server_tool_use.web_search_requests`. A `null`
//!   workspace is the default workspace; a `null` key is Console usage.
//! - `GET /v1/organizations/cost_report`: daily buckets, `group_by[]` of
//!   `workspace_id` and `description`; `amount` is a decimal string in the
//!   currency's lowest units (cents: "123.45" is $1.2345).
//!
//! Pages by `page` = the previous `next_page` while `has_more`.
//! References: <https://docs.anthropic.com/en/api/admin-api/usage-cost/get-messages-usage-report>,
//! <https://docs.anthropic.com/en/api/admin-api/usage-cost/get-cost-report>.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::report::{self, CostKey, CostRow, Malformed, Page, UsageKey, UsageRow, UsageTokens};

pub const USAGE_PATH: &str = "/v1/organizations/usage_report/messages";
pub const COSTS_PATH: &str = "/v1/organizations/cost_report";
pub const VERSION: &str = "2023-06-01";

fn rfc3339(day: NaiveDate) -> String {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn url(
    base: &reqwest::Url,
    path: &str,
    from: NaiveDate,
    to: NaiveDate,
    groups: &[&str],
    page: Option<&str>,
) -> reqwest::Url {
    let mut u = report::endpoint(base, path);
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("starting_at", &rfc3339(from))
            .append_pair("ending_at", &rfc3339(to))
            .append_pair("bucket_width", "1d");
        for g in groups {
            q.append_pair("group_by[]", g);
        }
        q.append_pair("limit", "31");
        if let Some(p) = page {
            q.append_pair("page", p);
        }
    }
    u
}

pub fn usage_url(base: &reqwest::Url, from: NaiveDate, to: NaiveDate, page: Option<&str>) -> reqwest::Url {
    url(base, USAGE_PATH, from, to, &["api_key_id", "workspace_id", "model", "service_tier", "context_window"], page)
}

pub fn costs_url(base: &reqwest::Url, from: NaiveDate, to: NaiveDate, page: Option<&str>) -> reqwest::Url {
    url(base, COSTS_PATH, from, to, &["workspace_id", "description"], page)
}

pub fn authorize(req: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
    req.header("x-api-key", key).header("anthropic-version", VERSION)
}

#[derive(Deserialize)]
struct PageBody<R> {
    data: Vec<Bucket<R>>,
    has_more: bool,
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Bucket<R> {
    starting_at: DateTime<Utc>,
    ending_at: DateTime<Utc>,
    results: Vec<R>,
}

#[derive(Deserialize)]
struct UsageResult {
    uncached_input_tokens: u64,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    output_tokens: u64,
    #[serde(default)]
    server_tool_use: Option<ServerToolUse>,
    #[serde(default)]
    api_key_id: Option<String>,
    #[serde(default)]
    workspace_id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(default)]
    context_window: Option<String>,
}

#[derive(Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: u64,
    #[serde(default)]
    ephemeral_1h_input_tokens: u64,
}

#[derive(Deserialize)]
struct ServerToolUse {
    #[serde(default)]
    web_search_requests: u64,
}

#[derive(Deserialize)]
struct CostResult {
    amount: String,
    currency: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(default)]
    context_window: Option<String>,
    #[serde(default)]
    workspace_id: Option<String>,
}

pub fn parse_usage(body: &[u8]) -> Result<Page<UsageRow>, Malformed> {
    let page: PageBody<UsageResult> = report::parse(body)?;
    let mut rows = Vec::new();
    for b in page.data {
        let day = report::day_of(b.starting_at, b.ending_at)?;
        for r in b.results {
            let c = |n: u64, what: &str| report::count(n, what);
            let (w5m, w1h) =
                r.cache_creation.map(|c| (c.ephemeral_5m_input_tokens, c.ephemeral_1h_input_tokens)).unwrap_or((0, 0));
            let uncached = c(r.uncached_input_tokens, "uncached_input_tokens")?;
            let read = c(r.cache_read_input_tokens.unwrap_or(0), "cache_read_input_tokens")?;
            let (w5m, w1h) = (c(w5m, "ephemeral_5m_input_tokens")?, c(w1h, "ephemeral_1h_input_tokens")?);
            // Our input is the whole input: uncached + read + written.
            let input = [uncached, read, w5m, w1h]
                .into_iter()
                .try_fold(0i64, i64::checked_add)
                .ok_or_else(|| Malformed(format!("on {day}: input tokens out of range")))?;
            rows.push(UsageRow {
                day,
                key: UsageKey {
                    scope: r.workspace_id.unwrap_or_default(),
                    api_key: r.api_key_id.unwrap_or_default(),
                    model: r.model.unwrap_or_default(),
                    service_tier: r.service_tier.unwrap_or_default(),
                    context_window: r.context_window.unwrap_or_default(),
                },
                tokens: UsageTokens {
                    input,
                    output: c(r.output_tokens, "output_tokens")?,
                    cache_read: read,
                    cache_write: w5m + w1h,
                    cache_write_1h: w1h,
                    web_search_requests: c(
                        r.server_tool_use.map(|s| s.web_search_requests).unwrap_or(0),
                        "web_search_requests",
                    )?,
                    ..UsageTokens::default()
                },
            });
        }
    }
    Ok(Page { rows, next_page: report::next_page(page.has_more, page.next_page)? })
}

pub fn parse_costs(body: &[u8]) -> Result<Page<CostRow>, Malformed> {
    let page: PageBody<CostResult> = report::parse(body)?;
    let mut rows = Vec::new();
    for b in page.data {
        let day = report::day_of(b.starting_at, b.ending_at)?;
        for r in b.results {
            let cents = tokenusage_contract::money::parse_decimal(&r.amount)
                .map_err(|why| Malformed(format!("on {day}: amount {why}")))?;
            rows.push(CostRow {
                day,
                key: CostKey {
                    scope: r.workspace_id.unwrap_or_default(),
                    line_item: r.description.unwrap_or_default(),
                    model: r.model.unwrap_or_default(),
                    service_tier: r.service_tier.unwrap_or_default(),
                    context_window: r.context_window.unwrap_or_default(),
                },
                currency: report::currency(&r.currency)?,
                amount_nanos: report::nanos(cents, 2)?,
            });
        }
    }
    Ok(Page { rows, next_page: report::next_page(page.has_more, page.next_page)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example response of "Get Messages Usage Report".
    const USAGE_EXAMPLE: &str = r#"{"data": [{"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
        "results": [{"uncached_input_tokens": 1500, "cache_creation": {"ephemeral_1h_input_tokens": 1000,
        "ephemeral_5m_input_tokens": 500}, "cache_read_input_tokens": 200, "output_tokens": 500,
        "server_tool_use": {"web_search_requests": 10}, "api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
        "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ", "model": "claude-sonnet-4-20250514",
        "service_tier": "standard", "context_window": "0-200k"}]}],
        "has_more": true, "next_page": "page_MjAyNS0wNS0xNFQwMDowMDowMFo="}"#;

    /// The example response of "Get Cost Report".
    const COSTS_EXAMPLE: &str = r#"{"data": [{"starting_at": "2025-08-01T00:00:00Z", "ending_at": "2025-08-02T00:00:00Z",
        "results": [{"currency": "USD", "amount": "123.78912", "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
        "description": "Claude Sonnet 4 Usage - Input Tokens", "cost_type": "tokens", "context_window": "0-200k",
        "model": "claude-sonnet-4-20250514", "service_tier": "standard", "token_type": "uncached_input_tokens"}]}],
        "has_more": true, "next_page": "page_MjAyNS0wNS0xNFQwMDowMDowMFo="}"#;

    #[test]
    fn the_reference_examples_read_into_our_kinds() {
        let p = parse_usage(USAGE_EXAMPLE.as_bytes()).unwrap();
        let t = p.rows[0].tokens;
        assert_eq!((t.input, t.cache_read, t.cache_write, t.cache_write_1h, t.output), (3200, 200, 1500, 1000, 500));
        assert_eq!(t.web_search_requests, 10);
        assert_eq!(p.rows[0].key.scope, "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ");
        let c = parse_costs(COSTS_EXAMPLE.as_bytes()).unwrap();
        // 123.78912 cents is $1.2378912.
        assert_eq!(c.rows[0].amount_nanos, 1_237_891_200);
        assert_eq!(c.rows[0].key.model, "claude-sonnet-4-20250514");
    }

    #[test]
    fn an_amount_that_is_not_decimal_text_is_malformed() {
        let bad = COSTS_EXAMPLE.replace("\"123.78912\"", "\"12,3\"");
        assert!(parse_costs(bad.as_bytes()).unwrap_err().0.contains("amount"));
    }
}
