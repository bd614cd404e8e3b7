//! Whether a long-running worker is getting its work done, for `/readyz`
//! and the `tokenusage_*_stalled` gauges.
//!
//! A worker marks each attempt: [`Health::succeeded`] or
//! [`Health::failed`]. It is *stalled* once its attempts have been failing
//! for longer than the patience given to [`Health::verdict`]: a database
//! restart of a few seconds is not worth taking the process out of a load
//! balancer, a projector that has not committed for a minute while records
//! wait is.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Health of one worker.
#[derive(Debug)]
pub struct Health {
    name: &'static str,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    failing_since: Option<Instant>,
    last_error: Option<String>,
}

/// What `/readyz` says about a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Working,
    NotRunning,
    /// Failing for `for_secs` seconds; the last error, bounded.
    Stalled {
        for_secs: u64,
        error: String,
    },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Working)
    }

    /// A short sentence for the readiness body.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Working => "running".into(),
            Verdict::NotRunning => "stopped".into(),
            Verdict::Stalled { for_secs, error } => format!("failing for {for_secs} s: {error}"),
        }
    }
}

impl Health {
    /// A worker called `name` (used in the gauge's name), not yet running.
    pub fn new(name: &'static str) -> Self {
        Self { name, state: Mutex::new(State::default()) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub fn set_running(&self, running: bool) {
        self.with(|s| s.running = running);
    }

    /// An attempt worked: whatever failed before is over.
    pub fn succeeded(&self) {
        let was_failing = self.with(|s| {
            s.last_error = None;
            s.failing_since.take().is_some()
        });
        if was_failing {
            metrics::gauge!(format!("tokenusage_{}_stalled", self.name)).set(0.0);
        }
    }

    /// An attempt failed with `error` (kept bounded for the readiness body).
    pub fn failed(&self, error: &str) {
        self.with(|s| {
            s.failing_since.get_or_insert_with(Instant::now);
            s.last_error = Some(tokenusage_contract::text::truncate(error, 300).to_owned());
        });
    }

    /// Working, not running, or stalled once failing for longer than `patience`.
    pub fn verdict(&self, patience: Duration) -> Verdict {
        let v = self.with(|s| match (s.running, s.failing_since) {
            (false, _) => Verdict::NotRunning,
            (true, Some(since)) if since.elapsed() > patience => Verdict::Stalled {
                for_secs: since.elapsed().as_secs(),
                error: s.last_error.clone().unwrap_or_default(),
            },
            _ => Verdict::Working,
        });
        let stalled = matches!(v, Verdict::Stalled { .. });
        metrics::gauge!(format!("tokenusage_{}_stalled", self.name)).set(if stalled { 1.0 } else { 0.0 });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_stalled_only_after_failing_for_longer_than_the_patience() {
        let h = Health::new("test");
        assert_eq!(h.verdict(Duration::ZERO), Verdict::NotRunning);
        h.set_running(true);
        assert!(h.verdict(Duration::ZERO).is_ok());
        h.failed("connection refused");
        assert!(h.verdict(Duration::from_secs(60)).is_ok(), "a short failure is patience's business");
        std::thread::sleep(Duration::from_millis(5));
        let v = h.verdict(Duration::from_millis(1));
        assert!(matches!(&v, Verdict::Stalled { error, .. } if error == "connection refused"), "{v:?}");
        h.succeeded();
        assert!(h.verdict(Duration::ZERO).is_ok());
    }
}
