//! `GET /api/v1/live`: everything decided before the upgrade. The Origin
//! (scheme, host and port), the subprotocol, the access token (carried as
//! the subprotocol `bearer.<token>`, never in the URL) and the per-user
//! socket limit; then the socket runs on its own task, tracked so shutdown
//! can wait for it. The request itself is audited like any other.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;

mod requests;
mod socket;

use socket::Socket;

use crate::audit::{AuditSlot, RequestFacts};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract as auth;
use crate::live::protocol::{BEARER_PREFIX, PROTOCOL};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(upgrade))
}

/// Bytes of one client message, and of one frame, at most.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// tungstenite's own defaults are 128 KiB of read buffer per socket and an
/// unbounded write buffer: at 10k sockets that is 1.3 GB for nothing.
const BUFFER_BYTES: usize = 1024;
const MAX_WRITE_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The live WebSocket: authenticated before the upgrade with the
/// subprotocols `tokenusage.v1` and `bearer.<access token>` (never a token
/// in the URL). Its messages are in docs/asyncapi.yaml and docs/LIVE.md.
#[utoipa::path(get, path = "/api/v1/live", tag = "live",
    params(("sec-websocket-protocol" = String, Header, description = "`tokenusage.v1, bearer.<access token>`")),
    responses((status = 101, description = "Switched to the WebSocket protocol `tokenusage.v1`")))]
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    Extension(slot): Extension<AuditSlot>,
    facts: RequestFacts,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !crate::http::origin::allowed(&headers, state.config.tls_in_front(), &state.config.live.allowed_origins) {
        return Err(ApiError::Forbidden("cross-site WebSocket refused: Origin is not allowed"));
    }
    let offered: Vec<String> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()))
        .collect();
    if !offered.iter().any(|p| p == PROTOCOL) {
        return Err(ApiError::bad_request("unsupported_protocol", format!("offer the `{PROTOCOL}` subprotocol")));
    }
    let token = offered.iter().find_map(|p| p.strip_prefix(BEARER_PREFIX)).ok_or(ApiError::Unauthorized)?;
    let user = auth::authenticate(&state, token).await?;
    slot.set_actor(&user.id, Some(user.role));
    slot.set_detail("live.connect", Some(&user.id), serde_json::json!({}), None);
    let place = state
        .live
        .take_socket_slot(&user.id, state.config.live.max_sockets_per_user)
        .ok_or(ApiError::TooManyRequests { retry_after_secs: 5 })?;
    Ok(ws
        .protocols([PROTOCOL])
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let tracker = state.sockets.clone();
            let (membership, inbox, resync) = state.live.join();
            let fut = Socket::new(state, user, facts, membership, inbox, resync).run(socket, place);
            tracker.track_future(fut).await;
        }))
}
