//! The OpenAPI document, generated from the handlers' annotations and the
//! response types, served at `/openapi.json` with Swagger UI at `/docs`
//! (its assets are compiled into the binary: no CDN).
//!
//! It lists every route the server answers (a test below compares it with
//! the routers), and every operation documents the error envelope as its
//! `default` response: whatever error status a request gets, the body is an
//! [`ErrorBody`](crate::error::ErrorBody). The live socket's messages are
//! in docs/asyncapi.yaml.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::history::routes as history;
use crate::{admin, app, audit, live, session};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "tokenusage", description = "LLM token usage: ingest, history, live updates, audit. \
        The live WebSocket protocol (`GET /api/v1/live`) is described in docs/asyncapi.yaml and docs/LIVE.md."),
    paths(
        session::login, session::refresh, session::logout, session::me,
        live::upgrade,
        history::series, history::summary, history::breakdown, history::dimensions, history::export_csv,
        history::top_users, audit::views_of_me, audit::admin_search,
        admin::list_keys, admin::create_key, admin::revoke_key, admin::list_dead_letters, admin::redrive_dead_letter,
        tokenusage_ingest::http::ingest,
        app::healthz, app::readyz, app::metrics,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "auth", description = "Sign-in and sessions"),
        (name = "usage", description = "Usage history for the caller (admins: anyone, or `*`)"),
        (name = "live", description = "Live chart updates over WebSocket"),
        (name = "audit", description = "The audit trail"),
        (name = "admin", description = "Admins only"),
        (name = "ingest", description = "Publishing usage events (publisher API keys)"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// Security schemes, and the error envelope as every operation's `default`.
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        components.add_security_scheme(
            "publisher_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tu_<prefix>_<secret>")
                    .description(Some("A publisher API key (`tokenusage keys create`)"))
                    .build(),
            ),
        );
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
}

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // The crate version would churn the snapshot on every release bump;
    // the API has its own version in its paths.
    doc.info.version = "v1".into();
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The served document is reviewed like code: any change to it shows up
    /// as a diff of docs/openapi.json. `UPDATE_SNAPSHOTS=1` rewrites it.
    #[test]
    fn the_openapi_document_matches_its_snapshot() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let current = super::document().to_pretty_json().unwrap() + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &current).unwrap();
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == current,
            "docs/openapi.json is out of date: run `UPDATE_SNAPSHOTS=1 cargo test -p tokenusage-api openapi` and review the diff"
        );
    }

    /// Every route the routers serve is in the document, and the document
    /// names no route that does not exist.
    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let (_, api) = crate::app::api_routes().into_parts("/api/v1");
        let (_, ops) = crate::app::operational_routes().into_parts("");
        let served: BTreeSet<(String, String)> = api
            .into_iter()
            .chain(ops)
            .map(|(m, p)| (m.as_str().to_owned(), p))
            .chain(tokenusage_ingest::http::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())))
            .collect();
        let doc = super::document();
        let mut documented = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [("GET", &item.get), ("POST", &item.post), ("DELETE", &item.delete), ("PUT", &item.put)]
            {
                if let Some(op) = op {
                    documented.insert((method.to_owned(), path.clone()));
                    assert!(op.responses.responses.contains_key("default"), "{method} {path} has no error response");
                }
            }
        }
        let missing: Vec<_> = served.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
        assert!(phantom.is_empty(), "documented routes that are not served: {phantom:?}");
    }
}
