//! The consume loop: join the group (claims in `claims`), read records
//! into per-lane batches, hand due batches to their writers (`writer`),
//! repeat; drain on shutdown.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use sqlx::PgPool;
use tokenusage_plumbing::KafkaArgs;
use tokenusage_plumbing::health::Health;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, Record};
use crate::claims::{Assignment, Ctx, assign_manually};
use crate::gapguard::Verdict;
use crate::store::Claimant;
use crate::writer::{InFlight, Writers, settle};

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
    /// ms. Apache Kafka answers as soon as records arrive, so this only
    /// paces idle fetches (its own default is 500). Brokers that hold every
    /// fetch for the full wait (Tansu, the embedded one) add up to about
    /// twice this to every event's way to the dashboard: the dev scripts
    /// lower it for those (docs/BENCHMARKS.md has latency and idle CPU).
    #[arg(long = "kafka-fetch-wait-ms", env = "TOKENUSAGE_KAFKA_FETCH_WAIT_MS", default_value_t = 500,
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
    /// How often the freshness probe asks the broker for every claimed
    /// partition's watermarks (ListOffsets), in ms; 0 turns it off, and live
    /// views then show no "complete through". Tansu 0.6.0 with its SQLite
    /// engine spins at 100 % CPU on ListOffsets after it was SIGKILLed under
    /// load (docs/RELIABILITY.md), so the chaos soak turns it off.
    #[arg(long = "freshness-probe-ms", env = "TOKENUSAGE_FRESHNESS_PROBE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub freshness_probe_ms: u64,
    /// Days raw events are kept (for `replay` and `verify`); rollups are
    /// kept forever. A duplicate arriving later than this is counted again.
    #[arg(long = "raw-retention-days", env = "TOKENUSAGE_RAW_RETENTION_DAYS", default_value_t = 400,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub raw_retention_days: u32,
    /// Set by `serve` for a broker that trims its log silently (the
    /// embedded one): every commit frees the room its records held, so the
    /// producers in the process never outrun counting (`plumbing::headroom`).
    #[arg(skip)]
    pub headroom: Option<Arc<tokenusage_plumbing::headroom::Headroom>>,
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
    crate::metrics::describe();
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
        // A reset to "latest" would jump over records still held: out of
        // range, we always go to the oldest record and let the gap guard
        // decide what is missing.
        &["group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset"],
    );
    let consumer: StreamConsumer<Ctx> = cfg.create_with_context(ctx)?;
    match &args.assign_partitions {
        None => consumer.subscribe(&[&kafka.topic])?,
        Some(spec) => assign_manually(&consumer, &who.topic, spec, &state).await?,
    }
    tracing::info!(topic = %kafka.topic, group = %args.group, owner = %who.owner, "projector started");

    let upkeep = tokio::spawn(crate::maintenance::run(pool.clone(), args.raw_retention_days, shutdown.child_token()));
    let watch = tokio::spawn(watch_health(health.clone(), shutdown.child_token()));
    let probe = tokio::spawn(crate::freshness::run(
        pool.clone(),
        kafka.clone(),
        args.group.clone(),
        Duration::from_millis(args.freshness_probe_ms),
        shutdown.child_token(),
    ));
    let max_wait = Duration::from_millis(args.batch_max_wait_ms);
    let linger = (args.batch_linger_ms > 0).then(|| Duration::from_millis(args.batch_linger_ms));
    let mut lanes: Vec<Lane> = (0..args.writers.max(1)).map(|_| Lane::default()).collect();
    let lane_count = lanes.len() as i32;
    // Signalled when a write finishes, so a batch held back only because its
    // writer was busy is handed over at once rather than with the next
    // fetched burst (Tansu answers fetches every few ms).
    let writer_done = Arc::new(tokio::sync::Notify::new());
    let writers = Writers {
        pool: pool.clone(),
        who: who.clone(),
        state: state.clone(),
        shutdown: shutdown.clone(),
        done: writer_done.clone(),
        health: health.clone(),
        headroom: args.headroom.clone(),
    };
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
                            // Recorded with the batch that passes over them
                            // (`lost_records`), so the loss stays on the
                            // record: metrics, /readyz, `verify`, the dashboard.
                            tracing::error!(partition = p, missing_from, missing_to = o - 1, "records are gone from Kafka before they were counted (retention, or a broker that trims its log); they are recorded as lost");
                            lane.batch.lost(p, missing_from, o);
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
                lane.in_flight = Some(writers.write(full));
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
        lane.in_flight = Some(writers.write(rest));
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
