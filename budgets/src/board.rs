//! The board: every budget's last evaluation, in memory, so the gateway
//! check answers without touching PostgreSQL and live sockets are pushed
//! changes; and the scopes the projector's notices named since the last
//! evaluation.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokenusage_plumbing::cache::TtlCache;
use tokio::sync::{Notify, watch};

use super::evaluate::{Crossing, percent, reached};
use super::{Budget, Measure, Scope};

/// Scopes whose usage changed since the last evaluation.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    pub users: HashSet<String>,
    pub projects: HashSet<String>,
    /// A notice named users but not their rows: every project may have moved.
    pub all_projects: bool,
    /// Anything may have changed (a replay, a missed notice, a sweep).
    pub everything: bool,
}

/// One budget's last evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub budget: Budget,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub spent: i64,
    pub unpriced_tokens: i64,
    pub forecast: Option<i64>,
    pub crossed: Vec<Crossing>,
    pub evaluated_at: DateTime<Utc>,
    pub currency: String,
}

/// A budget with its state, as the API, sockets and the CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BudgetState {
    #[serde(flatten)]
    pub budget: Budget,
    /// `null` until the first evaluation (within seconds of creation).
    pub state: Option<StateView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StateView {
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Tokens, or cost in nano-units.
    pub spent: i64,
    /// `amount - spent`, never below 0.
    pub remaining: i64,
    pub percent: f64,
    /// The spend expected at the window's end at the pace so far (calendar
    /// windows; `null` for rolling ones and in a window's first minute).
    pub forecast: Option<i64>,
    /// Cost budgets: the same figures as decimal text in `currency`.
    pub spent_text: Option<String>,
    pub amount_text: Option<String>,
    pub forecast_text: Option<String>,
    pub currency: Option<String>,
    /// Tokens in the window no price covered (their cost is not in `spent`).
    pub unpriced_tokens: i64,
    /// At or past 100 %.
    pub over: bool,
    /// Thresholds crossed in this window, with when.
    pub crossed: Vec<Crossing>,
    pub evaluated_at: DateTime<Utc>,
}

