//! The native decoder's field rules, and the property test over arbitrary
//! Unicode in every field.
use super::*;
use crate::event::{Billing, ServiceTier, TokenKinds};
use serde_json::json;

fn now() -> DateTime<Utc> {
    "2026-11-27T12:00:00Z".parse().unwrap()
}

fn good() -> Value {
    json!({
        "event_id": "e-1", "user_id": "alice", "occurred_at": "2026-11-27T11:00:00+01:00",
        "activity": "chat", "model": "gpt-4o-mini", "input_tokens": 120, "output_tokens": 30
    })
}

fn errors(v: Value) -> Vec<(String, String)> {
    parse_native(v.to_string().as_bytes(), "direct", now())
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| (e.field, e.reason))
        .collect()
}

#[test]
fn a_good_event_parses_and_is_normalised_to_utc() {
    let e = parse_native(good().to_string().as_bytes(), "direct", now()).unwrap();
    assert_eq!(e.source, "direct");
    assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-27T10:00:00+00:00");
    assert_eq!(e.total_tokens(), 150);
}

#[test]
fn every_bad_field_is_named_with_its_reason() {
    let mut v = good();
    v["input_tokens"] = json!(-5);
    v["output_tokens"] = json!(1.5);
    v["activity"] = json!("Chat");
    v.as_object_mut().unwrap().remove("model");
    v["extra"] = json!(1);
    let errs = errors(v);
    let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["activity", "model", "input_tokens", "output_tokens", "extra"]);
    assert_eq!(errs[2].1, "must not be negative, got -5");
    assert_eq!(errs[1].1, "is required");
    assert!(errs[0].1.contains("lowercase"), "{}", errs[0].1);
}

#[test]
fn timestamps_must_have_an_offset_and_not_be_far_in_the_future() {
    let mut v = good();
    v["occurred_at"] = json!("2026-11-27 11:00:00");
    assert_eq!(errors(v.clone())[0].0, "occurred_at");
    v["occurred_at"] = json!("2026-11-27T12:06:00Z");
    assert!(errors(v.clone())[0].1.contains("in the future"));
    v["occurred_at"] = json!("2026-11-27T12:04:00Z");
    assert!(parse_native(v.to_string().as_bytes(), "d", now()).is_ok());
    v["occurred_at"] = json!("1999-12-31T23:59:59Z");
    assert!(errors(v)[0].1.contains("before 2000"));
}

#[test]
fn token_counts_are_bounded() {
    let mut v = good();
    v["input_tokens"] = json!(Limits::MAX_TOKENS + 1);
    v["output_tokens"] = json!("12");
    let errs = errors(v);
    assert_eq!(errs[0], ("input_tokens".into(), "must be at most 1000000000, got 1000000001".into()));
    assert_eq!(errs[1], ("output_tokens".into(), "must be a whole number, got a string".into()));
}

#[test]
fn v2_token_kinds_and_a_supplied_cost_parse_and_v1_events_keep_their_encoding() {
    let v1 = parse_native(good().to_string().as_bytes(), "direct", now()).unwrap();
    assert_eq!(v1.kinds, TokenKinds::default());
    assert_eq!(v1.cost, None);
    // A v1 event's native JSON is what it was: no v2 keys appear.
    let text = String::from_utf8(v1.to_native_json()).unwrap();
    assert!(!text.contains("cache") && !text.contains("cost"), "{text}");

    let mut v = good();
    v["schema_version"] = json!(2);
    v["cache_read_input_tokens"] = json!(100);
    v["cache_write_input_tokens"] = json!(10);
    v["cache_write_1h_input_tokens"] = json!(5);
    v["reasoning_output_tokens"] = json!(20);
    v["cost"] = json!({"amount": "0.0123", "currency": "EUR"});
    let e = parse_native(v.to_string().as_bytes(), "direct", now()).unwrap();
    assert_eq!(e.kinds.input_parts(), 115);
    assert_eq!(e.kinds.reasoning_output_tokens, 20);
    assert_eq!(e.cost, Some(SuppliedCost { amount: 12_300_000, currency: "EUR".into() }));
    // What goes on Kafka reads back as the same event.
    let again = parse_native(&e.to_native_json(), "other", now()).unwrap();
    assert_eq!(again, e);
}

