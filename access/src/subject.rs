//! Whose usage a view reads.

use super::Members;

/// Whose usage a view reads, once the policy has granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    /// A team: the sum of its members' usage (today's members, whole
    /// history). `label` is `team:<name>`; `members` are sorted bytewise.
    Team {
        label: String,
        members: Members,
    },
    /// Everyone together (admins).
    All,
}

impl Subject {
    pub fn team(name: &str, members: Members) -> Subject {
        Subject::Team { label: format!("team:{name}"), members }
    }

    pub fn label(&self) -> &str {
        match self {
            Subject::User(u) => u,
            Subject::Team { label, .. } => label,
            Subject::All => "*",
        }
    }

    /// Whether this subject's views include `user`'s rows.
    pub fn includes(&self, user: &str) -> bool {
        match self {
            Subject::User(u) => u == user,
            Subject::Team { members, .. } => members.binary_search_by(|m| m.as_str().cmp(user)).is_ok(),
            Subject::All => true,
        }
    }

    /// The users a view of several people covered, for the audit entry
    /// ("who viewed my usage"); empty for one user or everyone.
    pub fn covers(&self) -> &[String] {
        match self {
            Subject::Team { members, .. } => members,
            _ => &[],
        }
    }
}
