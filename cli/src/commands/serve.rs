//! `tokenusage serve`: everything in one process.

use std::process::ExitCode;
use std::time::Duration;

use tokenusage_api::{ApiArgs, Application, Role};
use tokenusage_ingest::http::IngestArgs;
use tokenusage_ingest::{ProducerArgs, Publisher};
use tokenusage_plumbing::{DatabaseArgs, KafkaArgs};
use tokenusage_projector::ProjectorArgs;
use tokio::task::{Id, JoinSet};

use crate::demo;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub projector: ProjectorArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub migrate: super::MigrateFlag,
    /// Create demo users and publish a live stream of demo events.
    #[arg(long, env = "TOKENUSAGE_DEMO")]
    pub demo: bool,
    /// Password of the demo users (`demo`, a viewer, and `admin`).
    #[arg(long, env = "TOKENUSAGE_DEMO_PASSWORD", default_value = "tokenusage-demo", hide_env_values = true)]
    pub demo_password: String,
    /// Demo events per second at the busiest hour (weekday mornings), in the
    /// history and the live stream alike; quieter hours get fewer.
    #[arg(long, env = "TOKENUSAGE_DEMO_RATE", default_value_t = 0.25)]
    pub demo_rate: f64,
    /// Days of demo history published at the first start.
    #[arg(long, env = "TOKENUSAGE_DEMO_DAYS", default_value_t = 28,
          value_parser = clap::value_parser!(i64).range(0..=400))]
    pub demo_days: i64,
    /// Set by the parser: brokers were given (flag or environment). Without
    /// them, `--demo` runs the embedded broker.
    #[arg(skip)]
    pub kafka_configured: bool,
    /// Set by the parser: `--kafka-fetch-wait-ms` was given (flag or
    /// environment), so the embedded broker's tuning does not override it.
    #[arg(skip)]
    pub fetch_wait_configured: bool,
    /// How long draining may take on shutdown before tasks are abandoned, in seconds.
    #[arg(long, env = "TOKENUSAGE_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
}

/// Runs the projector on threads and a database pool of its own. With
/// thousands of live sockets on the main runtime, its fetches and commits
/// would otherwise wait in the same task queue as every socket (measured:
/// commits of ~110 ms instead of a few, docs/BENCHMARKS.md).
fn spawn_projector(
    a: &ServeArgs,
    shutdown: tokio_util::sync::CancellationToken,
    health: std::sync::Arc<tokenusage_projector::Health>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<anyhow::Result<()>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (db, kafka, args) = (a.db.clone(), a.kafka.clone(), a.projector.clone());
    std::thread::Builder::new().name("projector".into()).spawn(move || {
        let r = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("projector")
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(async {
                    let pool = super::database(&db, false).await?;
                    tokenusage_projector::run(&args, &kafka, pool, shutdown, health).await.map_err(anyhow::Error::from)
                })
            });
        let _ = tx.send(r);
    })?;
    Ok(rx)
}

