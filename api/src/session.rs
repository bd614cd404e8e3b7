//! Sign-in sessions: password login, refresh-token rotation, logout, and
//! rate limiting against password guessing.
//!
//! An access token lives minutes and is held by the page in memory. The
//! session itself is a random refresh token in an `HttpOnly; Secure;
//! SameSite=Strict` cookie scoped to `/api/v1/auth`: scripts cannot read
//! it and other sites cannot send it. Only its SHA-256 is stored. Each
//! refresh rotates it; presenting a token that was already rotated (a
//! copied cookie) revokes the whole session. Sessions end at a fixed time
//! after sign-in, however often they are refreshed.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Limits on failed sign-ins that an attacker cannot turn against the
/// person they target (docs/SECURITY.md, "Sign-in limits"):
///
/// - per user name *and* address: `per_minute` failures a minute, so one
///   guesser is slowed without touching anyone else;
/// - per address: three times that over all names (password spraying);
/// - per user name over all addresses: ten times that per 15 minutes
///   (distributed guessing), except from an address that signed in as that
///   name successfully in the last 30 days, so a flood of wrong passwords
///   from elsewhere cannot lock the owner out.
///
/// Only failures count: signing in never uses up a budget. Memory is
/// bounded; when a table would grow past its cap, expired entries go first.
#[derive(Debug)]
pub(crate) struct LoginLimiter {
    inner: std::sync::Mutex<Limits>,
    per_pair: u32,
    per_address: u32,
    per_name: u32,
}

#[derive(Debug, Default)]
struct Limits {
    by_pair: HashMap<(String, IpAddr), VecDeque<Instant>>,
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
    by_name: HashMap<String, VecDeque<Instant>>,
    trusted: HashMap<(String, IpAddr), Instant>,
}

const MINUTE: Duration = Duration::from_secs(60);
const NAME_WINDOW: Duration = Duration::from_secs(15 * 60);
const TRUST_FOR: Duration = Duration::from_secs(30 * 86_400);
/// Keys kept per table at most.
const LIMITER_KEYS: usize = 100_000;

/// Seconds until a window holding `limit` failures frees a slot, if full.
fn refused(failures: Option<&VecDeque<Instant>>, limit: u32, window: Duration, now: Instant) -> Option<u64> {
    let f = failures?;
    let recent = f.iter().filter(|t| now.duration_since(**t) < window).count();
    if recent < limit as usize {
        return None;
    }
    let oldest = f.iter().find(|t| now.duration_since(**t) < window)?;
    Some(window.saturating_sub(now.duration_since(*oldest)).as_secs().max(1))
}

fn note<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, VecDeque<Instant>>,
    key: K,
    limit: u32,
    window: Duration,
    now: Instant,
) {
    if map.len() >= LIMITER_KEYS && !map.contains_key(&key) {
        map.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < window));
        if map.len() >= LIMITER_KEYS {
            tracing::warn!("the sign-in limiter is full; forgetting old failures");
            map.clear();
        }
    }
    let f = map.entry(key).or_default();
    f.push_back(now);
    while f.len() > limit as usize || f.front().is_some_and(|t| now.duration_since(*t) >= window) {
        f.pop_front();
    }
}