#[test]
fn the_subset_rule_is_enforced_with_the_field_named() {
    let mut v = good();
    v["cache_read_input_tokens"] = json!(121);
    assert_eq!(errors(v.clone())[0].0, "cache_read_input_tokens");
    assert!(errors(v)[0].1.contains("more than input_tokens (120)"));

    let mut v = good();
    v["cache_read_input_tokens"] = json!(100);
    v["cache_write_input_tokens"] = json!(21);
    let e = errors(v);
    assert_eq!(e[0].0, "input_tokens");
    assert!(e[0].1.contains("cache_read_input_tokens + cache_write_input_tokens sum to 121"), "{e:?}");

    let mut v = good();
    v["reasoning_output_tokens"] = json!(31);
    assert_eq!(errors(v)[0].0, "reasoning_output_tokens");

    let mut v = good();
    v["audio_output_tokens"] = json!(-1);
    assert_eq!(errors(v)[0], ("audio_output_tokens".into(), "must not be negative, got -1".into()));
}

#[test]
fn a_supplied_cost_must_be_exact_and_complete() {
    let bad = |cost: Value| {
        let mut v = good();
        v["cost"] = cost;
        errors(v)
    };
    assert_eq!(bad(json!({"amount": "0.1"}))[0].0, "cost.currency");
    assert_eq!(bad(json!({"currency": "USD"}))[0].0, "cost.amount");
    assert!(bad(json!({"amount": "0.0000000001", "currency": "USD"}))[0].1.contains("9 decimal places"));
    assert!(bad(json!({"amount": "-1", "currency": "USD"}))[0].1.contains("decimal text"));
    assert!(bad(json!({"amount": -1, "currency": "USD"}))[0].1.contains("negative"));
    // Text is decimal text as written: no exponent, no spaces.
    for text in ["1e3", " 5", "5 "] {
        assert_eq!(bad(json!({"amount": text, "currency": "USD"}))[0].0, "cost.amount", "{text:?}");
    }
    assert_eq!(bad(json!({"amount": "1", "currency": "usd"}))[0].0, "cost.currency");
    assert_eq!(bad(json!({"amount": "1", "currency": "USD", "tax": 1}))[0].0, "cost.tax");
    assert_eq!(bad(json!(0.5))[0].0, "cost");
    // A JSON number is taken by its decimal text.
    let mut v = good();
    v["cost"] = json!({"amount": 0.1, "currency": "USD"});
    assert_eq!(parse_native(v.to_string().as_bytes(), "d", now()).unwrap().cost.unwrap().amount, 100_000_000);
}

#[test]
fn metadata_is_flat_and_bounded() {
    let mut v = good();
    v["metadata"] = json!({"team": "search", "nested": {"a": 1}});
    assert_eq!(errors(v.clone())[0].0, "metadata.nested");
    let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!(i))).collect();
    v["metadata"] = Value::Object(many);
    assert!(errors(v)[0].1.contains("at most 16 keys"));
}

#[test]
fn non_objects_and_broken_json_are_explained() {
    assert!(parse_native(b"[1]", "d", now()).unwrap_err().to_string().contains("JSON object"));
    assert!(parse_native(b"{", "d", now()).unwrap_err().to_string().contains("not valid JSON"));
}

#[test]
fn nul_is_refused_in_every_string_field_and_metadata_value_with_a_field_error() {
    for field in ["event_id", "user_id", "activity", "model", "source"] {
        let mut v = good();
        v[field] = json!("x\u{0}y");
        let errs = errors(v);
        assert_eq!(errs[0].0, field, "{errs:?}");
    }
    let mut v = good();
    v["metadata"] = json!({"a": "x\u{0}y", "ok": "tab\tand\nnewline"});
    assert_eq!(errors(v.clone()), vec![("metadata.a".to_owned(), crate::text::Unstorable::Nul.reason().to_owned())]);
    v["metadata"] = json!({"k\u{0}": 1});
    let errs = errors(v);
    assert_eq!(errs[0].0, "metadata.k\\u{0000}", "the field path itself is printable");
    // Lone surrogates never get past the JSON parser.
    let raw = good().to_string().replace("\"alice\"", "\"\\ud800\"");
    assert!(parse_native(raw.as_bytes(), "d", now()).unwrap_err().to_string().contains("not valid JSON"));
}

#[test]
fn a_leap_second_stays_in_the_second_it_extends() {
    let mut v = good();
    v["occurred_at"] = json!("2016-12-31T23:59:60Z");
    let e = parse_native(v.to_string().as_bytes(), "d", "2017-01-01T00:00:01Z".parse().unwrap()).unwrap();
    assert_eq!(e.occurred_at.to_rfc3339(), "2016-12-31T23:59:59.999999+00:00");
}

