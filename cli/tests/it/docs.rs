//! The documentation and deployment files agree with the binary: every
//! setting it reads is documented, and every setting docker-compose.yml
//! passes to it is one it accepts.

use std::collections::BTreeSet;

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn known_env() -> BTreeSet<String> {
    tokenusage::env_vars().into_iter().map(|(n, _, _)| n).collect()
}

#[test]
fn every_setting_is_in_the_readme_table_and_env_example() {
    let readme = repo_file("README.md");
    let example = repo_file(".env.example");
    for name in known_env() {
        assert!(readme.contains(&format!("| `{name}` |")), "README.md's table lacks {name}");
        assert!(example.contains(&format!("{name}=")), ".env.example lacks {name}");
    }
}

#[test]
fn docker_compose_passes_only_settings_tokenusage_accepts() {
    let compose: serde_yaml::Value = serde_yaml::from_str(&repo_file("docker-compose.yml")).unwrap();
    let svc = &compose["services"]["tokenusage"];
    let env = svc["environment"].as_mapping().expect("tokenusage has an environment map");
    let known = known_env();
    assert!(!env.is_empty());
    for (k, v) in env {
        let k = k.as_str().unwrap();
        assert!(known.contains(k), "docker-compose.yml sets {k}, which tokenusage does not read");
        assert!(v.is_string(), "{k} should be quoted as a string in docker-compose.yml");
    }
    // The command line parses, with the compose environment applied.
    let mut args = vec!["tokenusage".to_owned()];
    args.extend(svc["command"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()));
    use clap::Parser;
    let parsed = tokenusage::Cli::try_parse_from(&args);
    assert!(parsed.is_ok(), "compose command {args:?} does not parse: {:?}", parsed.err());
    // Services it depends on exist and have health checks.
    for dep in svc["depends_on"].as_mapping().unwrap().keys() {
        let name = dep.as_str().unwrap();
        assert!(compose["services"][name]["healthcheck"].is_mapping(), "{name} has no healthcheck");
    }
    assert!(svc["healthcheck"].is_mapping());
}

#[test]
fn the_json_schema_is_valid_json_and_names_every_required_field() {
    let schema: serde_json::Value = serde_json::from_str(&repo_file("docs/schema/usage-event-v1.schema.json")).unwrap();
    let required: Vec<&str> = schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(required, ["event_id", "user_id", "occurred_at", "activity", "model"]);
    // Token counts: ours, or a provider's usage object.
    assert_eq!(
        schema["anyOf"],
        serde_json::json!([{"required": ["input_tokens", "output_tokens"]}, {"required": ["usage"]}])
    );
    // The schema's examples are accepted by the real validator.
    let now = chrono::Utc::now();
    for example in schema["examples"].as_array().unwrap() {
        tokenusage_contract::parse_native(example.to_string().as_bytes(), "docs", now)
            .expect("schema example validates");
    }
}

#[test]
fn the_asyncapi_document_names_the_topic_key_and_headers_we_use() {
    let doc: serde_yaml::Value = serde_yaml::from_str(&repo_file("docs/asyncapi.yaml")).unwrap();
    assert_eq!(doc["asyncapi"].as_str(), Some("3.0.0"));
    assert_eq!(doc["channels"]["usage"]["address"].as_str(), Some(tokenusage_contract::wire::DEFAULT_TOPIC));
    let native = &doc["components"]["messages"]["native"]["headers"]["properties"];
    use tokenusage_contract::wire::header;
    for h in [header::CONTENT_TYPE, header::SCHEMA, header::REQUEST_ID] {
        assert!(native[h].is_mapping(), "asyncapi.yaml lacks header {h}");
    }
    let binary = &doc["components"]["messages"]["cloudEventBinary"]["headers"]["properties"]["ce_type"]["const"];
    assert_eq!(binary.as_str(), Some(tokenusage_contract::CE_TYPE));
}

/// Every provider test vector (run by the contract's tests) is shown in
/// the publishing guide, with its format.
#[test]
fn every_provider_usage_vector_is_in_the_publishing_guide() {
    let guide = repo_file("docs/PUBLISHING.md");
    let vectors: serde_json::Value =
        serde_json::from_str(&repo_file("docs/examples/provider-usage-vectors.json")).unwrap();
    let vectors = vectors["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 5);
    for v in vectors {
        let row = format!("| `{}` | `{}` |", v["name"].as_str().unwrap(), v["usage_format"].as_str().unwrap());
        assert!(guide.contains(&row), "docs/PUBLISHING.md lacks the vector row {row}");
    }
}

/// No SQL of ours names rows by `ctid`: on a TimescaleDB hypertable a ctid
/// is unique only within one chunk, so `where ctid = (...)` touches a row of
/// every chunk (seen: a test's one-row delete removed a row of every month).
/// Comments may say why; code may not use it.
#[test]
fn no_code_names_rows_by_their_physical_address() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && !["target", "node_modules"].contains(&name.as_str()) {
                    stack.push(path);
                }
                continue;
            }
            let comment = match path.extension().and_then(|e| e.to_str()) {
                Some("rs") => "//",
                Some("sql") => "--",
                _ => continue,
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                let code = line.split(comment).next().unwrap_or("");
                // This test's own needle is spelt in pieces.
                if code.to_ascii_lowercase().contains(concat!("ct", "id")) {
                    offenders.push(format!("{}:{}", path.strip_prefix(&root).unwrap().display(), i + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "rows named by their physical address (ct-id): {offenders:?}");
}

/// The layout stays readable (docs/ARCHITECTURE.md): no library or binary
/// source file over 500 lines. Test modules (`tests.rs`, `tests/`) are
/// exempt; they grow with the cases they hold.
#[test]
fn no_source_file_is_over_500_lines() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if !["target", "tests", "node_modules", ".git"].contains(&name.as_str()) {
                    walk(&p, out);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(files.len() > 100, "found the sources ({} files)", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let lines = std::fs::read_to_string(p).unwrap().lines().count();
            (lines > 500).then(|| format!("{} ({lines} lines)", p.strip_prefix(&root).unwrap().display()))
        })
        .collect();
    assert!(long.is_empty(), "split these into modules: {long:?}");
}
