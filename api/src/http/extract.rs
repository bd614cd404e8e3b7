//! Who is calling: the [`Caller`] extractor that every data route takes
//! (whose data they may read is `access`). (Accounts themselves, roles and
//! passwords, are `accounts`.)
//!
//! A credential travels only in the `Authorization: Bearer` header, never in
//! a URL. A bearer token is one of ours (HS256, `kid` we hold) or, when an
//! OIDC issuer is configured, the identity provider's. Anything else, or a
//! token that fails validation, is a 401, never a 5xx. Local users are
//! re-checked against the database (cached for a few seconds), so a
//! disabled user or a changed role takes effect without waiting for the
//! token to expire.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub use crate::access::{Issuer, Role};
use crate::accounts::Status;
use crate::audit::AuditSlot;
use crate::http::AppState;
use crate::http::error::ApiError;

/// The authenticated caller (`access::Caller`) as the extractor gives it,
/// with the API's helpers around the access rule; it dereferences to the
/// plain caller every policy function takes.
#[derive(Debug, Clone)]
pub struct Caller(pub crate::access::Caller);

impl std::ops::Deref for Caller {
    type Target = crate::access::Caller;

    fn deref(&self) -> &crate::access::Caller {
        &self.0
    }
}

impl Caller {
    /// Whose usage a request's `user` and `team` parameters read (the rule
    /// is `access::subject_for`).
    pub async fn usage_subject(
        &self,
        state: &AppState,
        user: Option<&str>,
        team: Option<&str>,
    ) -> Result<crate::access::Subject, ApiError> {
        Ok(crate::access::subject(&state.teams, &state.pool, self, user, team).await?)
    }

    /// The teams this caller manages (none for admins, who need none).
    pub async fn reach(&self, state: &AppState) -> Result<std::sync::Arc<crate::access::Reach>, ApiError> {
        Ok(crate::access::reach_of(&state.teams, &state.pool, self).await?)
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::Forbidden("admins only")) }
    }
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The longest access token accepted, in bytes. Ours are ~300 bytes and
/// identity providers' a few KiB; a larger one is refused before it is
/// decoded, signature and all.
pub(crate) const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Validates a bearer token from any accepted issuer.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ApiError::Unauthorized);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::Unauthorized)?;
    let kid = header.kid.ok_or(ApiError::Unauthorized)?;
    let (id, role, issuer, exp) = if state.keys.holds(&kid) {
        let c = state.keys.verify(&kid, token).ok_or(ApiError::Unauthorized)?;
        (c.sub, c.role, Issuer::Local, c.exp)
    } else if let Some(oidc) = &state.oidc {
        let ident = oidc.verify(&kid, token).await.ok_or(ApiError::Unauthorized)?;
        if let Some(teams) = ident.teams {
            // The provider's groups are the truth about `oidc` memberships:
            // mirrored before this request is authorized.
            state.teams.sync_oidc(&state.pool, &ident.user, teams).await?;
        }
        (ident.user, ident.role, Issuer::Oidc, ident.exp)
    } else {
        return Err(ApiError::Unauthorized);
    };
    // The database has the last word on local accounts; a provider's user
    // without a local row is fine, a disabled local row is not.
    let role = match (state.users.status(&state.pool, &id).await?, issuer) {
        (Some(Status { disabled: true, .. }), _) => return Err(ApiError::Unauthorized),
        (Some(Status { role: db_role, .. }), Issuer::Local) => db_role,
        (None, Issuer::Local) => return Err(ApiError::Unauthorized),
        (_, Issuer::Oidc) => role,
    };
    Ok(Caller(crate::access::Caller { id, role, issuer, expires_at: exp }))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let user = authenticate(state, token).await?;
        if let Some(slot) = parts.extensions.get::<AuditSlot>() {
            slot.set_actor(&user.id, Some(user.role));
        }
        Ok(user)
    }
}
