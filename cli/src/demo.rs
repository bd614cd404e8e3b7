//! The demo: accounts to sign in as and weeks of plausible usage flowing
//! through Kafka, so the dashboard is alive and meaningful on first visit.
//!
//! History and live stream come from one generator at one level: for any
//! hour, the expected number of events is `rate × 3600 × rhythm(hour)`
//! (`ingest::synthetic::rhythm`: weekday working hours busiest, evenings,
//! nights and weekends quieter), so "last 7 days" shows days and weeks,
//! not a flat line and one spike for the present hour.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rand::Rng;
use tokenusage_api::teams::TeamRole;
use tokenusage_contract::UsageEvent;
use tokenusage_ingest::Publisher;
use tokenusage_ingest::synthetic::{Synthetic, rhythm};
use tokio_util::sync::CancellationToken;

/// The demo's viewer account.
pub const DEMO_USER: &str = "demo";
/// The demo's admin account.
pub const DEMO_ADMIN: &str = "admin";
/// The `source` of demo events.
/// The `source` of every demo event.
pub const SOURCE: &str = "demo-generator";
/// Users with usage, and each one's share of it (the viewer first).
const USERS: [(&str, f64); 6] =
    [(DEMO_USER, 0.30), ("alice", 0.22), ("bob", 0.16), ("carol", 0.14), ("dan", 0.10), ("erin", 0.08)];

/// The demo's teams: the viewer manages `platform`; `research` has a
/// manager of its own. Created once (later edits are kept).
const TEAMS: [(&str, &[(&str, TeamRole)]); 2] = [
    ("platform", &[(DEMO_USER, TeamRole::Manager), ("alice", TeamRole::Member), ("bob", TeamRole::Member)]),
    ("research", &[("carol", TeamRole::Manager), ("dan", TeamRole::Member), ("erin", TeamRole::Member)]),
];

