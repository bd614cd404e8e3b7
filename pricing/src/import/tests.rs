use super::*;

fn opts() -> ImportOptions {
    ImportOptions {
        currency: "USD".into(),
        effective_from: "2025-01-01T00:00:00Z".parse().unwrap(),
        source: "test".into(),
    }
}

#[test]
fn litellm_prices_are_read_exactly_per_kind() {
    let text = r#"{
        "sample_spec": {"input_cost_per_token": 0.0},
        "claude-sonnet-4-5": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07, "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06, "litellm_provider": "anthropic"},
        "gemini-2.0-flash-lite": {"input_cost_per_token": 7.5e-08, "output_cost_per_token": 3e-07},
        "dall-e-3": {"input_cost_per_pixel": 1e-07, "litellm_provider": "openai"}
    }"#;
    let got = read(text, &opts()).unwrap();
    assert_eq!(got.format, "litellm");
    let sonnet = got.entries.iter().find(|e| e.model == "claude-sonnet-4-5").unwrap();
    assert_eq!(sonnet.price.get(Kind::Input), Some(3_000_000_000));
    assert_eq!(sonnet.price.get(Kind::CacheRead), Some(300_000_000));
    assert_eq!(sonnet.price.get(Kind::CacheWrite1h), Some(6_000_000_000));
    let lite = got.entries.iter().find(|e| e.model == "gemini-2.0-flash-lite").unwrap();
    assert_eq!(lite.price.get(Kind::Input), Some(75_000_000));
    assert!(got.skipped.is_empty(), "{:?}", got.skipped);
    assert_eq!(got.not_priced, vec![("dall-e-3".to_owned(), "no per-token price".to_owned())]);
}

#[test]
fn a_price_source_is_bounded_and_printable() {
    assert!(check_source("https://openai.com/api/pricing/").is_ok());
    assert!(check_source("").unwrap_err().contains("1 to 512"));
    assert!(check_source(&"x".repeat(513)).unwrap_err().contains("got 513"));
    assert!(check_source("a\nb").unwrap_err().contains("control"));
}

#[test]
fn our_format_round_trips_and_refuses_bad_entries_by_name() {
    let text = r#"{"format": "tokenusage.prices.v1", "currency": "USD", "entries": [
        {"model": "gpt-4o", "effective_from": "2024-05-13T00:00:00Z", "per_million": {"input": "2.5", "output": "10", "cache_read": "1.25"}, "source": "https://openai.com/api/pricing/"},
        {"model": "bad model", "effective_from": "2024-05-13T00:00:00Z", "per_million": {"input": "1"}},
        {"model": "m", "effective_from": "2024-05-13T00:00:00Z", "per_million": {"inptu": "1"}},
        {"model": "m2", "effective_from": "2024-05-13T00:00:00Z", "per_million": {"input": "0.0000000001"}}
    ]}"#;
    let got = read(text, &opts()).unwrap();
    assert_eq!(got.entries.len(), 1);
    assert_eq!(got.skipped.len(), 3, "{:?}", got.skipped);
    assert!(got.skipped[1].1.contains("inptu"));
    let again = read(&export("USD", &got.entries).to_string(), &opts()).unwrap();
    assert_eq!(again.entries, got.entries);
    let eur = ImportOptions { currency: "EUR".into(), ..opts() };
    assert!(read(text, &eur).unwrap_err().to_string().contains("in USD and the book is in EUR"));
}

