//! Admin-only routes: publisher API keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tokenusage_schema::{dead_letters, keys};

use crate::audit::AuditSlot;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::http::extract::Caller;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This feature's routes, each registered with its OpenAPI entry.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(list_prices, set_price))
        .routes(routes!(remove_price))
        .routes(routes!(list_dead_letters))
        .routes(routes!(redrive_dead_letter))
}

/// Publisher API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<keys::KeyInfo>)))]
pub(crate) async fn list_keys(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<Vec<keys::KeyInfo>>, ApiError> {
    user.require_admin()?;
    let rows = keys::list(&st.pool).await?;
    slot.set_detail("admin.keys.list", None, serde_json::json!({}), Some(rows.len() as i64));
    Ok(Json(rows))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// A label, 1 to 128 characters.
    name: String,
    /// The `source` stamped on this key's events; defaults to the name.
    source: Option<String>,
    /// Events per second allowed (1 to 1000000, default 5000).
    rate_per_sec: Option<i32>,
}

/// Creates a publisher API key; the response holds the key, the only time
/// it is shown.
#[utoipa::path(post, path = "/api/v1/admin/keys", tag = "admin", security(("bearer" = [])), request_body = CreateKey,
    responses((status = 201, body = keys::NewKey)))]
pub(crate) async fn create_key(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiJson(req): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<keys::NewKey>), ApiError> {
    user.require_admin()?;
    // Taken as written: a source is the de-duplication scope of its events,
    // so " ops" and "ops" must not silently become one.
    let padded = |v: &str| v.trim() != v;
    let name = req.name.as_str();
    if name.is_empty() || name.len() > 128 || padded(name) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "`name` must be 1 to 128 characters, not starting or ending with whitespace",
        ));
    }
    let source = req.source.as_deref().unwrap_or(name);
    if source.is_empty() || source.len() > tokenusage_contract::Limits::SOURCE_MAX_CHARS || padded(source) {
        return Err(ApiError::bad_request(
            "invalid_source",
            "`source` must be 1 to 256 characters, not starting or ending with whitespace",
        ));
    }
    if let Err(why) = tokenusage_contract::check_publisher_source(source) {
        return Err(ApiError::bad_request("invalid_source", format!("`source` {why}")));
    }
    let rate = req.rate_per_sec.unwrap_or(5000);
    if !(1..=1_000_000).contains(&rate) {
        return Err(ApiError::bad_request("invalid_rate", "`rate_per_sec` must be between 1 and 1000000"));
    }
    slot.set_detail(
        "admin.keys.create",
        None,
        serde_json::json!({ "name": name, "source": source, "rate_per_sec": rate }),
        None,
    );
    let key = keys::create(&st.pool, name, source, rate).await?;
    tracing::info!(admin = %user.id, key = %key.info.key_prefix, "API key created");
    Ok((StatusCode::CREATED, Json(key)))
}

/// Revokes a publisher key by id or prefix (it stops working within the
/// key cache's lifetime, 30 s by default).
#[utoipa::path(delete, path = "/api/v1/admin/keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id or its `tu_<prefix>`")),
    responses((status = 204, description = "Revoked")))]
