//! `tokenusage-loadtest`: publishes N synthetic usage events at a target rate
//! and reports the rate actually achieved. Two scenarios:
//!
//! - `kafka`: straight to the topic with the same producer ingest uses
//!   (`acks=all`); an event counts once the broker acknowledged it.
//! - `http`: batches to `POST /api/v1/events` with an API key; an event
//!   counts once the server answered 202 for its batch. With `--otlp`, the
//!   batches are OTLP exports of GenAI spans to `POST /v1/traces`.
//!
//! Every run is bounded by `--events` and `--max-seconds`, and targets only
//! the addresses it is given (loopback in our benchmarks).

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use rand::Rng;
use tokenusage_contract::UsageEvent;
use tokenusage_ingest::synthetic::Synthetic;
use tokenusage_ingest::{ProducerArgs, Publisher};
use tokenusage_plumbing::KafkaArgs;

#[derive(Debug, Parser)]
#[command(name = "tokenusage-loadtest", about = "Publish N events at a target rate and report the achieved rate")]
struct Cli {
    /// How many events to send.
    #[arg(long, default_value_t = 100_000, global = true)]
    events: u64,
    /// Target events per second (0: as fast as possible).
    #[arg(long, default_value_t = 0, global = true)]
    rate: u64,
    /// Distinct users the events are spread over.
    #[arg(long, default_value_t = 100, global = true)]
    users: u32,
    /// Give events one of 4 projects (more rollup rows per user and minute);
    /// off: the data set of the benchmarks before projects existed.
    #[arg(long, global = true)]
    projects: bool,
    /// Date the events this many days back (a backfill: every user's rows
    /// are below their day-row seal), instead of now.
    #[arg(long, default_value_t = 0, global = true)]
    days_ago: u32,
    /// Stop after this long even if not all events were sent.
    #[arg(long, default_value_t = 300, global = true)]
    max_seconds: u64,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Produce straight to Kafka.
    Kafka {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        producer: ProducerArgs,
        /// Fraction of sends that repeat an event sent before (same id and
        /// contents), as a retrying publisher would; 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        duplicate_ratio: f64,
        /// Keep re-sending an event the broker did not acknowledge (with
        /// backoff, until `--max-seconds`), as a real publisher must.
        #[arg(long)]
        retry_until_acked: bool,
        /// Append `event_id,input_tokens,output_tokens` of every event, on
        /// its first acknowledgement, to this file (for loss checks).
        #[arg(long)]
        acked_ids: Option<std::path::PathBuf>,
    },
    /// Read the topic from the beginning and discard: the bare consume rate
    /// the projector is compared against. By default a real bare consumer:
    /// librdkafka's own fetch queue polled in a tight loop on a thread of
    /// its own, no per-record work, with the projector's fetch settings.
    Consume {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// The old loop instead (an async stream, one record at a time, a
        /// timer per record): how earlier rows in docs/BENCHMARKS.md were
        /// measured.
        #[arg(long)]
        stream: bool,
        /// Also commit offsets to Kafka every 1000 records, as the
        /// projector's best-effort mirror does.
        #[arg(long)]
        commit: bool,
        /// Also ask for every partition's watermarks once a second, as the
        /// projector's freshness probe does.
        #[arg(long)]
        watermarks: bool,
    },
    /// POST batches to HTTP ingest.
    Http {
        /// Base URL of the server.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Publisher API key (`tokenusage keys create`).
        #[arg(long, env = "TOKENUSAGE_LOADTEST_KEY", hide_env_values = true)]
        key: String,
        /// Events per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Send each batch as OpenTelemetry GenAI spans to `POST
        /// /v1/traces` (OTLP/HTTP protobuf) instead: an event counts once
        /// the server answered 200 with nothing rejected.
        #[arg(long)]
        otlp: bool,
        /// With `--otlp`: gzip each export, as the SDKs' exporters do when
        /// asked.
        #[arg(long, requires = "otlp")]
        gzip: bool,
    },
}

