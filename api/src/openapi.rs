//! The OpenAPI document, generated from the handlers' annotations and the
//! response types, served at `/openapi.json` with Swagger UI at `/docs`
//! (its assets are compiled into the binary: no CDN).

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::history::routes as history;
use crate::{audit, session};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "tokenusage", description = "LLM token usage: history, live updates, audit."),
    paths(
        session::login, session::refresh, session::logout, session::me,
        history::series, history::summary, history::breakdown, history::dimensions, history::export_csv,
        history::top_users, audit::views_of_me, audit::admin_search,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Sign-in and sessions"),
        (name = "usage", description = "Usage history for the caller (admins: anyone, or `*`)"),
        (name = "audit", description = "The audit trail"),
        (name = "admin", description = "Admins only"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
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
}