impl Status {
    pub fn view(&self) -> StateView {
        let b = &self.budget;
        let text = |n: i64| (b.measure == Measure::Cost).then(|| tokenusage_contract::money::format_nanos(n));
        StateView {
            window_start: self.window_start,
            window_end: self.window_end,
            spent: self.spent,
            remaining: (b.amount - self.spent).max(0),
            percent: (percent(self.spent, b.amount) * 100.0).round() / 100.0,
            forecast: self.forecast,
            spent_text: text(self.spent),
            amount_text: text(b.amount),
            forecast_text: self.forecast.and_then(text),
            currency: (b.measure == Measure::Cost).then(|| self.currency.clone()),
            unpriced_tokens: self.unpriced_tokens,
            over: reached(self.spent, b.amount, 100),
            crossed: self.crossed.clone(),
            evaluated_at: self.evaluated_at,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    budgets: Vec<Budget>,
    statuses: HashMap<i64, Status>,
    /// The teams each user is in (as of the last evaluation).
    teams_of: HashMap<String, Vec<String>>,
    /// Positions in `budgets` by scope, so a caller's budgets are found
    /// without a scan.
    by_scope: HashMap<Scope, Vec<usize>>,
}

/// Budgets and their last evaluation in this process.
#[derive(Debug)]
pub struct Board {
    inner: RwLock<Inner>,
    touched: Mutex<Touched>,
    touched_notify: Notify,
    deliveries: Notify,
    version: watch::Sender<u64>,
    publishers: TtlCache<Vec<u8>, Option<String>>,
    active: std::sync::atomic::AtomicBool,
    rolling_minute: std::sync::atomic::AtomicI64,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            touched: Mutex::default(),
            touched_notify: Notify::new(),
            deliveries: Notify::new(),
            version: watch::channel(0).0,
            publishers: TtlCache::new(std::time::Duration::from_secs(30), 10_000, 10_000),
            active: std::sync::atomic::AtomicBool::new(false),
            rolling_minute: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }
}

impl Board {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This process evaluates budgets: notices are noted from now on
    /// (without an evaluator they would only pile up).
    pub fn activate(&self) {
        self.active.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Notes scopes whose usage changed; the evaluator wakes.
    pub fn touch(&self, t: Touched) {
        if !self.active.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        {
            let mut cur = self.touched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cur.users.extend(t.users);
            cur.projects.extend(t.projects);
            cur.all_projects |= t.all_projects;
            cur.everything |= t.everything;
        }
        self.touched_notify.notify_one();
    }

    pub fn take_touched(&self) -> Touched {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub async fn touched_notified(&self) {
        self.touched_notify.notified().await;
    }

    /// The sender should look for due deliveries.
    pub fn deliveries_due(&self) {
        self.deliveries.notify_one();
    }

    pub async fn deliveries_notified(&self) {
        self.deliveries.notified().await;
    }

    /// Whether `minute` (Unix minutes) is later than the last one rolling
    /// windows were evaluated in (and notes it).
    pub fn rolling_minute_passed(&self, minute: i64) -> bool {
        self.rolling_minute.fetch_max(minute, std::sync::atomic::Ordering::AcqRel) < minute
    }

    /// Budgets evaluated at least once.
    pub fn known_ids(&self) -> HashSet<i64> {
        self.read().statuses.keys().copied().collect()
    }

    /// Takes a pass's results: the current definitions and memberships,
    /// and the statuses it computed (others keep their last one).
    pub fn update(&self, budgets: Vec<Budget>, members: HashMap<String, Vec<String>>, statuses: Vec<Status>) {
        let changed = {
            let mut g = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let ids: HashSet<i64> = budgets.iter().map(|b| b.id).collect();
            let before = g.statuses.len();
            g.statuses.retain(|id, _| ids.contains(id));
            let mut changed = g.statuses.len() != before || g.budgets != budgets;
            for s in statuses {
                // `evaluated_at` moves every pass; only what a reader sees counts.
                let same = g.statuses.get(&s.budget.id).is_some_and(|o| {
                    (o.spent, o.window_start, &o.crossed, &o.budget, o.unpriced_tokens)
                        == (s.spent, s.window_start, &s.crossed, &s.budget, s.unpriced_tokens)
                });
                changed |= !same;
                g.statuses.insert(s.budget.id, s);
            }
            let mut by_scope: HashMap<Scope, Vec<usize>> = HashMap::new();
            for (i, b) in budgets.iter().enumerate() {
                by_scope.entry(b.scope.clone()).or_default().push(i);
            }
            let mut teams_of: HashMap<String, Vec<String>> = HashMap::new();
            for (team, users) in members {
                for u in users {
                    teams_of.entry(u).or_default().push(team.clone());
                }
            }
            g.budgets = budgets;
            g.by_scope = by_scope;
            g.teams_of = teams_of;
            changed
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// The prefix of the active publisher key `token` is, if it is one
    /// (cached for 30 s, like ingest's key checks, and forgotten at once
    /// when any process revokes a key).
    pub async fn publisher(&self, pool: &sqlx::PgPool, token: &str) -> sqlx::Result<Option<String>> {
        if token.len() > 256 {
            return Ok(None);
        }
        let hash = tokenusage_schema::keys::hash(token);
        if let Some(hit) = self.publishers.get(&hash) {
            return Ok(hit);
        }
        let found = tokenusage_schema::keys::find(pool, &hash).await?.map(|k| k.prefix);
        self.publishers.insert(hash, found.clone(), 1);
        Ok(found)
    }

    /// Forgets every cached publisher key (one was revoked somewhere).
    pub fn forget_publishers(&self) {
        self.publishers.clear();
    }

    /// Changes to the board (for live sockets).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The budgets `keep` admits, with their states, by id.
    pub fn states(&self, keep: impl Fn(&Budget) -> bool) -> Vec<BudgetState> {
        let g = self.read();
        g.budgets
            .iter()
            .filter(|b| keep(b))
            .map(|b| BudgetState { budget: b.clone(), state: g.statuses.get(&b.id).map(Status::view) })
            .collect()
    }

    /// The budgets on any of `scopes`, by id, with their states.
    fn of_scopes(g: &Inner, scopes: impl IntoIterator<Item = Scope>) -> Vec<BudgetState> {
        let mut at: Vec<usize> = scopes.into_iter().filter_map(|s| g.by_scope.get(&s)).flatten().copied().collect();
        // Positions follow `budgets`, which is by id.
        at.sort_unstable();
        at.dedup();
        at.into_iter()
            .filter_map(|i| g.budgets.get(i))
            .map(|b| BudgetState { budget: b.clone(), state: g.statuses.get(&b.id).map(Status::view) })
            .collect()
    }

    /// The budgets that apply to a call by `user` (theirs and their teams')
    /// and for `project`, or to `team`, from memory.
    pub fn applicable(&self, user: Option<&str>, team: Option<&str>, project: Option<&str>) -> Vec<BudgetState> {
        let g = self.read();
        let mut scopes: Vec<Scope> = Vec::new();
        if let Some(u) = user {
            scopes.push(Scope::User(u.to_owned()));
            scopes.extend(g.teams_of.get(u).into_iter().flatten().map(|t| Scope::Team(t.clone())));
        }
        scopes.extend(team.map(|t| Scope::Team(t.to_owned())));
        scopes.extend(project.map(|p| Scope::Project(p.to_owned())));
        Self::of_scopes(&g, scopes)
    }

    /// The budgets in `visible` (`access::visible_scopes`): the rule of
    /// `access::may_see`, listed, so no scan of every budget.
    pub fn visible(&self, visible: &tokenusage_access::Visible) -> Vec<BudgetState> {
        if visible.everything {
            return self.states(|_| true);
        }
        let g = self.read();
        Self::of_scopes(&g, visible.scopes.iter().cloned())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{Measure, Period};

    fn budget(id: i64, scope: Scope) -> Budget {
        Budget {
            id,
            name: format!("b{id}"),
            scope,
            measure: Measure::Tokens,
            amount: 100,
            period: Period::Month,
            zone: "UTC".into(),
            rolling_minutes: None,
            thresholds: vec![100],
            webhooks: vec![],
            created_by: "t".into(),
            created_at: DateTime::UNIX_EPOCH,
        }
    }

    fn ids(v: &[BudgetState]) -> Vec<i64> {
        v.iter().map(|b| b.budget.id).collect()
    }

    #[test]
    fn callers_find_exactly_their_budgets_without_a_scan() {
        let board = Board::default();
        let budgets = vec![
            budget(1, Scope::User("u".into())),
            budget(2, Scope::Team("a".into())),
            budget(3, Scope::Team("b".into())),
            budget(4, Scope::User("v".into())),
            budget(5, Scope::Project("p".into())),
            budget(6, Scope::User("m".into())),
        ];
        let members = HashMap::from([
            ("a".to_owned(), vec!["u".to_owned(), "m".to_owned()]),
            ("b".to_owned(), vec!["v".to_owned()]),
        ]);
        board.update(budgets, members, Vec::new());
        // A gateway asking about u (in team a) for project p.
        assert_eq!(ids(&board.applicable(Some("u"), None, Some("p"))), vec![1, 2, 5]);
        assert_eq!(ids(&board.applicable(None, Some("b"), None)), vec![3]);
        assert_eq!(ids(&board.applicable(Some("nobody"), None, None)), Vec::<i64>::new());
        // m manages a: a's budget, its members' (u's and m's own), not b's or v's.
        let reach = tokenusage_access::Reach {
            manages: BTreeMap::from([(
                "a".to_owned(),
                tokenusage_access::Members::from(vec!["m".to_owned(), "u".to_owned()]),
            )]),
        };
        let visible = |id: &str, role, reach: &tokenusage_access::Reach| {
            let caller = tokenusage_access::Caller {
                id: id.into(),
                role,
                issuer: tokenusage_access::Issuer::Local,
                expires_at: 0,
            };
            ids(&board.visible(&tokenusage_access::visible_scopes(&caller, reach)))
        };
        use tokenusage_access::Role::{Admin, Viewer};
        assert_eq!(visible("m", Viewer, &reach), vec![1, 2, 6]);
        assert_eq!(visible("v", Viewer, &Default::default()), vec![4]);
        assert_eq!(visible("root", Admin, &Default::default()), vec![1, 2, 3, 4, 5, 6]);
    }
}