impl LoginLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        let per_pair = per_minute.max(1);
        Self {
            inner: std::sync::Mutex::default(),
            per_pair,
            per_address: per_pair.saturating_mul(3),
            per_name: per_pair.saturating_mul(10),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses an attempt whose budgets are spent: `Err` holds the seconds
    /// to wait.
    pub(crate) fn check(&self, user: &str, ip: IpAddr) -> Result<(), u64> {
        // Lower-cased so `Alice` and `alice` share a budget.
        let name = user.to_lowercase();
        let now = Instant::now();
        let l = self.lock();
        let pair = (name.clone(), ip);
        let trusted = l.trusted.get(&pair).is_some_and(|t| now.duration_since(*t) < TRUST_FOR);
        let wait = refused(l.by_pair.get(&pair), self.per_pair, MINUTE, now)
            .or_else(|| refused(l.by_address.get(&ip), self.per_address, MINUTE, now))
            .or_else(|| if trusted { None } else { refused(l.by_name.get(&name), self.per_name, NAME_WINDOW, now) });
        match wait {
            Some(retry_after_secs) => Err(retry_after_secs),
            None => Ok(()),
        }
    }

    pub(crate) fn failed(&self, user: &str, ip: IpAddr) {
        let name = user.to_lowercase();
        let now = Instant::now();
        let mut l = self.lock();
        note(&mut l.by_pair, (name.clone(), ip), self.per_pair, MINUTE, now);
        note(&mut l.by_address, ip, self.per_address, MINUTE, now);
        note(&mut l.by_name, name, self.per_name, NAME_WINDOW, now);
    }

    pub(crate) fn succeeded(&self, user: &str, ip: IpAddr) {
        let pair = (user.to_lowercase(), ip);
        let now = Instant::now();
        let mut l = self.lock();
        l.by_pair.remove(&pair);
        if l.trusted.len() >= LIMITER_KEYS {
            l.trusted.retain(|_, t| now.duration_since(*t) < TRUST_FOR);
            if l.trusted.len() >= LIMITER_KEYS {
                l.trusted.clear();
            }
        }
        l.trusted.insert(pair, now);
    }

    /// Drops windows that have run out (bounded memory).
    pub(crate) fn prune(&self) {
        let now = Instant::now();
        let mut l = self.lock();
        l.by_pair.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < MINUTE));
        l.by_address.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < MINUTE));
        l.by_name.retain(|_, f| f.back().is_some_and(|t| now.duration_since(*t) < NAME_WINDOW));
        l.trusted.retain(|_, t| now.duration_since(*t) < TRUST_FOR);
    }
}

pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(crate) fn new_refresh_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("tur_{}", hex::encode(b))
}

/// Deletes sessions that ended more than a day ago.
pub(crate) async fn purge_expired(pool: &sqlx::PgPool) -> sqlx::Result<u64> {
    Ok(sqlx::query("delete from refresh_tokens where expires_at < now() - interval '1 day'")
        .execute(pool)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn one_guesser_spends_only_their_own_budget() {
        let l = LoginLimiter::new(3);
        for _ in 0..3 {
            assert!(l.check("alice", ip(1)).is_ok());
            l.failed("Alice", ip(1));
        }
        assert!(matches!(l.check("alice", ip(1)), Err(retry_after_secs) if retry_after_secs >= 1));
        assert!(l.check("alice", ip(2)).is_ok(), "alice from elsewhere is not locked out");
        assert!(
            l.check("bob", ip(1)).is_ok(),
            "the guesser may still sign in as someone else, within the address budget"
        );
    }

    #[test]
    fn spraying_many_names_from_one_address_is_stopped() {
        let l = LoginLimiter::new(2);
        for i in 0..6 {
            let name = format!("user{i}");
            assert!(l.check(&name, ip(9)).is_ok());
            l.failed(&name, ip(9));
        }
        assert!(l.check("someone-new", ip(9)).is_err(), "3 x 2 failures per address per minute");
        assert!(l.check("someone-new", ip(8)).is_ok());
    }

    #[test]
    fn a_distributed_flood_locks_the_name_except_where_its_owner_signed_in_before() {
        let l = LoginLimiter::new(1);
        l.succeeded("alice", ip(200));
        for i in 0..10 {
            l.failed("alice", ip(i));
        }
        assert!(l.check("alice", ip(100)).is_err(), "ten failures for alice from ten addresses in 15 minutes");
        assert!(l.check("alice", ip(200)).is_ok(), "alice's own address still gets through");
        l.prune();
        assert!(l.check("alice", ip(200)).is_ok());
    }
}
