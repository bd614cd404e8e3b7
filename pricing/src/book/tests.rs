use super::*;
use tokenusage_contract::{SuppliedCost, TokenKinds};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn per_m(units: &str) -> i64 {
    Price::parse_per_million(units).unwrap()
}

fn entry(model: &str, from: &str, price: Price) -> Entry {
    Entry {
        id: None,
        model: model.into(),
        currency: "USD".into(),
        effective_from: t(from),
        effective_to: None,
        price,
        long_context: None,
        service_tiers: BTreeMap::new(),
        web_search: None,
        source: "test".into(),
    }
}

fn ev(model: &str, at: &str, input: u64, output: u64, kinds: TokenKinds) -> UsageEvent {
    UsageEvent {
        source: "s".into(),
        event_id: "e".into(),
        user_id: "u".into(),
        occurred_at: t(at),
        activity: "chat".into(),
        model: model.into(),
        input_tokens: input,
        output_tokens: output,
        kinds,
        billing: Default::default(),
        cost: None,
        project: None,
        metadata: None,
    }
}

fn sonnet() -> Price {
    Price::default()
        .with(Kind::Input, per_m("3"))
        .with(Kind::Output, per_m("15"))
        .with(Kind::CacheRead, per_m("0.30"))
        .with(Kind::CacheWrite, per_m("3.75"))
        .with(Kind::CacheWrite1h, per_m("6"))
}

#[test]
fn kinds_index_their_price_slots_in_declaration_order() {
    for (i, k) in Kind::ALL.iter().enumerate() {
        assert_eq!(k.index(), i);
    }
}

/// Over 200k input tokens, Claude Sonnet 4.5's whole request is billed at
/// $6 / $22.50 / $0.60 read / $7.50 write per million (its price page);
/// at 200k exactly, at the base price.
#[test]
fn a_request_over_the_long_context_threshold_is_priced_whole_at_the_tier() {
    let tier = Tier {
        above_input_tokens: 200_000,
        price: Price::default()
            .with(Kind::Input, per_m("6"))
            .with(Kind::Output, per_m("22.5"))
            .with(Kind::CacheRead, per_m("0.6"))
            .with(Kind::CacheWrite, per_m("7.5")),
    };
    let e = Entry { long_context: Some(tier), ..entry("claude-sonnet-4-5", "2025-09-29T00:00:00Z", sonnet()) };
    let book = Book::new(1, "USD", [e]);
    let kinds =
        TokenKinds { cache_read_input_tokens: 50_000, cache_write_1h_input_tokens: 10_000, ..TokenKinds::default() };
    // 250k in (190k plain, 50k read, 10k 1-hour write: no tier price, so
    // the base $6), 1,234 out:
    // 190000×6 + 50000×0.6 + 10000×6 + 1234×22.5 = 1,257,765 micro-dollars.
    let long = book.charge(&ev("claude-sonnet-4-5", "2026-01-01T00:00:00Z", 250_000, 1234, kinds));
    assert_eq!(long.cost_nanos, 1_257_765_000);
    // 200k exactly is not over: base prices.
    let at = book.charge(&ev("claude-sonnet-4-5", "2026-01-01T00:00:00Z", 200_000, 1000, TokenKinds::default()));
    assert_eq!(at.cost_nanos, 200_000 * 3_000 + 1000 * 15_000);
}

