//! Identity providers and transport: tokens of an OIDC provider validated
//! against its JWKS, the built-in TLS listener, and plain HTTP refused off
//! loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::{TestApp, TestEnv, test_api_args};
use crate::security::{now, sign};

/// A minimal OpenID provider: discovery and a JWKS holding one ES256 key.
struct MockIdp {
    issuer: String,
    jwks_hits: Arc<AtomicUsize>,
    key: EncodingKey,
    kid: &'static str,
}

impl MockIdp {
    async fn start() -> Self {
        let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/oidc-test-es256.pem")).unwrap();
        let key = EncodingKey::from_ec_pem(&pem).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("idp-key-1".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let jwks_hits = Arc::new(AtomicUsize::new(0));
        let (hits, iss) = (jwks_hits.clone(), issuer.clone());
        let jwks = json!({ "keys": [jwk] });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let iss = iss.clone();
                    async move { axum::Json(json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")})) }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let jwks = jwks.clone();
                    async move { axum::Json(jwks) }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { issuer, jwks_hits, key, kid: "idp-key-1" }
    }

    fn claims(&self, sub: &str, roles: Value) -> Value {
        let n = now();
        json!({"sub": sub, "iss": self.issuer, "aud": "tokenusage", "exp": n + 300, "nbf": n - 1, "iat": n, "groups": roles})
    }

    fn token(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_the_configured_identity_provider_are_validated_against_its_jwks() {
    let env = TestEnv::database_only().await;
    let idp = MockIdp::start().await;
    let mut args = test_api_args();
    args.oidc.issuer = Some(idp.issuer.clone());
    args.oidc.role_claim = "groups".into();
    args.oidc.admin_values = vec!["usage-admins".into()];
    args.oidc.jwks_min_refetch_secs = 3600;
    let app = TestApp::spawn_api(&env, args).await;

    let viewer = idp.token(idp.kid, &idp.claims("carol", json!(["staff"])));
    let (status, me) = app.get(&viewer, "/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str(), me["issuer"].as_str()),
        (Some("carol"), Some("viewer"), Some("oidc"))
    );
    let admin = idp.token(idp.kid, &idp.claims("dave", json!(["staff", "usage-admins"])));
    assert_eq!(app.get(&admin, "/api/v1/me").await.1["role"], "admin");
    // Claim-to-role mapping decides; a viewer cannot read others.
    assert_eq!(
        app.get(&viewer, "/api/v1/usage/series?from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z&user=dave").await.0,
        403
    );
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 1, "keys are cached");

    let mut wrong_aud = idp.claims("carol", json!([]));
    wrong_aud["aud"] = json!("another-app");
    let mut wrong_iss = idp.claims("carol", json!([]));
    wrong_iss["iss"] = json!("https://evil.example");
    let mut expired = idp.claims("carol", json!([]));
    expired["exp"] = json!(now() - 60);
    // Key confusion: HS256 with the provider's public key as the HMAC secret.
    let public_jwk =
        serde_json::to_vec(&jsonwebtoken::jwk::Jwk::from_encoding_key(&idp.key, Algorithm::ES256).unwrap()).unwrap();
    let confused = sign(Algorithm::HS256, Some(idp.kid), &idp.claims("carol", json!(["usage-admins"])), &public_jwk);
    for (what, token) in [
        ("wrong audience", idp.token(idp.kid, &wrong_aud)),
        ("wrong issuer", idp.token(idp.kid, &wrong_iss)),
        ("expired", idp.token(idp.kid, &expired)),
        ("HS256 with the public key", confused),
    ] {
        assert_eq!(app.get(&token, "/api/v1/me").await.0, 401, "{what}");
    }
    // Unknown kids trigger at most one refetch within the window.
    for i in 0..5 {
        let t = idp.token(&format!("rotated-{i}"), &idp.claims("carol", json!([])));
        assert_eq!(app.get(&t, "/api/v1/me").await.0, 401);
    }
    assert_eq!(idp.jwks_hits.load(Ordering::SeqCst), 2, "unknown kids refetch, rate-limited");

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_tls_listener_serves_https_with_hsts() {
    let env = TestEnv::database_only().await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("tu-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let mut args = test_api_args();
    args.tls.cert = Some(dir.join("cert.pem"));
    args.tls.key = Some(dir.join("key.pem"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server =
        tokenusage_api::Application::build(args, env.pool.clone(), tokenusage_api::Mounted::default()).await.unwrap();
    assert_eq!(server.scheme(), "https");
    let port = server.local_addr().port();
    let s = shutdown.clone();
    let task = tokio::spawn(async move { server.run_until_stopped(s).await });

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client.get(format!("https://localhost:{port}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["strict-transport-security"].to_str().unwrap().starts_with("max-age="));
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    // Plain HTTP to the TLS port gets nothing.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(35), task).await;
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}

#[test]
fn serve_refuses_plain_http_on_a_reachable_address() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenusage"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("--behind-tls-proxy"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_provider_groups_make_team_members_and_managers() {
    let env = TestEnv::database_only().await;
    let idp = MockIdp::start().await;
    let mut args = test_api_args();
    args.oidc.issuer = Some(idp.issuer.clone());
    args.oidc.groups_claim = "groups".into();
    args.oidc.team_member_prefix = Some("tu-team-".into());
    args.oidc.team_manager_prefix = Some("tu-manager-".into());
    let app = TestApp::spawn_api(&env, args).await;
    for (user, n) in [("erin", 11), ("frank", 2200)] {
        sqlx::query(
            "insert into usage_hour (user_id, activity, model, bucket, input_tokens, output_tokens, events) \
             values ($1, 'chat', 'm', '2026-11-20T10:00:00Z', $2, 0, 1)",
        )
        .bind(user)
        .bind(n)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    // Frank signs in as a member of `ml` (created on the way), Erin as its manager.
    let frank = idp.token(idp.kid, &idp.claims("frank", json!(["staff", "tu-team-ml", "tu-team-Not Valid"])));
    let erin = idp.token(idp.kid, &idp.claims("erin", json!(["tu-manager-ml"])));
    assert_eq!(app.get(&frank, "/api/v1/me").await.0, 200);
    let (_, mine) = app.get(&erin, "/api/v1/teams").await;
    assert_eq!(mine["member_of"], json!([{"team": "ml", "role": "manager"}]), "{mine}");
    let members: Vec<&str> =
        mine["visible"][0]["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    assert_eq!(members, ["erin", "frank"]);
    assert!(mine["visible"][0]["members"].as_array().unwrap().iter().all(|m| m["origin"] == "oidc"));
    const TEAM: &str = "/api/v1/usage/series?from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z&team=ml";
    assert_eq!(app.get(&erin, TEAM).await.1["total"]["input_tokens"], 2211);
    assert_eq!(app.get(&frank, TEAM).await.0, 403, "a member is not a manager");
    // The provider drops Frank from the group: his next token removes him.
    let teams: Vec<(String,)> = sqlx::query_as("select name from teams").fetch_all(&env.pool).await.unwrap();
    assert_eq!(teams, vec![("ml".to_owned(),)], "invalid group names make no team");
    let frank = idp.token(idp.kid, &idp.claims("frank", json!(["staff"])));
    assert_eq!(app.get(&frank, "/api/v1/me").await.0, 200);
    assert_eq!(app.get(&erin, TEAM).await.1["total"]["input_tokens"], 11);
    app.stop().await;
    env.cleanup().await;
}
