//! The providers' own SDKs against our mapping: every usage key their
//! pinned versions define is read or deliberately ignored, and the OpenAI
//! instrumentation, with the user put in baggage as docs/PUBLISHING.md
//! says, is counted for the right users (scripts/provider-sdks).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokenusage_contract::providers::{KNOWN_KEYS, UsageFormat};

use crate::common::{TestApp, TestEnv, eventually};

fn python() -> String {
    std::env::var("TOKENUSAGE_TEST_PROVIDER_SDK_PYTHON")
        .expect("TOKENUSAGE_TEST_PROVIDER_SDK_PYTHON: run scripts/test.sh, which installs the pinned provider SDKs")
}

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/provider-sdks").join(name)
}

/// Fails when an SDK update adds a usage key we neither map nor list as
/// ignored (contract/src/providers.rs, `KNOWN_KEYS`).
#[test]
fn every_usage_key_the_sdks_define_is_mapped_or_ignored() {
    let out = std::process::Command::new(python()).arg(script("usage_keys.py")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut unknown = Vec::new();
    for format in [UsageFormat::OpenAiChat, UsageFormat::OpenAiResponses, UsageFormat::Anthropic] {
        let paths = keys[format.name()].as_array().unwrap_or_else(|| panic!("no keys for {}", format.name()));
        assert!(paths.len() >= 4, "{}: {paths:?}", format.name());
        for p in paths {
            let p = p.as_str().unwrap();
            if !KNOWN_KEYS.iter().any(|(f, k, _)| *f == format && *k == p) {
                unknown.push(format!("{} {p}", format.name()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the SDKs ({}) define usage keys we neither read nor list as ignored: {unknown:?}",
        keys["sdk_versions"]
    );
}

/// The working recipe, for real: opentelemetry-instrumentation-openai-v2 on
/// the `openai` client, the user in baggage, BaggageSpanProcessor copying it
/// onto the spans, OTLP to us. The resource names a service account, which
/// the span's own user must win over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_instrumentation_with_baggage_counts_each_call_for_its_user() {
    let env = TestEnv::new().await;
    let app = TestApp::spawn(&env).await;
    let key = tokenusage_schema::keys::create(&env.pool, "instrumented", "chatbot", 100_000).await.unwrap().key;
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script("instrumented_openai.py")).arg(app.url("")).arg(&key);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    let mut want: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for line in stdout.lines() {
        let call: Value = serde_json::from_str(line).unwrap();
        let w = want.entry(call["user"].as_str().unwrap().to_owned()).or_default();
        *w = (w.0 + 1, w.1 + call["input"].as_i64().unwrap(), w.2 + call["output"].as_i64().unwrap());
    }
    assert_eq!(want.len(), 2, "{stdout}");
    let counted = eventually(Duration::from_secs(60), || async {
        let got: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "select user_id, count(*), sum(input_tokens)::int8, sum(output_tokens)::int8 \
             from usage_events group by 1 order by 1",
        )
        .fetch_all(&env.pool)
        .await
        .unwrap();
        let got: BTreeMap<String, (i64, i64, i64)> = got.into_iter().map(|(u, n, i, o)| (u, (n, i, o))).collect();
        (got == want).then_some(())
    })
    .await;
    let models: Vec<(String, String)> =
        sqlx::query_as("select distinct model, activity from usage_events").fetch_all(&env.pool).await.unwrap();
    assert!(counted.is_some(), "each call counted once for its baggage user, none for the resource's service account");
    assert_eq!(models, vec![("gpt-4o-mini-2024-07-18".to_owned(), "chat".to_owned())]);
    app.stop().await;
    env.cleanup().await;
}
