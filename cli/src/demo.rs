//! The demo: a user to sign in as and a stream of plausible usage flowing
//! through Kafka, so the dashboard is alive on the first visit.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rand::Rng;
use tokenusage_contract::UsageEvent;
use tokenusage_ingest::Publisher;
use tokio_util::sync::CancellationToken;

/// The demo's viewer account.
pub const DEMO_USER: &str = "demo";
/// The demo's admin account.
pub const DEMO_ADMIN: &str = "admin";
/// The `source` of demo events.
const SOURCE: &str = "demo-generator";

const ACTIVITIES: [&str; 4] = ["chat", "embedding", "agent-run", "summarize"];
const MODELS: [&str; 3] = ["gpt-4o-mini", "claude-sonnet-4", "llama-3.1-70b"];

fn event(rng: &mut impl Rng, user: &str, at: chrono::DateTime<Utc>) -> UsageEvent {
    let activity = ACTIVITIES[rng.random_range(0..ACTIVITIES.len())];
    let model = MODELS[rng.random_range(0..MODELS.len())];
    let scale = if activity == "embedding" { 4 } else { 1 };
    UsageEvent {
        source: SOURCE.into(),
        event_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.into(),
        occurred_at: at,
        activity: activity.into(),
        model: model.into(),
        input_tokens: rng.random_range(200..4000) * scale,
        output_tokens: if activity == "embedding" { 0 } else { rng.random_range(50..1500) },
        metadata: None,
    }
}

/// Publishes `days` of history for the demo users (a few events an hour,
/// busier in the daytime), unless it was published before.
pub async fn backfill(publisher: &Publisher, pool: &sqlx::PgPool, days: i64) -> anyhow::Result<u64> {
    let already: bool = sqlx::query_scalar("select exists (select 1 from event_keys where source = $1)")
        .bind(SOURCE)
        .fetch_one(pool)
        .await?;
    if already {
        return Ok(0);
    }
    let mut events = Vec::new();
    {
        let mut rng = rand::rng();
        let now = Utc::now();
        for user in [DEMO_USER, "alice", "bob"] {
            let mut t = now - TimeDelta::days(days);
            while t < now {
                let hour = t.format("%H").to_string().parse::<u32>().unwrap_or(12);
                let busy = if (8..19).contains(&hour) { 6 } else { 1 };
                for _ in 0..rng.random_range(0..=busy) {
                    let at = t + TimeDelta::seconds(rng.random_range(0..3600));
                    if at < now {
                        events.push(event(&mut rng, user, at));
                    }
                }
                t += TimeDelta::hours(1);
            }
        }
    }
    let n = events.len() as u64;
    for chunk in events.chunks(500) {
        let sends = chunk.iter().map(|e| publisher.publish_patiently(e, None, Duration::from_secs(30)));
        for r in futures::future::join_all(sends).await {
            r?;
        }
    }
    Ok(n)
}

/// Publishes a live trickle (about `per_sec` events a second) until shutdown.
pub async fn live(publisher: Publisher, per_sec: f64, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec.max(0.1)));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let e = {
            let mut rng = rand::rng();
            let user = [DEMO_USER, DEMO_USER, "alice", "bob"][rng.random_range(0..4)];
            event(&mut rng, user, Utc::now())
        };
        if let Err(err) = publisher.publish(&e, None).await {
            tracing::warn!(error = %err, "demo event not published; will keep trying");
        }
    }
}
