//! Whose usage a budget covers.

use serde::{Deserialize, Serialize};

/// The kinds of [`Scope`]. Matched exhaustively wherever a kind changes
/// what is summed or who may see it, so a new kind cannot compile into
/// meaning "user".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    User,
    Team,
    Project,
}

impl ScopeKind {
    pub const ALL: [ScopeKind; 3] = [ScopeKind::User, ScopeKind::Team, ScopeKind::Project];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::User => "user",
            ScopeKind::Team => "team",
            ScopeKind::Project => "project",
        }
    }

    pub fn parse(s: &str) -> Option<ScopeKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Whose usage a budget covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", content = "id", rename_all = "lowercase")]
pub enum Scope {
    User(String),
    /// By name; stored by the team's id, so a rename keeps its budgets.
    Team(String),
    Project(String),
}

impl Scope {
    pub fn new(kind: ScopeKind, id: String) -> Scope {
        match kind {
            ScopeKind::User => Scope::User(id),
            ScopeKind::Team => Scope::Team(id),
            ScopeKind::Project => Scope::Project(id),
        }
    }

    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::User(_) => ScopeKind::User,
            Scope::Team(_) => ScopeKind::Team,
            Scope::Project(_) => ScopeKind::Project,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Scope::User(s) | Scope::Team(s) | Scope::Project(s) => s,
        }
    }

    /// `user:alice`, `team:ml`, `project:search`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind().as_str(), self.id())
    }
}

/// The team name rule (as the `teams_name_rule` check of migration 0011):
/// 1 to 64 lowercase letters, digits, `-`, `_` or `.`.
pub fn valid_team_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}
