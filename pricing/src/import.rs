//! Reading price catalogues: LiteLLM's `model_prices_and_context_window.json`,
//! models.dev's `api.json`, and our own export format (`tokenusage.prices.v1`,
//! also the format of the shipped catalogue). Every price is read from its
//! decimal text and kept exactly, or the entry is skipped and reported.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use tokenusage_contract::money;

use std::collections::BTreeMap;

use tokenusage_contract::ServiceTier;

use crate::book::{Entry, Kind, MAX_PRICE_NANOS_PER_MTOK, MAX_PRICE_NANOS_PER_REQUEST, Price, Tier};

/// Our export and catalogue format's name.
pub const FORMAT: &str = "tokenusage.prices.v1";

/// What an import read.
#[derive(Debug, Default)]
pub struct Imported {
    pub entries: Vec<Entry>,
    /// (model, why) for every entry refused as invalid (a malformed or
    /// inexact price, a bad model name): an import takes all or nothing
    /// unless told to skip these.
    pub skipped: Vec<(String, String)>,
    /// (model, why) for entries that are fine but have no per-token price
    /// (image generation, search, rerank: priced per request).
    pub not_priced: Vec<(String, String)>,
    /// Which format the file was in.
    pub format: &'static str,
}

/// Why a catalogue cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Shape(String),
}

/// How an import dates and labels what it reads.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The book's currency. LiteLLM and models.dev price in USD; importing
    /// them into a book in another currency is refused.
    pub currency: String,
    /// Used for formats that carry no dates (LiteLLM, models.dev).
    pub effective_from: DateTime<Utc>,
    /// A label for `source` when the file gives none.
    pub source: String,
}

/// Reads any supported format, recognised by its shape.
pub fn read(text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let v: Value = serde_json::from_str(text)?;
    let Some(obj) = v.as_object() else {
        return Err(ImportError::Shape("a price catalogue is a JSON object".into()));
    };
    if obj.get("format").and_then(Value::as_str) == Some(FORMAT) {
        return ours(obj, opts);
    }
    let usd = || {
        if opts.currency == "USD" {
            Ok(())
        } else {
            Err(ImportError::Shape(format!("this catalogue is in USD and the book is in {}", opts.currency)))
        }
    };
    if obj.values().any(|m| m.get("input_cost_per_token").is_some() || m.get("litellm_provider").is_some()) {
        usd()?;
        return Ok(litellm(obj, opts));
    }
    if obj.values().any(|p| p.get("models").is_some_and(Value::is_object)) {
        usd()?;
        return Ok(models_dev(obj, opts));
    }
    Err(ImportError::Shape(format!(
        "unrecognised catalogue: expected {FORMAT}, LiteLLM's model_prices_and_context_window.json or models.dev's api.json"
    )))
}

/// A JSON number or string as an exact decimal.
fn decimal(v: &Value) -> Result<Decimal, String> {
    match v {
        // serde_json prints the shortest text that reads back as the same
        // f64: for catalogue prices that is the text the file holds.
        Value::Number(n) => money::parse_decimal(&n.to_string()),
        Value::String(s) => money::parse_decimal(s),
        other => Err(format!("expected a number, got {other}")),
    }
}

/// Reads the prices named by `keys` out of `spec`, each scaled by 10^`scale`
/// to nano-units per million tokens; the first price that cannot be kept
/// exactly is the error.
fn prices(spec: &Map<String, Value>, keys: &[(&str, Kind)], scale: u32) -> Result<Price, String> {
    let mut price = Price::default();
    for (key, kind) in keys {
        if let Some(v) = spec.get(*key) {
            let n = decimal(v)
                .and_then(|d| money::to_scaled(d, scale, MAX_PRICE_NANOS_PER_MTOK))
                .map_err(|why| format!("{key}: {why}"))?;
            price.set(*kind, Some(n));
        }
    }
    Ok(price)
}

