//! Pacing producers by what has been counted, for a broker that keeps only
//! a bounded log and deletes its oldest records silently when it overflows.
//!
//! librdkafka's mock cluster (the embedded broker of `serve --demo`) keeps
//! at most 5 MiB or 100,000 message sets per partition and drops the oldest
//! past that, without telling anyone (`rd_kafka_mock_partition_log_append`).
//! A producer faster than the projector would lose whatever the projector
//! had not read yet. So every producer in the process reserves the bytes of
//! a record before sending it, and the reservation is released only once
//! the projector has *committed* past that record's offset: the records the
//! broker holds that are not yet counted never exceed the budget, and the
//! broker only ever trims records that are already safe in PostgreSQL.
//! A producer that cannot get room within its patience is told so
//! ([`Full`]), and says so to its caller (HTTP ingest answers 503 with
//! Retry-After); nothing accepted is ever dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The uncounted bytes the embedded broker may hold, over all partitions.
/// Well below the mock's 5 MiB per partition, so even if every uncounted
/// record is in one partition, none of them can be trimmed.
pub const EMBEDDED_BUDGET_BYTES: usize = 2 * 1024 * 1024;

/// What one record costs in the broker's log beyond its key, value and
/// headers (record and batch framing, varints), rounded up.
pub const RECORD_OVERHEAD_BYTES: usize = 64;

/// No room was freed within the caller's patience: the projector is behind
/// (or stopped) and the broker cannot keep more.
#[derive(Debug, thiserror::Error)]
#[error(
    "the broker holds as much uncounted data as it can keep ({budget} bytes); retry once the projector has caught up"
)]
pub struct Full {
    pub budget: usize,
}

/// Room for uncounted records, shared by the producers and the projector
/// of one process.
#[derive(Debug)]
pub struct Headroom {
    budget: usize,
    room: Arc<Semaphore>,
    /// Per partition: reservations of produced records by offset, released
    /// when the projector commits past them.
    held: Mutex<HashMap<i32, BTreeMap<i64, OwnedSemaphorePermit>>>,
    /// Per partition: the next offset the projector has committed, so a
    /// delivery reported after its commit is released at once.
    counted: Mutex<HashMap<i32, i64>>,
}

/// Room reserved for one record not yet acknowledged by the broker.
#[derive(Debug)]
pub struct Reservation(OwnedSemaphorePermit);

impl Headroom {
    /// Room for `budget` bytes of uncounted records.
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(Self {
            budget,
            room: Arc::new(Semaphore::new(budget)),
            held: Mutex::default(),
            counted: Mutex::default(),
        })
    }

    /// The bytes a record of this size takes from the budget.
    pub fn cost(key: usize, value: usize, headers: usize) -> usize {
        key + value + headers + RECORD_OVERHEAD_BYTES
    }

    /// Waits up to `patience` for room for `bytes`. A record larger than the
    /// whole budget waits for all of it (it is then the only one in flight).
    pub async fn reserve(&self, bytes: usize, patience: Duration) -> Result<Reservation, Full> {
        let n = u32::try_from(bytes.clamp(1, self.budget)).unwrap_or(u32::MAX);
        match tokio::time::timeout(patience, self.room.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Reservation(permit)),
            _ => {
                metrics::counter!("tokenusage_producer_paced_out_total").increment(1);
                Err(Full { budget: self.budget })
            }
        }
    }

    /// The broker acknowledged the record at `partition`/`offset`: its room
    /// is held until the projector commits past it.
    pub fn produced(&self, partition: i32, offset: i64, r: Reservation) {
        let counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner).get(&partition).copied();
        if counted.is_some_and(|next| offset < next) {
            return; // already counted: the room is free again (`r` drops)
        }
        self.held.lock().unwrap_or_else(PoisonError::into_inner).entry(partition).or_default().insert(offset, r.0);
    }

    /// The projector committed `partition` up to (not including) `next`.
    pub fn counted(&self, partition: i32, next: i64) {
        {
            let mut c = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
            let e = c.entry(partition).or_insert(next);
            *e = (*e).max(next);
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = held.get_mut(&partition) {
            let rest = p.split_off(&next);
            drop(std::mem::replace(p, rest));
        }
    }

    /// Bytes reserved and not yet released (for tests and metrics).
    pub fn in_use(&self) -> usize {
        self.budget - self.room.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_comes_back_only_when_the_records_are_counted() {
        let h = Headroom::new(1000);
        let a = h.reserve(600, Duration::from_millis(10)).await.unwrap();
        assert!(h.reserve(600, Duration::from_millis(10)).await.is_err(), "over the budget");
        h.produced(0, 5, a);
        assert_eq!(h.in_use(), 600);
        h.counted(0, 5);
        assert_eq!(h.in_use(), 600, "offset 5 is not counted until the next offset passes it");
        h.counted(0, 6);
        assert_eq!(h.in_use(), 0);
        let b = h.reserve(600, Duration::from_millis(10)).await.unwrap();
        h.counted(1, 10);
        h.produced(1, 9, b);
        assert_eq!(h.in_use(), 0, "a delivery reported after its commit is released at once");
    }

    #[tokio::test]
    async fn a_failed_send_gives_its_room_back_and_a_waiter_gets_it() {
        let h = Headroom::new(1000);
        let a = h.reserve(900, Duration::from_millis(10)).await.unwrap();
        let h2 = h.clone();
        let waiter = tokio::spawn(async move { h2.reserve(900, Duration::from_secs(5)).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(a);
        assert!(waiter.await.unwrap());
        // A record larger than the budget takes all of it rather than never fitting.
        let h = Headroom::new(100);
        assert!(h.reserve(5000, Duration::from_millis(10)).await.is_ok());
    }
}
