//! The audit middleware: one entry per request to `/api/v1`, committed
//! before the response leaves (the trail itself is `crate::audit`).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::audit::{AuditSlot, ClientIp, RequestFacts, client_ip, entry_for};
use crate::http::AppState;
use crate::http::error::ApiError;

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(parts, state.config.tls.behind_proxy)))
    }
}

impl FromRequestParts<AppState> for RequestFacts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(RequestFacts::of(parts, state.config.tls.behind_proxy))
    }
}

/// Middleware: one entry per request, committed before the response leaves.
///
/// It wraps every route of `/api/v1` and its fallback, so unknown paths
/// (404), wrong methods (405), oversized heads (414, 431) and unprintable
/// parameters (400) are on the record like everything else. When no
/// handler named the caller, a bearer token is checked here so the entry
/// still says who it was.
pub(crate) async fn audit_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let facts = RequestFacts::of(&parts, state.config.tls.behind_proxy);
    let slot = AuditSlot::default();
    parts.extensions.insert(slot.clone());
    let refused = tokenusage_plumbing::http::HeadLimits::check(&parts)
        .or_else(|| crate::http::hygiene::check(&parts).err().map(IntoResponse::into_response));
    let response = match refused {
        Some(r) => r,
        None => {
            let bearer = crate::http::extract::bearer(&parts).map(str::to_owned);
            let response = next.run(Request::from_parts(parts, body)).await;
            if !slot.has_actor()
                && let Some(token) = bearer
                && let Ok(user) = crate::http::extract::authenticate(&state, &token).await
            {
                slot.set_actor(&user.id, Some(user.role));
            }
            response
        }
    };
    let entry = entry_for(facts, slot.take(), response.status().as_u16());
    match state.audit.record(entry).await {
        Ok(_) => response,
        Err(e) => {
            tracing::error!(error = %e, "refusing to answer a request that could not be audited");
            ApiError::AuditUnavailable.into_response()
        }
    }
}