/// gpt-4o under the Batch API is half price ($1.25 / $5), under
/// priority $4.25 / $17; kinds a tier leaves out (here cache reads under
/// batch) keep the standard price, and flex without a flex price is
/// standard. Web searches are $0.01 each on top; searches without a
/// price leave the whole event unpriced.
#[test]
fn service_tiers_and_searches_are_priced_from_the_entry() {
    let base = Price::default()
        .with(Kind::Input, per_m("2.5"))
        .with(Kind::Output, per_m("10"))
        .with(Kind::CacheRead, per_m("1.25"));
    let mut e = entry("gpt-4o", "2024-05-13T00:00:00Z", base);
    e.service_tiers
        .insert(ServiceTier::Batch, Price::default().with(Kind::Input, per_m("1.25")).with(Kind::Output, per_m("5")));
    e.service_tiers.insert(
        ServiceTier::Priority,
        Price::default().with(Kind::Input, per_m("4.25")).with(Kind::Output, per_m("17")),
    );
    e.web_search = Some(10_000_000);
    let book = Book::new(1, "USD", [e.clone()]);
    let kinds = TokenKinds { cache_read_input_tokens: 1000, ..TokenKinds::default() };
    let with = |tier: Option<ServiceTier>, searches: u64| {
        let mut ev = ev("gpt-4o-2024-08-06", "2026-01-01T00:00:00Z", 11_000, 2_000, kinds);
        ev.billing = tokenusage_contract::Billing { service_tier: tier, web_search_requests: searches };
        book.charge(&ev)
    };
    // Standard: 10000×2.5 + 1000×1.25 + 2000×10 = 46,250 micro-dollars.
    assert_eq!(with(None, 0).cost_nanos, 46_250_000);
    assert_eq!(with(Some(ServiceTier::Standard), 0).cost_nanos, 46_250_000);
    assert_eq!(with(Some(ServiceTier::Flex), 0).cost_nanos, 46_250_000);
    // Batch: 10000×1.25 + 1000×1.25 (no batch cache price) + 2000×5 = 23,750.
    assert_eq!(with(Some(ServiceTier::Batch), 0).cost_nanos, 23_750_000);
    // Priority: 10000×4.25 + 1000×1.25 + 2000×17 = 77,750.
    assert_eq!(with(Some(ServiceTier::Priority), 0).cost_nanos, 77_750_000);
    // Three searches: + $0.03.
    assert_eq!(with(Some(ServiceTier::Batch), 3).cost_nanos, 23_750_000 + 30_000_000);
    let no_search_price = Book::new(1, "USD", [Entry { web_search: None, ..e }]);
    let mut ev = ev("gpt-4o", "2026-01-01T00:00:00Z", 11_000, 2_000, kinds);
    ev.billing.web_search_requests = 1;
    let c = no_search_price.charge(&ev);
    assert_eq!((c.cost_nanos, c.unpriced_tokens), (0, 13_000));
}

#[test]
fn every_kind_is_priced_at_its_own_rate_and_rounded_once() {
    let book = Book::new(1, "USD", [entry("claude-sonnet-4-5", "2025-09-29T00:00:00Z", sonnet())]);
    let kinds = TokenKinds {
        cache_read_input_tokens: 10_000,
        cache_write_input_tokens: 2_000,
        cache_write_1h_input_tokens: 1_000,
        ..Default::default()
    };
    let c = book.charge(&ev("claude-sonnet-4-5", "2026-01-01T00:00:00Z", 14_000, 500, kinds));
    // 1000 × $3/M + 500 × $15/M + 10000 × $0.30/M + 2000 × $3.75/M + 1000 × $6/M
    // = 0.003 + 0.0075 + 0.003 + 0.0075 + 0.006 = $0.027
    assert_eq!(c.cost_nanos, 27_000_000);
    assert_eq!(c.unpriced_tokens, 0);
    // Reasoning without its own price is output.
    let r = TokenKinds { reasoning_output_tokens: 100, ..Default::default() };
    assert_eq!(book.charge(&ev("claude-sonnet-4-5", "2026-01-01T00:00:00Z", 0, 100, r)).cost_nanos, 1_500_000);
    // A third of a nano-unit rounds to 0, half of one to even.
    let tiny = Book::new(1, "USD", [entry("m", "2025-01-01T00:00:00Z", Price::default().with(Kind::Input, 333_333))]);
    assert_eq!(tiny.charge(&ev("m", "2026-01-01T00:00:00Z", 1, 0, TokenKinds::default())).cost_nanos, 0);
    assert_eq!(round_per_million(1_500_000), 2);
    assert_eq!(round_per_million(2_500_000), 2);
    assert_eq!(round_per_million(2_500_001), 3);
}

