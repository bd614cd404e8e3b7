//! `live-bench`: the live WebSocket path under load, against a running
//! `tokenusage serve` (projector + API) and its broker.
//!
//! 1. Opens `--sockets` authenticated sockets (tokens minted with the
//!    server's `TOKENUSAGE_JWT_SECRET`), each subscribed to a live view of
//!    one of `--users` users, and reports the server's RSS per socket
//!    (`/proc/<--server-pid>/status`).
//! 2. While `--rate` events/s flow through Kafka to those users (background
//!    producer), a probe publishes one event every 300 ms for a user of its
//!    own and times produce → delta on the probe's socket.
//! 3. Counts every message delivered to every socket during the load: the
//!    fan-out rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use sha2::Digest;
use tokenusage_contract::UsageEvent;
use tokenusage_ingest::synthetic::Synthetic;
use tokenusage_ingest::{ProducerArgs, Publisher};
use tokenusage_plumbing::KafkaArgs;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, Parser)]
#[command(name = "live-bench", about = "Live WebSocket fan-out, latency and memory")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    #[arg(long, env = "TOKENUSAGE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    #[arg(long, default_value_t = 10_000)]
    sockets: usize,
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Subscriptions per socket (1 to 3): today by hour; this month by day
    /// and model; the last hour by minute.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    subs_per_socket: u8,
    /// PID of the server, for its resident memory.
    #[arg(long)]
    server_pid: u32,
    /// Background events per second during the load phase.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Length of the load phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The probe producer's `linger.ms` (the background load keeps the
    /// default): how long it batches before sending, part of the latency.
    #[arg(long, default_value_t = ProducerArgs::default().linger_ms)]
    probe_linger_ms: u32,
    #[command(flatten)]
    kafka: KafkaArgs,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A token as the server issues them (HS256, `kid` = fingerprint of the secret).
fn token(secret: &str, user: &str) -> anyhow::Result<String> {
    let d = sha2::Sha256::digest([b"tokenusage-kid:".as_slice(), secret.as_bytes()].concat());
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(format!("tu-{}", hex::encode(&d[..8])));
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({"sub": user, "iss": "tokenusage", "aud": "tokenusage-api", "exp": now + 3600,
        "nbf": now - 1, "iat": now, "role": "viewer"});
    Ok(jsonwebtoken::encode(&h, &claims, &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))?)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The views a socket subscribes to.
fn views(n: u8) -> Vec<serde_json::Value> {
    let now = Utc::now();
    let all = [
        serde_json::json!({"from": now.format("%Y-%m-%d").to_string(), "granularity": "hour"}),
        serde_json::json!({"from": now.format("%Y-%m-01").to_string(), "granularity": "day", "group": "model"}),
        serde_json::json!({"from": (now - chrono::Duration::hours(1)).to_rfc3339(), "granularity": "minute"}),
    ];
    all.into_iter().take(n as usize).collect()
}

async fn open(addr: &str, token: &str, views: &[serde_json::Value]) -> anyhow::Result<Ws> {
    let mut req = format!("ws://{addr}/api/v1/live").into_client_request()?;
    req.headers_mut().insert("sec-websocket-protocol", format!("tokenusage.v1, bearer.{token}").parse()?);
    // Browsers disable Nagle on WebSockets; so does this client.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
    for (i, view) in views.iter().enumerate() {
        let sub = serde_json::json!({"type": "subscribe", "id": format!("v{i}"), "view": view});
        ws.send(Message::Text(sub.to_string().into())).await?;
    }
    // Wait for the snapshots.
    let mut snapshots = 0;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            if t.contains("\"type\":\"snapshot\"") {
                snapshots += 1;
                if snapshots == views.len() {
                    return Ok(ws);
                }
            }
            if t.contains("\"type\":\"error\"") {
                anyhow::bail!("subscription refused: {t}");
            }
        }
    }
    anyhow::bail!("closed before the snapshot")
}