/// LiteLLM's `*_batches`, `*_flex` and `*_priority` prices become
/// service tiers and `search_context_cost_per_query` the per-search
/// price; our format carries both and reads them back unchanged.
#[test]
fn service_tier_and_search_prices_are_imported_and_round_trip() {
    let text = r#"{"gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06, "cache_read_input_token_cost_priority": 2.125e-06,
        "input_cost_per_token_batches": 1.25e-06, "output_cost_per_token_batches": 5e-06,
        "input_cost_per_token_priority": 4.25e-06, "output_cost_per_token_priority": 1.7e-05,
        "search_context_cost_per_query": {"search_context_size_low": 0.03, "search_context_size_medium": 0.035,
        "search_context_size_high": 0.05}, "litellm_provider": "openai"}}"#;
    let got = read(text, &opts()).unwrap();
    let e = &got.entries[0];
    let batch = &e.service_tiers[&ServiceTier::Batch];
    assert_eq!((batch.own(Kind::Input), batch.own(Kind::Output)), (Some(1_250_000_000), Some(5_000_000_000)));
    assert_eq!(batch.own(Kind::CacheRead), None);
    let priority = &e.service_tiers[&ServiceTier::Priority];
    assert_eq!(priority.own(Kind::CacheRead), Some(2_125_000_000));
    assert!(!e.service_tiers.contains_key(&ServiceTier::Flex));
    assert_eq!(e.web_search, Some(35_000_000));
    let again = read(&export("USD", &got.entries).to_string(), &opts()).unwrap();
    assert_eq!(again.entries, got.entries);
    // A tier that has no prices of its own, or an unknown request kind, is refused by name.
    let bad = r#"{"format": "tokenusage.prices.v1", "currency": "USD", "entries": [
        {"model": "a", "effective_from": "2024-05-13T00:00:00Z", "per_million": {"input": "1"}, "service_tiers": {"standard": {"input": "1"}}},
        {"model": "b", "effective_from": "2024-05-13T00:00:00Z", "per_million": {"input": "1"}, "per_request": {"web_fetch": "0.01"}},
        {"model": "c", "effective_from": "2024-05-13T00:00:00Z", "per_million": {"input": "1"}, "service_tiers": {"batch": {"inptu": "1"}}}
    ]}"#;
    let got = read(bad, &opts()).unwrap();
    let why: Vec<&str> = got.skipped.iter().map(|(_, w)| w.as_str()).collect();
    assert!(why[0].contains("service_tiers.standard"), "{why:?}");
    assert!(why[1].contains("per_request.web_fetch"), "{why:?}");
    assert!(why[2].contains("service_tiers.batch.per_million.inptu"), "{why:?}");
}

#[test]
fn long_context_prices_are_imported_and_round_trip() {
    let text = r#"{"claude-sonnet-4-5": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
        "input_cost_per_token_above_200k_tokens": 6e-06, "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07, "litellm_provider": "anthropic"},
        "gemini-1.5-pro": {"input_cost_per_token": 1.25e-06, "input_cost_per_token_above_128k_tokens": 2.5e-06,
        "input_cost_per_token_above_1000k_tokens": 5e-06, "litellm_provider": "vertex"}}"#;
    let got = read(text, &opts()).unwrap();
    let sonnet = got.entries.iter().find(|e| e.model == "claude-sonnet-4-5").unwrap();
    let tier = sonnet.long_context.unwrap();
    assert_eq!(tier.above_input_tokens, 200_000);
    assert_eq!(tier.price.own(Kind::Input), Some(6_000_000_000));
    assert_eq!(tier.price.own(Kind::Output), Some(22_500_000_000));
    assert_eq!(tier.price.own(Kind::CacheRead), Some(600_000_000));
    // Two thresholds: the lowest is kept and the other is reported, not silently dropped.
    let gemini = got.entries.iter().find(|e| e.model == "gemini-1.5-pro").unwrap();
    assert_eq!(gemini.long_context.unwrap().above_input_tokens, 128_000);
    assert!(
        got.not_priced.iter().any(|(m, why)| m == "gemini-1.5-pro" && why.contains("1000k")),
        "{:?}",
        got.not_priced
    );
    // Our format keeps the tier.
    let again = read(&export("USD", &got.entries).to_string(), &opts()).unwrap();
    assert_eq!(again.entries, got.entries);
    // models.dev's context_over_200k.
    let md = r#"{"anthropic": {"models": {"claude-sonnet-4-5": {"cost": {"input": 3, "output": 15,
        "context_over_200k": {"input": 6, "output": 22.5}}}}}}"#;
    let got = read(md, &opts()).unwrap();
    assert_eq!(got.entries[0].long_context.unwrap().price.own(Kind::Output), Some(22_500_000_000));
}

#[test]
fn models_dev_prices_are_per_million() {
    let text = r#"{"anthropic": {"id": "anthropic", "models": {"claude-sonnet-4-5": {"cost": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}}}}"#;
    let got = read(text, &opts()).unwrap();
    assert_eq!(got.entries.len(), 2);
    assert_eq!(got.entries[1].model, "anthropic/claude-sonnet-4-5");
    assert_eq!(got.entries[0].price.get(Kind::CacheWrite), Some(3_750_000_000));
}
