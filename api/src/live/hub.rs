//! The hub: which sockets watch whose usage, and the routing of each
//! committed notice to exactly those sockets, through a bounded inbox per
//! socket. A socket whose inbox is full is told to re-read its views
//! instead: slower, never wrong.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokenusage_schema::freshness::Freshness;
use tokenusage_schema::notice::{Delta, Notice};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::budgets::board::Touched;
use crate::history::cache::SeriesCache;
use crate::history::read::Subject;

/// Notices queued for one socket; past this it re-reads its views instead.
pub(crate) const INBOX: usize = 32;

/// What the hub hands one socket.
#[derive(Debug)]
pub(crate) enum Update {
    /// Committed increments `rows[range]` of the commit numbered `seq`.
    Rows { seq: i64, rows: Arc<Vec<Delta>>, range: Range<usize> },
    /// Re-read the views (the increments were not sent or may be lost).
    Resync,
}

/// One socket as the hub sees it.
#[derive(Debug)]
struct Member {
    inbox: mpsc::Sender<Update>,
    /// Set when an update was not delivered: the socket re-reads its views.
    resync: Arc<AtomicBool>,
    /// Watches everyone's usage (an admin's `user=*` view).
    all: bool,
    users: Vec<String>,
}

impl Member {
    fn deliver(&self, u: Update) {
        if self.inbox.try_send(u).is_err() {
            self.resync.store(true, Ordering::Release);
        }
    }

    fn resync(&self) {
        self.resync.store(true, Ordering::Release);
        let _ = self.inbox.try_send(Update::Resync);
    }
}

/// Which sockets watch whom.
#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    members: HashMap<u64, Member>,
    by_user: HashMap<String, Vec<u64>>,
    all: HashSet<u64>,
}

impl Registry {
    fn unindex(&mut self, id: u64) {
        let Some(m) = self.members.get(&id) else { return };
        for u in &m.users {
            if let Some(ids) = self.by_user.get_mut(u) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.by_user.remove(u);
                }
            }
        }
        self.all.remove(&id);
    }

    fn set_scope(&mut self, id: u64, all: bool, users: Vec<String>) {
        self.unindex(id);
        let Some(m) = self.members.get_mut(&id) else { return };
        if all {
            self.all.insert(id);
        }
        for u in &users {
            self.by_user.entry(u.clone()).or_default().push(id);
        }
        m.all = all;
        m.users = users;
    }

    fn leave(&mut self, id: u64) {
        self.unindex(id);
        self.members.remove(&id);
    }

    fn resync_all(&self) {
        self.members.values().for_each(Member::resync);
    }

    /// Routes one notice. Each socket gets each row at most once: sockets
    /// watching everyone get the whole notice, the others their users' runs.
    fn route(&self, notice: Notice) {
        if notice.all {
            return self.resync_all();
        }
        if let Some(users) = &notice.users {
            let mut targets: HashSet<u64> = self.all.clone();
            for u in users {
                targets.extend(self.by_user.get(u).into_iter().flatten());
            }
            return targets.iter().filter_map(|id| self.members.get(id)).for_each(Member::resync);
        }
        let (seq, rows) = (notice.seq, Arc::new(notice.rows));
        let mut start = 0;
        while start < rows.len() {
            let user = rows[start].user();
            let end = start + rows[start..].iter().take_while(|r| r.user() == user).count();
            for id in self.by_user.get(user).into_iter().flatten() {
                if let Some(m) = self.members.get(id).filter(|m| !m.all) {
                    m.deliver(Update::Rows { seq, rows: rows.clone(), range: start..end });
                }
            }
            start = end;
        }
        for m in self.all.iter().filter_map(|id| self.members.get(id)) {
            m.deliver(Update::Rows { seq, rows: rows.clone(), range: 0..rows.len() });
        }
    }
}

