//! `tokenusage-loadtest`: publishes N synthetic usage events at a target rate
//! and reports the rate actually achieved. Two scenarios:
//!
//! - `kafka`: straight to the topic with the same producer ingest uses
//!   (`acks=all`); an event counts once the broker acknowledged it.
//! - `http`: batches to `POST /api/v1/events` with an API key; an event
//!   counts once the server answered 202 for its batch.
//!
//! Every run is bounded by `--events` and `--max-seconds`, and targets only
//! the addresses it is given (loopback in our benchmarks).

use std::time::{Duration, Instant};

use chrono::Utc;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use rand::Rng;
use tokenusage_contract::UsageEvent;
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
    },
    /// Read the topic from the beginning and discard: the bare consume rate
    /// the projector is compared against.
    Consume {
        #[command(flatten)]
        kafka: KafkaArgs,
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
    },
}

const ACTIVITIES: [&str; 5] = ["chat", "embedding", "agent-run", "summarize", "classify"];
const MODELS: [&str; 6] =
    ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "claude-haiku-4", "llama-3.1-70b", "mistral-large"];

fn event(rng: &mut impl Rng, users: u32) -> UsageEvent {
    UsageEvent {
        source: "loadtest".into(),
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: format!("user-{}", rng.random_range(0..users.max(1))),
        occurred_at: Utc::now(),
        activity: ACTIVITIES[rng.random_range(0..ACTIVITIES.len())].into(),
        model: MODELS[rng.random_range(0..MODELS.len())].into(),
        input_tokens: rng.random_range(10..5000),
        output_tokens: rng.random_range(0..2000),
        metadata: None,
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
        Scenario::Kafka { kafka, producer } => {
            tokenusage_plumbing::topic::ensure_topic(&kafka).await?;
            let publisher = Publisher::new(&kafka, &producer)?;
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut sent = 0u64;
            while sent < cli.events && Instant::now() < deadline {
                pace(start, sent, cli.rate).await;
                let e = event(&mut rand::rng(), cli.users);
                let p = publisher.clone();
                inflight.push(async move { p.publish_patiently(&e, None, Duration::from_secs(30)).await });
                sent += 1;
                while inflight.len() >= 50_000 {
                    match inflight.next().await {
                        Some(Ok(_)) => acked += 1,
                        _ => failed += 1,
                    }
                }
            }
            while let Some(r) = inflight.next().await {
                if r.is_ok() { acked += 1 } else { failed += 1 }
            }
        }
        Scenario::Consume { kafka } => {
            use rdkafka::consumer::{Consumer, StreamConsumer};
            use rdkafka::{Offset, TopicPartitionList};
            let mut cfg = kafka.client_config();
            cfg.set("group.id", format!("bare-{}", uuid::Uuid::new_v4())).set("enable.auto.commit", "false");
            let consumer: StreamConsumer = cfg.create()?;
            let md = consumer.fetch_metadata(Some(&kafka.topic), Duration::from_secs(10))?;
            let mut tpl = TopicPartitionList::new();
            for t in md.topics().iter().filter(|t| t.name() == kafka.topic) {
                for p in t.partitions() {
                    tpl.add_partition_offset(&kafka.topic, p.id(), Offset::Beginning)?;
                }
            }
            consumer.assign(&tpl)?;
            let mut bytes = 0usize;
            while acked < cli.events && Instant::now() < deadline {
                match tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await {
                    Ok(Ok(m)) => {
                        use rdkafka::Message;
                        bytes += m.payload().map_or(0, <[u8]>::len);
                        acked += 1;
                    }
                    Ok(Err(_)) => failed += 1,
                    Err(_) => break,
                }
            }
            println!("bytes read:          {bytes}");
        }
        Scenario::Http { url, key, batch, concurrency } => {
            let client = reqwest::Client::new();
            let endpoint = format!("{}/api/v1/events", url.trim_end_matches('/'));
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut sent = 0u64;
            while sent < cli.events && Instant::now() < deadline {
                pace(start, sent, cli.rate).await;
                let n = batch.min((cli.events - sent) as usize);
                let body: Vec<serde_json::Value> = {
                    let mut rng = rand::rng();
                    (0..n)
                        .map(|_| {
                            let mut v = serde_json::to_value(event(&mut rng, cli.users)).unwrap_or_default();
                            if let Some(o) = v.as_object_mut() {
                                o.remove("source");
                                o.remove("metadata");
                            }
                            v
                        })
                        .collect()
                };
                let req = client.post(&endpoint).bearer_auth(&key).json(&body);
                inflight.push(async move {
                    let t = Instant::now();
                    let ok = matches!(req.send().await, Ok(r) if r.status().as_u16() == 202);
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
