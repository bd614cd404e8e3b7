use super::*;
use serde_json::json;

/// A key marked `Read` changes what is read: set alone beside a
/// format's required counts, the mapping differs (a check-only total
/// turns into an error).
#[test]
fn every_key_marked_read_is_read() {
    for (format, path, usage) in KNOWN_KEYS {
        if *usage != KeyUse::Read {
            continue;
        }
        let base: Map<String, Value> = match format {
            UsageFormat::OpenAiChat => serde_json::json!({"prompt_tokens": 100_000, "completion_tokens": 100_000}),
            _ => serde_json::json!({"input_tokens": 100_000, "output_tokens": 100_000}),
        }
        .as_object()
        .unwrap()
        .clone();
        let mut with = base.clone();
        let mut at = &mut with;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            at = at.entry(*part).or_insert_with(|| Value::Object(Map::new())).as_object_mut().unwrap();
        }
        at.insert(parts[parts.len() - 1].to_owned(), Value::from(7));
        assert_ne!(map_usage(Some(*format), &with), map_usage(Some(*format), &base), "{} {path}", format.name());
    }
}

/// The published vectors (docs/examples/provider-usage-vectors.json):
/// each maps to exactly its expected totals and kinds, is detected as
/// its provider, and obeys the subset rule.
#[test]
fn the_published_vectors_map_to_their_documented_tokens() {
    let doc: Value = serde_json::from_str(include_str!("../../../docs/examples/provider-usage-vectors.json")).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let format = UsageFormat::from_name(v["usage_format"].as_str().unwrap()).unwrap();
        seen.insert(format.name());
        assert!(v["source"].as_str().is_some_and(|s| !s.is_empty()), "{name}: every vector says where it is from");
        let usage = v["usage"].as_object().unwrap();
        // Detected as its provider, or (plain input/output totals) as
        // one that reads it the same.
        let detected = detect(usage).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = map_usage(None, usage).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(map_usage(Some(format), usage).unwrap(), got, "{name}: detected as {}", detected.name());
        let want = &v["expected"];
        let mut expected: Map<String, Value> = want.as_object().unwrap().clone();
        let input = expected.remove("input_tokens").unwrap().as_u64().unwrap();
        let output = expected.remove("output_tokens").unwrap().as_u64().unwrap();
        let billing: Billing = serde_json::from_value(Value::Object(expected.clone())).unwrap();
        let kinds: TokenKinds = serde_json::from_value(Value::Object(expected)).unwrap();
        assert_eq!(got, MappedUsage { input_tokens: input, output_tokens: output, kinds, billing }, "{name}");
        assert!(got.kinds.input_parts() <= got.input_tokens && got.kinds.output_parts() <= got.output_tokens, "{name}");
    }
    assert_eq!(seen.len(), UsageFormat::ALL.len(), "a vector for every provider");
}

#[test]
fn bad_counts_are_named_with_their_path() {
    let errs = |v: Value| map_usage(None, v.as_object().unwrap()).unwrap_err();
    let e = errs(json!({"prompt_tokens": -1, "completion_tokens": 2}));
    assert_eq!((e[0].field.as_str(), e[0].reason.as_str()), ("usage.prompt_tokens", "must not be negative, got -1"));
    let e = errs(json!({"prompt_tokens": 3, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1.5}}));
    assert_eq!(e[0].field, "usage.prompt_tokens_details.cached_tokens");
    assert_eq!(e[0].reason, "must be a whole number, got a fraction");
    let e = errs(json!({"prompt_tokens": 3, "prompt_tokens_details": "x"}));
    assert_eq!(
        (e[0].field.as_str(), e[0].reason.as_str()),
        ("usage.prompt_tokens_details", "must be an object, got a string")
    );
    let e = errs(json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 9}));
    assert_eq!(e[0].field, "usage.total_tokens");
    let e = errs(json!({"input_tokens": 5, "cache_creation_input_tokens": 10,
                        "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 4}}));
    assert_eq!(e[0].field, "usage.cache_creation");
    let e = errs(json!({"promptTokenCount": 2_000_000_000u64}));
    assert_eq!(e[0].reason, "must be at most 1000000000, got 2000000000");
    let e = errs(json!({"candidatesTokenCount": 5}));
    assert_eq!(
        (e[0].field.as_str(), e[0].reason.as_str()),
        ("usage.promptTokenCount", "is required in this usage object")
    );
    let e = errs(json!({"inputTokens": 10, "outputTokens": 5, "totalTokens": 16, "cacheReadInputTokens": 3}));
    assert_eq!(e[0].field, "usage.totalTokens");
}

#[test]
fn ambiguous_or_unknown_objects_ask_for_the_format() {
    let both = json!({"prompt_tokens": 1, "promptTokenCount": 1});
    assert!(detect(both.as_object().unwrap()).unwrap_err().contains("gemini, openai.chat"));
    let none = json!({"tokens": 5});
    assert!(detect(none.as_object().unwrap()).unwrap_err().contains("usage_format one of openai.chat"));
    // Plain totals mean the same under Anthropic and OpenAI Responses.
    let plain = json!({"input_tokens": 4, "output_tokens": 2});
    let m = map_usage(None, plain.as_object().unwrap()).unwrap();
    assert_eq!((m.input_tokens, m.output_tokens), (4, 2));
    assert_eq!(map_usage(Some(UsageFormat::Anthropic), plain.as_object().unwrap()).unwrap(), m);
    // Unknown counters are ignored, nested or not.
    let extra = json!({"prompt_tokens": 4, "completion_tokens": 2, "future_tokens": "x",
                       "completion_tokens_details": {"accepted_prediction_tokens": 1}});
    assert!(map_usage(None, extra.as_object().unwrap()).is_ok());
}
