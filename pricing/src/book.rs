//! Prices, entries, the book and the charge of one event. Pure: the
//! projector, `reprice` and the API's tests use it without a database.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use tokenusage_contract::money;
use tokenusage_contract::{ServiceTier, UsageEvent};

/// The token kinds a price can name. `Input` and `Output` price the plain
/// text part of each total (what is left after the other kinds, by the
/// contract's subset rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Input,
    Output,
    CacheRead,
    CacheWrite,
    CacheWrite1h,
    Reasoning,
    AudioInput,
    AudioOutput,
    ImageInput,
    ImageOutput,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Input,
        Kind::Output,
        Kind::CacheRead,
        Kind::CacheWrite,
        Kind::CacheWrite1h,
        Kind::Reasoning,
        Kind::AudioInput,
        Kind::AudioOutput,
        Kind::ImageInput,
        Kind::ImageOutput,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Output => "output",
            Kind::CacheRead => "cache_read",
            Kind::CacheWrite => "cache_write",
            Kind::CacheWrite1h => "cache_write_1h",
            Kind::Reasoning => "reasoning",
            Kind::AudioInput => "audio_input",
            Kind::AudioOutput => "audio_output",
            Kind::ImageInput => "image_input",
            Kind::ImageOutput => "image_output",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The kind's slot in [`Price`]: declaration order, the order of [`Kind::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// Nano-units of the currency per million tokens of each kind; `None` is
/// "no price" (those tokens are unpriced). Reasoning tokens without a price
/// of their own are priced as output: every provider bills them so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price(pub [Option<i64>; 10]);

/// The most a price may be: 10^6 currency units per million tokens.
pub const MAX_PRICE_NANOS_PER_MTOK: i64 = 1_000_000 * money::NANOS_PER_UNIT;

impl Price {
    pub fn get(&self, k: Kind) -> Option<i64> {
        match (k, self.0[k.index()]) {
            (Kind::Reasoning, None) => self.0[Kind::Output.index()],
            (_, p) => p,
        }
    }

    /// The kind's own price, without the reasoning → output fallback (what
    /// is stored and shown).
    pub fn own(&self, k: Kind) -> Option<i64> {
        self.0[k.index()]
    }

    pub fn set(&mut self, k: Kind, nanos_per_mtok: Option<i64>) {
        self.0[k.index()] = nanos_per_mtok;
    }

    pub fn with(mut self, k: Kind, nanos_per_mtok: i64) -> Price {
        self.set(k, Some(nanos_per_mtok));
        self
    }

    /// Kinds that have a price of their own, with it.
    pub fn named(&self) -> impl Iterator<Item = (Kind, i64)> + '_ {
        Kind::ALL.into_iter().filter_map(|k| self.0[k.index()].map(|p| (k, p)))
    }

    /// Parses "<amount per million tokens>" for one kind, e.g. "2.5" for
    /// $2.50 per million.
    pub fn parse_per_million(text: &str) -> Result<i64, String> {
        let d = money::parse_decimal(text)?;
        money::to_scaled(d, 9, MAX_PRICE_NANOS_PER_MTOK)
            .map_err(|why| format!("price {text:?} per million tokens {why} (at most 9 decimal places)"))
    }
}

/// A long-context price: when one request's input is more than
/// `above_input_tokens` (Anthropic's and Google's 200k), every token of that
/// request is priced at this tier, kind by kind; a kind the tier does not
/// name keeps the base price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub above_input_tokens: i64,
    pub price: Price,
}

impl Tier {
    /// The price of a request in this tier: the tier's own kinds over `base`.
    pub fn over(&self, base: &Price) -> Price {
        over(&self.price, base)
    }
}

/// `top`'s own kinds over `base`.
fn over(top: &Price, base: &Price) -> Price {
    let mut p = *base;
    for (k, n) in top.named() {
        p.set(k, Some(n));
    }
    p
}

/// The most a per-request price may be: 1,000 currency units.
pub const MAX_PRICE_NANOS_PER_REQUEST: i64 = 1_000 * money::NANOS_PER_UNIT;

