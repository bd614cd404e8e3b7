//! The embedded broker: librdkafka's in-process mock cluster, for trying
//! tokenusage with one command and nothing else installed.
//!
//! `serve --demo` starts it when no Kafka was configured. It speaks the
//! Kafka protocol on a loopback port, so the producer, the projector and
//! the freshness probe use it exactly as they would a real broker. It is
//! **not durable**: it keeps records in memory and loses them when the
//! process stops (what was counted is safe in PostgreSQL; what was not is
//! gone). For anything but trying the product, point tokenusage at Kafka.
//!
//! It also keeps only 5 MiB (or 100,000 message sets) per partition and
//! deletes the oldest records past that without a word. So the producers
//! of `serve` (the demo, HTTP ingest, OTLP) are paced by its
//! [`Headroom`](tokenusage_plumbing::headroom::Headroom): a record waits
//! for room that only the projector's commits free, and the log never holds
//! more uncounted bytes than it can keep. Producers outside the process
//! cannot be paced; what they push past the limit is recorded as lost by
//! the projector's gap guard, never silently skipped.

use std::sync::mpsc;
use std::thread::JoinHandle;

/// The projector's fetch wait against the embedded broker, in ms, unless
/// one was configured. The mock holds every fetch for the full wait (it does
/// not answer early when records arrive), so the wait is added to every
/// event's way to the dashboard. Measured (docs/BENCHMARKS.md, "Fetch
/// wait"): produce → push p50 11.9 ms at 2 ms, 28.7 ms at 20, 103 ms at
/// 100, 200 ms at 500; the whole idle `serve --demo` used 8 %, 3 %, 2 % and
/// 2 % of a core. 20 ms keeps the live view immediate at little cost.
pub const FETCH_WAIT_MS: u32 = 20;

/// A running embedded broker; it stops when dropped.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    headroom: std::sync::Arc<tokenusage_plumbing::headroom::Headroom>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster holding `topic` with `partitions`
    /// partitions (the mock does not implement CreateTopics, so the topic is
    /// made here).
    pub fn start(topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let topic = topic.to_owned();
        // The cluster is a raw librdkafka handle (not Send): it lives on a
        // thread of its own until stopped.
        let thread = std::thread::Builder::new().name("embedded-kafka".into()).spawn(move || {
            let cluster = rdkafka::mocking::MockCluster::new(1)
                .and_then(|c| c.create_topic(&topic, partitions, 1).map(|()| c))
                .map_err(|e| anyhow::anyhow!("cannot start the embedded broker: {e}"));
            match cluster {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(c.bootstrap_servers()));
                    // Until the owner stops us (or drops the sender).
                    let _ = stop_rx.recv();
                    drop(c);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
        let bootstrap = ready_rx.recv().map_err(|_| anyhow::anyhow!("the embedded broker thread ended"))??;
        let headroom =
            tokenusage_plumbing::headroom::Headroom::new(tokenusage_plumbing::headroom::EMBEDDED_BUDGET_BYTES);
        Ok(Self { bootstrap, headroom, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The room for uncounted records its log can keep, shared by every
    /// producer and the projector of this process.
    pub fn headroom(&self) -> std::sync::Arc<tokenusage_plumbing::headroom::Headroom> {
        self.headroom.clone()
    }

    /// The `host:port` list to connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