pub(crate) async fn revoke_key(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.keys.revoke", None, serde_json::json!({ "key": id }), None);
    user.require_admin()?;
    if keys::revoke(&st.pool, &id).await? {
        tracing::info!(admin = %user.id, key = %id, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no active key {id}")))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeadLetterQuery {
    /// At most this many, newest first (1 to 10000, default 100).
    limit: Option<i64>,
    /// Include those already re-driven.
    all: Option<bool>,
}

/// Records the projector could not count, newest first.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    params(DeadLetterQuery), responses((status = 200, body = Vec<dead_letters::DeadLetter>)))]
pub(crate) async fn list_dead_letters(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Json<Vec<dead_letters::DeadLetter>>, ApiError> {
    user.require_admin()?;
    let limit = crate::http::error::page_limit(q.limit, 100, 10_000)?;
    let rows = dead_letters::list(&st.pool, limit, !q.all.unwrap_or(false)).await?;
    slot.set_detail(
        "admin.dead_letters.list",
        None,
        serde_json::json!({ "limit": q.limit, "all": q.all }),
        Some(rows.len() as i64),
    );
    Ok(Json(rows))
}

/// Asks the projector to count a dead letter again (picked up within
/// seconds; it stays a dead letter, with the reason, if it is still refused).
#[utoipa::path(post, path = "/api/v1/admin/dead-letters/{id}/redrive", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 202, description = "Re-drive requested")))]
pub(crate) async fn redrive_dead_letter(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.dead_letters.redrive", None, serde_json::json!({ "id": id }), None);
    user.require_admin()?;
    if dead_letters::request_redrive(&st.pool, Some(id), None).await? == 0 {
        return Err(ApiError::NotFound(format!("no dead letter {id} waiting for a re-drive")));
    }
    tracing::info!(admin = %user.id, dead_letter = id, "re-drive requested");
    Ok(StatusCode::ACCEPTED)
}

/// The price book as the API shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct PriceBook {
    /// The currency every price and cost is in (ISO 4217).
    currency: String,
    /// Bumped by every change.
    version: i64,
    /// Entries in the `tokenusage.prices.v1` shape, with their `id`.
    #[schema(value_type = Vec<PriceEntry>)]
    entries: Vec<serde_json::Value>,
}

/// One dated price (the `tokenusage.prices.v1` entry shape).
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PriceEntry {
    /// Set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<i64>,
    /// An exact model name, or a pattern where `*` matches any characters.
    model: String,
    /// RFC 3339.
    effective_from: String,
    /// RFC 3339, exclusive; open-ended if null.
    #[serde(default)]
    effective_to: Option<String>,
    /// Per token kind (input, output, cache_read, cache_write, cache_write_1h, reasoning,
    /// audio_input, audio_output, image_input, image_output): the price per million tokens
    /// as decimal text, e.g. "2.5". A kind left out has no price (its tokens are unpriced).
    per_million: std::collections::BTreeMap<String, String>,
    /// The long-context price, if the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    long_context: Option<LongContextPrice>,
    /// Prices of the service tiers that have their own (`batch`, `flex`, `priority`):
    /// per token kind, the price per million tokens as decimal text; kinds left out keep
    /// the base (or long-context) price. Events name their tier in `service_tier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service_tiers: Option<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>>,
    /// Per-request prices as decimal text per request: `web_search` prices each of an
    /// event's `web_search_requests` (an event whose searches have no price is unpriced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_request: Option<std::collections::BTreeMap<String, String>>,
    /// Where the price comes from (a price page, a contract).
    source: String,
}

/// A long-context price: a request whose input is more than
/// `above_input_tokens` is priced whole at these prices (kinds left out
/// keep the base price).
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LongContextPrice {
    above_input_tokens: i64,
    /// Per token kind, the price per million tokens as decimal text.
    per_million: std::collections::BTreeMap<String, String>,
}

/// The price book.
#[utoipa::path(get, path = "/api/v1/admin/prices", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = PriceBook)))]
pub(crate) async fn list_prices(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
) -> Result<Json<PriceBook>, ApiError> {
    user.require_admin()?;
    let (currency, version) = tokenusage_pricing::store::state(&st.pool).await?;
    let entries = tokenusage_pricing::store::entries(&st.pool, None).await?;
    slot.set_detail("admin.prices.list", None, serde_json::json!({}), Some(entries.len() as i64));
    let entries = entries.iter().map(tokenusage_pricing::import::entry_json).collect();
    Ok(Json(PriceBook { currency, version, entries }))
}

/// Adds a dated price, or replaces the one with the same model and
/// `effective_from`. Events already counted keep their cost until
/// re-priced (`tokenusage reprice`).
#[utoipa::path(post, path = "/api/v1/admin/prices", tag = "admin", security(("bearer" = [])), request_body = PriceEntry,
    responses((status = 201, body = PriceEntry)))]
pub(crate) async fn set_price(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiJson(req): ApiJson<PriceEntry>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = serde_json::to_value(&req).unwrap_or_default();
    slot.set_detail("admin.prices.set", None, body.clone(), None);
    user.require_admin()?;
    let (currency, _) = tokenusage_pricing::store::state(&st.pool).await?;
    let entry = tokenusage_pricing::import::parse_entry(&body, &currency)
        .map_err(|why| ApiError::bad_request("invalid_price", why))?;
    let mut tx = st.pool.begin().await?;
    tokenusage_pricing::store::put(&mut tx, std::slice::from_ref(&entry), &format!("api:{}", user.id)).await?;
    tx.commit().await?;
    let stored = tokenusage_pricing::store::entries(&st.pool, Some(&entry.model))
        .await?
        .into_iter()
        .find(|e| e.effective_from == entry.effective_from && e.currency == entry.currency);
    tracing::info!(admin = %user.id, model = %entry.model, "price set");
    Ok((StatusCode::CREATED, Json(tokenusage_pricing::import::entry_json(stored.as_ref().unwrap_or(&entry)))))
}

/// Removes one price entry.
#[utoipa::path(delete, path = "/api/v1/admin/prices/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path, description = "The entry's id")),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn remove_price(
    State(st): State<AppState>,
    axum::Extension(slot): axum::Extension<AuditSlot>,
    user: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    slot.set_detail("admin.prices.remove", None, serde_json::json!({ "id": id }), None);
    user.require_admin()?;
    let mut tx = st.pool.begin().await?;
    match tokenusage_pricing::store::remove(&mut tx, id).await? {
        Some(_) => {
            tx.commit().await?;
            tracing::info!(admin = %user.id, entry = id, "price removed");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::NotFound(format!("no price entry {id}"))),
    }
}
