//! The access rule, whole: who may see or set what. Pure functions of the
//! caller and their [`Reach`]; the table test below walks every role ×
//! scope × action.
//!
//! - A viewer sees and sets their own usage and budgets.
//! - A team's manager (a membership, not a role) also sees the team's
//!   usage and budgets and each member's; they set the team's budgets, not
//!   the members' personal ones.
//! - An admin sees and sets everything, including projects' budgets.
//!
//! Refusals name the rule, never whether a team or user exists.

use super::{Caller, Members, Reach, Scope};

/// A refusal, with the rule it applied (the 403's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub &'static str);

/// Whose usage a request for `user` / `team` may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    User(String),
    Everyone,
    /// A team. `members` is `None` when the caller may read any team (an
    /// admin) and the directory must be asked who is in it.
    Team {
        name: String,
        members: Option<Members>,
    },
}

const TEAM_USAGE: Denied = Denied("only the team's managers and admins can see a team's usage");
const EVERYONE: Denied = Denied("only admins can see all users together");
const OTHERS: Denied = Denied("you can see your own usage and that of members of teams you manage, no one else's");
const SET_USER: Denied = Denied("you can set budgets on yourself; admins on anyone");
const SET_TEAM: Denied = Denied("only the team's managers and admins can set a team's budgets");
const SET_PROJECT: Denied = Denied("only admins can set project budgets");

/// Whose usage a request's `user` and `team` parameters read:
/// - nothing, or the caller's own id: the caller;
/// - `team=T`: T's members, for T's managers and for admins (anyone else is
///   refused, whether T exists or not, so names do not leak);
/// - `user=U`: U, for admins and for managers of a team U is in;
/// - `user=*`: everyone, for admins.
///
/// The user never comes from the request for anyone else.
pub fn subject_for(caller: &Caller, reach: &Reach, user: Option<&str>, team: Option<&str>) -> Result<Grant, Denied> {
    let admin = caller.is_admin();
    if let Some(t) = team {
        return match reach.manages.get(t) {
            _ if admin => Ok(Grant::Team { name: t.to_owned(), members: None }),
            Some(m) => Ok(Grant::Team { name: t.to_owned(), members: Some(m.clone()) }),
            None => Err(TEAM_USAGE),
        };
    }
    match user {
        None => Ok(Grant::User(caller.id.clone())),
        Some(u) if u == caller.id => Ok(Grant::User(caller.id.clone())),
        Some("*") if admin => Ok(Grant::Everyone),
        Some("*") => Err(EVERYONE),
        Some(u) if admin || reach.covers(u) => Ok(Grant::User(u.to_owned())),
        Some(_) => Err(OTHERS),
    }
}

/// Whether the caller may see `scope`'s usage and budgets.
pub fn may_see(caller: &Caller, reach: &Reach, scope: &Scope) -> bool {
    caller.is_admin()
        || match scope {
            Scope::User(u) => *u == caller.id || reach.covers(u),
            Scope::Team(t) => reach.manages(t),
            Scope::Project(_) => false,
        }
}

/// Whether the caller may set (or remove) budgets on `scope`.
pub fn may_set(caller: &Caller, reach: &Reach, scope: &Scope) -> Result<(), Denied> {
    if caller.is_admin() {
        return Ok(());
    }
    match scope {
        Scope::User(u) if *u == caller.id => Ok(()),
        Scope::User(_) => Err(SET_USER),
        Scope::Team(t) if reach.manages(t) => Ok(()),
        Scope::Team(_) => Err(SET_TEAM),
        Scope::Project(_) => Err(SET_PROJECT),
    }
}

/// A set of scopes the caller may see or set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Visible {
    /// Every scope of every kind (admins). `scopes` then lists only the
    /// ones named without a look-up.
    pub everything: bool,
    /// The scopes, the caller's own first, then by team.
    pub scopes: Vec<Scope>,
}

impl Visible {
    pub fn contains(&self, scope: &Scope) -> bool {
        self.everything || self.scopes.contains(scope)
    }
}

