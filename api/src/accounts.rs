//! Local accounts (`users`): creating them, changing roles, disabling them
//! (which ends their sessions), checking passwords, and reading an account's
//! standing for every request. The CLI's `users` command and the API's
//! sign-in and authorization both go through here.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;

use sqlx::PgPool;
use tokenusage_plumbing::cache::TtlCache;

pub use crate::access::Role;

/// A local account as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
}

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no user {0}")]
    NoSuchUser(String),
    #[error("the password must be at least 8 characters")]
    WeakPassword,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

/// Hashes a password with argon2id (the crate's default parameters). CPU
/// heavy: call it from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccountError::Hashing(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AccountError::Hashing(e.to_string()))?
        .to_string())
}

/// A valid hash of a random password, verified against when the user does
/// not exist, so that "no such user" and "wrong password" take equally long.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| hash_password("not-a-real-password").unwrap_or_default());

/// Whether `password` matches `hash` (or, with no hash, costs the same to
/// find out that it does not). CPU heavy: call it from a blocking thread.
pub(crate) fn verify_password(hash: Option<&str>, password: &str) -> bool {
    let hash = hash.unwrap_or(DUMMY_HASH.as_str());
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Creates an account, or resets the password, name and role of an existing
/// one (and enables it). The argon2id hash is computed off the async runtime.
pub async fn upsert(pool: &PgPool, id: &str, name: &str, role: Role, password: &str) -> Result<(), AccountError> {
    if password.chars().count() < 8 {
        return Err(AccountError::WeakPassword);
    }
    let pw = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| AccountError::Hashing(e.to_string()))??;
    sqlx::query(
        r#"
        insert into users (id, display_name, password_hash, role) values ($1, $2, $3, $4)
        on conflict (id) do update set display_name = excluded.display_name,
            password_hash = excluded.password_hash, role = excluded.role, disabled = false
        "#,
    )
    .bind(id)
    .bind(name)
    .bind(hash)
    .bind(role.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool) -> Result<Vec<Account>, AccountError> {
    let rows: Vec<(String, String, String, bool)> =
        sqlx::query_as("select id, display_name, role, disabled from users order by id").fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(id, display_name, role, disabled)| Account {
            id,
            display_name,
            role: Role::parse(&role).unwrap_or(Role::Viewer),
            disabled,
        })
        .collect())
}

/// Disables an account and ends its open sessions, in one transaction;
/// its access tokens stop working within the status cache's lifetime.
/// Returns how many sessions were ended.
pub async fn disable(pool: &PgPool, id: &str) -> Result<u64, AccountError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("update users set disabled = true where id = $1").bind(id).execute(&mut *tx).await?;
    if n.rows_affected() == 0 {
        return Err(AccountError::NoSuchUser(id.to_owned()));
    }
    let sessions = sqlx::query(
        "update refresh_tokens set revoked_at = now() where user_id = $1 and revoked_at is null and rotated_at is null",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(sessions)
}

pub async fn set_role(pool: &PgPool, id: &str, role: Role) -> Result<(), AccountError> {
    let n = sqlx::query("update users set role = $2 where id = $1").bind(id).bind(role.as_str()).execute(pool).await?;
    if n.rows_affected() == 0 {
        return Err(AccountError::NoSuchUser(id.to_owned()));
    }
    Ok(())
}

/// What sign-in needs to know of an account: its password hash (none for
/// SSO-only accounts or disabled ones) and role.
pub(crate) async fn credentials(pool: &PgPool, id: &str) -> sqlx::Result<Option<(Option<String>, Option<Role>)>> {
    let row: Option<(Option<String>, String, bool)> =
        sqlx::query_as("select password_hash, role, disabled from users where id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(hash, role, disabled)| (if disabled { None } else { hash }, Role::parse(&role))))
}

/// A local account's standing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Status {
    pub role: Role,
    pub disabled: bool,
}

/// How long a looked-up account status is trusted.
const STATUS_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; the cache is emptied when it would grow past this.
const STATUS_CAPACITY: usize = 50_000;

/// Account status by user id, cached briefly so each request does not cost
/// a query, and bounded so a flood of distinct ids cannot grow it.
#[derive(Debug)]
pub(crate) struct Directory {
    cache: TtlCache<String, Option<Status>>,
}

impl Default for Directory {
    fn default() -> Self {
        Self { cache: TtlCache::new(STATUS_TTL, STATUS_CAPACITY, STATUS_CAPACITY) }
    }
}

impl Directory {
    pub(crate) async fn status(&self, pool: &PgPool, id: &str) -> sqlx::Result<Option<Status>> {
        if let Some(s) = self.cache.get(&id.to_owned()) {
            return Ok(s);
        }
        let row: Option<(String, bool)> =
            sqlx::query_as("select role, disabled from users where id = $1").bind(id).fetch_optional(pool).await?;
        let status = row.map(|(r, disabled)| Status { role: Role::parse(&r).unwrap_or(Role::Viewer), disabled });
        self.cache.insert(id.to_owned(), status, 1);
        Ok(status)
    }
}
