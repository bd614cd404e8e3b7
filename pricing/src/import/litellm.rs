//! LiteLLM's `model_prices_and_context_window.json`: USD per token, with
//! long-context, service-tier and per-search prices.

use serde_json::{Map, Value};
use tokenusage_contract::ServiceTier;

use super::*;

/// LiteLLM: `{model: {input_cost_per_token: 3e-06, ...}}`, USD per token.
pub(super) fn litellm(obj: &Map<String, Value>, opts: &ImportOptions) -> Imported {
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
