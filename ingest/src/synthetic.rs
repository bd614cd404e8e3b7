//! Synthetic usage: plausible events for the demo and the benchmarks, from
//! one generator, so both exercise the same shapes.
//!
//! Token counts depend on the activity (embeddings are input-heavy with no
//! output; agent runs are long), and [`rhythm`] gives how busy a moment is
//! (working hours, evenings, nights, weekends), so a history and a live
//! stream made from it look alike on a chart.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use rand::Rng;
use tokenusage_contract::UsageEvent;

/// Activities, most common first.
pub const ACTIVITIES: [&str; 5] = ["chat", "embedding", "agent-run", "summarize", "classify"];
/// Models, most common first.
pub const MODELS: [&str; 6] =
    ["gpt-4o-mini", "claude-sonnet-4", "gpt-4o", "claude-haiku-4", "llama-3.1-70b", "mistral-large"];

/// A generator of events for one `source`.
#[derive(Debug, Clone)]
pub struct Synthetic {
    pub source: String,
    pub activities: Vec<String>,
    pub models: Vec<String>,
    /// Projects, most common first; empty: events name none.
    pub projects: Vec<String>,
}

/// The demo's projects, most common first.
pub const PROJECTS: [&str; 4] = ["support-bot", "search", "code-review", "internal-tools"];

impl Synthetic {
    /// All activities, models and projects.
    pub fn new(source: &str) -> Self {
        Self { projects: PROJECTS.map(str::to_owned).to_vec(), ..Self::with(source, &ACTIVITIES, &MODELS) }
    }

    /// Only these activities and models.
    pub fn with(source: &str, activities: &[&str], models: &[&str]) -> Self {
        Self {
            source: source.to_owned(),
            activities: activities.iter().map(|s| (*s).to_owned()).collect(),
            models: models.iter().map(|s| (*s).to_owned()).collect(),
            projects: Vec::new(),
        }
    }

    /// Picks from `items`, earlier ones more often (weights n, n-1, ..., 1).
    fn pick<'a>(rng: &mut impl Rng, items: &'a [String]) -> &'a str {
        let n = items.len().max(1);
        let total = n * (n + 1) / 2;
        let mut r = rng.random_range(0..total);
        for (i, item) in items.iter().enumerate() {
            let w = n - i;
            if r < w {
                return item;
            }
            r -= w;
        }
        items.first().map_or("chat", String::as_str)
    }

    /// One event of `user` at `at`, with a fresh id.
    pub fn event(&self, rng: &mut impl Rng, user: &str, at: DateTime<Utc>) -> UsageEvent {
        let activity = Self::pick(rng, &self.activities).to_owned();
        let model = Self::pick(rng, &self.models).to_owned();
        let (input_tokens, output_tokens) = match activity.as_str() {
            "embedding" => (rng.random_range(800..16_000), 0),
            "agent-run" => (rng.random_range(2_000..24_000), rng.random_range(300..4_000)),
            "summarize" => (rng.random_range(1_500..9_000), rng.random_range(150..900)),
            "classify" => (rng.random_range(100..1_200), rng.random_range(1..40)),
            _ => (rng.random_range(200..4_000), rng.random_range(50..1_500)),
        };
        // Conversations and agents re-send their context: part of their
        // input is a prompt-cache read, and agents reason. The kinds stay
        // inside the totals (the contract's subset rule).
        let mut kinds = tokenusage_contract::TokenKinds::default();
        if matches!(activity.as_str(), "chat" | "agent-run") && rng.random_bool(0.6) {
            kinds.cache_read_input_tokens = input_tokens * rng.random_range(20..80) / 100;
        }
        if activity == "agent-run" {
            kinds.reasoning_output_tokens = output_tokens * rng.random_range(10..60) / 100;
        }
        let project = (!self.projects.is_empty()).then(|| Self::pick(rng, &self.projects).to_owned());
        UsageEvent {
            source: self.source.clone(),
            event_id: uuid::Uuid::now_v7().to_string(),
            user_id: user.to_owned(),
            occurred_at: at,
            activity,
            model,
            input_tokens,
            output_tokens,
            kinds,
            billing: Default::default(),
            cost: None,
            project,
            metadata: None,
        }
    }
}

/// How busy `at` is, from 0 to 1: 1 at the working-hours peak on a
/// weekday, less in the evening, little at night and on weekends. Hours
/// are UTC (the demo's users share one zone).
pub fn rhythm(at: DateTime<Utc>) -> f64 {
    let h = f64::from(at.hour()) + f64::from(at.minute()) / 60.0;
    let day = match h {
        h if h < 6.0 => 0.06,
        h if h < 9.0 => 0.06 + (h - 6.0) / 3.0 * 0.7,
        h if h < 12.0 => 1.0,
        h if h < 13.5 => 0.7,
        h if h < 17.5 => 0.95,
        h if h < 22.0 => 0.45 - (h - 17.5) / 4.5 * 0.3,
        _ => 0.1,
    };
    let week = match at.weekday() {
        Weekday::Sat => 0.3,
        Weekday::Sun => 0.2,
        Weekday::Mon => 0.9,
        Weekday::Fri => 0.85,
        _ => 1.0,
    };
    day * week
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_and_varied() {
        let g = Synthetic::new("demo");
        let mut rng = rand::rng();
        let at: DateTime<Utc> = "2026-11-24T10:00:00Z".parse().unwrap();
        let events: Vec<UsageEvent> = (0..500).map(|_| g.event(&mut rng, "alice", at)).collect();
        for e in &events {
            let json = e.to_native_json();
            tokenusage_contract::parse_native(&json, "x", at).expect("a valid event");
        }
        let activities: std::collections::BTreeSet<&str> = events.iter().map(|e| e.activity.as_str()).collect();
        assert_eq!(activities.len(), ACTIVITIES.len());
        assert!(events.iter().filter(|e| e.activity == "embedding").all(|e| e.output_tokens == 0));
    }

    #[test]
    fn weekday_working_hours_are_busiest_and_nights_and_weekends_quiet() {
        let at = |s: &str| rhythm(s.parse().unwrap());
        assert_eq!(at("2026-11-25T10:00:00Z"), 1.0, "Wednesday morning");
        assert!(at("2026-11-25T03:00:00Z") < 0.1);
        assert!(at("2026-11-28T10:00:00Z") < 0.35, "Saturday");
        assert!(at("2026-11-25T19:00:00Z") > at("2026-11-25T23:00:00Z"));
    }
}
