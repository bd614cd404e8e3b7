use super::*;
use chrono::{DateTime, Utc};
use proto::KeyValue as Kv;

fn mapping() -> OtlpMapping {
    OtlpMapping {
        user_attributes: vec!["user.id".into(), "enduser.id".into()],
        project_attributes: vec!["project.id".into()],
    }
}

fn span(attrs: Vec<Kv>) -> proto::Span {
    proto::Span {
        trace_id: (1..=16).collect(),
        span_id: (1..=8).collect(),
        name: "chat gpt-4o".into(),
        start_time_unix_nano: 1_795_000_000_000_000_000,
        end_time_unix_nano: 1_795_000_001_500_000_000,
        attributes: attrs,
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_000_000, 0).unwrap()
}

#[test]
fn a_genai_span_becomes_one_event_with_its_kinds() {
    let s = span(vec![
        Kv::string("gen_ai.operation.name", "chat"),
        Kv::string("gen_ai.request.model", "gpt-4o"),
        Kv::string("gen_ai.response.model", "gpt-4o-2024-08-06"),
        Kv::int("gen_ai.usage.input_tokens", 1200),
        Kv::int("gen_ai.usage.output_tokens", 300),
        Kv::int("gen_ai.usage.cache_read.input_tokens", 1000),
        Kv::int("gen_ai.usage.cache_creation.input_tokens", 100),
        Kv::int("gen_ai.usage.reasoning.output_tokens", 200),
        Kv::string("project.id", "search"),
    ]);
    let resource = [Kv::string("enduser.id", "alice")];
    let e = to_event(&s, Context { scope: &[], resource: &resource }, &mapping(), "svc", now()).unwrap().unwrap();
    assert_eq!(e.event_id, "0102030405060708090a0b0c0d0e0f10-0102030405060708");
    assert_eq!((e.user_id.as_str(), e.activity.as_str(), e.model.as_str()), ("alice", "chat", "gpt-4o-2024-08-06"));
    assert_eq!(e.project.as_deref(), Some("search"));
    assert_eq!((e.input_tokens, e.output_tokens), (1200, 300));
    assert_eq!(
        (e.kinds.cache_read_input_tokens, e.kinds.cache_write_input_tokens, e.kinds.reasoning_output_tokens),
        (1000, 100, 200)
    );
    assert_eq!(e.occurred_at, DateTime::from_timestamp_nanos(1_795_000_001_500_000_000));
    assert_eq!(e.source, "svc");
}

/// `openai.response.service_tier` (or its earlier name) becomes the
/// event's service tier; a name we do not know is refused naming the
/// attribute, never priced as standard.
#[test]
fn the_response_service_tier_is_read_and_checked() {
    let with = |attr: &str, tier: &str| {
        let s = span(vec![
            Kv::string("user.id", "bob"),
            Kv::string("gen_ai.request.model", "gpt-5"),
            Kv::int("gen_ai.usage.input_tokens", 10),
            Kv::int("gen_ai.usage.output_tokens", 3),
            Kv::string(attr, tier),
        ]);
        to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap()
    };
    let e = with("openai.response.service_tier", "flex").unwrap();
    assert_eq!(e.billing.service_tier, Some(tokenusage_contract::ServiceTier::Flex));
    let e = with("gen_ai.openai.response.service_tier", "default").unwrap();
    assert_eq!(e.billing.service_tier, Some(tokenusage_contract::ServiceTier::Standard));
    let err = with("openai.response.service_tier", "turbo").unwrap_err();
    assert_eq!(err.0[0].field, "openai.response.service_tier");
    assert!(err.0[0].reason.contains("turbo"));
}

