//! What every `/api/v1` request must satisfy before a handler sees it: a
//! bounded head, and a path and query made of printable, storable text.
//!
//! Checked once here, for every route present and future, instead of in
//! each handler: a NUL or a newline in `activity=`, `user=`, `actor=` or a
//! key id would otherwise reach PostgreSQL (which refuses NUL: a 500) or a
//! log line. Invalid UTF-8 in a percent-escape is refused the same way.

use axum::extract::Query;
use axum::http::request::Parts;

use crate::http::error::ApiError;

/// Most bytes of one decoded query value.
const VALUE_MAX_BYTES: usize = 4096;

/// Refuses a path or query that is not printable UTF-8 text.
pub(crate) fn check(parts: &Parts) -> Result<(), ApiError> {
    let path = percent_decode(parts.uri.path()).ok_or_else(|| {
        ApiError::bad_request("invalid_path", "the path holds a percent-escape that is not UTF-8 text")
    })?;
    if path.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_path",
            "the path must not contain control characters (such as NUL)",
        ));
    }
    let Some(raw) = parts.uri.query() else { return Ok(()) };
    // serde_urlencoded decodes a bad escape (`%FF`) into U+FFFD without a
    // word; a query that is not UTF-8 is refused here instead.
    if raw.split('&').any(|pair| percent_decode(&pair.replace('+', " ")).is_none()) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "the query string holds a percent-escape that is not UTF-8 text",
        ));
    }
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map_err(|_| ApiError::bad_request("invalid_parameter", "the query string is not valid form encoding"))?;
    check_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The same rule for parameters that arrive another way (a live view).
pub(crate) fn check_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), ApiError> {
    for (name, value) in pairs {
        let shown = tokenusage_contract::text::escape(name);
        let shown = tokenusage_contract::text::truncate(&shown, 64);
        if name.chars().chain(value.chars()).any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`{shown}` must not contain control characters (such as NUL)"),
            ));
        }
        if value.len() > VALUE_MAX_BYTES {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                format!("`{shown}` is longer than {VALUE_MAX_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// The same rule for a view that arrives as JSON (a live subscription):
/// every name, string value, and string in a list.
pub(crate) fn check_json(view: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    use serde_json::Value;
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (k, v) in view {
        match v {
            Value::String(s) => pairs.push((k, s)),
            Value::Array(items) => pairs.extend(items.iter().filter_map(Value::as_str).map(|s| (k.as_str(), s))),
            _ => pairs.push((k, "")),
        }
    }
    check_pairs(pairs)
}

/// Decodes `%XX` escapes; `None` if the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        axum::http::Request::builder().uri(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn nul_and_controls_in_the_path_or_query_are_refused_by_name() {
        let code = |uri: &str| check(&parts(uri)).err().map(|e| e.code_and_message());
        assert_eq!(code("/api/v1/usage/series?from=2026-11-01&activity=chat"), None);
        assert_eq!(code("/api/v1/usage/series?model=gpt-4o%20mini%E2%80%AE"), None, "RTL marks are text");
        let (c, m) = code("/api/v1/usage/series?activity=%00").unwrap();
        assert_eq!((c, m.contains("`activity`")), ("invalid_parameter", true));
        assert_eq!(code("/api/v1/admin/keys/%00").unwrap().0, "invalid_path");
        assert_eq!(code("/api/v1/admin/keys/%FF").unwrap().0, "invalid_path");
        assert_eq!(code("/api/v1/me?x=%FF").unwrap().0, "invalid_parameter");
        assert_eq!(code("/api/v1/me?a%00b=1").unwrap().0, "invalid_parameter");
        assert_eq!(code("/api/v1/me?user=line%0Abreak").unwrap().0, "invalid_parameter");
    }

    #[test]
    fn percent_decoding_keeps_stray_percent_signs() {
        assert_eq!(percent_decode("/a%20b%2"), Some("/a b%2".to_owned()));
        assert_eq!(percent_decode("%e2%82%ac"), Some("€".to_owned()));
    }
}
