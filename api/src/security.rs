//! Response headers that hold for every route: a strict CSP (no inline
//! script or style anywhere in the dashboard), no framing, no sniffing, no
//! referrer leakage.

use axum::http::{HeaderName, HeaderValue};
use tower_http::set_header::SetResponseHeaderLayer;

pub(crate) fn layers() -> Vec<SetResponseHeaderLayer<HeaderValue>> {
    let h = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(HeaderName::from_static(name), HeaderValue::from_static(value))
    };
    vec![
        h(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        h("x-content-type-options", "nosniff"),
        h("x-frame-options", "DENY"),
        h("referrer-policy", "no-referrer"),
        h("cross-origin-opener-policy", "same-origin"),
    ]
}
