//! `tokenusage publish`: send events from a file or stdin straight to Kafka.
//!
//! Policy for bad lines (documented in docs/EVENTS.md): by default every
//! invalid line is reported with its line number, field and reason, the valid
//! lines are published, and the command exits non-zero. With
//! `--all-or-nothing` the whole input is validated first and nothing is
//! published unless every line is valid. Nothing is ever dropped silently.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokenusage_contract::UsageEvent;
use tokio::sync::mpsc;

use crate::Publisher;
use crate::input::{Format, Record, read_all};

/// Arguments of `tokenusage publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// File to read, or `-` for standard input.
    #[arg(default_value = "-")]
    pub input: PathBuf,
    /// Input format; guessed from the file extension (.csv, .ndjson, .jsonl)
    /// and otherwise NDJSON.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The `source` for events that do not name one. Re-publishing the same
    /// event ids from the same source is a no-op downstream.
    #[arg(long, env = "TOKENUSAGE_PUBLISH_SOURCE", default_value = "cli")]
    pub source: String,
    /// Validate the whole input first and publish nothing unless every line
    /// is valid (the input is held in memory, up to --max-events).
    #[arg(long)]
    pub all_or_nothing: bool,
    /// Refuse inputs with more events than this (bounds memory for
    /// --all-or-nothing and the duplicate check).
    #[arg(long, default_value_t = 5_000_000)]
    pub max_events: u64,
    /// Most events awaiting acknowledgement at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Publish over HTTP ingest at this base URL (e.g. http://127.0.0.1:8080)
    /// instead of straight to Kafka. Needs --key.
    #[arg(long, requires = "key")]
    pub http: Option<String>,
    /// Publisher API key for --http.
    #[arg(long, env = "TOKENUSAGE_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Events per HTTP request with --http.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub http_batch: u32,
}

/// What happened to the input, printed at the end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events acknowledged by Kafka.
    pub accepted: u64,
    /// Lines refused by validation (each was reported).
    pub rejected: u64,
    /// Lines repeating an earlier line's (source, event_id): published once.
    pub duplicates: u64,
    /// Valid events Kafka did not acknowledge (each was reported).
    pub failed: u64,
}

impl Summary {
    pub fn is_clean(&self) -> bool {
        self.rejected == 0 && self.failed == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} accepted, {} rejected, {} duplicates in input, {} failed to publish",
            self.accepted, self.rejected, self.duplicates, self.failed
        )
    }
}

/// Errors that stop `publish` before it can finish.
#[derive(Debug, thiserror::Error)]
pub enum PublishRunError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("input has more than {0} events; split it or raise --max-events")]
    TooLarge(u64),
}

/// Runs `publish`. Rejections and failures go to `report` (stderr in the
/// CLI) as they happen; the summary is returned.
pub async fn run(
    args: &PublishArgs,
    sink: &Sink,
    report: impl Fn(String) + Send + Sync,
) -> Result<Summary, PublishRunError> {
    let path = args.input.to_string_lossy().into_owned();
    let format = args.format.or_else(|| Format::from_path(&path)).unwrap_or(Format::Ndjson);
    let reader: Box<dyn BufRead + Send> = if path == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        let file =
            std::fs::File::open(&args.input).map_err(|source| PublishRunError::Read { path: path.clone(), source })?;
        Box::new(BufReader::with_capacity(256 * 1024, file))
    };

    // Reading is blocking I/O: a thread reads and validates, a bounded
    // channel carries records to the async publishing loop.
    let (tx, mut rx) = mpsc::channel::<Record>(4096);
    let source = args.source.clone();
    let reader_task = tokio::task::spawn_blocking(move || {
        read_all(reader, format, &source, Utc::now(), |r| {
            let _ = tx.blocking_send(r);
        })
    });

    let progress = progress_bar();
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut held: Vec<UsageEvent> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut count = 0u64;
    let chunk_size = sink.chunk_size(args);
    let max_chunks = (args.max_in_flight / chunk_size).max(1);
    let mut chunk: Vec<UsageEvent> = Vec::with_capacity(chunk_size);

    while let Some(rec) = rx.recv().await {
        count += 1;
        if count > args.max_events {
            return Err(PublishRunError::TooLarge(args.max_events));
        }
        let event = match rec.event {
            Ok(e) => e,
            Err(errs) => {
                summary.rejected += 1;
                for e in &errs.0 {
                    let field = if e.field.is_empty() { "(event)" } else { &e.field };
                    report(format!("line {}: {field}: {}", rec.line, e.reason));
                }
                continue;
            }
        };
        if !seen.insert((event.source.clone(), event.event_id.clone())) {
            summary.duplicates += 1;
            continue;
        }
        if args.all_or_nothing {
            held.push(event);
            continue;
        }
        chunk.push(event);
        if chunk.len() >= chunk_size {
            while in_flight.len() >= max_chunks {
                settle(in_flight.next().await, &mut summary, &report);
            }
            in_flight.push(sink.send(std::mem::take(&mut chunk)));
            while let Some(Some(done)) = futures::FutureExt::now_or_never(in_flight.next()) {
                settle(Some(done), &mut summary, &report);
            }
            progress.set_position(summary.accepted);
        }
    }
    let read_result = reader_task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    read_result.map_err(|source| PublishRunError::Read { path: path.clone(), source })?;

    if args.all_or_nothing {
        if summary.rejected > 0 {
            report(format!("--all-or-nothing: {} invalid line(s), nothing was published", summary.rejected));
            held.clear();
        }
        chunk.append(&mut held);
    }
    for part in chunk.chunks(chunk_size) {
        while in_flight.len() >= max_chunks {
            settle(in_flight.next().await, &mut summary, &report);
        }
        in_flight.push(sink.send(part.to_vec()));
    }
    while let Some(done) = in_flight.next().await {
        settle(Some(done), &mut summary, &report);
        progress.set_position(summary.accepted);
    }
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    report(format!("{summary} in {secs:.1}s ({:.0} events/s)", summary.accepted as f64 / secs));
    Ok(summary)
}

