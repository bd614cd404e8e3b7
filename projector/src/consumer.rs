//! The consume loop: join the group, claim partitions in PostgreSQL, batch,
//! commit, repeat; drain on shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;
use tokenusage_plumbing::KafkaArgs;
use tokenusage_plumbing::failure::{self, Failure};
use tokenusage_plumbing::health::Health;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Record};
use crate::gapguard::Verdict;
use crate::store::{self, Claimant, Committed};

/// Projector settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectorArgs {
    /// Kafka consumer group shared by all projector processes.
    #[arg(long = "consumer-group", env = "TOKENUSAGE_CONSUMER_GROUP", default_value = "tokenusage-projector")]
    pub group: String,
    /// Most records in one database transaction.
    #[arg(long = "batch-max-events", env = "TOKENUSAGE_BATCH_MAX_EVENTS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_max_events: u32,
    /// Longest a record waits in memory before its batch is committed, in ms.
    #[arg(long = "batch-max-wait-ms", env = "TOKENUSAGE_BATCH_MAX_WAIT_MS", default_value_t = 50)]
    pub batch_max_wait_ms: u64,
    /// With the database idle, a batch is committed once no record has
    /// arrived for this many ms (the end of a fetched burst) instead of
    /// waiting out `--batch-max-wait-ms`: low latency when load is light,
    /// big batches when it is not. 0 turns this off.
    #[arg(long = "batch-linger-ms", env = "TOKENUSAGE_BATCH_LINGER_MS", default_value_t = 1)]
    pub batch_linger_ms: u64,
    /// Longest the broker may hold a fetch when it has no new records, in
    /// ms. Brokers that do not answer early when records arrive (Tansu) add
    /// up to about twice this to every event's way to the dashboard; each
    /// idle fetch costs the broker a little CPU.
    #[arg(long = "kafka-fetch-wait-ms", env = "TOKENUSAGE_KAFKA_FETCH_WAIT_MS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub fetch_wait_ms: u32,
    /// Batches written at once, each on its own connection for its own
    /// partitions (partition mod writers). A record then waits for its own
    /// writer only. Keys are user ids, so writers touch different rows.
    #[arg(long = "projector-writers", env = "TOKENUSAGE_PROJECTOR_WRITERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub writers: u32,
    /// Kafka group session timeout in ms: how fast a dead projector's
    /// partitions move to a live one.
    #[arg(long = "kafka-session-timeout-ms", env = "TOKENUSAGE_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000)]
    pub session_timeout_ms: u32,
    /// Read these partitions (`all`, or a comma-separated list like `0,2`)
    /// without joining a consumer group. For fixed deployments (one process
    /// per partition set) and for brokers whose group coordinator does not
    /// evict crashed members. Each partition must be assigned to exactly one
    /// process; the epoch fence still stops two from committing.
    #[arg(long = "assign-partitions", env = "TOKENUSAGE_ASSIGN_PARTITIONS")]
    pub assign_partitions: Option<String>,
    /// Days raw events are kept (for `replay` and `verify`); rollups are
    /// kept forever. A duplicate arriving later than this is counted again.
    #[arg(long = "raw-retention-days", env = "TOKENUSAGE_RAW_RETENTION_DAYS", default_value_t = 400,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub raw_retention_days: u32,
}

