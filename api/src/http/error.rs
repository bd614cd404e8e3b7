//! The API's one error type and its mapping to HTTP. Clients get a stable
//! code and a message meant for them, always in the envelope of
//! `plumbing::http`; internal causes travel to `log_internal_errors` on the
//! response and are logged there once, never sent.
//!
//! Extractor rejections (a body that is not JSON, a path segment that is not
//! a number, a WebSocket request without the upgrade headers) are turned
//! into this type by the extractors below, so they get specific codes.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
pub use tokenusage_plumbing::http::ErrorBody;
use tokenusage_plumbing::http::{InternalError, error_response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter or body is wrong; the message says which and why.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// No credential, or one that failed validation.
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated, but not allowed to see this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Nothing here; the message says what was looked for.
    #[error("{0}")]
    NotFound(String),
    /// The change clashes with what exists (a name already taken).
    #[error("{0}")]
    Conflict(String),
    /// The body's media type is not one we read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body exceeds the limit.
    #[error("body too large")]
    PayloadTooLarge,
    /// Too many attempts; retry after the given seconds.
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// The audit trail cannot be written, so nothing is served (fail closed).
    #[error("audit trail unavailable")]
    AuditUnavailable,
    /// Anything else. The cause is logged by the middleware, once.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }

    /// Whether this error is the database's "not now" anywhere in its
    /// cause chain (`plumbing::failure::is_overload`): however it reached
    /// here, directly or wrapped by an engine's error, it is answered 503
    /// with `Retry-After`, never 500.
    pub fn is_overload(&self) -> bool {
        match self {
            ApiError::Internal(e) => e
                .chain()
                .any(|c| c.downcast_ref::<sqlx::Error>().is_some_and(tokenusage_plumbing::failure::is_overload)),
            _ => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status_given(self.is_overload())
    }

    /// The status, with the overload class already decided (the cause
    /// chain is walked once per answer).
    fn status_given(&self, overload: bool) -> StatusCode {
        if overload {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code and the client-facing message.
    pub fn code_and_message(&self) -> (&'static str, String) {
        self.code_and_message_given(self.is_overload())
    }

    fn code_and_message_given(&self, overload: bool) -> (&'static str, String) {
        if overload {
            return (
                "unavailable",
                "the database cannot take this request right now (busy or restarting); retry shortly".to_owned(),
            );
        }
        match self {
            ApiError::BadRequest { code, message } => (code, message.clone()),
            ApiError::Unauthorized => ("unauthorized", "a valid access token is required".to_owned()),
            ApiError::Forbidden(why) => ("forbidden", (*why).to_owned()),
            ApiError::NotFound(what) => ("not_found", what.clone()),
            ApiError::Conflict(what) => ("conflict", what.clone()),
            ApiError::UnsupportedMediaType(why) => ("unsupported_media_type", why.clone()),
            ApiError::PayloadTooLarge => ("body_too_large", "the request body exceeds the limit".to_owned()),
            ApiError::TooManyRequests { .. } => ("rate_limited", "too many requests; retry later".to_owned()),
            ApiError::AuditUnavailable => (
                "audit_unavailable",
                "the request cannot be recorded in the audit trail right now, so it is not served; retry shortly"
                    .to_owned(),
            ),
            ApiError::Internal(_) => ("internal", "something went wrong on our side; it has been logged".to_owned()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database query failed"))
    }
}

impl From<crate::access::Denied> for ApiError {
    fn from(d: crate::access::Denied) -> Self {
        ApiError::Forbidden(d.0)
    }
}

impl From<crate::access::SubjectError> for ApiError {
    fn from(e: crate::access::SubjectError) -> Self {
        use crate::access::SubjectError;
        match e {
            SubjectError::Denied(d) => d.into(),
            SubjectError::NoTeam(t) => ApiError::NotFound(format!("no team {t:?}")),
            SubjectError::Db(e) => e.into(),
        }
    }
}

/// How long a client told "unavailable" by an overload waits to retry.
pub const OVERLOAD_RETRY_AFTER_SECS: u64 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let overload = self.is_overload();
        let (code, message) = self.code_and_message_given(overload);
        let mut resp = error_response(self.status_given(overload), code, message);
        match self {
            ApiError::Unauthorized => {
                resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                resp.headers_mut().insert("retry-after", retry_after_secs.into());
            }
            ApiError::AuditUnavailable => {
                resp.headers_mut().insert("retry-after", 5.into());
            }
            ApiError::Internal(e) => {
                if overload {
                    resp.headers_mut().insert("retry-after", OVERLOAD_RETRY_AFTER_SECS.into());
                }
                // Logged either way: an overload is worth seeing, once.
                resp.extensions_mut().insert(InternalError(std::sync::Arc::new(e)));
            }
            _ => {}
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("send the body as JSON with `content-type: application/json`".into())
            }
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("invalid_json", e.body_text()),
            other => ApiError::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::from_deserialize(&r.body_text())
    }
}

impl ApiError {
    /// The error for parameters that did not deserialize into their typed
    /// struct: an unknown name (saying what the endpoint takes), or a value
    /// of the wrong shape.
    pub fn from_deserialize(serde_message: &str) -> ApiError {
        if let Some(rest) = serde_message.split("unknown field `").nth(1) {
            let name = rest.split('`').next().unwrap_or_default();
            let takes: Vec<&str> = rest.split("expected one of ").nth(1).map_or_else(Vec::new, |l| {
                l.split(", ").map(|x| x.trim_matches(|c: char| c == '`' || c.is_whitespace())).collect()
            });
            // Names people try for the filters get their own code.
            let code = if matches!(name, "activities" | "models" | "filter" | "group_by") {
                "unknown_filter"
            } else {
                "unknown_parameter"
            };
            return ApiError::bad_request(
                code,
                format!("unknown parameter `{name}`; this endpoint takes: {}", takes.join(", ")),
            );
        }
        ApiError::bad_request("invalid_parameter", serde_message.to_owned())
    }
}

/// `axum::Json` with our errors, and with every string in the body checked
/// to be storable first (`contract::text`): a NUL anywhere in any body is a
/// 400 naming where, never a database error.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        if let Err((path, why)) = tokenusage_contract::text::storable_json(&value) {
            let at = if path.is_empty() { "the body".to_owned() } else { format!("`{path}`") };
            return Err(ApiError::bad_request("invalid_body", format!("{at} {}", why.reason())));
        }
        // Every shape error names its field (`measure`, `scope.kind`,
        // `thresholds[2]`), not just what was expected.
        serde_path_to_error::deserialize(value).map(ApiJson).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." { "the body".to_owned() } else { format!("`{path}`") };
            ApiError::bad_request("invalid_body", format!("{at}: {}", e.inner()))
        })
    }
}