/// LiteLLM: `{model: {input_cost_per_token: 3e-06, ...}}`, USD per token.
fn litellm(obj: &Map<String, Value>, opts: &ImportOptions) -> Imported {
    const KEYS: [(&str, Kind); 10] = [
        ("input_cost_per_token", Kind::Input),
        ("output_cost_per_token", Kind::Output),
        ("cache_read_input_token_cost", Kind::CacheRead),
        ("cache_creation_input_token_cost", Kind::CacheWrite),
        ("cache_creation_input_token_cost_above_1hr", Kind::CacheWrite1h),
        ("output_cost_per_reasoning_token", Kind::Reasoning),
        ("input_cost_per_audio_token", Kind::AudioInput),
        ("output_cost_per_audio_token", Kind::AudioOutput),
        ("input_cost_per_image_token", Kind::ImageInput),
        ("output_cost_per_image_token", Kind::ImageOutput),
    ];
    let mut out = Imported { format: "litellm", ..Imported::default() };
    for (model, spec) in obj {
        if model == "sample_spec" {
            continue;
        }
        let Some(spec) = spec.as_object() else { continue };
        // Per token → per million tokens, in nano-units: × 10^15.
        let price = match prices(spec, &KEYS, 15) {
            Ok(p) => p,
            Err(why) => {
                out.skipped.push((model.clone(), why));
                continue;
            }
        };
        if price.named().next().is_none() {
            // Image generation, search, rerank...: priced per request, not per token.
            out.not_priced.push((model.clone(), "no per-token price".into()));
            continue;
        }
        let tier = match litellm_tier(spec, &KEYS) {
            Ok((tier, dropped)) => {
                if let Some(why) = dropped {
                    out.not_priced.push((model.clone(), why));
                }
                tier
            }
            Err(why) => {
                out.skipped.push((model.clone(), why));
                continue;
            }
        };
        let (service_tiers, web_search) = match (litellm_service_tiers(spec, &KEYS), litellm_web_search(spec)) {
            (Ok(t), Ok(w)) => (t, w),
            (Err(why), _) | (_, Err(why)) => {
                out.skipped.push((model.clone(), why));
                continue;
            }
        };
        let source = spec.get("source").and_then(Value::as_str).unwrap_or(&opts.source).to_owned();
        push(
            &mut out,
            Entry {
                long_context: tier,
                service_tiers,
                web_search,
                ..new_entry(model, price, opts.effective_from, &opts.currency, source)
            },
        );
    }
    out
}

/// LiteLLM's service-tier prices: `<price key>_batches`, `_flex` and
/// `_priority` (e.g. `input_cost_per_token_batches`).
fn litellm_service_tiers(
    spec: &Map<String, Value>,
    keys: &[(&str, Kind)],
) -> Result<BTreeMap<ServiceTier, Price>, String> {
    let mut out = BTreeMap::new();
    for (suffix, tier) in
        [("_batches", ServiceTier::Batch), ("_flex", ServiceTier::Flex), ("_priority", ServiceTier::Priority)]
    {
        let names: Vec<(String, Kind)> = keys.iter().map(|(k, kind)| (format!("{k}{suffix}"), *kind)).collect();
        let named: Vec<(&str, Kind)> = names.iter().map(|(k, kind)| (k.as_str(), *kind)).collect();
        let price = prices(spec, &named, 15)?;
        if price.named().next().is_some() {
            out.insert(tier, price);
        }
    }
    Ok(out)
}

/// LiteLLM's web search price: `search_context_cost_per_query`, USD per
/// search by search context size. The medium size is read: it is what
/// OpenAI's web search uses unless told otherwise, and Anthropic's one
/// price is listed under every size.
fn litellm_web_search(spec: &Map<String, Value>) -> Result<Option<i64>, String> {
    const KEY: &str = "search_context_cost_per_query";
    let Some(sizes) = spec.get(KEY) else { return Ok(None) };
    let Some(v) = sizes.get("search_context_size_medium") else { return Ok(None) };
    decimal(v)
        .and_then(|d| money::to_scaled(d, 9, MAX_PRICE_NANOS_PER_REQUEST))
        .map(Some)
        .map_err(|why| format!("{KEY}.search_context_size_medium: {why}"))
}

