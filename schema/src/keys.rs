//! Publisher API keys (`api_keys`): created, listed and revoked by admins
//! (API and CLI), looked up by HTTP ingest on every request.
//!
//! A key looks like `tu_<8 hex prefix>_<32 base62 secret>`. Only its SHA-256
//! is stored (keys are 190 bits of randomness: a slow password hash would
//! add only latency). The event `source` comes from the key, never the body.

use chrono::{DateTime, Utc};
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

/// The SHA-256 a key is stored and looked up by.
pub fn hash(key: &str) -> Vec<u8> {
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
    // Notified in the revocation's transaction, so it is delivered when the
    // revocation commits: every process's key cache forgets its keys at once
    // instead of honouring a revoked key until its cache entry expires.
    let mut tx = pool.begin().await?;
    let revoked: Vec<String> = sqlx::query_scalar(
        "update api_keys set revoked_at = now() \
         where revoked_at is null and (id::text = $1 or key_prefix = $1) returning key_prefix",
    )
    .bind(id_or_prefix)
    .fetch_all(&mut *tx)
    .await?;
    for prefix in &revoked {
        sqlx::query("select pg_notify($1, $2)").bind(CHANGED).bind(prefix).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(!revoked.is_empty())
}

/// The channel a key revocation is notified on (the payload is its prefix).
pub const CHANGED: &str = "tokenusage_keys";

/// What an active key allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    pub source: String,
    pub prefix: String,
    pub rate_per_sec: i32,
}

/// The active key with this hash, if any.
pub async fn find(pool: &PgPool, key_hash: &[u8]) -> Result<Option<ActiveKey>, sqlx::Error> {
    let row: Option<(String, String, i32)> = sqlx::query_as(
        "select source, key_prefix, rate_per_sec from api_keys where key_hash = $1 and revoked_at is null",
    )
    .bind(key_hash)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(source, prefix, rate_per_sec)| ActiveKey { source, prefix, rate_per_sec }))
}
