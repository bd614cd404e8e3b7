//! Publisher API keys: creation (shown once), listing, revocation, and the
//! cached lookup HTTP ingest does on every request.
//!
//! A key looks like `tu_<8 hex prefix>_<32 base62 secret>`. Only its SHA-256
//! is stored. The event `source` comes from the key, never from the body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// A key as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: uuid::Uuid,
    pub name: String,
    pub source: String,
    pub key_prefix: String,
    pub rate_per_sec: i32,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A freshly created key: the only time the secret exists outside the caller.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key itself. Store it now; it cannot be shown again.
    pub key: String,
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Creates a key for `source` allowing `rate_per_sec` events a second.
pub async fn create(pool: &PgPool, name: &str, source: &str, rate_per_sec: i32) -> Result<NewKey, sqlx::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let (prefix, secret) = {
        let mut rng = rand::rng();
        let prefix = format!("{:08x}", rng.random::<u32>());
        let secret: String = (0..32).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
        (prefix, secret)
    };
    let key = format!("tu_{prefix}_{secret}");
    let info: KeyInfo = sqlx::query_as(
        r#"
        insert into api_keys (id, name, source, key_prefix, key_hash, rate_per_sec)
        values ($1, $2, $3, $4, $5, $6)
        returning id, name, source, key_prefix, rate_per_sec, created_at, revoked_at
        "#,
    )
    .bind(uuid::Uuid::now_v7())
    .bind(name)
    .bind(source)
    .bind(format!("tu_{prefix}"))
    .bind(hash(&key))
    .bind(rate_per_sec)
    .fetch_one(pool)
    .await?;
    Ok(NewKey { info, key })
}

pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as(
        "select id, name, source, key_prefix, rate_per_sec, created_at, revoked_at from api_keys order by created_at",
    )
    .fetch_all(pool)
    .await
}

/// Revokes a key by id or prefix. Returns false when no active key matched.
pub async fn revoke(pool: &PgPool, id_or_prefix: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "update api_keys set revoked_at = now() where revoked_at is null and (id::text = $1 or key_prefix = $1)",
    )
    .bind(id_or_prefix)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}

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
    ttl: Duration,
    entries: Mutex<HashMap<Vec<u8>, CacheEntry>>,
}

const MAX_ENTRIES: usize = 10_000;

/// When the lookup was made, and what it found (`None`: no such key).
type CacheEntry = (Instant, Option<Arc<KeyHolder>>);

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The publisher for `key`, or `None` for an unknown or revoked key.
    pub async fn lookup(&self, pool: &PgPool, key: &str) -> Result<Option<Arc<KeyHolder>>, sqlx::Error> {
        let h = hash(key);
        if let Some((at, p)) = self.entries.lock().unwrap_or_else(PoisonError::into_inner).get(&h)
            && at.elapsed() < self.ttl
        {
            return Ok(p.clone());
        }
        let row: Option<(String, String, i32)> = sqlx::query_as(
            "select source, key_prefix, rate_per_sec from api_keys where key_hash = $1 and revoked_at is null",
        )
        .bind(&h)
        .fetch_optional(pool)
        .await?;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Keep the existing limiter across refreshes, so a cache refresh is
        // not a way around the rate limit.
        let previous = entries.get(&h).and_then(|(_, p)| p.clone());
        let publisher = row.map(|(source, prefix, rate)| match previous {
            Some(p) if p.source == source => p,
            _ => {
                let rate = std::num::NonZeroU32::new(rate.max(1) as u32).unwrap_or(std::num::NonZeroU32::MIN);
                Arc::new(KeyHolder { source, prefix, limiter: RateLimiter::direct(Quota::per_second(rate)) })
            }
        });
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(h, (Instant::now(), publisher.clone()));
        Ok(publisher)
    }
}