/// LiteLLM's long-context prices: `<price key>_above_<N>k_tokens` (e.g.
/// `input_cost_per_token_above_200k_tokens`). One tier is kept, the lowest
/// threshold's; a model with several is reported (second value).
fn litellm_tier(spec: &Map<String, Value>, keys: &[(&str, Kind)]) -> Result<(Option<Tier>, Option<String>), String> {
    let mut by_threshold: std::collections::BTreeMap<i64, Vec<(&str, Kind, String)>> = Default::default();
    for name in spec.keys() {
        let Some((base, n)) = name.strip_suffix("k_tokens").and_then(|r| r.rsplit_once("_above_")) else { continue };
        let (Some((_, kind)), Ok(n)) = (keys.iter().find(|(k, _)| *k == base), n.parse::<i64>()) else { continue };
        by_threshold.entry(n * 1000).or_default().push((base, *kind, name.clone()));
    }
    let Some((&above, kinds)) = by_threshold.iter().next() else { return Ok((None, None)) };
    let mut price = Price::default();
    for (_, kind, key) in kinds {
        let n = decimal(&spec[key.as_str()])
            .and_then(|d| money::to_scaled(d, 15, MAX_PRICE_NANOS_PER_MTOK))
            .map_err(|why| format!("{key}: {why}"))?;
        price.set(*kind, Some(n));
    }
    let dropped = (by_threshold.len() > 1).then(|| {
        let others: Vec<String> = by_threshold.keys().skip(1).map(|t| format!("{}k", t / 1000)).collect();
        format!(
            "long-context prices above {}k kept; tiers above {} are not supported and were left out",
            above / 1000,
            others.join(", ")
        )
    });
    Ok((Some(Tier { above_input_tokens: above, price }), dropped))
}

/// models.dev: `{provider: {models: {id: {cost: {input: 3, output: 15,
/// cache_read: 0.3, cache_write: 3.75}}}}}`, USD per million tokens. The
/// model is named `provider/id` and `id`; the first provider listing an
/// id gives the bare name.
fn models_dev(obj: &Map<String, Value>, opts: &ImportOptions) -> Imported {
    const KEYS: [(&str, Kind); 6] = [
        ("input", Kind::Input),
        ("output", Kind::Output),
        ("cache_read", Kind::CacheRead),
        ("cache_write", Kind::CacheWrite),
        ("reasoning", Kind::Reasoning),
        ("input_audio", Kind::AudioInput),
    ];
    let mut out = Imported { format: "models.dev", ..Imported::default() };
    let mut bare_seen = std::collections::HashSet::new();
    for (provider, p) in obj {
        let Some(models) = p.get("models").and_then(Value::as_object) else { continue };
        for (id, m) in models {
            let name = format!("{provider}/{id}");
            let Some(cost) = m.get("cost").and_then(Value::as_object) else {
                out.not_priced.push((name, "no cost".into()));
                continue;
            };
            // Per million tokens → nano-units: × 10^9.
            let price = match prices(cost, &KEYS, 9) {
                Ok(p) => p,
                Err(why) => {
                    out.skipped.push((name, why));
                    continue;
                }
            };
            // Long-context prices: `cost.context_over_200k`, same keys.
            let tier = match cost.get("context_over_200k").and_then(Value::as_object).map(|o| prices(o, &KEYS, 9)) {
                Some(Ok(p)) if p.named().next().is_some() => Some(Tier { above_input_tokens: 200_000, price: p }),
                Some(Err(why)) => {
                    out.skipped.push((name, format!("context_over_200k.{why}")));
                    continue;
                }
                _ => None,
            };
            let source = format!("models.dev ({provider})");
            let entry = |model: &str| Entry {
                long_context: tier,
                ..new_entry(model, price, opts.effective_from, &opts.currency, source.clone())
            };
            if bare_seen.insert(id.clone()) {
                push(&mut out, entry(id));
            }
            push(&mut out, entry(&name));
        }
    }
    out
}

/// An entry with a base price only, open-ended from `from`.
fn new_entry(model: &str, price: Price, from: DateTime<Utc>, currency: &str, source: String) -> Entry {
    Entry {
        id: None,
        model: model.to_owned(),
        currency: currency.to_owned(),
        effective_from: from,
        effective_to: None,
        price,
        long_context: None,
        service_tiers: BTreeMap::new(),
        web_search: None,
        source,
    }
}

/// Keeps `e` if its model name is one the book can hold.
fn push(out: &mut Imported, e: Entry) {
    match check_model(&e.model) {
        Ok(()) => out.entries.push(e),
        Err(why) => out.skipped.push((e.model, why)),
    }
}

/// Most characters of a price's `source` (a URL or a contract's name).
pub const SOURCE_MAX_CHARS: usize = 512;

