//! Who is calling, and what they may see or set: the one owner of the
//! access rule. Every route, live socket and evaluator asks here; nothing
//! else decides whether a caller may read a person's, a team's or a
//! project's usage or budgets, and the dashboard is told the answer
//! (`/api/v1/me`) rather than working it out. Pure: the caller's
//! [`Reach`] (the teams they manage) is looked up by the API.
//!
//! - `caller`: the authenticated caller and their role;
//! - `scope`: whose usage a budget covers (`Scope`, `ScopeKind`), and the
//!   rule for a team's name;
//! - `subject`: whose usage a view reads (`Subject`);
//! - `policy`: the rule itself, tested as a table of every role × scope ×
//!   action.

mod caller;
mod scope;
mod subject;
mod policy;

pub use caller::{Caller, Issuer, Role};
pub use policy::{Denied, Grant, Visible, may_see, may_set, settable_scopes, subject_for, visible_scopes};
pub use scope::{Scope, ScopeKind, valid_team_name};
pub use subject::Subject;

use std::collections::BTreeMap;
use std::sync::Arc;

/// A team's member ids, sorted bytewise.
pub type Members = Arc<[String]>;

/// What a caller may see beyond their own usage: the teams they manage,
/// each with its members.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    pub manages: BTreeMap<String, Members>,
}

impl Reach {
    /// Whether `user` is a member of a team this caller manages.
    pub fn covers(&self, user: &str) -> bool {
        self.manages.values().any(|m| m.binary_search_by(|x| x.as_str().cmp(user)).is_ok())
    }

    /// Whether this caller manages `team`.
    pub fn manages(&self, team: &str) -> bool {
        self.manages.contains_key(team)
    }
}
