//! models.dev's `api.json`: USD per million tokens, by provider.

use serde_json::{Map, Value};

use super::*;

/// models.dev: `{provider: {models: {id: {cost: {input: 3, output: 15,
/// cache_read: 0.3, cache_write: 3.75}}}}}`, USD per million tokens. The
/// model is named `provider/id` and `id`; the first provider listing an
/// id gives the bare name.
pub(super) fn models_dev(obj: &Map<String, Value>, opts: &ImportOptions) -> Imported {
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