/// Where a price comes from: 1 to [`SOURCE_MAX_CHARS`] characters, no
/// control characters (it is shown in listings and logs).
pub fn check_source(source: &str) -> Result<(), String> {
    let n = source.chars().count();
    if n == 0 || n > SOURCE_MAX_CHARS {
        return Err(format!("source: 1 to {SOURCE_MAX_CHARS} characters, got {n}"));
    }
    if source.chars().any(char::is_control) {
        return Err("source: must not contain control characters".into());
    }
    Ok(())
}

/// A model name (or pattern) the book can hold: what an event's `model`
/// may be (contract v1 characters, 128 at most), plus `*`.
pub fn check_model(model: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.:/@+*".contains(c);
    if model.is_empty() || model.chars().count() > 128 {
        return Err("a model name has 1 to 128 characters".into());
    }
    match model.chars().find(|c| !ok(*c)) {
        Some(c) => Err(format!("{c:?} cannot appear in a model name")),
        None => Ok(()),
    }
}

/// Our format: dated entries with prices per million tokens as decimal text.
fn ours(obj: &Map<String, Value>, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let currency = obj.get("currency").and_then(Value::as_str).unwrap_or("USD");
    if currency != opts.currency {
        return Err(ImportError::Shape(format!(
            "this catalogue is in {currency} and the book is in {}",
            opts.currency
        )));
    }
    let Some(entries) = obj.get("entries").and_then(Value::as_array) else {
        return Err(ImportError::Shape("`entries` must be an array".into()));
    };
    let mut out = Imported { format: FORMAT, ..Imported::default() };
    for (i, e) in entries.iter().enumerate() {
        let model = e.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
        match entry_of(e, currency, opts) {
            Ok(entry) => out.entries.push(entry),
            Err(why) => out.skipped.push((if model.is_empty() { format!("entries[{i}]") } else { model }, why)),
        }
    }
    Ok(out)
}

fn entry_of(e: &Value, currency: &str, opts: &ImportOptions) -> Result<Entry, String> {
    let model = e.get("model").and_then(Value::as_str).ok_or("`model` is required")?;
    check_model(model)?;
    let time = |key: &str| -> Result<Option<DateTime<Utc>>, String> {
        match e.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                DateTime::parse_from_rfc3339(s).map(|t| Some(t.to_utc())).map_err(|err| format!("{key}: {err}"))
            }
            Some(other) => Err(format!("{key}: expected an RFC 3339 time, got {other}")),
        }
    };
    let from = time("effective_from")?.ok_or("`effective_from` is required")?;
    let to = time("effective_to")?;
    if to.is_some_and(|to| to <= from) {
        return Err("effective_to must be after effective_from".into());
    }
    let per_million = e.get("per_million").and_then(Value::as_object).ok_or("`per_million` must be an object")?;
    let price = per_million_of(per_million)?;
    let long_context = match e.get("long_context") {
        None | Some(Value::Null) => None,
        Some(t) => Some(tier_of(t)?),
    };
    let service_tiers = match e.get("service_tiers") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => service_tiers_of(v)?,
    };
    let web_search = match e.get("per_request") {
        None | Some(Value::Null) => None,
        Some(v) => per_request_of(v)?,
    };
    let source = e.get("source").and_then(Value::as_str).unwrap_or(&opts.source).to_owned();
    check_source(&source)?;
    Ok(Entry {
        effective_to: to,
        long_context,
        service_tiers,
        web_search,
        ..new_entry(model, price, from, currency, source)
    })
}

/// `{"batch": {"input": "1.25", ...}, "priority": {...}}`.
fn service_tiers_of(v: &Value) -> Result<BTreeMap<ServiceTier, Price>, String> {
    let obj = v.as_object().ok_or("service_tiers must be an object of batch, flex or priority prices")?;
    let mut out = BTreeMap::new();
    for (name, prices) in obj {
        let tier = ServiceTier::parse(name).filter(|t| ServiceTier::PRICED_APART.contains(t)).ok_or_else(|| {
            format!("service_tiers.{name}: not a tier with prices of its own (batch, flex or priority)")
        })?;
        let per_million = prices
            .as_object()
            .ok_or_else(|| format!("service_tiers.{name} must be an object of prices per million tokens"))?;
        let price = per_million_of(per_million).map_err(|why| format!("service_tiers.{name}.{why}"))?;
        if price.named().next().is_none() {
            return Err(format!("service_tiers.{name} must name at least one price"));
        }
        out.insert(tier, price);
    }
    Ok(out)
}