/// `events` as one OTLP export of GenAI spans (protobuf), one span each.
fn otlp_export(rng: &mut impl Rng, events: &[UsageEvent], gzip: bool) -> Vec<u8> {
    use prost::Message;
    use tokenusage_ingest::otlp::proto::{self, KeyValue};
    let spans = events
        .iter()
        .map(|e| {
            let end = e.occurred_at.timestamp_nanos_opt().unwrap_or_default() as u64;
            let mut attributes = vec![
                KeyValue::string("gen_ai.operation.name", &e.activity),
                KeyValue::string("gen_ai.request.model", &e.model),
                KeyValue::string("user.id", &e.user_id),
                KeyValue::int("gen_ai.usage.input_tokens", e.input_tokens as i64),
                KeyValue::int("gen_ai.usage.output_tokens", e.output_tokens as i64),
            ];
            if let Some(p) = &e.project {
                attributes.push(KeyValue::string("project.id", p));
            }
            proto::Span {
                trace_id: rng.random::<[u8; 16]>().to_vec(),
                span_id: rng.random::<[u8; 8]>().to_vec(),
                name: format!("{} {}", e.activity, e.model),
                start_time_unix_nano: end.saturating_sub(250_000_000),
                end_time_unix_nano: end,
                attributes,
            }
        })
        .collect();
    let export = proto::ExportTraceServiceRequest {
        resource_spans: vec![proto::ResourceSpans {
            resource: Some(proto::Resource { attributes: vec![KeyValue::string("service.name", "loadtest")] }),
            scope_spans: vec![proto::ScopeSpans { scope: None, spans }],
        }],
    };
    let bytes = export.encode_to_vec();
    if !gzip {
        return bytes;
    }
    use std::io::Write;
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&bytes).expect("in memory");
    z.finish().expect("in memory")
}

/// A synthetic event of one of `users` users, now (or `days_ago` back).
fn event(rng: &mut impl Rng, users: u32, projects: bool, days_ago: u32) -> UsageEvent {
    let user = format!("user-{}", rng.random_range(0..users.max(1)));
    let mut e = GENERATOR.event(rng, &user, Utc::now() - chrono::TimeDelta::days(i64::from(days_ago)));
    if !projects {
        e.project = None;
    }
    e
}

static GENERATOR: std::sync::LazyLock<Synthetic> = std::sync::LazyLock::new(|| Synthetic::new("loadtest"));

