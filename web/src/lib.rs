//! The dashboard's static assets, embedded in the binary with rust-embed:
//! our own HTML, CSS and JavaScript from `web/assets/`, and uPlot from
//! `web/node_modules/uplot/dist/` (installed by `npm ci`, pinned by
//! `web/package-lock.json`). No bundler; the files are served as they are.
//!
//! This crate only serves bytes. It knows nothing of users or data: the page
//! talks to the API like any other client.

use axum::body::Body;
use axum::extract::Path;
use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
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
        .route("/", get(|headers: HeaderMap| async move { page(&headers) }))
        .route(
            "/assets/{*file}",
            get(|Path(file): Path<String>, uri: Uri, headers: HeaderMap| async move {
                serve::<Own>(&file, uri.query(), &headers)
            }),
        )
        .route(
            "/vendor/{*file}",
            get(|Path(file): Path<String>, uri: Uri, headers: HeaderMap| async move {
                serve::<Vendor>(&file, uri.query(), &headers)
            }),
        )
}

/// The content fingerprint of an embedded file (hex, 16 bytes of SHA-256).
fn fingerprint<E: RustEmbed>(path: &str) -> Option<String> {
    E::get(path).map(|f| hex::encode(&f.metadata.sha256_hash()[..16]))
}

/// index.html with every asset URL versioned by its content
/// (`/assets/app.js?v=<hash>`), so the files themselves can be cached for
/// a year and a new build is picked up at once. Computed once.
static PAGE: LazyLock<Option<(Vec<u8>, String)>> = LazyLock::new(|| {
    let file = Own::get("index.html")?;
    let mut html = String::from_utf8_lossy(&file.data).into_owned();
    let own = ["assets/app.js", "assets/style.css"];
    for path in own {
        if let Some(v) = fingerprint::<Own>(path.trim_start_matches("assets/")) {
            html = html.replace(&format!("\"/{path}\""), &format!("\"/{path}?v={v}\""));
        }
    }
    for path in ["uPlot.iife.min.js", "uPlot.min.css"] {
        if let Some(v) = fingerprint::<Vendor>(path) {
            html = html.replace(&format!("\"/vendor/{path}\""), &format!("\"/vendor/{path}?v={v}\""));
        }
    }
    let etag = format!("\"{}\"", hex::encode(&sha2_of(html.as_bytes())[..16]));
    Some((html.into_bytes(), etag))
});

fn sha2_of(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

fn page(headers: &HeaderMap) -> Response {
    let Some((html, etag)) = PAGE.as_ref() else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
            (header::ETAG, etag.clone()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        html.clone(),
    )
        .into_response()
}

fn serve<E: RustEmbed>(path: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    let Some(file) = E::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    // A strong ETag from the content hash: revalidation costs one round trip
    // and no body when nothing changed.
    let hash = hex::encode(&file.metadata.sha256_hash()[..16]);
    let etag = format!("\"{hash}\"");
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    // Versioned URLs (the page links only those) never change: cache for a
    // year. Anything else revalidates.
    let versioned = query.and_then(|q| q.strip_prefix("v=")) == Some(hash.as_str());
    let mime = file.metadata.mimetype().to_owned();
    let mut resp = Response::new(Body::from(file.data.into_owned()));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if versioned { "public, max-age=31536000, immutable" } else { "no-cache" }),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_versioned_assets_that_are_cached_for_a_year() {
        let (html, _) = PAGE.as_ref().expect("index.html is embedded");
        let html = String::from_utf8_lossy(html);
        let v = fingerprint::<Own>("app.js").unwrap();
        assert!(html.contains(&format!("/assets/app.js?v={v}")), "{html}");
        let r = serve::<Own>("app.js", Some(&format!("v={v}")), &HeaderMap::new());
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
        let r = serve::<Own>("app.js", Some("v=stale"), &HeaderMap::new());
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&format!("\"{v}\"")).unwrap());
        assert_eq!(serve::<Own>("app.js", None, &h).status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn no_inline_script_or_style_in_the_page() {
        let (html, _) = PAGE.as_ref().unwrap();
        let html = String::from_utf8_lossy(html);
        assert!(
            !html.contains("<script>") && !html.contains("style=") && !html.contains("<style"),
            "the CSP forbids inline code"
        );
        assert!(
            !html.contains(" onclick=") && !html.contains(" onload=") && !html.contains(" onsubmit="),
            "no inline handlers"
        );
    }
}
