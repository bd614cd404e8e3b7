//! Writing batches: each lane's batch is committed on a task of its own
//! (while the next one is read), transient failures are retried with
//! backoff and reported to the projector's health, fenced partitions are
//! dropped, and committed offsets are mirrored to Kafka for lag tooling.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokenusage_plumbing::failure::{self, Failure};
use tokenusage_plumbing::headroom::Headroom;
use tokenusage_plumbing::health::Health;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::claims::{Assignment, Ctx};
use crate::consumer::ProjectorError;
use crate::metrics::Tally;
use crate::store::{self, Claimant, Committed};

/// Records a committed batch: sizes, outcomes and commit latency. Lag per
/// partition comes from librdkafka's statistics (see `Ctx::stats`).
fn record_metrics(batch: &Batch, new_events: &Tally, duplicates: usize, took: Duration) {
    metrics::histogram!("tokenusage_projector_batch_records").record(batch.records as f64);
    metrics::histogram!("tokenusage_projector_commit_seconds").record(took.as_secs_f64());
    metrics::counter!("tokenusage_projector_records_total").increment(batch.records as u64);
    metrics::counter!("tokenusage_projector_events_counted_total").increment(new_events.events() as u64);
    new_events.record();
    metrics::counter!("tokenusage_projector_duplicates_skipped_total")
        .increment((duplicates + batch.in_batch_duplicates) as u64);
    metrics::counter!("tokenusage_projector_dead_letters_total").increment(batch.dead.len() as u64);
    metrics::counter!("tokenusage_projector_records_lost_total")
        .increment(batch.lost.iter().map(crate::batch::Lost::records).sum::<i64>() as u64);
}

/// How long a draining projector keeps retrying an unavailable database
/// before giving up (uncommitted work is simply re-read by the next owner).
const DRAIN_PATIENCE: Duration = Duration::from_secs(10);

/// Commits `batch`, retrying transient database errors; fenced partitions
/// are dropped from it. Returns the next offset of every partition it
/// committed, for mirroring to Kafka. Runs as its own task so the next batch
/// is read while this one is written (commits stay strictly sequential).
async fn flush(
    pool: PgPool,
    who: Claimant,
    state: Arc<Mutex<Assignment>>,
    mut batch: Batch,
    shutdown: CancellationToken,
    health: Arc<Health>,
) -> Result<BTreeMap<i32, i64>, ProjectorError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(50);
    while !batch.is_empty() && !batch.next_offsets.is_empty() {
        let epochs = state.lock().unwrap_or_else(PoisonError::into_inner).epochs.clone();
        match store::commit(&pool, &who, &epochs, &batch).await {
            Ok(Committed::Done { new_events, duplicates, isolated }) => {
                health.succeeded();
                record_metrics(&batch, &new_events, duplicates, started.elapsed());
                metrics::counter!("tokenusage_projector_dead_letters_total").increment(isolated.len() as u64);
                metrics::counter!("tokenusage_projector_refused_by_database_total").increment(isolated.len() as u64);
                for d in &isolated {
                    tracing::warn!(
                        partition = d.record.partition,
                        offset = d.record.offset,
                        error = %d.error,
                        "the database refused an event; it was sent to the dead-letter table"
                    );
                }
                tracing::debug!(
                    records = batch.records,
                    new_events = new_events.events(),
                    duplicates = duplicates + batch.in_batch_duplicates,
                    dead_letters = batch.dead.len(),
                    commit_ms = started.elapsed().as_millis() as u64,
                    "batch committed"
                );
                for d in &batch.dead {
                    tracing::warn!(
                        partition = d.record.partition,
                        offset = d.record.offset,
                        request_id = d.record.request_id().unwrap_or("-"),
                        error = %d.error,
                        "record sent to the dead-letter table"
                    );
                }
                if tracing::enabled!(tracing::Level::TRACE) {
                    for p in &batch.events {
                        tracing::trace!(
                            partition = p.partition,
                            offset = p.offset,
                            request_id = p.request_id.as_deref().unwrap_or("-"),
                            event_id = %p.event.event_id,
                            "event projected"
                        );
                    }
                }
                return Ok(batch.next_offsets);
            }
            Ok(Committed::Fenced(partitions)) => {
                tracing::warn!(
                    ?partitions,
                    "another claim superseded ours on these partitions; dropping their uncommitted records"
                );
                {
                    // Forget our claim only if it is still the one we used: a
                    // newer claim of our own (re-assignment) stays.
                    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
                    for p in &partitions {
                        if st.epochs.get(p) == epochs.get(p) {
                            st.epochs.remove(p);
                        }
                    }
                }
                batch.drop_partitions(&partitions);
            }
            Err(e) => {
                // Data errors were isolated by `commit`: what is left here
                // is transient (or not understood) and worth a retry.
                let kind = Failure::of(&e);
                metrics::counter!("tokenusage_projector_commit_failures_total", "kind" => kind.label()).increment(1);
                health.failed(&failure::describe(&e));
                if shutdown.is_cancelled() && started.elapsed() > DRAIN_PATIENCE {
                    return Err(e.into());
                }
                tracing::warn!(error = %failure::describe(&e), kind = kind.label(), retry_in_ms = backoff.as_millis() as u64, "committing the batch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    Ok(BTreeMap::new())
}

/// What every write of one consume loop shares.
#[derive(Clone)]
pub(crate) struct Writers {
    pub(crate) pool: PgPool,
    pub(crate) who: Claimant,
    pub(crate) state: Arc<Mutex<Assignment>>,
    pub(crate) shutdown: CancellationToken,
    /// Signalled when a write ends, so the reading loop can hand over the
    /// lane's next batch.
    pub(crate) done: Arc<tokio::sync::Notify>,
    pub(crate) health: Arc<Health>,
    /// Room in a broker that trims its log, freed by each commit.
    pub(crate) headroom: Option<Arc<Headroom>>,
}

impl Writers {
    /// Starts writing `batch` on a task of its own.
    pub(crate) fn write(&self, batch: Batch) -> InFlight {
        let w = self.clone();
        tokio::spawn(async move {
            let written = flush(w.pool, w.who, w.state, batch, w.shutdown, w.health).await;
            // The committed records' room goes back to the producers at once.
            if let (Some(h), Ok(offsets)) = (&w.headroom, &written) {
                for (p, next) in offsets {
                    h.counted(*p, *next);
                }
            }
            w.done.notify_one();
            written
        })
    }
}

pub(crate) type InFlight = tokio::task::JoinHandle<Result<BTreeMap<i32, i64>, ProjectorError>>;

/// Waits for the batch being written, then mirrors its offsets to Kafka
/// (best effort, so standard lag tooling sees progress; PostgreSQL stays the
/// source of truth on assignment).
pub(crate) async fn settle(
    in_flight: &mut Option<InFlight>,
    consumer: &StreamConsumer<Ctx>,
    topic: &str,
) -> Result<(), ProjectorError> {
    let Some(handle) = in_flight.take() else { return Ok(()) };
    let offsets = match handle.await {
        Ok(r) => r?,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, next) in offsets {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(next));
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(error = %e, "mirroring offsets to Kafka failed");
    }
    Ok(())
}