/// Where `publish` sends events.
#[derive(Debug)]
pub enum Sink {
    /// Straight to Kafka.
    Kafka(Publisher),
    /// Over HTTP ingest with a publisher key.
    Http { client: reqwest::Client, url: String, key: String },
}

/// What happened to one event.
#[derive(Debug)]
enum Sent {
    Accepted,
    /// The server refused it (HTTP only): fixing the event is needed.
    Rejected(String),
    /// Not acknowledged; resending is safe.
    Failed(String),
}

type Outcome = Vec<(UsageEvent, Sent)>;

/// Attempts per HTTP batch answered 429 or 503 before giving up.
const HTTP_ATTEMPTS: u32 = 6;

impl Sink {
    fn chunk_size(&self, args: &PublishArgs) -> usize {
        match self {
            Sink::Kafka(_) => 1000,
            Sink::Http { .. } => args.http_batch as usize,
        }
    }

    async fn send(&self, events: Vec<UsageEvent>) -> Outcome {
        match self {
            Sink::Kafka(p) => {
                // Bulk publishing waits out a full queue rather than failing.
                let results = futures::future::join_all(
                    events.iter().map(|e| p.publish_patiently(e, None, Duration::from_secs(60))),
                )
                .await;
                events
                    .into_iter()
                    .zip(results)
                    .map(|(e, r)| (e, r.map_or_else(|err| Sent::Failed(err.to_string()), |_| Sent::Accepted)))
                    .collect()
            }
            Sink::Http { client, url, key } => http_send(client, url, key, events).await,
        }
    }
}

async fn http_send(client: &reqwest::Client, url: &str, key: &str, events: Vec<UsageEvent>) -> Outcome {
    let endpoint = format!("{}/api/v1/events", url.trim_end_matches('/'));
    // The key decides the source over HTTP, so the body leaves it out.
    let body: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("source");
            }
            v
        })
        .collect();
    let mut last_error = String::new();
    for attempt in 0..HTTP_ATTEMPTS {
        match client.post(&endpoint).bearer_auth(key).json(&body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(30);
                let answer: serde_json::Value = resp.json().await.unwrap_or_default();
                match status {
                    202 | 207 | 400 if answer["results"].is_array() => return per_item(events, &answer),
                    429 | 503 => {
                        last_error =
                            format!("HTTP {status}: {}", answer["error"]["message"].as_str().unwrap_or("retry later"));
                        tokio::time::sleep(Duration::from_secs(retry_after)).await;
                    }
                    _ => {
                        let msg = answer["error"]["message"].as_str().unwrap_or("unexpected answer").to_owned();
                        let why = format!("HTTP {status}: {msg}");
                        return events.into_iter().map(|e| (e, Sent::Failed(why.clone()))).collect();
                    }
                }
            }
            Err(e) => {
                last_error = format!("request failed: {e}");
                tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
            }
        }
    }
    events.into_iter().map(|e| (e, Sent::Failed(last_error.clone()))).collect()
}

/// Maps a batch answer's per-item results back onto the events.
fn per_item(events: Vec<UsageEvent>, answer: &serde_json::Value) -> Outcome {
    let results = answer["results"].as_array().cloned().unwrap_or_default();
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let r = &results.get(i).cloned().unwrap_or_default();
            let reasons = || {
                r["errors"]
                    .as_array()
                    .map(|errs| {
                        errs.iter()
                            .map(|x| {
                                format!("{}: {}", x["field"].as_str().unwrap_or(""), x["reason"].as_str().unwrap_or(""))
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default()
            };
            let sent = match r["status"].as_str() {
                Some("accepted") => Sent::Accepted,
                Some("rejected") => Sent::Rejected(reasons()),
                _ => Sent::Failed(reasons()),
            };
            (e, sent)
        })
        .collect()
}

fn settle(done: Option<Outcome>, summary: &mut Summary, report: &impl Fn(String)) {
    for (e, sent) in done.unwrap_or_default() {
        match sent {
            Sent::Accepted => summary.accepted += 1,
            Sent::Rejected(why) => {
                summary.rejected += 1;
                report(format!("event {} (user {}): rejected by the server: {why}", e.event_id, e.user_id));
            }
            Sent::Failed(why) => {
                summary.failed += 1;
                report(format!("event {} (user {}): not published: {why}", e.event_id, e.user_id));
            }
        }
    }
}

fn progress_bar() -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} events published, {per_sec}, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}
