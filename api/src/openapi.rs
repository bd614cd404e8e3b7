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
use crate::{admin, app, audit, budgets, live, session, teams};

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "tokenusage", description = "LLM token usage: ingest, history, live updates, audit. \
        The live WebSocket protocol (`GET /api/v1/live`) is described in docs/asyncapi.yaml and docs/LIVE.md."),
    paths(
        session::login, session::refresh, session::logout, session::me,
        live::handshake::upgrade,
        history::series, history::summary, history::breakdown, history::dimensions, history::export_csv,
        history::top_users, history::overview, audit::search::views_of_me, audit::search::admin_search,
        admin::list_keys, admin::create_key, admin::revoke_key, admin::list_prices, admin::set_price, admin::remove_price, admin::list_dead_letters, admin::redrive_dead_letter,
        crate::reconciliation::providers, crate::reconciliation::put_mapping, crate::reconciliation::delete_mapping, crate::reconciliation::reconciliation, crate::reconciliation::reconciliation_csv,
        teams::routes::my_teams, teams::routes::admin_list, teams::routes::admin_create, teams::routes::admin_get, teams::routes::admin_rename,
        teams::routes::admin_delete, teams::routes::admin_set_member, teams::routes::admin_remove_member,
        budgets::routes::list, budgets::routes::create, budgets::routes::check, budgets::routes::get,
        budgets::routes::delete, budgets::routes::list_endpoints, budgets::routes::create_endpoint,
        budgets::routes::delete_endpoint, budgets::routes::list_deliveries, budgets::routes::retry_delivery,
        app::routes::healthz, app::ready::readyz, app::routes::metrics,
    ),
    components(schemas(crate::error::ErrorBody)),
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
    let (_, api) = crate::app::api_routes().into_parts("/api/v1");
    let (_, ops) = crate::app::operational_routes().into_parts("");
    api.into_iter().chain(ops).map(|(m, p)| (m.as_str().to_owned(), p)).collect()
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
    use std::collections::BTreeSet;

    /// Every route the API serves is in its document, with the error
    /// envelope, and its document names no route it does not serve. (The
    /// composed document, ingest included, is checked by the `tokenusage`
    /// binary, which mounts both.)
    #[test]
    fn every_api_route_is_documented_and_every_documented_route_exists() {
        let served: BTreeSet<(String, String)> = super::routes().into_iter().collect();
        let (documented, without) = super::operations(&super::document([]));
        assert!(without.is_empty(), "operations without the error envelope: {without:?}");
        let missing: Vec<_> = served.difference(&documented).collect();
        let phantom: Vec<_> = documented.difference(&served).collect();
        assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
        assert!(phantom.is_empty(), "documented routes that are not served: {phantom:?}");
    }
}