/// The scopes a notice changed, for the budget evaluator.
fn touched_by(notice: &Notice) -> Touched {
    let mut t = Touched { everything: notice.all, ..Touched::default() };
    if let Some(users) = &notice.users {
        t.users.extend(users.iter().cloned());
        t.all_projects = true;
    }
    for d in &notice.rows {
        if !t.users.contains(d.user()) {
            t.users.insert(d.user().to_owned());
        }
        if !d.6.is_empty() && !t.projects.contains(&d.6) {
            t.projects.insert(d.6.clone());
        }
    }
    t
}

/// Live state shared by the sockets of one process.
#[derive(Debug)]
pub struct Live {
    registry: Mutex<Registry>,
    /// Told which scopes each notice changed (the budget evaluator).
    budgets: Arc<crate::budgets::board::Board>,
    freshness_tx: watch::Sender<Freshness>,
    sockets_per_user: Mutex<HashMap<String, usize>>,
}

impl Live {
    pub(crate) fn new(budgets: Arc<crate::budgets::board::Board>) -> Self {
        Self {
            registry: Mutex::new(Registry::default()),
            budgets,
            freshness_tx: watch::channel(Freshness::default()).0,
            sockets_per_user: Mutex::new(HashMap::new()),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the notification listener and the freshness poller.
    pub(crate) fn spawn_hub(self: &Arc<Self>, pool: PgPool, shutdown: CancellationToken, cache: Arc<SeriesCache>) {
        tokio::spawn(super::feed::listen(self.clone(), pool.clone(), shutdown.clone(), cache));
        tokio::spawn(super::feed::poll_freshness(pool, self.freshness_tx.clone(), shutdown));
    }

    /// Joins the hub; the socket leaves with the returned guard.
    pub(crate) fn join(self: &Arc<Self>) -> (Membership, mpsc::Receiver<Update>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(INBOX);
        let resync = Arc::new(AtomicBool::new(false));
        let mut r = self.registry();
        r.next_id += 1;
        let id = r.next_id;
        r.members.insert(id, Member { inbox: tx, resync: resync.clone(), all: false, users: Vec::new() });
        (Membership { live: self.clone(), id }, rx, resync)
    }

    /// Applies a notice: the series cache first, then the sockets, in this
    /// order, so no socket can re-read a view from the cache and get
    /// numbers older than the change it was told about.
    pub(crate) fn publish(&self, cache: &SeriesCache, notice: Notice) {
        self.budgets.touch(touched_by(&notice));
        if notice.all {
            cache.invalidate_all();
        } else if let Some(users) = &notice.users {
            cache.invalidate_users(users.iter());
        } else {
            let mut users: Vec<&String> = notice.rows.iter().map(|r| &r.0).collect();
            users.dedup();
            cache.invalidate_users(users.into_iter());
        }
        self.registry().route(notice);
    }

    /// Anything may have changed: every view is re-read.
    pub(crate) fn resync_everything(&self, cache: &SeriesCache) {
        self.budgets.touch(Touched { everything: true, ..Touched::default() });
        cache.invalidate_all();
        self.registry().resync_all();
    }

    /// The freshness the feed last read, and its changes.
    pub(crate) fn freshness(&self) -> watch::Receiver<Freshness> {
        self.freshness_tx.subscribe()
    }

    /// Counts a socket of `user`, unless they already hold `max`; the count
    /// drops with the returned slot.
    pub(crate) fn take_socket_slot(self: &Arc<Self>, user: &str, max: usize) -> Option<SocketSlot> {
        let mut m = self.sockets_per_user.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(user.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SocketSlot { live: self.clone(), user: user.to_owned() })
    }
}

/// One of a user's open sockets; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct SocketSlot {
    live: Arc<Live>,
    user: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut m = self.live.sockets_per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// A socket's place in the hub.
pub(crate) struct Membership {
    live: Arc<Live>,
    id: u64,
}

impl Membership {
    /// Whose notices this socket receives, from its subscriptions' subjects.
    pub(crate) fn set_scope<'a>(&self, subjects: impl Iterator<Item = &'a Subject>) {
        let mut all = false;
        let mut users: Vec<String> = Vec::new();
        for s in subjects {
            match s {
                Subject::All => all = true,
                Subject::User(u) => users.push(u.clone()),
                Subject::Team { members, .. } => users.extend(members.iter().cloned()),
            }
        }
        users.sort_unstable();
        users.dedup();
        self.live.registry().set_scope(self.id, all, users);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.live.registry().leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, minute: i64, input: i64) -> Delta {
        Delta(
            user.into(),
            "chat".into(),
            "m".into(),
            minute,
            tokenusage_schema::Sums::new(input, 0, 1).to_array(),
            "s".into(),
            String::new(),
        )
    }

    fn member(r: &mut Registry, capacity: usize) -> (u64, mpsc::Receiver<Update>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(capacity);
        let resync = Arc::new(AtomicBool::new(false));
        r.next_id += 1;
        r.members.insert(r.next_id, Member { inbox: tx, resync: resync.clone(), all: false, users: Vec::new() });
        (r.next_id, rx, resync)
    }

    /// Every row a socket received, flattened.
    fn received(rx: &mut mpsc::Receiver<Update>) -> Vec<(i64, Delta)> {
        let mut out = Vec::new();
        while let Ok(u) = rx.try_recv() {
            if let Update::Rows { seq, rows, range } = u {
                out.extend(rows[range].iter().map(|d| (seq, d.clone())));
            }
        }
        out
    }

    #[test]
    fn notices_reach_only_their_users_sockets_and_each_row_once() {
        let mut r = Registry::default();
        let (alice, mut alice_rx, _) = member(&mut r, 8);
        let (bob, mut bob_rx, _) = member(&mut r, 8);
        let (admin, mut admin_rx, _) = member(&mut r, 8);
        r.set_scope(alice, false, vec!["alice".into()]);
        r.set_scope(bob, false, vec!["bob".into()]);
        // An admin watching alice and everyone at once gets each row once.
        r.set_scope(admin, true, vec!["alice".into()]);
        let rows = vec![row("alice", 60, 1), row("alice", 120, 2), row("carol", 60, 3)];
        r.route(Notice { seq: 5, rows: rows.clone(), users: None, all: false });
        assert_eq!(received(&mut alice_rx), vec![(5, rows[0].clone()), (5, rows[1].clone())]);
        assert!(received(&mut bob_rx).is_empty(), "bob hears nothing of alice or carol");
        assert_eq!(received(&mut admin_rx).len(), 3);
        // Leaving unindexes: nothing is routed to a closed socket.
        r.leave(alice);
        assert!(r.by_user.get("alice").is_some_and(|ids| ids == &vec![admin]));
    }

    #[test]
    fn a_full_inbox_or_a_notice_without_increments_asks_for_a_re_read() {
        let mut r = Registry::default();
        let (alice, mut rx, resync) = member(&mut r, 1);
        r.set_scope(alice, false, vec!["alice".into()]);
        r.route(Notice { seq: 1, rows: vec![row("alice", 60, 1)], users: None, all: false });
        assert!(!resync.load(Ordering::Acquire));
        r.route(Notice { seq: 2, rows: vec![row("alice", 60, 1)], users: None, all: false });
        assert!(resync.swap(false, Ordering::AcqRel), "the second notice did not fit: re-read");
        let _ = received(&mut rx);
        r.route(Notice { seq: 3, rows: Vec::new(), users: Some(vec!["bob".into()]), all: false });
        assert!(!resync.load(Ordering::Acquire), "bob's re-read is not alice's");
        r.route(Notice { seq: 4, rows: Vec::new(), users: Some(vec!["alice".into()]), all: false });
        assert!(resync.swap(false, Ordering::AcqRel));
        r.route(Notice { seq: 5, rows: Vec::new(), users: None, all: true });
        assert!(resync.load(Ordering::Acquire));
    }
}
