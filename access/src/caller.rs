//! The authenticated caller. How a request proves who it is (bearer
//! tokens, ours or an identity provider's) is the HTTP side's concern
//! (`auth`); this is only what it proved.

use serde::{Deserialize, Serialize};

/// What a signed-in person may do. Publishers are not users: they hold API
/// keys, which only the ingest endpoint accepts. Managing a team is not a
/// role: it is a team membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees their own usage.
    Viewer,
    /// Sees everyone's usage, manages users and keys, reads the audit log.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// A token we issued at sign-in.
    Local,
    /// A token of the configured OpenID Connect provider.
    Oidc,
}

impl Issuer {
    pub fn as_str(self) -> &'static str {
        match self {
            Issuer::Local => "local",
            Issuer::Oidc => "oidc",
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub role: Role,
    pub issuer: Issuer,
    /// When the credential expires (Unix seconds), for long-lived sockets.
    pub expires_at: u64,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