#[test]
fn kinds_without_a_price_and_models_without_an_entry_are_unpriced_never_free() {
    let only_text = Price::default().with(Kind::Input, per_m("1")).with(Kind::Output, per_m("2"));
    let book = Book::new(1, "USD", [entry("m", "2025-01-01T00:00:00Z", only_text)]);
    let kinds = TokenKinds { cache_read_input_tokens: 40, audio_output_tokens: 5, ..Default::default() };
    let c = book.charge(&ev("m", "2026-01-01T00:00:00Z", 100, 10, kinds));
    assert_eq!(c.unpriced_tokens, 45);
    assert_eq!(c.cost_nanos, 60 * 1000 + 5 * 2000);
    let none = book.charge(&ev("other", "2026-01-01T00:00:00Z", 100, 10, TokenKinds::default()));
    assert_eq!((none.cost_nanos, none.unpriced_tokens), (0, 110));
    // Before the first effective date the model has no price either.
    assert_eq!(book.charge(&ev("m", "2024-12-31T23:59:59Z", 1, 1, TokenKinds::default())).unpriced_tokens, 2);
}

#[test]
fn the_entry_in_force_at_event_time_prices_it() {
    // An open-ended older price is superseded from the newer one's date.
    let old = entry("m", "2025-01-01T00:00:00Z", Price::default().with(Kind::Input, per_m("2")));
    let new = entry("m", "2026-03-01T00:00:00Z", Price::default().with(Kind::Input, per_m("1")));
    let book = Book::new(1, "USD", [new, old]);
    let at = |s| book.charge(&ev("m", s, 1_000_000, 0, TokenKinds::default())).cost_nanos;
    assert_eq!(at("2026-02-28T23:59:59Z"), 2_000_000_000);
    assert_eq!(at("2026-03-01T00:00:00Z"), 1_000_000_000);
}

#[test]
fn dated_variants_provider_prefixes_and_patterns_find_their_price() {
    let p = Price::default().with(Kind::Input, per_m("1"));
    let book = Book::new(
        1,
        "USD",
        [
            entry("gpt-4o", "2024-01-01T00:00:00Z", p),
            entry("gpt-4o-mini", "2024-01-01T00:00:00Z", p.with(Kind::Input, per_m("0.15"))),
            entry("claude-*", "2024-01-01T00:00:00Z", p.with(Kind::Input, per_m("9"))),
            entry("claude-3-5-haiku*", "2024-01-01T00:00:00Z", p.with(Kind::Input, per_m("0.8"))),
        ],
    );
    let at = t("2026-01-01T00:00:00Z");
    let price = |m: &str| book.lookup(m, at).map(|e| e.model.clone());
    assert_eq!(price("gpt-4o").as_deref(), Some("gpt-4o"));
    assert_eq!(price("GPT-4o-2024-08-06").as_deref(), Some("gpt-4o"));
    assert_eq!(price("openai/gpt-4o").as_deref(), Some("gpt-4o"));
    assert_eq!(price("azure/gpt-4o-mini-2024-07-18").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(price("gpt-4o-latest").as_deref(), Some("gpt-4o"));
    assert_eq!(price("claude-3-5-haiku@20241022").as_deref(), Some("claude-3-5-haiku*"));
    assert_eq!(price("claude-opus-4").as_deref(), Some("claude-*"));
    assert_eq!(price("gpt-4"), None);
}

#[test]
fn a_supplied_cost_in_the_books_currency_wins() {
    let book = Book::new(1, "USD", [entry("m", "2025-01-01T00:00:00Z", Price::default().with(Kind::Input, 1))]);
    let mut e = ev("m", "2026-01-01T00:00:00Z", 10, 0, TokenKinds::default());
    e.cost = Some(SuppliedCost { amount: 42, currency: "USD".into() });
    assert_eq!(book.charge(&e), Charge { cost_nanos: 42, unpriced_tokens: 0, supplied: true, entry: None });
    e.cost = Some(SuppliedCost { amount: 42, currency: "EUR".into() });
    assert!(!book.charge(&e).supplied);
}