/// One dated price of one model (or model pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The database id, once stored.
    pub id: Option<i64>,
    /// An exact model name, or a pattern where `*` matches any run of
    /// characters (e.g. `claude-sonnet-4-5-*`).
    pub model: String,
    /// ISO 4217; every entry of a book is in the book's currency.
    pub currency: String,
    pub effective_from: DateTime<Utc>,
    pub effective_to: Option<DateTime<Utc>>,
    pub price: Price,
    /// The long-context price, if the model has one.
    pub long_context: Option<Tier>,
    /// Prices of the batch, flex and priority tiers, kind by kind over the
    /// base (or long-context) price: a kind a tier does not name keeps it.
    pub service_tiers: BTreeMap<ServiceTier, Price>,
    /// Nano-units per web search request, if the model has a price for them.
    pub web_search: Option<i64>,
    /// Where the price comes from: a public price page, an import, a person.
    pub source: String,
}

impl Entry {
    pub fn in_force(&self, at: DateTime<Utc>) -> bool {
        self.effective_from <= at && self.effective_to.is_none_or(|to| at < to)
    }

    pub fn is_pattern(&self) -> bool {
        self.model.contains('*')
    }
}

/// What one event costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    /// Exact cost of the priced tokens, in nano-units of the book's currency.
    pub cost_nanos: i64,
    /// Tokens no price covered. Their cost is unknown, not zero.
    pub unpriced_tokens: i64,
    /// The publisher supplied the cost (it wins over the book).
    pub supplied: bool,
    /// The entry that priced it, if any.
    pub entry: Option<i64>,
}

/// A price book: the entries of one currency, indexed for lookup.
#[derive(Debug, Clone, Default)]
pub struct Book {
    /// The number `price_book_state` had when this book was read.
    pub version: i64,
    pub currency: String,
    exact: HashMap<String, Vec<Entry>>,
    /// Patterns, most specific (most literal characters) first.
    patterns: Vec<Entry>,
}

impl Book {
    pub fn new(version: i64, currency: &str, entries: impl IntoIterator<Item = Entry>) -> Book {
        let mut b = Book { version, currency: currency.to_owned(), ..Book::default() };
        for e in entries {
            if e.is_pattern() {
                b.patterns.push(e);
            } else {
                b.exact.entry(e.model.to_ascii_lowercase()).or_default().push(e);
            }
        }
        // The latest entry in force wins: a new price supersedes an older
        // open-ended one from its own date on.
        for es in b.exact.values_mut() {
            es.sort_by_key(|e| std::cmp::Reverse(e.effective_from));
        }
        b.patterns.sort_by_key(|e| {
            (std::cmp::Reverse(e.model.chars().filter(|c| *c != '*').count()), std::cmp::Reverse(e.effective_from))
        });
        b
    }

    pub fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>() + self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry pricing `model` at `at`: the exact name; then the name
    /// without a `provider/` prefix, without a date or `-latest` suffix, or
    /// both; then the most specific matching pattern. Case is ignored.
    pub fn lookup(&self, model: &str, at: DateTime<Utc>) -> Option<&Entry> {
        let lower = model.to_ascii_lowercase();
        for name in candidates(&lower) {
            if let Some(e) = self.exact.get(&name).and_then(|es| es.iter().find(|e| e.in_force(at))) {
                return Some(e);
            }
        }
        self.patterns.iter().find(|e| e.in_force(at) && glob(&e.model.to_ascii_lowercase(), &lower))
    }

