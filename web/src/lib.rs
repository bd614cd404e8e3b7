//! The dashboard's static assets, embedded in the binary with rust-embed:
//! our own HTML, CSS and JavaScript from `web/assets/`, and uPlot from
//! `web/node_modules/uplot/dist/` (installed by `npm ci`, pinned by
//! `web/package-lock.json`). No bundler; the files are served as they are.
//!
//! This crate only serves bytes. It knows nothing of users or data: the page
//! talks to the API like any other client.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Own;

/// uPlot's distribution files. `allow_missing` keeps `cargo build` working
/// before `npm ci`; [`vendor_present`] lets the server warn about it.
#[derive(RustEmbed)]
#[folder = "node_modules/uplot/dist/"]
#[include = "uPlot.iife.min.js"]
#[include = "uPlot.min.css"]
#[allow_missing = true]
struct Vendor;

/// Whether uPlot was embedded (it is missing if `npm ci` did not run).
pub fn vendor_present() -> bool {
    Vendor::get("uPlot.iife.min.js").is_some()
}

/// Routes: `/` (the page) and `/assets/{file}`, `/vendor/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve::<Own>("index.html", &headers) }))
        .route(
            "/assets/{*file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move { serve::<Own>(&file, &headers) }),
        )
        .route(
            "/vendor/{*file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move { serve::<Vendor>(&file, &headers) }),
        )
}

fn serve<E: RustEmbed>(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = E::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    // A strong ETag from the content hash: revalidation costs one round trip
    // and no body when nothing changed.
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mime = file.metadata.mimetype().to_owned();
    let mut resp = Response::new(Body::from(file.data.into_owned()));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
