//! OpenAI's organisation Usage and Costs APIs (an admin key, `sk-admin-…`).
//!
//! - `GET /v1/organization/usage/completions`: daily buckets
//!   (`bucket_width=1d`, `start_time`/`end_time` in Unix seconds, at most 31
//!   buckets a page), grouped by `project_id`, `api_key_id`, `model` and
//!   `batch`; pages by `page` = the previous `next_page` while `has_more`.
//!   `input_tokens` counts the whole input, cached tokens included
//!   (`input_cached_tokens`).
//! - `GET /v1/organization/costs`: daily buckets (`limit` up to 180),
//!   grouped by `project_id` and `line_item`; `amount` is `{value,
//!   currency}` with `value` a JSON number in currency units.
//!
//! References: <https://platform.openai.com/docs/api-reference/usage/completions>,
//! <https://platform.openai.com/docs/api-reference/usage/costs> and the
//! cookbook <https://cookbook.openai.com/examples/completions_usage_api>
//! (repeated `group_by=` parameters).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::report::{self, CostKey, CostRow, Malformed, Page, UsageKey, UsageRow, UsageTokens};

pub const USAGE_PATH: &str = "/v1/organization/usage/completions";
pub const COSTS_PATH: &str = "/v1/organization/costs";

fn unix(day: NaiveDate) -> String {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp().to_string()
}

/// The usage page URL for days `from .. to` (exclusive).
pub fn usage_url(base: &reqwest::Url, from: NaiveDate, to: NaiveDate, page: Option<&str>) -> reqwest::Url {
    let mut u = report::endpoint(base, USAGE_PATH);
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("start_time", &unix(from)).append_pair("end_time", &unix(to)).append_pair("bucket_width", "1d");
        for g in ["project_id", "api_key_id", "model", "batch"] {
            q.append_pair("group_by", g);
        }
        q.append_pair("limit", "31");
        if let Some(p) = page {
            q.append_pair("page", p);
        }
    }
    u
}

/// The costs page URL for days `from .. to` (exclusive).
pub fn costs_url(base: &reqwest::Url, from: NaiveDate, to: NaiveDate, page: Option<&str>) -> reqwest::Url {
    let mut u = report::endpoint(base, COSTS_PATH);
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("start_time", &unix(from)).append_pair("end_time", &unix(to)).append_pair("bucket_width", "1d");
        for g in ["project_id", "line_item"] {
            q.append_pair("group_by", g);
        }
        q.append_pair("limit", "180");
        if let Some(p) = page {
            q.append_pair("page", p);
        }
    }
    u
}

pub fn authorize(req: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
    req.bearer_auth(key)
}

#[derive(Deserialize)]
struct PageBody<R> {
    data: Vec<Bucket<R>>,
    has_more: bool,
    next_page: Option<String>,
}

#[derive(Deserialize)]
struct Bucket<R> {
    start_time: i64,
    end_time: i64,
    // The reference's examples name it `results`; one page of it `result`.
    #[serde(alias = "result")]
    results: Vec<R>,
}