/// One event of `user` now: one activity and model, so the benchmark's
/// views stay one series each.
fn event(user: String, rng: &mut impl Rng) -> UsageEvent {
    static ONE_SERIES: std::sync::LazyLock<Synthetic> =
        std::sync::LazyLock::new(|| Synthetic::with("live-bench", &["chat"], &["m"]));
    ONE_SERIES.event(rng, &user, Utc::now())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let pool = sqlx::PgPool::connect(&a.database_url).await?;
    sqlx::query(
        "insert into users (id, display_name, role) select 'lb-' || g, 'lb-' || g, 'viewer' \
         from generate_series(0, $1::int4 - 1) g on conflict do nothing",
    )
    .bind(a.users as i32)
    .execute(&pool)
    .await?;
    sqlx::query(
        "insert into users (id, display_name, role) values ('lb-probe', 'probe', 'viewer') on conflict do nothing",
    )
    .execute(&pool)
    .await?;
    let views = views(a.subs_per_socket);
    let probe_views = &views[..1];

    // 1. Sockets and memory.
    let before = rss_kib(a.server_pid);
    let started = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let opened: Vec<Ws> = futures::stream::iter(0..a.sockets)
        .map(|i| {
            let (addr, views, secret) = (a.addr.clone(), views.clone(), a.jwt_secret.clone());
            async move { open(&addr, &token(&secret, &format!("lb-{}", i % a.users))?, &views).await }
        })
        .buffer_unordered(100)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(a.server_pid);
    println!(
        "sockets: {} open, {} subscription(s) each, in {:.1} s; server RSS {} MiB -> {} MiB: {:.1} KiB per socket",
        opened.len(),
        views.len(),
        started.elapsed().as_secs_f64(),
        before / 1024,
        after / 1024,
        (after.saturating_sub(before)) as f64 / opened.len().max(1) as f64
    );
    for mut ws in opened {
        let d = delivered.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Text(_)) {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    // 2. Background load through Kafka.
    let publisher = Publisher::new(&a.kafka, &ProducerArgs::default())?;
    let load = {
        let (publisher, users, rate, secs) = (publisher.clone(), a.users, a.rate, a.seconds);
        tokio::spawn(async move {
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < Duration::from_secs(secs) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                let batch: Vec<UsageEvent> = {
                    let mut rng = rand::rng();
                    (sent..due).map(|i| event(format!("lb-{}", i as usize % users), &mut rng)).collect()
                };
                sent = due;
                futures::future::join_all(batch.iter().map(|e| publisher.publish(e, None))).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (sent, start.elapsed().as_secs_f64())
        })
    };
    // 3. Probe: produce -> delta latency, from a producer of its own.
    let probe_publisher =
        Publisher::new(&a.kafka, &ProducerArgs { linger_ms: a.probe_linger_ms, ..ProducerArgs::default() })?;
    let mut probe = open(&a.addr, &token(&a.jwt_secret, "lb-probe")?, probe_views).await?;
    // Warm-up: the first second of load (producer connections, metadata) is not timed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_start = delivered.load(Ordering::Relaxed);
    let load_started = Instant::now();
    let mut latencies = Vec::new();
    // Produce -> broker acknowledgement, the part of the latency before the projector.
    let mut acks = Vec::new();
    let mut missed = 0;
    while !load.is_finished() {
        // Slower than the server's 4 updates/s per subscription: a probe
        // inside the rate limit's window would time the coalescing, not the path.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = event("lb-probe".into(), &mut rand::rng());
        let t0 = Instant::now();
        probe_publisher.publish(&e, None).await.map_err(|e| anyhow::anyhow!("probe publish: {e:?}"))?;
        acks.push(t0.elapsed().as_secs_f64() * 1e3);
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(m)) = probe.next().await {
                if let Message::Text(t) = m
                    && t.contains("\"type\":\"delta\"")
                {
                    return true;
                }
            }
            false
        })
        .await;
        if matches!(got, Ok(true)) {
            latencies.push(t0.elapsed().as_secs_f64() * 1e3);
        } else {
            missed += 1;
        }
    }
    let secs = load_started.elapsed().as_secs_f64();
    let fanout = delivered.load(Ordering::Relaxed) - delivered_start;
    let (sent, load_secs) = load.await?;
    latencies.sort_by(f64::total_cmp);
    println!("load: {sent} background events in {load_secs:.1} s ({:.0}/s) through Kafka", sent as f64 / load_secs);
    println!(
        "produce -> push latency (probe, {} samples, {missed} without a delta within 5 s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    acks.sort_by(f64::total_cmp);
    println!("  of which produce -> broker ack: p50 {:.1} ms, p99 {:.1} ms", pct(&acks, 0.5), pct(&acks, 0.99));
    println!("fan-out: {fanout} messages delivered to {} sockets: {:.0} messages/s", a.sockets, fanout as f64 / secs);
    println!("server RSS at the end: {} MiB", rss_kib(a.server_pid) / 1024);
    Ok(())
}
