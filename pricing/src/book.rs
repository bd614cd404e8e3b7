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
mod tests;