pub async fn run(mut a: ServeArgs) -> anyhow::Result<ExitCode> {
    // Before touching anything else: a misconfigured listener is the
    // mistake to report first.
    a.api.check_transport()?;
    // Trying it out with nothing installed: an in-process broker. Held until
    // `run` returns; it stops when dropped.
    let embedded = if a.demo && !a.kafka_configured {
        let b = crate::embedded::EmbeddedBroker::start(&a.kafka.topic, a.kafka.topic_partitions)?;
        a.kafka.bootstrap_servers = b.bootstrap_servers().to_owned();
        a.kafka.topic_exists = true;
        if !a.fetch_wait_configured {
            a.projector.fetch_wait_ms = crate::embedded::FETCH_WAIT_MS;
        }
        // It trims its log silently: producers in this process are paced
        // by what the projector has committed (docs/DECISIONS.md).
        a.projector.headroom = Some(b.headroom());
        Some(b)
    } else {
        None
    };
    let publisher = |a: &ServeArgs| -> anyhow::Result<Publisher> {
        let p = Publisher::new(&a.kafka, &a.producer)?;
        Ok(match &a.projector.headroom {
            Some(h) => p.paced_by(h.clone()),
            None => p,
        })
    };
    tokenusage_plumbing::metrics::recorder();
    let pool = super::database(&a.db, !a.migrate.no_migrate).await?;
    if embedded.is_some() {
        // Its log is new and empty: positions an earlier run stored for it
        // would make the projector skip everything this run publishes.
        let reset = tokenusage_projector::forget_positions(&pool, &a.projector.group, &a.kafka.topic).await?;
        if reset > 0 {
            tracing::info!(partitions = reset, "the embedded broker starts empty: reading it from the beginning");
        }
    }
    let shutdown = tokenusage_plumbing::shutdown::on_signal();
    // Created up front so the demo publisher never races the projector to it.
    tokenusage_plumbing::topic::ensure_topic(&a.kafka).await?;
    let mut tasks = Tasks::default();

    let ingest_publisher = publisher(&a)?;
    let ingest = tokenusage_ingest::http::router(&a.ingest, ingest_publisher, pool.clone());
    let mounted = tokenusage_api::Mounted { router: ingest, doc: Some(tokenusage_ingest::http::openapi()) };
    let app = Application::build(a.api.clone(), pool.clone(), mounted).await?;
    let addr = app.local_addr();
    let scheme = app.scheme();
    let readiness = app.readiness();
    {
        let s = shutdown.clone();
        tasks.spawn("api", async move { app.run_until_stopped(s).await.map_err(Into::into) });
    }
    {
        let health = std::sync::Arc::new(tokenusage_projector::Health::new("projector"));
        readiness.watch_projector(health.clone(), tokenusage_projector::STALL_PATIENCE);
        let done = spawn_projector(&a, shutdown.clone(), health)?;
        tasks.spawn("projector", async move {
            done.await.unwrap_or_else(|_| Err(anyhow::anyhow!("the projector thread panicked")))
        });
    }

    if a.demo {
        for (user, role) in [(demo::DEMO_USER, Role::Viewer), (demo::DEMO_ADMIN, Role::Admin)] {
            tokenusage_api::accounts::upsert(&pool, user, user, role, &a.demo_password).await?;
        }
        demo::teams(&pool).await?;
        let publisher = publisher(&a)?;
        let (s, pool2, rate, days) = (shutdown.clone(), pool.clone(), a.demo_rate, a.demo_days);
        tasks.spawn("demo", async move {
            match demo::backfill(&publisher, &pool2, days, rate).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, days, "published the demo history"),
                Err(e) => tracing::warn!(error = %e, "demo history not published"),
            }
            demo::live(publisher, rate, s).await;
            Ok(())
        });
    }

    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
    println!("tokenusage is running at {scheme}://{host}:{}/", addr.port());
    if a.demo {
        println!(
            "demo sign-in: user `{}` (manager of team `platform`; or `{}` for the admin view), password `{}`",
            demo::DEMO_USER,
            demo::DEMO_ADMIN,
            a.demo_password
        );
    }
    if let Some(b) = &embedded {
        println!(
            "events go through an embedded, in-memory Kafka-protocol broker at {}: fine for trying tokenusage, \
             NOT durable (set KAFKA_BOOTSTRAP_SERVERS for a real broker, or use scripts/run.sh --durable). \
             It keeps only a few MB per partition: publish through HTTP ingest (`tokenusage publish --http`), \
             which waits for counting; records a direct Kafka producer pushes past that are reported as lost",
            b.bootstrap_servers()
        );
    }
    println!("press Ctrl-C to stop");

    // The first task to end (normally on shutdown) ends the process: a
    // projector or API that dies alone must not leave a half-working server.
    let mut failed = tasks.join_next().await;
    shutdown.cancel();
    let grace = Duration::from_secs(a.shutdown_grace_secs);
    let drained = tokio::time::timeout(grace, async {
        while !tasks.is_empty() {
            failed |= tasks.join_next().await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_secs = a.shutdown_grace_secs,
            still_running = %tasks.running(),
            "tasks did not drain in time; stopping them"
        );
        tasks.set.abort_all();
        failed = true;
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The long-running tasks of `serve`, by name, so logs say which one
/// ended, failed or hangs.
#[derive(Default)]
struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: std::collections::HashMap<Id, &'static str>,
}

impl Tasks {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = anyhow::Result<()>> + Send + 'static) {
        self.names.insert(self.set.spawn(task).id(), name);
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn running(&self) -> String {
        let mut names: Vec<&str> = self.names.values().copied().collect();
        names.sort_unstable();
        names.join(", ")
    }

    /// Waits for the next task to end and logs how; true if it failed
    /// (false when there are none).
    async fn join_next(&mut self) -> bool {
        let Some(ended) = self.set.join_next_with_id().await else { return false };
        let id = match &ended {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let task = self.names.remove(&id).unwrap_or("unnamed");
        match ended {
            Ok((_, Ok(()))) => {
                tracing::info!(task, "stopped");
                false
            }
            Ok((_, Err(e))) => {
                tracing::error!(task, error = %format!("{e:#}"), "a task failed");
                true
            }
            Err(e) => {
                tracing::error!(task, error = %e, "a task panicked");
                true
            }
        }
    }
}
