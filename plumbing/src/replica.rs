//! Reads from a hot standby (PostgreSQL streaming replication), with the
//! primary as the fallback when the standby is behind or unreachable.
//!
//! How far behind the standby is, is measured in WAL positions, not in the
//! time of its last replayed transaction (an idle primary makes that look
//! old while the standby is current). Every `PROBE_EVERY` the tracker asks
//! the primary for its current WAL position *after* noting the time, and the
//! standby for the position it has replayed. Every transaction committed
//! before a probe's time wrote its commit record below that probe's
//! position, so once the standby has replayed past it, the standby holds
//! everything committed before that time: it is "current as of" the newest
//! such probe. Reads go to the standby while that is at most the bound ago.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;

/// How often the tracker compares the two servers' WAL positions.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Which server a read was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Primary,
    /// The standby, which holds every transaction committed on the primary
    /// before `current_as_of`.
    Standby {
        current_as_of: Instant,
    },
}

impl ReadFrom {
    pub fn label(self) -> &'static str {
        match self {
            ReadFrom::Primary => "primary",
            ReadFrom::Standby { .. } => "standby",
        }
    }
}

/// Where reads go: the primary, or a standby while it keeps up.
#[derive(Debug)]
pub struct ReadPools {
    primary: PgPool,
    standby: Option<Standby>,
}

#[derive(Debug)]
struct Standby {
    pool: PgPool,
    max_lag: Duration,
    /// The last measurement; `None` until the first one, or after the
    /// standby failed to answer (reads go to the primary meanwhile).
    current_as_of: Mutex<Option<Instant>>,
}

impl ReadPools {
    /// Every read on the primary.
    pub fn primary_only(primary: PgPool) -> Self {
        Self { primary, standby: None }
    }

    /// Reads on the standby at `url` while it is at most `max_lag` behind.
    /// Its pool has the primary pool's size and acquire timeout. Fails if the
    /// server there is not in recovery: a second primary is not a replica of
    /// this one, and its data would silently differ.
    pub async fn with_standby(primary: PgPool, url: &SecretString, max_lag: Duration) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(url.expose_secret())
            .map_err(DbError::BadUrl)?
            .application_name("tokenusage-reads")
            .options([("jit", "off")]);
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(primary.options().get_max_connections())
            .acquire_timeout(primary.options().get_acquire_timeout())
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect { target: target.clone(), source })?;
        let standby: bool = sqlx::query_scalar("select pg_is_in_recovery()")
            .fetch_one(&pool)
            .await
            .map_err(|source| DbError::Connect { target: target.clone(), source })?;
        if !standby {
            return Err(DbError::NotStandby { target });
        }
        Ok(Self { primary, standby: Some(Standby { pool, max_lag, current_as_of: Mutex::new(None) }) })
    }

    /// The pool for a read that may be up to the bound behind, and which it is.
    pub fn pick(&self) -> (&PgPool, ReadFrom) {
        let Some(s) = &self.standby else { return (&self.primary, ReadFrom::Primary) };
        let as_of = *s.current_as_of.lock().unwrap_or_else(PoisonError::into_inner);
        match as_of {
            Some(t) if t.elapsed() <= s.max_lag => (&s.pool, ReadFrom::Standby { current_as_of: t }),
            _ => (&self.primary, ReadFrom::Primary),
        }
    }

    /// The primary, for reads that must see every commit already notified
    /// (a live view's snapshot, which the primary's notifications then
    /// advance).
    pub fn primary(&self) -> (&PgPool, ReadFrom) {
        (&self.primary, ReadFrom::Primary)
    }

    /// Measures the standby's position until `stop`; nothing to do without
    /// a standby.
    pub fn spawn_tracker(self: &Arc<Self>, stop: CancellationToken) {
        if self.standby.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut probes = Probes::default();
            let mut was_behind: Option<bool> = None;
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(s) = &me.standby else { return };
                let as_of = me.measure(s, &mut probes).await;
                *s.current_as_of.lock().unwrap_or_else(PoisonError::into_inner) = as_of;
                let behind = as_of.map_or(Duration::MAX, |t| t.elapsed());
                metrics::gauge!("tokenusage_db_standby_behind_seconds").set(behind.as_secs_f64().min(1e9));
                let now_behind = behind > s.max_lag;
                if was_behind != Some(now_behind) {
                    if now_behind {
                        tracing::warn!(
                            behind_ms = behind.as_millis().min(u64::MAX as u128) as u64,
                            bound_ms = s.max_lag.as_millis() as u64,
                            "the read standby is behind (or not answering): reads go to the primary"
                        );
                    } else {
                        tracing::info!("the read standby is current: history reads go to it");
                    }
                    was_behind = Some(now_behind);
                }
            }
        });
    }

    /// One probe: the primary's position now, the standby's replayed one,
    /// and the time the standby is current as of (`None`: unknown).
    async fn measure(&self, s: &Standby, probes: &mut Probes) -> Option<Instant> {
        let taken = Instant::now();
        let primary: Result<i64, _> = sqlx::query_scalar(LSN_OF_PRIMARY).fetch_one(&self.primary).await;
        match primary {
            Ok(lsn) => probes.push(taken, lsn, s.max_lag + 2 * PROBE_EVERY),
            Err(e) => tracing::debug!(error = %e, "reading the primary's WAL position failed"),
        }
        let replayed: Result<Option<i64>, _> = sqlx::query_scalar(LSN_REPLAYED).fetch_one(&s.pool).await;
        match replayed {
            Ok(Some(lsn)) => probes.current_as_of(lsn),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "reading the standby's replayed WAL position failed");
                None
            }
        }
    }
}