/// The scopes [`may_see`] allows, listed: the caller, each team they manage
/// and its members.
pub fn visible_scopes(caller: &Caller, reach: &Reach) -> Visible {
    let mut scopes = vec![Scope::User(caller.id.clone())];
    for (team, members) in &reach.manages {
        scopes.push(Scope::Team(team.clone()));
        for m in members.iter() {
            let s = Scope::User(m.clone());
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
    }
    Visible { everything: caller.is_admin(), scopes }
}

/// The scopes [`may_set`] allows, listed: the caller and each team they
/// manage.
pub fn settable_scopes(caller: &Caller, reach: &Reach) -> Visible {
    let mut scopes = vec![Scope::User(caller.id.clone())];
    scopes.extend(reach.manages.keys().map(|t| Scope::Team(t.clone())));
    Visible { everything: caller.is_admin(), scopes }
}

#[cfg(test)]
mod tests {
    use super::super::{Issuer, Role};
    use super::*;

    fn caller(id: &str, role: Role) -> Caller {
        Caller { id: id.into(), role, issuer: Issuer::Local, expires_at: 0 }
    }

    /// Who is asking: a viewer, a manager of team `ml` (members `mia`, the
    /// manager `max` and `ned`), an admin.
    fn callers() -> Vec<(&'static str, Caller, Reach)> {
        let ml: Members = vec!["max".to_owned(), "mia".to_owned(), "ned".to_owned()].into();
        let manager = Reach { manages: [("ml".to_owned(), ml)].into() };
        vec![
            ("viewer", caller("vic", Role::Viewer), Reach::default()),
            ("manager", caller("max", Role::Viewer), manager),
            ("admin", caller("ada", Role::Admin), Reach::default()),
        ]
    }

    /// The rule as a table: for each caller, the scopes and whether each
    /// may be seen and set.
    #[test]
    fn every_role_scope_and_action() {
        use Scope::*;
        // (caller, scope, may see, may set)
        let table: &[(&str, Scope, bool, bool)] = &[
            ("viewer", User("vic".into()), true, true),
            ("viewer", User("mia".into()), false, false),
            ("viewer", Team("ml".into()), false, false),
            ("viewer", Team("other".into()), false, false),
            ("viewer", Project("search".into()), false, false),
            ("manager", User("max".into()), true, true),
            ("manager", User("mia".into()), true, false),
            ("manager", User("vic".into()), false, false),
            ("manager", Team("ml".into()), true, true),
            ("manager", Team("other".into()), false, false),
            ("manager", Project("search".into()), false, false),
            ("admin", User("ada".into()), true, true),
            ("admin", User("mia".into()), true, true),
            ("admin", Team("ml".into()), true, true),
            ("admin", Team("other".into()), true, true),
            ("admin", Project("search".into()), true, true),
        ];
        let callers = callers();
        for (who, scope, see, set) in table {
            let (_, c, reach) = callers.iter().find(|(n, ..)| n == who).unwrap();
            assert_eq!(may_see(c, reach, scope), *see, "{who} sees {scope:?}");
            assert_eq!(may_set(c, reach, scope).is_ok(), *set, "{who} sets {scope:?}");
            // The listed scopes are the rule, not a second one.
            assert_eq!(visible_scopes(c, reach).contains(scope), *see, "{who}'s visible scopes hold {scope:?}");
            assert_eq!(settable_scopes(c, reach).contains(scope), *set, "{who}'s settable scopes hold {scope:?}");
            // Usage views follow the same rule as budgets.
            let asked = match scope {
                User(u) => Some(subject_for(c, reach, Some(u), None)),
                Team(t) => Some(subject_for(c, reach, None, Some(t))),
                Project(_) => None,
            };
            if let Some(asked) = asked {
                assert_eq!(asked.is_ok(), *see, "{who} reads {scope:?}'s usage");
            }
        }
    }

    #[test]
    fn usage_subjects_and_their_refusals() {
        let callers = callers();
        let (_, viewer, none) = &callers[0];
        let (_, manager, reach) = &callers[1];
        let (_, admin, _) = &callers[2];
        assert_eq!(subject_for(viewer, none, None, None), Ok(Grant::User("vic".into())));
        assert_eq!(subject_for(viewer, none, Some("*"), None), Err(EVERYONE));
        assert_eq!(subject_for(viewer, none, Some("mia"), None), Err(OTHERS));
        assert_eq!(subject_for(viewer, none, None, Some("ml")), Err(TEAM_USAGE));
        assert_eq!(subject_for(manager, reach, Some("*"), None), Err(EVERYONE));
        assert_eq!(
            subject_for(manager, reach, None, Some("ml")),
            Ok(Grant::Team { name: "ml".into(), members: Some(reach.manages["ml"].clone()) })
        );
        assert_eq!(subject_for(admin, &Reach::default(), Some("*"), None), Ok(Grant::Everyone));
        assert_eq!(
            subject_for(admin, &Reach::default(), None, Some("nobody-knows")),
            Ok(Grant::Team { name: "nobody-knows".into(), members: None }),
            "an admin's team is looked up (and may not exist)"
        );
        // A team parameter wins over a user parameter: never a mix.
        assert_eq!(subject_for(viewer, none, Some("vic"), Some("ml")), Err(TEAM_USAGE));
        assert_eq!(may_set(manager, reach, &Scope::User("mia".into())), Err(SET_USER));
        assert_eq!(may_set(manager, reach, &Scope::Project("p".into())), Err(SET_PROJECT));
        assert_eq!(may_set(viewer, none, &Scope::Team("ml".into())), Err(SET_TEAM));
    }

    #[test]
    fn listed_scopes_name_each_scope_once_the_callers_own_first() {
        let callers = callers();
        let (_, manager, reach) = &callers[1];
        let v = visible_scopes(manager, reach);
        assert!(!v.everything);
        assert_eq!(
            v.scopes,
            vec![
                Scope::User("max".into()),
                Scope::Team("ml".into()),
                Scope::User("mia".into()),
                Scope::User("ned".into())
            ]
        );
        assert_eq!(settable_scopes(manager, reach).scopes, vec![Scope::User("max".into()), Scope::Team("ml".into())]);
        assert!(visible_scopes(&callers[2].1, &Reach::default()).everything);
    }
}
