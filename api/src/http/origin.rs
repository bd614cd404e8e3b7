//! Is a browser request from our own site? The `Origin` header compared
//! with this server's origin as scheme, host and port together, as browsers
//! define an origin: `https://host:8080` is not `http://host:8080`.
//!
//! Our scheme is known from the configuration (https under the built-in TLS
//! listener or a declared TLS proxy, http otherwise), our host and port from
//! the request's `Host`. Default ports are implied (`https://h` is
//! `https://h:443`). A request without `Origin` is not a browser's
//! cross-site request and passes; `Origin: null` never does.

use axum::http::{HeaderMap, header};

/// An origin: lowercase scheme and host, and the port (default filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into host and port.
fn split_host(authority: &str, scheme: &str) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, Some(p.parse::<u16>().ok()?)),
        _ => (authority, None),
    };
    let port = match port {
        Some(p) => p,
        None => default_port(scheme)?,
    };
    Some((host.to_ascii_lowercase(), port))
}

impl Origin {
    /// Parses an `Origin` value (`scheme://host[:port]`, nothing more).
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let (host, port) = split_host(rest, &scheme)?;
        Some(Origin { scheme, host, port })
    }
}

/// Whether the request's `Origin`, if any, is this server's (reached over
/// `https` when `tls` is true) or one of `allowed`.
pub(crate) fn allowed(headers: &HeaderMap, tls: bool, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let Some(origin) = origin.to_str().ok().and_then(Origin::parse) else { return false };
    if allowed.iter().filter_map(|a| Origin::parse(a)).any(|a| a == origin) {
        return true;
    }
    let scheme = if tls { "https" } else { "http" };
    let Some((host, port)) =
        headers.get(header::HOST).and_then(|h| h.to_str().ok()).and_then(|h| split_host(h, scheme))
    else {
        return false;
    };
    origin == Origin { scheme: scheme.to_owned(), host, port }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn scheme_host_and_port_must_all_match() {
        let plain = |o| allowed(&headers(Some(o), "127.0.0.1:8080"), false, &[]);
        assert!(plain("http://127.0.0.1:8080"));
        assert!(!plain("https://127.0.0.1:8080"), "the scheme is part of the origin");
        assert!(!plain("http://127.0.0.1:8081"));
        assert!(!plain("http://127.0.0.1"));
        assert!(!plain("http://evil.example"));
        assert!(!plain("null"));
        assert!(!plain("http://127.0.0.1:8080@evil.example"));
        assert!(allowed(&headers(None, "127.0.0.1:8080"), false, &[]), "no Origin: not a browser's cross-site request");
        let tls = |o| allowed(&headers(Some(o), "Dash.Example.com"), true, &[]);
        assert!(tls("https://dash.example.com"));
        assert!(tls("https://dash.example.com:443"), "default ports are implied");
        assert!(!tls("http://dash.example.com"));
        assert!(allowed(&headers(Some("http://[::1]:8080"), "[::1]:8080"), false, &[]));
    }

    #[test]
    fn configured_origins_are_compared_the_same_way() {
        let extra = vec!["https://app.example.com".to_owned()];
        assert!(allowed(&headers(Some("https://app.example.com"), "api:8080"), false, &extra));
        assert!(allowed(&headers(Some("https://APP.example.com:443"), "api:8080"), false, &extra));
        assert!(!allowed(&headers(Some("http://app.example.com"), "api:8080"), false, &extra));
    }
}