/// `{"web_search": "0.01"}`: the price of one request, in currency units.
fn per_request_of(v: &Value) -> Result<Option<i64>, String> {
    let obj = v.as_object().ok_or("per_request must be an object")?;
    let mut web_search = None;
    for (k, v) in obj {
        if k != "web_search" {
            return Err(format!("per_request.{k}: unknown request kind (web_search is the one priced per request)"));
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("per_request.{k}: expected a decimal string, got {other}")),
        };
        let n = money::parse_decimal(&text)
            .and_then(|d| money::to_scaled(d, 9, MAX_PRICE_NANOS_PER_REQUEST))
            .map_err(|why| format!("per_request.{k}: {text:?} {why} (at most 9 decimal places)"))?;
        web_search = Some(n);
    }
    Ok(web_search)
}

/// `{"above_input_tokens": 200000, "per_million": {"input": "6", ...}}`.
fn tier_of(v: &Value) -> Result<Tier, String> {
    let above = v
        .get("above_input_tokens")
        .and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .ok_or("long_context.above_input_tokens must be a positive whole number of tokens")?;
    let per_million =
        v.get("per_million").and_then(Value::as_object).ok_or("long_context.per_million must be an object")?;
    let price = per_million_of(per_million).map_err(|why| format!("long_context.{why}"))?;
    if price.named().next().is_none() {
        return Err("long_context.per_million must name at least one price".into());
    }
    Ok(Tier { above_input_tokens: above, price })
}

/// `{kind: "decimal per million"}` read exactly.
fn per_million_of(per_million: &Map<String, Value>) -> Result<Price, String> {
    let mut price = Price::default();
    for (k, v) in per_million {
        let kind = Kind::parse(k).ok_or_else(|| format!("per_million.{k}: unknown token kind {k:?}"))?;
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("per_million.{k}: expected a decimal string, got {other}")),
        };
        price.set(kind, Some(Price::parse_per_million(&text).map_err(|why| format!("per_million.{k}: {why}"))?));
    }
    Ok(price)
}

/// Reads one entry in our format (an API body), in the book's currency.
pub fn parse_entry(v: &Value, currency: &str) -> Result<Entry, String> {
    let opts =
        ImportOptions { currency: currency.to_owned(), effective_from: DateTime::UNIX_EPOCH, source: String::new() };
    let e = entry_of(v, currency, &opts)?;
    if e.source.trim().is_empty() {
        return Err("`source` is required: where the price comes from (a price page, a contract)".into());
    }
    if e.price.named().next().is_none() {
        return Err("`per_million` must name at least one price".into());
    }
    Ok(e)
}

fn per_million_json(p: &Price) -> Map<String, Value> {
    p.named().map(|(k, n)| (k.name().to_owned(), Value::String(money::format_nanos(n)))).collect()
}

/// One entry in our format, with its id when stored.
pub fn entry_json(e: &Entry) -> Value {
    let per_million = per_million_json(&e.price);
    let mut v = json!({
        "model": e.model,
        "effective_from": e.effective_from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "effective_to": e.effective_to.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        "per_million": per_million,
        "source": e.source,
    });
    if let (Some(t), Some(o)) = (e.long_context, v.as_object_mut()) {
        o.insert(
            "long_context".into(),
            json!({"above_input_tokens": t.above_input_tokens, "per_million": per_million_json(&t.price)}),
        );
    }
    if let (false, Some(o)) = (e.service_tiers.is_empty(), v.as_object_mut()) {
        let tiers: Map<String, Value> =
            e.service_tiers.iter().map(|(t, p)| (t.name().to_owned(), Value::Object(per_million_json(p)))).collect();
        o.insert("service_tiers".into(), Value::Object(tiers));
    }
    if let (Some(n), Some(o)) = (e.web_search, v.as_object_mut()) {
        o.insert("per_request".into(), json!({"web_search": money::format_nanos(n)}));
    }
    if let (Some(id), Some(o)) = (e.id, v.as_object_mut()) {
        o.insert("id".into(), json!(id));
    }
    v
}

/// Writes entries in our format (what `prices export` prints and
/// `prices import` reads back unchanged).
pub fn export(currency: &str, entries: &[Entry]) -> Value {
    let rows: Vec<Value> = entries.iter().map(|e| entry_json(&Entry { id: None, ..e.clone() })).collect();
    json!({ "format": FORMAT, "currency": currency, "entries": rows })
}

#[cfg(test)]
mod tests {
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
}