/// Strings of every kind: NUL and other controls, RTL marks, 4-byte
/// characters, noncharacters, and long runs.
fn hostile_string() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        any::<String>(),
        "[a-z0-9\\-]{1,12}",
        proptest::collection::vec(
            prop_oneof![Just('\0'), Just('\u{202e}'), Just('\u{1F600}'), Just('\u{FFFF}'), Just('\n'), any::<char>()],
            0..40
        )
        .prop_map(|cs| cs.into_iter().collect()),
        (1usize..600).prop_map(|n| "é".repeat(n)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Whatever a publisher puts in any field, the decoder answers with an
    /// event or with field errors, never a panic; an accepted event holds
    /// only storable text; every error is printable.
    #[test]
    fn any_unicode_in_any_field_is_accepted_storably_or_refused_by_field(
        field in proptest::sample::select(vec!["event_id", "user_id", "activity", "model", "source", "meta_key", "meta_value", "occurred_at"]),
        s in hostile_string(),
        cloud in proptest::bool::ANY,
    ) {
        let mut v = good();
        match field {
            "meta_key" => v["metadata"] = Value::Object([(s.clone(), json!(1))].into_iter().collect()),
            "meta_value" => v["metadata"] = json!({"k": s}),
            f => v[f] = json!(s),
        }
        let bytes = v.to_string();
        let result = if cloud {
            let ce = crate::cloudevents::to_cloudevent(&parse_native(good().to_string().as_bytes(), "d", now()).unwrap());
            let mut ce = ce;
            match field {
                "event_id" => ce["id"] = json!(s),
                "user_id" => ce["subject"] = json!(s),
                "source" => ce["source"] = json!(s),
                "occurred_at" => ce["time"] = json!(s),
                "meta_key" | "meta_value" => ce["data"]["metadata"] = v["metadata"].clone(),
                f => ce["data"][f] = json!(s),
            }
            crate::parse_cloudevent(ce.to_string().as_bytes(), now())
        } else {
            parse_native(bytes.as_bytes(), "d", now())
        };
        match result {
            Ok(e) => {
                for t in [&e.source, &e.event_id, &e.user_id, &e.activity, &e.model] {
                    proptest::prop_assert!(crate::text::storable(t).is_ok());
                }
                if let Some(m) = &e.metadata {
                    proptest::prop_assert!(crate::text::storable_json(&Value::Object(m.clone())).is_ok());
                }
            }
            Err(errs) => {
                proptest::prop_assert!(!errs.0.is_empty());
                for fe in &errs.0 {
                    proptest::prop_assert!(!fe.field.chars().chain(fe.reason.chars()).any(char::is_control), "{:?}", fe);
                }
            }
        }
    }
}

#[test]
fn a_project_is_optional_follows_the_activity_rule_and_survives_every_encoding() {
    let mut v = good();
    v["project"] = json!("support-bot.eu");
    let e = parse_native(v.to_string().as_bytes(), "direct", now()).unwrap();
    assert_eq!((e.project.as_deref(), e.project_key()), (Some("support-bot.eu"), "support-bot.eu"));
    let again = parse_native(&e.to_native_json(), "direct", now()).unwrap();
    assert_eq!(again, e, "native round trip");
    let ce = crate::cloudevents::to_cloudevent(&e);
    assert_eq!(ce["data"]["project"], "support-bot.eu");
    assert_eq!(crate::cloudevents::parse_cloudevent(ce.to_string().as_bytes(), now()).unwrap(), e, "CloudEvents");
    let none = parse_native(good().to_string().as_bytes(), "direct", now()).unwrap();
    assert_eq!((none.project.as_deref(), none.project_key()), (None, ""));
    for (bad, why) in [
        (json!("Support"), "may only contain"),
        (json!(""), "must not be empty"),
        (json!("-"), "a letter or a digit"),
        (json!("x".repeat(65)), "at most 64"),
        (json!(7), "must be a string"),
    ] {
        let mut v = good();
        v["project"] = bad.clone();
        let errs = errors(v);
        assert!(errs.iter().any(|(f, r)| f == "project" && r.contains(why)), "{bad}: {errs:?}");
    }
}