/// WAL positions as bytes since the start (`pg_lsn` has no integer cast).
const LSN_OF_PRIMARY: &str = "select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8";
const LSN_REPLAYED: &str = "select pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8";

/// The primary's recent positions, oldest first.
#[derive(Debug, Default)]
struct Probes(VecDeque<(Instant, i64)>);

impl Probes {
    /// Records a probe, forgetting those older than `keep`.
    fn push(&mut self, at: Instant, lsn: i64, keep: Duration) {
        self.0.push_back((at, lsn));
        while self.0.front().is_some_and(|(t, _)| at.duration_since(*t) > keep) {
            self.0.pop_front();
        }
    }

    /// The time of the newest probe whose position the standby has
    /// replayed: it holds everything committed before then.
    fn current_as_of(&self, replayed: i64) -> Option<Instant> {
        self.0.iter().rev().find(|(_, lsn)| *lsn <= replayed).map(|(t, _)| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standby_is_current_as_of_the_newest_position_it_replayed() {
        let t0 = Instant::now();
        let mut p = Probes::default();
        let keep = Duration::from_secs(10);
        p.push(t0, 100, keep);
        p.push(t0 + Duration::from_secs(1), 200, keep);
        p.push(t0 + Duration::from_secs(2), 200, keep);
        p.push(t0 + Duration::from_secs(3), 350, keep);
        assert_eq!(p.current_as_of(99), None, "behind every probe kept: unknown, so the primary");
        assert_eq!(p.current_as_of(100), Some(t0));
        assert_eq!(p.current_as_of(299), Some(t0 + Duration::from_secs(2)), "an idle primary keeps it current");
        assert_eq!(p.current_as_of(350), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn probes_older_than_the_bound_are_forgotten() {
        let t0 = Instant::now();
        let mut p = Probes::default();
        let keep = Duration::from_secs(2);
        for i in 0..10 {
            p.push(t0 + Duration::from_secs(i), 100 * i as i64, keep);
        }
        assert_eq!(p.0.len(), 3);
        assert_eq!(p.current_as_of(100), None, "a standby this far behind is not measured as current");
    }
}
