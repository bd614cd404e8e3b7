//! The API's one error type and its mapping to HTTP. Clients get a stable
//! code and a message meant for them; internal causes are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `empty_range`, `unknown_timezone`, `too_many_points`, `unauthorized`, ...
    pub code: String,
    /// For people: what was wrong and how to fix it.
    pub message: String,
}

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
    /// Too many attempts; retry after the given seconds.
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// The audit trail cannot be written, so nothing is served (fail closed).
    #[error("audit trail unavailable")]
    AuditUnavailable,
    /// Anything else. The cause is logged here, once.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest { code, message: message.into() }
    }
}

impl ApiError {
    /// The stable code and the client-facing message (logs internal causes).
    pub fn code_and_message(&self) -> (&'static str, String) {
        match self {
            ApiError::BadRequest { code, message } => (code, message.clone()),
            ApiError::Unauthorized => ("unauthorized", "a valid access token is required".to_owned()),
            ApiError::Forbidden(why) => ("forbidden", (*why).to_owned()),
            ApiError::TooManyRequests { .. } => ("rate_limited", "too many requests; retry later".to_owned()),
            ApiError::AuditUnavailable => (
                "audit_unavailable",
                "the request cannot be recorded in the audit trail right now, so it is not served; retry shortly"
                    .to_owned(),
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                ("internal", "something went wrong on our side; it has been logged".to_owned())
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database query failed"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let (code, message) = self.code_and_message();
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message } };
        let mut resp = (status, Json(body)).into_response();
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
            _ => {}
        }
        resp
    }
}