/// Creates the demo's teams if they do not exist yet.
pub async fn teams(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    for (name, members) in TEAMS {
        match tokenusage_api::teams::create(pool, name, "demo").await {
            Ok(()) => {
                for (user, role) in members {
                    tokenusage_api::teams::set_member(pool, name, user, *role).await?;
                }
            }
            Err(tokenusage_api::teams::TeamError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn pick_user(rng: &mut impl Rng) -> &'static str {
    let mut r: f64 = rng.random();
    for (u, share) in USERS {
        if r < share {
            return u;
        }
        r -= share;
    }
    DEMO_USER
}

/// The events of `days` of history up to `now`, at `per_sec` events a
/// second at the busiest hour.
fn history(days: i64, per_sec: f64, now: DateTime<Utc>) -> Vec<UsageEvent> {
    let g = Synthetic::new(SOURCE);
    let mut rng = rand::rng();
    let mut events = Vec::new();
    let start = (now - TimeDelta::days(days)).duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let mut hour = start;
    while hour < now {
        let expected = per_sec * 3600.0 * rhythm(hour + TimeDelta::minutes(30));
        // Poisson-ish: the expectation, give or take a fifth.
        let n = (expected * rng.random_range(0.8..1.2)).round() as i64;
        for _ in 0..n {
            let at = hour + TimeDelta::milliseconds(rng.random_range(0..3_600_000));
            if at < now {
                let user = pick_user(&mut rng);
                events.push(g.event(&mut rng, user, at));
            }
        }
        hour += TimeDelta::hours(1);
    }
    events
}

/// The demo's budgets, sized from the history so their bars mean
/// something: the viewer's month at ~90 % of its pace so far (the 50 %
/// alert has fired or will, 80 % later in the month), and the platform
/// team's week at the last seven days' level.
async fn budgets(pool: &sqlx::PgPool, events: &[UsageEvent]) -> anyhow::Result<()> {
    use tokenusage_budgets::{self as budgets, Measure, NewBudget, Period, Scope};
    let week_ago = Utc::now() - TimeDelta::days(7);
    let tokens = |users: &[&str]| -> i64 {
        events
            .iter()
            .filter(|e| e.occurred_at >= week_ago && users.contains(&e.user_id.as_str()))
            .map(|e| (e.input_tokens + e.output_tokens) as i64)
            .sum()
    };
    let month = (tokens(&[DEMO_USER]) as f64 * 30.0 / 7.0 * 1.1).round() as i64;
    let week = (tokens(&[DEMO_USER, "alice", "bob"]) as f64 * 1.2).round() as i64;
    // Named as a person would name them (names are unique per scope).
    for (name, scope, amount, period) in [
        ("My monthly tokens", Scope::User(DEMO_USER.into()), month, Period::Month),
        ("Platform's weekly tokens", Scope::Team("platform".into()), week, Period::Week),
    ] {
        let b = NewBudget {
            name: Some(name.into()),
            scope,
            measure: Measure::Tokens,
            amount: serde_json::json!(amount.max(1000)),
            period,
            zone: Some("UTC".into()),
            window: None,
            thresholds: None,
            webhooks: Vec::new(),
        };
        budgets::create(pool, &budgets::check(&b)?, "demo").await?;
    }
    Ok(())
}

/// Publishes `days` of history, unless it was published before. Returns
/// how many events it published.
pub async fn backfill(publisher: &Publisher, pool: &sqlx::PgPool, days: i64, per_sec: f64) -> anyhow::Result<u64> {
    let already: bool = sqlx::query_scalar("select exists (select 1 from event_keys where source = $1)")
        .bind(SOURCE)
        .fetch_one(pool)
        .await?;
    if already {
        return Ok(0);
    }
    let events = history(days, per_sec, Utc::now());
    let n = events.len() as u64;
    if let Err(e) = budgets(pool, &events).await {
        tracing::warn!(error = %e, "demo budgets not created");
    }
    for chunk in events.chunks(2000) {
        let sends = chunk.iter().map(|e| publisher.publish_patiently(e, None, Duration::from_secs(300)));
        for r in futures::future::join_all(sends).await {
            r?;
        }
    }
    Ok(n)
}

/// Publishes the live stream until shutdown: on average `per_sec × rhythm`
/// events a second, the same level as the history.
pub async fn live(publisher: Publisher, per_sec: f64, shutdown: CancellationToken) {
    let g = Synthetic::new(SOURCE);
    loop {
        let wait = {
            let rate = (per_sec * rhythm(Utc::now())).max(0.005);
            // Exponential gaps: arrivals at `rate` a second.
            let u: f64 = rand::rng().random_range(f64::EPSILON..1.0);
            Duration::from_secs_f64((-u.ln() / rate).min(300.0))
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let e = {
            let mut rng = rand::rng();
            let user = pick_user(&mut rng);
            g.event(&mut rng, user, Utc::now())
        };
        if let Err(err) = publisher.publish(&e, None).await {
            tracing::warn!(error = %err, "demo event not published; will keep trying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_has_the_live_streams_level_and_a_daily_rhythm() {
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap(); // a Thursday noon
        let events = history(14, 0.2, now);
        let per_hour = |from: &str| {
            let t: DateTime<Utc> = from.parse().unwrap();
            events.iter().filter(|e| e.occurred_at >= t && e.occurred_at < t + TimeDelta::hours(1)).count() as f64
        };
        let peak = per_hour("2026-11-25T10:00:00Z");
        assert!((0.2 * 3600.0 * 0.75..0.2 * 3600.0 * 1.25).contains(&peak), "a weekday morning hour: {peak}");
        assert!(per_hour("2026-11-25T03:00:00Z") < peak / 5.0, "nights are quiet");
        assert!(per_hour("2026-11-22T10:00:00Z") < peak / 2.0, "Sundays are quiet");
        let demo = events.iter().filter(|e| e.user_id == DEMO_USER).count() as f64 / events.len() as f64;
        assert!((0.25..0.35).contains(&demo), "the demo user has about 30 %: {demo}");
    }
}
