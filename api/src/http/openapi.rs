//! The OpenAPI document, generated from the handlers' annotations and the
//! response types, served at `/openapi.json` with Swagger UI at `/docs`
//! (its assets are compiled into the binary: no CDN).
//!
//! Each route registers its own entry (`routes`, utoipa-axum), so the
//! document lists exactly the routes the server answers; every operation documents the error envelope as its
//! `default` response: whatever error status a request gets, the body is an
//! [`ErrorBody`](crate::http::error::ErrorBody). The live socket's messages are
//! in docs/asyncapi.yaml.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "tokenusage", description = "LLM token usage: ingest, history, live updates, audit. \
        The live WebSocket protocol (`GET /api/v1/live`) is described in docs/asyncapi.yaml and docs/LIVE.md."),
    components(schemas(crate::http::error::ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "auth", description = "Sign-in and sessions"),
        (name = "usage", description = "Usage history for the caller, a member or a team they manage (admins: anyone, any team, or `*`)"),
        (name = "live", description = "Live chart updates over WebSocket"),
        (name = "audit", description = "The audit trail"),
        (name = "budgets", description = "Budgets on users, teams and projects, their state, and the gateway check"),
        (name = "teams", description = "Teams and their members (managing them: admins only)"),
        (name = "admin", description = "Admins only"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The bearer security scheme.
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "publisher_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("publisher API key (tu_...)").build(),
            ),
        );
    }
}

/// Gives every operation the error envelope as its `default` response:
/// whatever error status a request gets, the body is an `ErrorBody`.
fn with_error_envelope(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = ResponseBuilder::new()
        .description("An error, always in the JSON envelope; `code` says which")
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build();
    for item in openapi.paths.paths.values_mut() {
        for op in
            [&mut item.get, &mut item.post, &mut item.delete, &mut item.put, &mut item.patch].into_iter().flatten()
        {
            op.responses.responses.entry("default".to_owned()).or_insert_with(|| error.clone().into());
        }
    }
}

/// The document served at `/openapi.json`: the API's own, with `mounted`
/// (the documents of what else the server mounts, such as ingest) merged in.
pub fn document(mounted: impl IntoIterator<Item = utoipa::openapi::OpenApi>) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::router::parts().2);
    for other in mounted {
        doc.merge(other);
    }
    with_error_envelope(&mut doc);
    // The crate version would churn the snapshot on every release bump;
    // the API has its own version in its paths.
    doc.info.version = "v1".into();
    doc
}

/// Every (method, path) the API itself serves, for completeness checks of
/// the document wherever it is composed.
pub fn routes() -> Vec<(String, String)> {
    operations(&super::router::parts().2).0.into_iter().collect()
}

/// Every (method, path) a document describes, and those of its
/// operations that lack the error envelope (for the completeness checks).
pub fn operations(doc: &utoipa::openapi::OpenApi) -> (std::collections::BTreeSet<(String, String)>, Vec<String>) {
    let mut documented = std::collections::BTreeSet::new();
    let mut without_envelope = Vec::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
        ];
        for (method, op) in methods {
            if let Some(op) = op {
                documented.insert((method.to_owned(), path.clone()));
                if !op.responses.responses.contains_key("default") {
                    without_envelope.push(format!("{method} {path}"));
                }
            }
        }
    }
    (documented, without_envelope)
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    /// Every operation has the error envelope, and the router answers every
    /// operation the document lists (each is registered with its route, so
    /// this checks that registration, not a second list): no route is
    /// missing (axum's bare 404) or served under another method (405).
    #[tokio::test]
    async fn every_documented_operation_is_served_with_the_error_envelope() {
        let (documented, without) = super::operations(&super::document([]));
        assert!(without.is_empty(), "operations without the error envelope: {without:?}");
        assert!(documented.len() > 40, "the API's operations are in the document: {}", documented.len());
        let (api, ops, _) = crate::http::router::parts();
        let app = api.merge(ops).with_state(crate::http::AppState::without_database());
        for (method, path) in &documented {
            let uri = path.replace(['{', '}'], "");
            let req = axum::http::Request::builder()
                .method(method.as_str())
                .uri(&uri)
                .body(axum::body::Body::empty())
                .expect("a request");
            let res = app.clone().oneshot(req).await.expect("an answer");
            let status = res.status();
            let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.expect("a body");
            assert_ne!(status, axum::http::StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not served");
            assert!(!(status == axum::http::StatusCode::NOT_FOUND && body.is_empty()), "{method} {path} has no route");
        }
    }
}
