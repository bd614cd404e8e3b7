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
//! Bounded: at most `--series-cache-entries` entries and `MAX_CELLS` cached
//! buckets in all; when either would be exceeded, the cache is emptied.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::plan::{GroupBy, Plan};
use super::query::{self, Filters, Snapshot, Subject};

const MAX_CELLS: usize = 4_000_000;
const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Generation {
    global: u64,
    subject: u64,
}

#[derive(Debug)]
struct Entry {
    generation: Generation,
    at: Instant,
    data: Arc<Snapshot>,
    cells: usize,
}

#[derive(Debug, Default)]
struct Inner {
    global: u64,
    /// Bumped by every change: the generation of all-users views.
    any: u64,
    by_user: HashMap<String, u64>,
    entries: HashMap<u64, Entry>,
    cells: usize,
}

/// The series cache of one API process.
#[derive(Debug, Default)]
pub struct SeriesCache {
    inner: Mutex<Inner>,
    max_entries: usize,
}

fn key(subject: &Subject, plan: &Plan, group: GroupBy, filters: &Filters) -> u64 {
    let mut h = DefaultHasher::new();
    subject.label().hash(&mut h);
    matches!(subject, Subject::All).hash(&mut h);
    plan.rollup.table().hash(&mut h);
    plan.edges.hash(&mut h);
    plan.end.hash(&mut h);
    group.column().hash(&mut h);
    filters.activity.hash(&mut h);
    filters.model.hash(&mut h);
    h.finish()
}

impl SeriesCache {
    /// A cache of at most `max_entries` reads (0: no caching).
    pub fn new(max_entries: usize) -> Self {
        Self { inner: Mutex::default(), max_entries }
    }

    fn generation(inner: &Inner, subject: &Subject) -> Generation {
        let subject = match subject {
            Subject::User(u) => inner.by_user.get(u).copied().unwrap_or(0),
            Subject::All => inner.any,
        };
        Generation { global: inner.global, subject }
    }

    /// Some users' data changed.
    pub fn invalidate_users<'a>(&self, users: impl ExactSizeIterator<Item = &'a String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.any += 1;
        if inner.by_user.len() + users.len() > 100_000 {
            // Forgetting per-user counters is safe only together with the entries.
            inner.by_user.clear();
            inner.entries.clear();
            inner.cells = 0;
            inner.global += 1;
        }
        for u in users {
            *inner.by_user.entry(u.clone()).or_insert(0) += 1;
        }
    }

    /// Anything may have changed.
    pub fn invalidate_all(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.global += 1;
        inner.entries.clear();
        inner.cells = 0;
    }

    /// A series read, from the cache when nothing changed since it was read.
    pub async fn read(
        &self,
        pool: &PgPool,
        subject: &Subject,
        plan: &Plan,
        group: GroupBy,
        filters: &Filters,
    ) -> sqlx::Result<Arc<Snapshot>> {
        if self.max_entries == 0 {
            return Ok(Arc::new(query::read_snapshot(pool, subject, plan, group, filters).await?));
        }
        let k = key(subject, plan, group, filters);
        let generation = {
            let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let generation = Self::generation(&inner, subject);
            if let Some(e) = inner.entries.get(&k)
                && e.generation == generation
                && e.at.elapsed() < TTL
            {
                metrics::counter!("tokenusage_api_series_cache_total", "result" => "hit").increment(1);
                return Ok(e.data.clone());
            }
            generation
        };
        metrics::counter!("tokenusage_api_series_cache_total", "result" => "miss").increment(1);
        let data = Arc::new(query::read_snapshot(pool, subject, plan, group, filters).await?);
        let cells = data.data.totals.len() * (1 + data.data.groups.len());
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.entries.len() >= self.max_entries || inner.cells + cells > MAX_CELLS {
            inner.entries.clear();
            inner.cells = 0;
        }
        // Stored with the generation seen *before* the read: a change
        // notified meanwhile makes it stale at once.
        if let Some(old) = inner.entries.insert(k, Entry { generation, at: Instant::now(), data: data.clone(), cells })
        {
            inner.cells -= old.cells;
        }
        inner.cells += cells;
        Ok(data)
    }
}