/// A provider's usage object in place of the token fields: read as that
/// provider bills, on the native and the CloudEvents encodings alike, and
/// every way of getting it wrong named.
#[test]
fn a_providers_usage_object_stands_in_for_the_token_fields() {
    let with_usage = |usage: Value| {
        let mut v = good();
        let o = v.as_object_mut().unwrap();
        o.remove("input_tokens");
        o.remove("output_tokens");
        o.insert("usage".into(), usage);
        v
    };
    let anthropic = json!({"input_tokens": 21, "cache_creation_input_tokens": 188086, "cache_read_input_tokens": 0,
                           "output_tokens": 393});
    let e = parse_native(with_usage(anthropic.clone()).to_string().as_bytes(), "direct", now()).unwrap();
    assert_eq!((e.input_tokens, e.output_tokens, e.kinds.cache_write_input_tokens), (188107, 393, 188086));
    // Stored and sent on as our own fields: the projector never sees `usage`.
    let native = e.to_native_json();
    assert!(!String::from_utf8_lossy(&native).contains("usage"), "{}", String::from_utf8_lossy(&native));
    let ce = json!({"specversion": "1.0", "type": crate::CE_TYPE, "id": "c1", "source": "gw", "subject": "alice",
                    "time": "2026-11-27T11:00:00Z",
                    "data": {"activity": "chat", "model": "gemini-2.5-pro", "usage_format": "gemini",
                             "usage": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 20}}});
    let e = crate::parse_cloudevent(ce.to_string().as_bytes(), now()).unwrap();
    assert_eq!((e.input_tokens, e.output_tokens, e.kinds.reasoning_output_tokens), (10, 25, 20));

    let mut both = with_usage(anthropic.clone());
    both["input_tokens"] = json!(5);
    assert_eq!(
        errors(both),
        [(
            "usage".into(),
            "send either a provider's usage object or token counts, not both (found input_tokens)".into()
        )]
    );
    let mut unknown = with_usage(anthropic);
    unknown["usage_format"] = json!("cohere");
    assert_eq!(errors(unknown)[0].0, "usage_format");
    let mut stray = good();
    stray["usage_format"] = json!("gemini");
    assert_eq!(errors(stray)[0].1, "goes with a `usage` object, which this event does not have (got \"gemini\")");
    assert_eq!(
        errors(with_usage(json!([1])))[0],
        ("usage".into(), "must be the provider's usage object, got an array".into())
    );
    assert_eq!(errors(with_usage(json!({"prompt_tokens": -3})))[0].0, "usage.prompt_tokens");
    // The subset rule holds for what the object says, named as `usage`.
    let over = with_usage(
        json!({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 11}}),
    );
    let errs = errors(over);
    assert_eq!(errs[0].0, "usage");
    assert!(errs[0].1.contains("cache_read_input_tokens sum to 11, more than input_tokens (10)"), "{errs:?}");
    // `usage: null` is no usage: the token fields are required again.
    let mut null = good();
    null["usage"] = Value::Null;
    assert!(parse_native(null.to_string().as_bytes(), "direct", now()).is_ok());
}

/// The service tier and web searches: named by the event or read out of
/// Anthropic's usage object; bad values, and the two disagreeing, are
/// refused naming the field.
#[test]
fn service_tier_and_web_searches_are_read_and_checked() {
    let parse = |v: Value| parse_native(v.to_string().as_bytes(), "direct", now());
    let mut v = good();
    v["service_tier"] = json!("Priority");
    v["web_search_requests"] = json!(2);
    let e = parse(v.clone()).unwrap();
    assert_eq!(e.billing, Billing { service_tier: Some(ServiceTier::Priority), web_search_requests: 2 });
    // The native JSON carries them, lower case, and reads back the same.
    let again = parse_native(&e.to_native_json(), "direct", now()).unwrap();
    assert_eq!(again, e);
    for name in ["default", "auto", "scale", "standard"] {
        v["service_tier"] = json!(name);
        assert_eq!(parse(v.clone()).unwrap().billing.service_tier, Some(ServiceTier::Standard), "{name}");
    }
    v["service_tier"] = json!("turbo");
    v["web_search_requests"] = json!(100_001);
    let errs = errors(v);
    assert!(
        errs.iter().any(|(f, r)| f == "service_tier" && r.contains("batch, flex or priority") && r.contains("turbo"))
    );
    assert!(errs.iter().any(|(f, r)| f == "web_search_requests" && r.contains("at most 100000")));

    let mut a = good();
    let o = a.as_object_mut().unwrap();
    o.remove("input_tokens");
    o.remove("output_tokens");
    o.insert(
        "usage".into(),
        json!({"input_tokens": 100, "output_tokens": 20, "server_tool_use": {"web_search_requests": 4}, "service_tier": "batch"}),
    );
    let e = parse(a.clone()).unwrap();
    assert_eq!(e.billing, Billing { service_tier: Some(ServiceTier::Batch), web_search_requests: 4 });
    // Said twice the same way is fine; two different answers are refused.
    a["service_tier"] = json!("batch");
    assert!(parse(a.clone()).is_ok());
    a["service_tier"] = json!("priority");
    a["web_search_requests"] = json!(5);
    let errs = errors(a);
    assert!(errs.iter().any(|(f, r)| f == "service_tier" && r.contains("usage object says batch")), "{errs:?}");
    assert!(errs.iter().any(|(f, r)| f == "web_search_requests" && r.contains("usage object says 4")), "{errs:?}");
}
