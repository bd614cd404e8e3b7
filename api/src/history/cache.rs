//! A read-through cache of series reads, invalidated by the projector's
//! post-commit notifications.
//!
//! Dashboards ask the same views again and again (every viewer, every
//! refresh, every admin). A cached read is kept with the *generation* of its
//! subject at the time the read started; every notification bumps the
//! generation of the users it names (or a global one), so an entry read
//! before a commit is never served after that commit's notification is
//! processed. Entries also expire after a minute, as a safety net should a
//! notification be lost while the listener reconnects (the hub then bumps
//! the global generation anyway).
//!
//! A read from the read standby is served but not kept unless the standby
//! was current as of the last notification processed: a notification
//! means a commit on the primary, which a lagging standby may not hold yet,
//! and keeping its older answer would outlive the notification.
//!
//! Bounded: at most `--series-cache-entries` entries and `MAX_CELLS` cached
//! buckets in all; when either would be exceeded, the cache is emptied.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokenusage_plumbing::cache::TtlCache;
use tokenusage_plumbing::replica::ReadFrom;
use tokio::time::Instant;

use super::params::Filters;
use super::plan::{GroupBy, Plan};
use super::read::{self, Snapshot, Subject};

const MAX_CELLS: usize = 4_000_000;
const TTL: Duration = Duration::from_secs(60);
/// Users whose generation is tracked at most; past it, everything restarts.
const MAX_TRACKED_USERS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Generation {
    global: u64,
    subject: u64,
}

#[derive(Debug, Default)]
struct Generations {
    global: u64,
    /// Bumped by every change: the generation of all-users views.
    any: u64,
    by_user: HashMap<String, u64>,
    /// When the last notification was processed.
    changed_at: Option<Instant>,
}

/// The series cache of one API process.
#[derive(Debug)]
pub struct SeriesCache {
    generations: Mutex<Generations>,
    entries: TtlCache<u64, (Generation, Arc<Snapshot>)>,
    enabled: bool,
}

fn key(subject: &Subject, plan: &Plan, group: GroupBy, filters: &Filters) -> u64 {
    let mut h = DefaultHasher::new();
    subject.label().hash(&mut h);
    matches!(subject, Subject::All).hash(&mut h);
    subject.covers().hash(&mut h);
    plan.rollup.table().hash(&mut h);
    plan.edges.hash(&mut h);
    plan.end.hash(&mut h);
    group.column().hash(&mut h);
    filters.hash(&mut h);
    h.finish()
}

impl SeriesCache {
    /// A cache of at most `max_entries` reads (0: no caching).
    pub fn new(max_entries: usize) -> Self {
        Self {
            generations: Mutex::default(),
            entries: TtlCache::new(TTL, max_entries, MAX_CELLS),
            enabled: max_entries > 0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.generations.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn generation(g: &Generations, subject: &Subject) -> Generation {
        let subject = match subject {
            Subject::User(u) => g.by_user.get(u).copied().unwrap_or(0),
            // Any change may be a member's: a team's views are as fresh as
            // everyone's (the members are part of the key).
            Subject::Team { .. } | Subject::All => g.any,
        };
        Generation { global: g.global, subject }
    }

    /// Some users' data changed.
    pub fn invalidate_users<'a>(&self, users: impl ExactSizeIterator<Item = &'a String>) {
        let mut g = self.lock();
        g.any += 1;
        g.changed_at = Some(Instant::now());
        if g.by_user.len() + users.len() > MAX_TRACKED_USERS {
            // Forgetting per-user counters is safe only together with the entries.
            g.by_user.clear();
            g.global += 1;
            self.entries.clear();
        }
        for u in users {
            *g.by_user.entry(u.clone()).or_insert(0) += 1;
        }
    }

    /// Anything may have changed.
    pub fn invalidate_all(&self) {
        let mut g = self.lock();
        g.global += 1;
        g.changed_at = Some(Instant::now());
        self.entries.clear();
    }

    /// A series read, from the cache when nothing changed since it was read.
    pub async fn read(
        &self,
        (pool, from): (&PgPool, ReadFrom),
        subject: &Subject,
        plan: &Plan,
        group: GroupBy,
        filters: &Filters,
    ) -> sqlx::Result<Arc<Snapshot>> {
        if !self.enabled {
            return Ok(Arc::new(read::read_snapshot(pool, subject, plan, group, filters).await?));
        }
        let k = key(subject, plan, group, filters);
        let (generation, keep) = {
            let g = self.lock();
            let keep = match from {
                ReadFrom::Primary => true,
                ReadFrom::Standby { current_as_of } => g.changed_at.is_none_or(|c| current_as_of >= c),
            };
            (Self::generation(&g, subject), keep)
        };
        if let Some((at, data)) = self.entries.get(&k)
            && at == generation
        {
            metrics::counter!("tokenusage_api_series_cache_total", "result" => "hit").increment(1);
            return Ok(data);
        }
        metrics::counter!("tokenusage_api_series_cache_total", "result" => "miss").increment(1);
        let data = Arc::new(read::read_snapshot(pool, subject, plan, group, filters).await?);
        let cells = data.data.totals.len() * (1 + data.data.groups.len());
        // Stored with the generation seen *before* the read: a change
        // notified meanwhile makes it stale at once.
        if keep {
            self.entries.insert(k, (generation, data.clone()), cells.max(1));
        }
        Ok(data)
    }
}