/// Why the projector stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error("Kafka client error: {0}")]
    Kafka(#[from] KafkaError),
    #[error("--assign-partitions must be `all` or a comma-separated list of partition numbers, got {0:?}")]
    BadPartitions(String),
    #[error("the database stayed unavailable while draining: {0}")]
    Database(#[from] sqlx::Error),
}

/// Partitions this process holds and the epoch of each claim. Touched by
/// the rebalance callback and the loop, both on the loop's task, so the
/// lock is never contended; it is never held across an await.
#[derive(Debug, Default)]
struct Assignment {
    epochs: BTreeMap<i32, i64>,
    revoked: Vec<i32>,
    gaps: crate::gapguard::GapGuard,
}

struct Ctx {
    pool: PgPool,
    who: Claimant,
    state: Arc<Mutex<Assignment>>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    health: Arc<Health>,
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
    async fn claim_all(&self, partitions: &[i32]) -> BTreeMap<i32, (i64, Option<i64>)> {
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

/// Runs the projector until `shutdown` fires, then commits the batch in
/// flight and leaves the group. `health` says whether commits are getting
/// through (for `/readyz`): running while this runs, stalled while commits
/// keep failing.
pub async fn run(
    args: &ProjectorArgs,
    kafka: &KafkaArgs,
    pool: PgPool,
    shutdown: CancellationToken,
    health: Arc<Health>,
) -> Result<(), ProjectorError> {
    health.set_running(true);
    let result = consume(args, kafka, pool, shutdown, health.clone()).await;
    health.set_running(false);
    result
}

async fn consume(
    args: &ProjectorArgs,
    kafka: &KafkaArgs,
    pool: PgPool,
    shutdown: CancellationToken,
    health: Arc<Health>,
) -> Result<(), ProjectorError> {
    tokenusage_plumbing::topic::ensure_topic(kafka).await?;
    let who = Claimant {
        group: args.group.clone(),
        topic: kafka.topic.clone(),
        owner: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
    };
    let state = Arc::new(Mutex::new(Assignment::default()));
    let ctx = Ctx {
        pool: pool.clone(),
        who: who.clone(),
        state: state.clone(),
        runtime: tokio::runtime::Handle::current(),
        shutdown: shutdown.clone(),
        health: health.clone(),
    };
    // Offsets live in PostgreSQL: Kafka must never commit or store them on
    // its own, whatever the pass-through options say.
    let cfg = kafka.client_config_for(
        &[
            ("group.id", args.group.clone()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("session.timeout.ms", args.session_timeout_ms.to_string()),
            ("heartbeat.interval.ms", (args.session_timeout_ms / 4).max(100).to_string()),
            ("statistics.interval.ms", "5000".into()),
            // librdkafka lets the broker hold a fetch for 500 ms when data is
            // scarce; live views want new events within milliseconds.
            ("fetch.wait.max.ms", args.fetch_wait_ms.to_string()),
        ],
        &["group.id", "enable.auto.commit", "enable.auto.offset.store"],
    );
    let consumer: StreamConsumer<Ctx> = cfg.create_with_context(ctx)?;
    match &args.assign_partitions {
        None => consumer.subscribe(&[&kafka.topic])?,
        Some(spec) => assign_manually(&consumer, &who.topic, spec, &state).await?,
    }
    tracing::info!(topic = %kafka.topic, group = %args.group, owner = %who.owner, "projector started");

    let upkeep = tokio::spawn(crate::maintenance::run(pool.clone(), args.raw_retention_days, shutdown.child_token()));
    let watch = tokio::spawn(watch_health(health.clone(), shutdown.child_token()));
    let probe =
        tokio::spawn(crate::freshness::run(pool.clone(), kafka.clone(), args.group.clone(), shutdown.child_token()));
    let max_wait = Duration::from_millis(args.batch_max_wait_ms);
    let linger = (args.batch_linger_ms > 0).then(|| Duration::from_millis(args.batch_linger_ms));
    let mut lanes: Vec<Lane> = (0..args.writers.max(1)).map(|_| Lane::default()).collect();
    let lane_count = lanes.len() as i32;
    // Signalled when a write finishes, so a batch held back only because its
    // writer was busy is handed over at once rather than with the next
    // fetched burst (Tansu answers fetches every few ms).
    let writer_done = Arc::new(tokio::sync::Notify::new());
    loop {
        // Past a deadline (writer still busy), poll briefly rather than spin.
        let mut wait = lanes
            .iter()
            .filter_map(|l| l.deadline)
            .min()
            .map_or(Duration::from_millis(500), |d| d.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(2));
        // A pending batch and an idle writer: wait only for the burst to end.
        let lingering = match linger {
            Some(l) if lanes.iter().any(|lane| lane.writer_idle() && !lane.batch.is_empty()) && l < wait => {
                wait = l;
                true
            }
            _ => false,
        };
        let mut quiet = false;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = writer_done.notified() => quiet = linger.is_some(),
            r = tokio::time::timeout(wait, consumer.recv()) => match r {
                Ok(Ok(msg)) => {
                    drop_revoked(&state, &mut lanes);
                    let (p, o) = (msg.partition(), msg.offset());
                    let lane = &mut lanes[p.rem_euclid(lane_count) as usize];
                    let verdict = state.lock().unwrap_or_else(PoisonError::into_inner).gaps.check(p, o);
                    match verdict {
                        Verdict::Accept => {
                            // Producer's timestamp to here: broker and fetch delay.
                            if let Some(ts) = msg.timestamp().to_millis() {
                                let ms = (Utc::now().timestamp_millis() - ts).max(0);
                                metrics::histogram!("tokenusage_projector_fetch_delay_seconds").record(ms as f64 / 1e3);
                            }
                            lane.batch.push(to_record(&msg), Utc::now());
                        }
                        Verdict::Skip => {}
                        Verdict::Rewind(from) => {
                            tracing::warn!(partition = p, offset = o, rewind_to = from, "records arrived past the expected offset; rewinding the partition");
                            if let Err(e) = consumer.seek(&who.topic, p, Offset::Offset(from), Duration::from_secs(5)) {
                                tracing::error!(partition = p, error = %e, "cannot rewind the partition");
                            }
                        }
                        Verdict::AcceptGap { missing_from } => {
                            tracing::error!(partition = p, missing_from, missing_to = o - 1, "records are missing from Kafka (expired?); they cannot be counted");
                            lane.batch.push(to_record(&msg), Utc::now());
                        }
                    }
                    if !lane.batch.is_empty() {
                        lane.deadline.get_or_insert_with(|| Instant::now() + max_wait);
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "Kafka reported an error; continuing"),
                Err(_) => quiet = lingering,
            }
        }
        drop_revoked(&state, &mut lanes);
        let now = Instant::now();
        for lane in &mut lanes {
            let due = quiet || lane.deadline.is_some_and(|d| now >= d);
            // Adaptive batching: a due batch is handed over as soon as the
            // lane's previous write finished; while it is still being
            // written, reading goes on and the next batch grows (up to the
            // count limit), so batch size follows database latency under
            // load and stays small when idle.
            if lane.batch.records >= args.batch_max_events as usize
                || (due && !lane.batch.is_empty() && lane.writer_idle())
            {
                settle(&mut lane.in_flight, &consumer, &who.topic).await?;
                if let Some(d) = lane.deadline {
                    // From the batch's first record to its hand-over.
                    let filled = (Instant::now() + max_wait).saturating_duration_since(d);
                    metrics::histogram!("tokenusage_projector_batch_fill_seconds").record(filled.as_secs_f64());
                }
                let full = std::mem::take(&mut lane.batch);
                lane.in_flight = Some(write(&pool, &who, &state, full, &shutdown, &writer_done, &health));
                lane.deadline = None;
            } else if lane.batch.is_empty() {
                lane.deadline = None;
            }
        }
    }
    drop_revoked(&state, &mut lanes);
    for lane in &mut lanes {
        settle(&mut lane.in_flight, &consumer, &who.topic).await?;
        let rest = std::mem::take(&mut lane.batch);
        lane.in_flight = Some(write(&pool, &who, &state, rest, &shutdown, &writer_done, &health));
    }
    for lane in &mut lanes {
        settle(&mut lane.in_flight, &consumer, &who.topic).await?;
    }
    if args.assign_partitions.is_none() {
        consumer.unsubscribe();
    }
    let _ = upkeep.await;
    let _ = probe.await;
    let _ = watch.await;
    tracing::info!("projector drained and stopped");
    Ok(())
}

/// How long commits may keep failing before the projector counts as
/// stalled (`/readyz` 503, `tokenusage_projector_stalled` 1). Longer than a
/// PostgreSQL restart, shorter than anyone would wait for their numbers.
pub const STALL_PATIENCE: Duration = Duration::from_secs(15);

/// Keeps the `tokenusage_projector_stalled` gauge current even where nobody
/// asks `/readyz` (a standalone projector).
async fn watch_health(health: Arc<Health>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let tokenusage_plumbing::health::Verdict::Stalled { for_secs, error } = health.verdict(STALL_PATIENCE) {
                    tracing::error!(for_secs, error = %error, "the projector cannot commit; events are not being counted");
                }
            }
        }
    }
}

/// Claims and assigns a fixed set of partitions, with no group membership.
async fn assign_manually(
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

fn drop_revoked(state: &Mutex<Assignment>, lanes: &mut [Lane]) {
    let revoked = std::mem::take(&mut state.lock().unwrap_or_else(PoisonError::into_inner).revoked);
    for lane in lanes {
        lane.batch.drop_partitions(&revoked);
    }
}

/// One writer: the batch it is filling, its write in flight, and when the
/// batch is due. Each partition always goes to the same lane, so a
/// partition's commits stay in order.
#[derive(Default)]
struct Lane {
    batch: Batch,
    in_flight: Option<InFlight>,
    deadline: Option<Instant>,
}

impl Lane {
    fn writer_idle(&self) -> bool {
        self.in_flight.as_ref().is_none_or(tokio::task::JoinHandle::is_finished)
    }
}

fn to_record(msg: &impl Message) -> Record {
    let headers = msg
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
        .unwrap_or_default();
    Record {
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key().map(<[u8]>::to_vec),
        payload: msg.payload().map(<[u8]>::to_vec),
        headers,
    }
}

/// Records a committed batch: sizes, outcomes and commit latency. Lag per
/// partition comes from librdkafka's statistics (see `Ctx::stats`).
fn record_metrics(batch: &Batch, new_events: usize, duplicates: usize, took: Duration) {
    metrics::histogram!("tokenusage_projector_batch_records").record(batch.records as f64);
    metrics::histogram!("tokenusage_projector_commit_seconds").record(took.as_secs_f64());
    metrics::counter!("tokenusage_projector_records_total").increment(batch.records as u64);
    metrics::counter!("tokenusage_projector_events_counted_total").increment(new_events as u64);
    metrics::counter!("tokenusage_projector_duplicates_skipped_total")
        .increment((duplicates + batch.in_batch_duplicates) as u64);
    metrics::counter!("tokenusage_projector_dead_letters_total").increment(batch.dead.len() as u64);
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
                record_metrics(&batch, new_events, duplicates, started.elapsed());
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
                    new_events,
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

/// Starts writing `batch` on a task of its own; `done` is signalled when
/// the write ends, so the reading loop can hand over the lane's next batch.
fn write(
    pool: &PgPool,
    who: &Claimant,
    state: &Arc<Mutex<Assignment>>,
    batch: Batch,
    shutdown: &CancellationToken,
    done: &Arc<tokio::sync::Notify>,
    health: &Arc<Health>,
) -> InFlight {
    let (pool, who, state, shutdown, done) = (pool.clone(), who.clone(), state.clone(), shutdown.clone(), done.clone());
    let health = health.clone();
    tokio::spawn(async move {
        let written = flush(pool, who, state, batch, shutdown, health).await;
        done.notify_one();
        written
    })
}

type InFlight = tokio::task::JoinHandle<Result<BTreeMap<i32, i64>, ProjectorError>>;

/// Waits for the batch being written, then mirrors its offsets to Kafka
/// (best effort, so standard lag tooling sees progress; PostgreSQL stays the
/// source of truth on assignment).
async fn settle(
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