#[test]
fn spans_without_usage_are_ignored_and_bad_ones_name_the_attribute() {
    let plain = span(vec![Kv::string("http.method", "GET")]);
    assert!(to_event(&plain, Context::default(), &mapping(), "svc", now()).is_none());
    let bad = span(vec![
        Kv::string("user.id", "bob"),
        Kv::int("gen_ai.usage.input_tokens", -5),
        Kv::int("gen_ai.usage.output_tokens", 3),
        Kv::int("gen_ai.usage.reasoning.output_tokens", 9),
    ]);
    let errs = to_event(&bad, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
    assert!(errs.contains("gen_ai.request.model: is required"), "{errs}");
    assert!(errs.contains("gen_ai.usage.input_tokens: must not be negative, got -5"), "{errs}");
    let mut anon = span(vec![Kv::string("gen_ai.request.model", "m"), Kv::int("gen_ai.usage.input_tokens", 1)]);
    anon.trace_id = vec![0; 16];
    let errs = to_event(&anon, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
    assert!(errs.contains("traceId: must be 16 bytes, not all zero"), "{errs}");
    assert!(errs.contains("user: no string or integer attribute user.id or enduser.id"), "{errs}");
}

/// The precedence rule, as a table: for each placement of the user
/// attributes over span, scope and resource, who the usage is counted
/// for. The nearest layer naming any of the user attributes wins.
#[test]
fn attributes_are_looked_up_on_the_span_then_its_scope_then_its_resource() {
    let usage = || vec![Kv::string("gen_ai.request.model", "m"), Kv::int("gen_ai.usage.input_tokens", 10)];
    type Layer = &'static [(&'static str, &'static str)];
    let cases: [(Layer, Layer, Layer, Option<&str>); 8] = [
        (&[("enduser.id", "span")], &[], &[("user.id", "resource")], Some("span")),
        (&[("user.id", "span")], &[("user.id", "scope")], &[("user.id", "resource")], Some("span")),
        (&[], &[("enduser.id", "scope")], &[("user.id", "resource")], Some("scope")),
        (&[], &[], &[("enduser.id", "resource")], Some("resource")),
        (&[("enduser.id", "span-end")], &[], &[("enduser.id", "res-end")], Some("span-end")),
        // Within one layer, the mapping's order decides.
        (&[("enduser.id", "second"), ("user.id", "first")], &[], &[], Some("first")),
        (&[("project.id", "p")], &[("user.id", "scope")], &[], Some("scope")),
        (&[], &[], &[], None),
    ];
    for (span_attrs, scope, resource, want) in cases {
        let kv = |l: Layer| l.iter().map(|(k, v)| Kv::string(k, v)).collect::<Vec<_>>();
        let mut attrs = usage();
        attrs.extend(kv(span_attrs));
        let (scope, resource) = (kv(scope), kv(resource));
        let got = to_event(&span(attrs), Context { scope: &scope, resource: &resource }, &mapping(), "svc", now())
            .unwrap()
            .ok()
            .map(|e| e.user_id);
        assert_eq!(got.as_deref(), want, "span {span_attrs:?}, scope {scope:?}, resource {resource:?}");
    }
}

#[test]
fn a_token_count_that_is_not_an_int64_is_refused_by_name_never_zero() {
    for bad in ["9223372036854775808", "1e3", "0x10", " 5", "5.0", ""] {
        let body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708",
        "endTimeUnixNano": "1795000001500000000",
        "attributes": [
            {"key": "user.id", "value": {"stringValue": "u"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": bad}},
        ]}]}]}]});
        let req = from_json(body.to_string().as_bytes()).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        let errs = to_event(s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
        assert!(errs.contains("gen_ai.usage.output_tokens: has no readable value"), "{bad:?}: {errs}");
    }
    // A usage attribute with no value at all, alone on the span: not ignored.
    let mut s = span(vec![Kv::string("user.id", "u"), Kv::string("gen_ai.request.model", "m")]);
    s.attributes.push(Kv { key: "gen_ai.usage.input_tokens".into(), value: None });
    assert!(to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().is_err());
}

#[test]
fn a_span_ending_after_2262_is_out_of_range_not_missing() {
    let mut s = span(vec![
        Kv::string("user.id", "u"),
        Kv::string("gen_ai.request.model", "m"),
        Kv::int("gen_ai.usage.input_tokens", 1),
    ]);
    s.end_time_unix_nano = 16_725_225_600_000_000_000; // 2500-01-01
    let errs = to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
    assert!(errs.contains("endTimeUnixNano: is out of range"), "{errs}");
    s.end_time_unix_nano = 0;
    s.start_time_unix_nano = 0;
    let errs = to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap_err().to_string();
    assert!(errs.contains("endTimeUnixNano: is required"), "{errs}");
}

#[test]
fn the_cache_write_name_of_util_genai_is_a_cache_write() {
    let s = span(vec![
        Kv::string("user.id", "u"),
        Kv::string("gen_ai.request.model", "m"),
        Kv::int("gen_ai.usage.input_tokens", 100),
        Kv::int("gen_ai.usage.cache_write.input_tokens", 40),
    ]);
    let e = to_event(&s, Context::default(), &mapping(), "svc", now()).unwrap().unwrap();
    assert_eq!(e.kinds.cache_write_input_tokens, 40);
}

#[test]
fn json_and_protobuf_read_the_same_export() {
    let s = span(vec![
        Kv::string("user.id", "carol"),
        Kv::string("gen_ai.request.model", "claude"),
        Kv::int("gen_ai.usage.input_tokens", 7),
        Kv::int("gen_ai.usage.output_tokens", 2),
    ]);
    let req = proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(proto::Resource { attributes: vec![Kv::string("service.name", "bot")] }),
            scope_spans: vec![proto::ScopeSpans {
                scope: Some(proto::InstrumentationScope::default()),
                spans: vec![s],
            }],
        }],
    };
    let decoded = proto::ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, req);
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
        "scopeSpans": [{"scope": {"name": "x"}, "spans": [{
            "traceId": "0102030405060708090A0B0C0D0E0F10", "spanId": "0102030405060708",
            "name": "chat gpt-4o", "kind": 3, "startTimeUnixNano": "1795000000000000000",
            "endTimeUnixNano": 1_795_000_001_500_000_000u64,
            "attributes": [
                {"key": "user.id", "value": {"stringValue": "carol"}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "claude"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "7"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 2}}]}]}]}]});
    assert_eq!(from_json(body.to_string().as_bytes()).unwrap(), req);
    for (bad, says) in [
        (json!([]), "the body: must be an object"),
        (json!({"resourceSpans": {}}), "resourceSpans: must be an array"),
        (json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}), "spans[0].traceId: must be hex"),
        (
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{"endTimeUnixNano": "-1"}]}]}]}),
            "endTimeUnixNano: must be",
        ),
    ] {
        let e = from_json(bad.to_string().as_bytes()).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
}
