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

mod litellm;
mod models_dev;

use litellm::litellm;
use models_dev::models_dev;

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
mod tests;