/// `axum::extract::Path` with our errors.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(v) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}

/// The one rule for every `limit` parameter: absent is `default`; a number
/// from 1 to `max` is taken as is; anything else is a 400 naming the range
/// (never clamped silently).
pub(crate) fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => {
            Err(ApiError::bad_request("invalid_limit", format!("`limit` must be a number from 1 to {max}, not {n}")))
        }
    }
}

/// `axum::extract::Query` with our errors.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    /// Every route with query parameters needs a credential (an access
    /// token or a publisher key, both in `Authorization`): a request
    /// without one is a 401 whatever its parameters say, so a missing
    /// credential is never reported as a bad parameter (`?access_token=`).
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(_) if !parts.headers.contains_key(axum::http::header::AUTHORIZATION) => Err(ApiError::Unauthorized),
            Err(e) => Err(e.into()),
        }
    }
}

impl From<crate::budgets::BudgetError> for ApiError {
    fn from(e: crate::budgets::BudgetError) -> Self {
        match e {
            crate::budgets::BudgetError::Invalid(code, msg) => ApiError::bad_request(code, msg),
            crate::budgets::BudgetError::NoSuchTeam(_) | crate::budgets::BudgetError::NoSuchWebhook(_) => {
                ApiError::bad_request("invalid_budget", e.to_string())
            }
            crate::budgets::BudgetError::NameTaken(..) => ApiError::Conflict(e.to_string()),
            crate::budgets::BudgetError::Database(e) => e.into(),
        }
    }
}

impl From<crate::budgets::webhooks::WebhookError> for ApiError {
    fn from(e: crate::budgets::webhooks::WebhookError) -> Self {
        match e {
            crate::budgets::webhooks::WebhookError::Invalid(m) => ApiError::bad_request("invalid_webhook", m),
            crate::budgets::webhooks::WebhookError::Exists(_) => ApiError::Conflict(e.to_string()),
            crate::budgets::webhooks::WebhookError::Database(e) => e.into(),
        }
    }
}

impl From<crate::teams::TeamError> for ApiError {
    fn from(e: crate::teams::TeamError) -> Self {
        match e {
            crate::teams::TeamError::NoSuchTeam(_) | crate::teams::TeamError::NotAMember(..) => {
                ApiError::NotFound(e.to_string())
            }
            crate::teams::TeamError::Exists(_) => ApiError::Conflict(e.to_string()),
            crate::teams::TeamError::InvalidName(_) => ApiError::bad_request("invalid_team", e.to_string()),
            crate::teams::TeamError::InvalidUser(_) => ApiError::bad_request("invalid_user", e.to_string()),
            crate::teams::TeamError::Database(e) => e.into(),
        }
    }
}

impl From<crate::history::params::BadView> for ApiError {
    fn from(e: crate::history::params::BadView) -> Self {
        ApiError::bad_request(e.code, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overload_is_503_with_retry_after_however_deeply_it_is_wrapped() {
        let direct = ApiError::from(sqlx::Error::PoolTimedOut);
        let wrapped = ApiError::Internal(anyhow::Error::new(sqlx::Error::PoolTimedOut).context("reading budgets"));
        for e in [direct, wrapped] {
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(e.code_and_message().0, "unavailable");
            let resp = e.into_response();
            assert_eq!(resp.headers()["retry-after"], OVERLOAD_RETRY_AFTER_SECS.to_string().as_str());
        }
        let bug = ApiError::from(sqlx::Error::RowNotFound);
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(bug.into_response().headers().get("retry-after").is_none());
    }
}
