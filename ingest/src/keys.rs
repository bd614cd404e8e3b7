//! Checking publisher API keys on every ingest request, cached. Creating,
//! listing and revoking keys is `schema::keys` (admins do it through the
//! API and the CLI).

use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use tokenusage_plumbing::cache::TtlCache;
use tokenusage_schema::keys;

/// An authenticated publisher, with its rate limiter.
#[derive(Debug)]
pub struct KeyHolder {
    pub source: String,
    pub prefix: String,
    pub limiter: DefaultDirectRateLimiter,
}

/// Looks keys up by hash, caching hits and misses for `ttl`, so a revoked
/// key stops working within `ttl` and a flood of bad keys costs one query
/// per distinct key per `ttl`. Bounded to `MAX_ENTRIES` keys.
#[derive(Debug)]
pub struct KeyCache {
    entries: TtlCache<Vec<u8>, Option<Arc<KeyHolder>>>,
}

const MAX_ENTRIES: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self { entries: TtlCache::new(ttl, MAX_ENTRIES, MAX_ENTRIES) }
    }

    /// The publisher for `key`, or `None` for an unknown or revoked key.
    pub async fn lookup(&self, pool: &PgPool, key: &str) -> Result<Option<Arc<KeyHolder>>, sqlx::Error> {
        let h = keys::hash(key);
        if let Some(p) = self.entries.get(&h) {
            return Ok(p);
        }
        let found = keys::find(pool, &h).await?;
        // Keep the existing limiter across refreshes, so a cache refresh is
        // not a way around the rate limit.
        let previous = self.entries.get_stale(&h).flatten();
        let publisher = found.map(|k| match previous {
            Some(p) if p.source == k.source => p,
            _ => {
                let rate = std::num::NonZeroU32::new(k.rate_per_sec.max(1) as u32).unwrap_or(std::num::NonZeroU32::MIN);
                Arc::new(KeyHolder {
                    source: k.source,
                    prefix: k.prefix,
                    limiter: RateLimiter::direct(Quota::per_second(rate)),
                })
            }
        });
        self.entries.insert(h, publisher.clone(), 1);
        Ok(publisher)
    }

    /// Forgets every cached key (a key was revoked somewhere).
    pub fn forget_all(&self) {
        self.entries.clear();
    }

    /// Forgets the cache on every key revocation any process commits
    /// (`schema::keys::CHANGED`), within a notification's delay rather
    /// than the cache's TTL. Ends when the cache is dropped. If the
    /// listener cannot connect, the TTL still bounds a revoked key's life.
    pub fn follow_revocations(self: &Arc<Self>, pool: PgPool) {
        let (gone, weak) = (Arc::downgrade(self), Arc::downgrade(self));
        tokenusage_plumbing::db::follow_notifications(
            pool,
            keys::CHANGED,
            move || gone.strong_count() == 0,
            move || {
                if let Some(c) = weak.upgrade() {
                    c.forget_all();
                }
            },
        );
    }
}