    /// Prices one event at its `occurred_at`. A supplied cost in the book's
    /// currency wins; otherwise each kind is priced by the entry in force,
    /// and kinds without a price (or a model without an entry) are counted
    /// as unpriced.
    pub fn charge(&self, e: &UsageEvent) -> Charge {
        if let Some(c) = &e.cost
            && c.currency == self.currency
        {
            return Charge { cost_nanos: c.amount, unpriced_tokens: 0, supplied: true, entry: None };
        }
        let total = (e.input_tokens + e.output_tokens) as i64;
        let Some(entry) = self.lookup(&e.model, e.occurred_at) else {
            return Charge { unpriced_tokens: total, ..Charge::default() };
        };
        let mut price = match &entry.long_context {
            Some(t) if e.input_tokens as i64 > t.above_input_tokens => t.over(&entry.price),
            _ => entry.price,
        };
        if let Some(tier) = e.billing.service_tier.and_then(|t| entry.service_tiers.get(&t)) {
            price = over(tier, &price);
        }
        // Searches without a price make the whole event's cost unknown: a
        // cost without them would read as the full cost and understate it.
        let searches = e.billing.web_search_requests;
        let search_price = match (searches, entry.web_search) {
            (0, _) => 0,
            (n, Some(p)) => i128::from(n) * i128::from(p) * 1_000_000,
            (_, None) => return Charge { unpriced_tokens: total, entry: entry.id, ..Charge::default() },
        };
        let k = &e.kinds;
        let parts = [
            (Kind::Input, e.input_tokens - k.input_parts()),
            (Kind::Output, e.output_tokens - k.output_parts()),
            (Kind::CacheRead, k.cache_read_input_tokens),
            (Kind::CacheWrite, k.cache_write_input_tokens),
            (Kind::CacheWrite1h, k.cache_write_1h_input_tokens),
            (Kind::Reasoning, k.reasoning_output_tokens),
            (Kind::AudioInput, k.audio_input_tokens),
            (Kind::AudioOutput, k.audio_output_tokens),
            (Kind::ImageInput, k.image_input_tokens),
            (Kind::ImageOutput, k.image_output_tokens),
        ];
        // Tokens (≤ 10^9) × price (≤ 10^15) fit an i128 many times over.
        let mut micro_nanos: i128 = search_price;
        let mut unpriced: i64 = 0;
        for (kind, n) in parts {
            if n == 0 {
                continue;
            }
            match price.get(kind) {
                Some(p) => micro_nanos += i128::from(n) * i128::from(p),
                None => unpriced += n as i64,
            }
        }
        Charge {
            cost_nanos: round_per_million(micro_nanos),
            unpriced_tokens: unpriced,
            supplied: false,
            entry: entry.id,
        }
    }
}

/// `x / 10^6`, rounded half to even: the one rounding step of a charge.
fn round_per_million(x: i128) -> i64 {
    const M: i128 = 1_000_000;
    let (q, r) = (x / M, x % M);
    let q = if r * 2 > M || (r * 2 == M && q % 2 == 1) { q + 1 } else { q };
    // Bounded by the contract: 10^9 tokens × 10^15 / 10^6 = 10^18 < i64::MAX.
    i64::try_from(q).unwrap_or(i64::MAX)
}

/// Names to try for a model, most exact first.
fn candidates(lower: &str) -> Vec<String> {
    let mut out = vec![lower.to_owned()];
    let bare = lower.rsplit('/').next().unwrap_or(lower);
    if bare != lower {
        out.push(bare.to_owned());
    }
    for name in [lower, bare] {
        if let Some(undated) = strip_date(name)
            && !out.contains(&undated)
        {
            out.push(undated);
        }
    }
    out
}

/// `gpt-4o-2024-08-06` → `gpt-4o`; `claude-3-5-sonnet-20241022` →
/// `claude-3-5-sonnet`; `claude-3-5-sonnet@20241022` (Vertex) and
/// `...-latest` likewise.
fn strip_date(name: &str) -> Option<String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(base) = name.strip_suffix("-latest") {
        return Some(base.to_owned());
    }
    let (base, tail) = name.rsplit_once(['-', '@'])?;
    if digits(tail) && tail.len() == 8 {
        return Some(base.to_owned());
    }
    // -YYYY-MM-DD
    let parts: Vec<&str> = name.rsplitn(4, '-').collect();
    if parts.len() == 4
        && digits(parts[0])
        && parts[0].len() == 2
        && digits(parts[1])
        && parts[1].len() == 2
        && digits(parts[2])
        && parts[2].len() == 4
    {
        return Some(parts[3].to_owned());
    }
    None
}

/// `*` matches any run of characters; everything else is literal.
fn glob(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = s.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (i, p) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(p);
        }
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
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
        let kinds = TokenKinds {
            cache_read_input_tokens: 50_000,
            cache_write_1h_input_tokens: 10_000,
            ..TokenKinds::default()
        };
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
        e.service_tiers.insert(
            ServiceTier::Batch,
            Price::default().with(Kind::Input, per_m("1.25")).with(Kind::Output, per_m("5")),
        );
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
        let tiny =
            Book::new(1, "USD", [entry("m", "2025-01-01T00:00:00Z", Price::default().with(Kind::Input, 333_333))]);
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
}
