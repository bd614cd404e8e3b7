//! Claiming partitions: the rebalance callback (and fixed assignment)
//! claim each partition in PostgreSQL, which bumps its epoch and says where
//! to start; the shared [`Assignment`] tells the loop and the writers which
//! claims are ours.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokenusage_plumbing::failure;
use tokenusage_plumbing::health::Health;
use tokio_util::sync::CancellationToken;

use crate::consumer::ProjectorError;
use crate::store::{self, Claimant};

/// Partitions this process holds and the epoch of each claim. Touched by
/// the rebalance callback and the loop, both on the loop's task, so the
/// lock is never contended; it is never held across an await.
#[derive(Debug, Default)]
pub(crate) struct Assignment {
    pub(crate) epochs: BTreeMap<i32, i64>,
    pub(crate) revoked: Vec<i32>,
    pub(crate) gaps: crate::gapguard::GapGuard,
}

pub(crate) struct Ctx {
    pub(crate) pool: PgPool,
    pub(crate) who: Claimant,
    pub(crate) state: Arc<Mutex<Assignment>>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) shutdown: CancellationToken,
    pub(crate) health: Arc<Health>,
}

impl ClientContext for Ctx {
    /// librdkafka's periodic statistics: we keep only the consumer lag of
    /// each assigned partition (a bounded label set).
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(topic) = statistics.topics.get(&self.who.topic) {
            for (id, p) in &topic.partitions {
                if *id >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!("tokenusage_projector_lag_records", "partition" => id.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    /// Our own rebalance: on assignment, claim each partition in PostgreSQL
    /// and start it at the offset stored there, not at Kafka's committed
    /// offset. The claim is a short database round trip; it runs on this
    /// worker thread via `block_in_place`, since librdkafka expects the
    /// assignment to be settled before the callback returns.
    fn rebalance(&self, base: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let partitions: Vec<i32> = tpl.elements_for_topic(&self.who.topic).iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let claims = tokio::task::block_in_place(|| self.runtime.block_on(self.claim_all(&partitions)));
                for (p, (_, next)) in &claims {
                    let offset = next.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(&self.who.topic, *p, offset) {
                        tracing::error!(partition = p, error = %e, "cannot set the start offset");
                    }
                }
                {
                    let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    for (p, (epoch, next)) in &claims {
                        st.gaps.start(*p, *next);
                        st.epochs.insert(*p, *epoch);
                        st.revoked.retain(|r| r != p);
                    }
                }
                let r = if cooperative { base.incremental_assign(tpl) } else { base.assign(tpl) };
                if let Err(e) = r {
                    tracing::error!(error = %e, "assigning partitions failed");
                }
                tracing::info!(partitions = ?partitions, "partitions assigned and claimed");
            }
            _ => {
                let all = err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS || !cooperative;
                {
                    let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    let gone: Vec<i32> = if all { st.epochs.keys().copied().collect() } else { partitions.clone() };
                    for p in &gone {
                        st.epochs.remove(p);
                        st.gaps.forget(*p);
                    }
                    st.revoked.extend(gone);
                }
                let r = if all { base.unassign() } else { base.incremental_unassign(tpl) };
                if let Err(e) = r {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
                tracing::info!(partitions = ?partitions, reason = ?err, "partitions revoked");
            }
        }
    }
}

impl Ctx {
    /// Claims every partition, retrying while the database is unavailable
    /// (Kafka heartbeats continue on librdkafka's own thread meanwhile).
    pub(crate) async fn claim_all(&self, partitions: &[i32]) -> BTreeMap<i32, (i64, Option<i64>)> {
        let mut out = BTreeMap::new();
        for &p in partitions {
            let mut backoff = Duration::from_millis(100);
            loop {
                match store::claim(&self.pool, &self.who, p).await {
                    Ok(c) => {
                        out.insert(p, c);
                        break;
                    }
                    Err(e) => {
                        self.health.failed(&format!("cannot claim partition {p}: {}", failure::describe(&e)));
                        tracing::warn!(partition = p, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot claim partition; retrying");
                        if self.shutdown.is_cancelled() {
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        out
    }
}

/// Claims and assigns a fixed set of partitions, with no group membership.
pub(crate) async fn assign_manually(
    consumer: &StreamConsumer<Ctx>,
    topic: &str,
    spec: &str,
    state: &Mutex<Assignment>,
) -> Result<(), ProjectorError> {
    let partitions: Vec<i32> = if spec.trim() == "all" {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        md.topics().iter().filter(|t| t.name() == topic).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect()
    } else {
        spec.split(',')
            .map(|p| p.trim().parse::<i32>().map_err(|_| ProjectorError::BadPartitions(spec.to_owned())))
            .collect::<Result<_, _>>()?
    };
    if partitions.is_empty() {
        return Err(ProjectorError::BadPartitions(spec.to_owned()));
    }
    let claims = consumer.client().context().claim_all(&partitions).await;
    let mut tpl = TopicPartitionList::new();
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    for (p, (epoch, next)) in claims {
        st.gaps.start(p, next);
        tpl.add_partition_offset(topic, p, next.map_or(Offset::Beginning, Offset::Offset))?;
        st.epochs.insert(p, epoch);
    }
    drop(st);
    consumer.assign(&tpl)?;
    tracing::info!(?partitions, "partitions claimed and assigned manually");
    Ok(())
}