#[derive(Deserialize)]
struct UsageResult {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    input_cached_tokens: Option<u64>,
    #[serde(default)]
    input_audio_tokens: Option<u64>,
    #[serde(default)]
    output_audio_tokens: Option<u64>,
    num_model_requests: u64,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    api_key_id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    batch: Option<bool>,
    #[serde(default)]
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct CostResult {
    amount: Amount,
    #[serde(default)]
    line_item: Option<String>,
    #[serde(default)]
    project_id: Option<String>,
}

#[derive(Deserialize)]
struct Amount {
    value: serde_json::Number,
    currency: String,
}

fn bucket_day(start: i64, end: i64) -> Result<NaiveDate, Malformed> {
    let t =
        |s: i64| DateTime::<Utc>::from_timestamp(s, 0).ok_or_else(|| Malformed(format!("time {s} is out of range")));
    report::day_of(t(start)?, t(end)?)
}

pub fn parse_usage(body: &[u8]) -> Result<Page<UsageRow>, Malformed> {
    let page: PageBody<UsageResult> = report::parse(body)?;
    let mut rows = Vec::new();
    for b in page.data {
        let day = bucket_day(b.start_time, b.end_time)?;
        for r in b.results {
            let cached = report::count(r.input_cached_tokens.unwrap_or(0), "input_cached_tokens")?;
            let input = report::count(r.input_tokens, "input_tokens")?;
            if cached > input {
                return Err(Malformed(format!("on {day}: input_cached_tokens {cached} exceeds input_tokens {input}")));
            }
            let tier = match (r.batch, r.service_tier) {
                (Some(true), _) => "batch".to_owned(),
                (_, Some(t)) => t,
                _ => String::new(),
            };
            rows.push(UsageRow {
                day,
                key: UsageKey {
                    scope: r.project_id.unwrap_or_default(),
                    api_key: r.api_key_id.unwrap_or_default(),
                    model: r.model.unwrap_or_default(),
                    service_tier: tier,
                    context_window: String::new(),
                },
                tokens: UsageTokens {
                    input,
                    output: report::count(r.output_tokens, "output_tokens")?,
                    cache_read: cached,
                    audio_input: report::count(r.input_audio_tokens.unwrap_or(0), "input_audio_tokens")?,
                    audio_output: report::count(r.output_audio_tokens.unwrap_or(0), "output_audio_tokens")?,
                    requests: report::count(r.num_model_requests, "num_model_requests")?,
                    ..UsageTokens::default()
                },
            });
        }
    }
    Ok(Page { rows, next_page: report::next_page(page.has_more, page.next_page)? })
}

/// The model a cost line names: OpenAI's line items read "<model>, <what>"
/// (e.g. "gpt-4o-2024-08-06, input"); others name no model.
pub fn line_model(line_item: &str) -> &str {
    match line_item.split_once(", ") {
        Some((model, _)) if !model.contains(' ') => model,
        _ => "",
    }
}

pub fn parse_costs(body: &[u8]) -> Result<Page<CostRow>, Malformed> {
    let page: PageBody<CostResult> = report::parse(body)?;
    let mut rows = Vec::new();
    for b in page.data {
        let day = bucket_day(b.start_time, b.end_time)?;
        for r in b.results {
            let value = tokenusage_contract::money::parse_decimal(&r.amount.value.to_string()).map_err(Malformed)?;
            let line_item = r.line_item.unwrap_or_default();
            rows.push(CostRow {
                day,
                key: CostKey {
                    scope: r.project_id.unwrap_or_default(),
                    model: line_model(&line_item).to_owned(),
                    line_item,
                    ..CostKey::default()
                },
                currency: report::currency(&r.amount.currency)?,
                amount_nanos: report::nanos(value, 0)?,
            });
        }
    }
    Ok(Page { rows, next_page: report::next_page(page.has_more, page.next_page)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example response of the Usage API reference (completions).
    const USAGE_EXAMPLE: &str = r#"{"object": "page", "data": [{"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
        "results": [{"object": "organization.usage.completions.result", "input_tokens": 1000, "output_tokens": 500,
        "input_cached_tokens": 800, "num_model_requests": 5, "project_id": null, "user_id": null, "api_key_id": null,
        "model": null, "batch": null}]}], "has_more": true, "next_page": "AAAAAGdGxdEiJdKOAAAAAGcqsYA="}"#;

    /// The example response of the Costs API reference.
    const COSTS_EXAMPLE: &str = r#"{"object": "page", "data": [{"object": "bucket", "start_time": 1730419200, "end_time": 1730505600,
        "results": [{"object": "organization.costs.result", "amount": {"value": 0.06, "currency": "usd"},
        "line_item": null, "project_id": null}]}], "has_more": false, "next_page": null}"#;

    #[test]
    fn the_reference_examples_read_into_our_kinds() {
        let p = parse_usage(USAGE_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(p.next_page.as_deref(), Some("AAAAAGdGxdEiJdKOAAAAAGcqsYA="));
        assert_eq!(p.rows[0].day, NaiveDate::from_ymd_opt(2024, 11, 1).unwrap());
        assert_eq!(p.rows[0].tokens.input, 1000);
        assert_eq!(p.rows[0].tokens.cache_read, 800);
        assert_eq!(p.rows[0].tokens.requests, 5);
        let c = parse_costs(COSTS_EXAMPLE.as_bytes()).unwrap();
        assert_eq!((c.rows[0].currency.as_str(), c.rows[0].amount_nanos), ("USD", 60_000_000));
        assert_eq!(c.next_page, None);
    }

    #[test]
    fn a_malformed_page_names_the_field() {
        let bad = USAGE_EXAMPLE.replace("\"input_tokens\": 1000", "\"input_tokens\": \"1000\"");
        assert!(parse_usage(bad.as_bytes()).unwrap_err().0.contains("data[0].results[0].input_tokens"));
        let more = USAGE_EXAMPLE.replace("\"AAAAAGdGxdEiJdKOAAAAAGcqsYA=\"", "null");
        assert!(parse_usage(more.as_bytes()).unwrap_err().0.contains("next_page"));
    }

    #[test]
    fn a_line_item_names_its_model() {
        assert_eq!(line_model("gpt-4o-2024-08-06, input"), "gpt-4o-2024-08-06");
        assert_eq!(line_model("Web search tool calls"), "");
    }

    #[test]
    fn urls_carry_the_range_groups_and_cursor() {
        let base = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let u = usage_url(&base, d("2024-11-01"), d("2024-11-03"), Some("c1"));
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/v1/organization/usage/completions?start_time=1730419200&end_time=1730592000&bucket_width=1d\
             &group_by=project_id&group_by=api_key_id&group_by=model&group_by=batch&limit=31&page=c1"
        );
    }
}