/// Publishes `e`; with `retry`, re-sends it after each failure (backoff up
/// to a second) until it is acknowledged or `deadline` passes.
async fn send(
    p: &Publisher,
    e: &UsageEvent,
    retry: bool,
    deadline: Instant,
) -> Result<(i32, i64), tokenusage_ingest::PublishError> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match p.publish_patiently(e, None, Duration::from_secs(30)).await {
            Err(_) if retry && Instant::now() + backoff < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// What was acknowledged: unique events (written to the ids file on their
/// first acknowledgement) and duplicates.
struct Ledger {
    seen: std::collections::HashSet<String>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    duplicates: u64,
    input: u64,
    output: u64,
}

impl Ledger {
    fn open(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let file = path.map(std::fs::File::create).transpose()?.map(std::io::BufWriter::new);
        Ok(Self { seen: std::collections::HashSet::new(), file, duplicates: 0, input: 0, output: 0 })
    }

    fn note(&mut self, e: &UsageEvent, ok: bool, acked: &mut u64, failed: &mut u64) -> anyhow::Result<()> {
        use std::io::Write;
        if !ok {
            *failed += 1;
            return Ok(());
        }
        *acked += 1;
        if self.seen.insert(e.event_id.clone()) {
            self.input += e.input_tokens;
            self.output += e.output_tokens;
            if let Some(f) = &mut self.file {
                writeln!(f, "{},{},{}", e.event_id, e.input_tokens, e.output_tokens)?;
            }
        } else {
            self.duplicates += 1;
        }
        Ok(())
    }

    fn report(&mut self) {
        use std::io::Write;
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
        println!("unique events acked: {}", self.seen.len());
        println!("duplicates acked:    {}", self.duplicates);
        println!("unique tokens acked: input {} output {}", self.input, self.output);
    }
}

/// Waits until `sent` events are due at `rate` per second since `start`.
async fn pace(start: Instant, sent: u64, rate: u64) {
    if rate > 0 {
        let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let deadline = Instant::now() + Duration::from_secs(cli.max_seconds);
    let start = Instant::now();
    let (mut acked, mut failed) = (0u64, 0u64);
    let mut latencies: Vec<Duration> = Vec::new();
    match cli.scenario {
        Scenario::Kafka { kafka, producer, duplicate_ratio, retry_until_acked, acked_ids } => {
            tokenusage_plumbing::topic::ensure_topic(&kafka).await?;
            let publisher = Publisher::new(&kafka, &producer)?;
            let mut ledger = Ledger::open(acked_ids.as_deref())?;
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut sent = 0u64;
            // Events sent so far, for duplicates (bounded).
            let mut history: Vec<std::sync::Arc<UsageEvent>> = Vec::new();
            while sent < cli.events && Instant::now() < deadline {
                pace(start, sent, cli.rate).await;
                let e = {
                    let mut rng = rand::rng();
                    if !history.is_empty() && rng.random_bool(duplicate_ratio.clamp(0.0, 1.0)) {
                        history[rng.random_range(0..history.len())].clone()
                    } else {
                        let e = std::sync::Arc::new(event(&mut rng, cli.users, cli.projects, cli.days_ago));
                        if history.len() < 200_000 {
                            history.push(e.clone());
                        } else {
                            let i = rng.random_range(0..history.len());
                            history[i] = e.clone();
                        }
                        e
                    }
                };
                let p = publisher.clone();
                inflight.push(async move {
                    let r = send(&p, &e, retry_until_acked, deadline).await;
                    (e, r)
                });
                sent += 1;
                while inflight.len() >= 50_000 {
                    if let Some((e, r)) = inflight.next().await {
                        ledger.note(&e, r.is_ok(), &mut acked, &mut failed)?;
                    }
                }
            }
            while let Some((e, r)) = inflight.next().await {
                ledger.note(&e, r.is_ok(), &mut acked, &mut failed)?;
            }
            ledger.report();
        }
        Scenario::Consume { kafka, stream: false, commit, watermarks } => {
            if commit || watermarks {
                anyhow::bail!("--commit and --watermarks go with --stream");
            }
            let (n, bytes) = bare_consume(&kafka, cli.events, deadline)?;
            acked = n;
            println!("bytes read:          {bytes}");
        }
        Scenario::Consume { kafka, stream: true, commit, watermarks } => {
            use rdkafka::consumer::{Consumer, StreamConsumer};
            let mut cfg = kafka.client_config();
            cfg.set("group.id", format!("bare-{}", uuid::Uuid::new_v4())).set("enable.auto.commit", "false");
            let consumer: StreamConsumer = cfg.create()?;
            let tpl = assign_from_beginning(&consumer, &kafka.topic)?;
            let mut bytes = 0usize;
            let mut last_marks = Instant::now();
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            while acked < cli.events && Instant::now() < deadline {
                if watermarks && last_marks.elapsed() >= Duration::from_secs(1) {
                    last_marks = Instant::now();
                    for p in &partitions {
                        let _ = consumer.fetch_watermarks(&kafka.topic, *p, Duration::from_secs(2));
                    }
                }
                match tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await {
                    Ok(Ok(m)) => {
                        use rdkafka::Message;
                        bytes += m.payload().map_or(0, <[u8]>::len);
                        acked += 1;
                        if commit && acked % 1000 == 0 {
                            let _ = consumer.commit_message(&m, rdkafka::consumer::CommitMode::Async);
                        }
                    }
                    Ok(Err(_)) => failed += 1,
                    Err(_) => break,
                }
            }
            println!("bytes read:          {bytes}");
        }
        Scenario::Http { url, key, batch, concurrency, otlp, gzip } => {
            let client = reqwest::Client::new();
            let path = if otlp { "/v1/traces" } else { "/api/v1/events" };
            let endpoint = format!("{}{path}", url.trim_end_matches('/'));
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut sent = 0u64;
            while sent < cli.events && Instant::now() < deadline {
                pace(start, sent, cli.rate).await;
                let n = batch.min((cli.events - sent) as usize);
                let req = {
                    let mut rng = rand::rng();
                    let events: Vec<UsageEvent> =
                        (0..n).map(|_| event(&mut rng, cli.users, cli.projects, cli.days_ago)).collect();
                    if otlp {
                        let mut r = client
                            .post(&endpoint)
                            .bearer_auth(&key)
                            .header("content-type", "application/x-protobuf")
                            .body(otlp_export(&mut rng, &events, gzip));
                        if gzip {
                            r = r.header("content-encoding", "gzip");
                        }
                        r
                    } else {
                        let body: Vec<serde_json::Value> = events
                            .into_iter()
                            .map(|e| {
                                let mut v = serde_json::to_value(e).unwrap_or_default();
                                if let Some(o) = v.as_object_mut() {
                                    o.remove("source");
                                    o.remove("metadata");
                                }
                                v
                            })
                            .collect();
                        client.post(&endpoint).bearer_auth(&key).json(&body)
                    }
                };
                inflight.push(async move {
                    let t = Instant::now();
                    // OTLP: 200 with an empty answer (a partial success
                    // would name rejected spans).
                    let ok = match req.send().await {
                        Ok(r) if otlp => r.status().as_u16() == 200 && r.bytes().await.is_ok_and(|b| b.is_empty()),
                        Ok(r) => r.status().as_u16() == 202,
                        Err(_) => false,
                    };
                    (n as u64, ok, t.elapsed())
                });
                sent += n as u64;
                while inflight.len() >= concurrency {
                    if let Some((n, ok, lat)) = inflight.next().await {
                        latencies.push(lat);
                        if ok { acked += n } else { failed += n }
                    }
                }
            }
            while let Some((n, ok, lat)) = inflight.next().await {
                latencies.push(lat);
                if ok { acked += n } else { failed += n }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    println!("events acknowledged: {acked} (consumed, for `consume`)");
    println!("events failed:       {failed}");
    println!("elapsed:             {secs:.2} s");
    println!(
        "achieved rate:       {:.0} events/s (target: {})",
        acked as f64 / secs,
        if cli.rate == 0 { "max".to_owned() } else { cli.rate.to_string() }
    );
    if !latencies.is_empty() {
        println!(
            "request latency:     p50 {:.1} ms, p99 {:.1} ms ({} requests)",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.len()
        );
    }
    anyhow::ensure!(failed == 0, "{failed} events were not acknowledged");
    Ok(())
}

/// The bare consumer the projector is measured against: every partition
/// assigned from the beginning, librdkafka's fetch queue polled in a tight
/// loop on this thread (no async runtime, no timer, no copy per record),
/// with the projector's own fetch settings. Returns records and payload
/// bytes read.
fn bare_consume(kafka: &KafkaArgs, events: u64, deadline: Instant) -> anyhow::Result<(u64, usize)> {
    use rdkafka::consumer::BaseConsumer;
    let fetch_wait = std::env::var("TOKENUSAGE_KAFKA_FETCH_WAIT_MS").unwrap_or_else(|_| "20".into());
    let mut cfg = kafka.client_config_for(
        &[
            ("group.id", format!("bare-{}", uuid::Uuid::new_v4())),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("fetch.wait.max.ms", fetch_wait),
        ],
        &[],
    );
    cfg.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create()?;
    assign_from_beginning(&consumer, &kafka.topic)?;
    let (mut n, mut bytes, mut idle) = (0u64, 0usize, Instant::now());
    while n < events && Instant::now() < deadline && idle.elapsed() < Duration::from_secs(10) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload_len();
                idle = Instant::now();
            }
            Some(Err(e)) => anyhow::bail!("consume failed: {e}"),
            None => {}
        }
    }
    Ok((n, bytes))
}

/// Assigns every partition of `topic` to `consumer` from its oldest record
/// (both bare consumers read the whole topic).
fn assign_from_beginning<C: rdkafka::consumer::Consumer<Ctx>, Ctx: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> anyhow::Result<rdkafka::TopicPartitionList> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(tpl)
}
