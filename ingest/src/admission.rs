//! What both ingest endpoints (native events and OTLP spans) do around
//! their own decoding, written once: the publisher's key, the rate
//! allowance, sending the valid items to Kafka and waiting for every
//! acknowledgement, and tallying what became of each item (counted in the
//! endpoint's metric, and the answer's status and `Retry-After` when a
//! retry can succeed). Each endpoint answers a [`Refusal`] in its own
//! encoding.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokenusage_contract::UsageEvent;

use crate::PublishError;
use crate::http::IngestState;
use crate::keys::KeyHolder;

/// A request refused as a whole, before any per-item result.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The refusal in our JSON error envelope.
    pub(crate) fn into_response(self) -> Response {
        let r = tokenusage_plumbing::http::error_response(self.status, self.code, self.message);
        match self.retry_after {
            Some(secs) => with_retry_after(r, secs),
            None => r,
        }
    }
}

pub(crate) fn with_retry_after(mut r: Response, secs: u64) -> Response {
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// The publisher of a request, from its `Authorization: Bearer` key.
pub(crate) async fn authenticate(st: &IngestState, headers: &HeaderMap) -> Result<Arc<KeyHolder>, Refusal> {
    let key = tokenusage_plumbing::http::bearer(headers).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a publisher API key as `Authorization: Bearer tu_...`",
        )
    })?;
    match st.keys.lookup(&st.pool, key).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown or revoked API key")),
        Err(e) => {
            tracing::error!(error = %e, "API key lookup failed");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "cannot check the API key right now; retry",
            )
            .retry_after(2))
        }
    }
}

/// Takes `valid` events out of the key's rate allowance, or says when to
/// come back (or that the batch can never fit in one second's allowance).
pub(crate) fn admit(publisher: &KeyHolder, valid: usize) -> Result<(), Refusal> {
    let Some(n) = std::num::NonZeroU32::new(u32::try_from(valid).unwrap_or(u32::MAX)) else {
        return Ok(());
    };
    match publisher.limiter.check_n(n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
            Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("key {} is over its rate limit; retry later", publisher.prefix),
            )
            .retry_after(wait.as_secs() + 1))
        }
        Err(_) => Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_exceeds_rate",
            format!("{valid} events exceed the one-second allowance of key {}; send smaller batches", publisher.prefix),
        )),
    }
}

/// What became of one item of a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Kafka has it.
    Accepted,
    /// The item itself is invalid (the endpoint has its field errors).
    Invalid,
    /// Kafka refused the record (too large for the topic, say): retrying
    /// the same item cannot succeed.
    Refused(String),
    /// The producer's queue is full: retry soon.
    QueueFull(String),
    /// Kafka did not acknowledge it: retry (items are de-duplicated by id).
    Unavailable(String),
}

impl Outcome {
    /// The reason of an item that was valid but not accepted.
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Refused(r) | Outcome::QueueFull(r) | Outcome::Unavailable(r) => Some(r),
            Outcome::Accepted | Outcome::Invalid => None,
        }
    }
}

/// Sends every valid item (`Some`) to Kafka at once, waits for each
/// acknowledgement, and says what became of every item, in order.
pub(crate) async fn publish_valid<'a>(
    st: &IngestState,
    headers: &HeaderMap,
    items: impl Iterator<Item = Option<&'a UsageEvent>>,
) -> Vec<Outcome> {
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    let sends = items.map(|e| async move {
        let Some(e) = e else { return Outcome::Invalid };
        match st.publisher.publish(e, request_id).await {
            Ok(_) => Outcome::Accepted,
            Err(err) => {
                let reason = err.to_string();
                tracing::warn!(error = %reason, "usage not acknowledged by Kafka");
                match err {
                    PublishError::QueueFull => Outcome::QueueFull(reason),
                    PublishError::Unavailable(_) | PublishError::Backlogged(_) => Outcome::Unavailable(reason),
                    PublishError::Refused(_) => Outcome::Refused(reason),
                }
            }
        }
    });
    let sent_at = std::time::Instant::now();
    let outcomes = futures::future::join_all(sends).await;
    metrics::histogram!("tokenusage_ingest_ack_seconds").record(sent_at.elapsed().as_secs_f64());
    outcomes
}

/// How many items of a request came to each end.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub accepted: usize,
    /// Invalid, or refused by Kafka: a retry of the same item cannot help.
    pub rejected: usize,
    pub queue_full: usize,
    pub unavailable: usize,
}

impl Tally {
    pub(crate) fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Tally {
        let mut t = Tally::default();
        for o in outcomes {
            match o {
                Outcome::Accepted => t.accepted += 1,
                Outcome::Invalid | Outcome::Refused(_) => t.rejected += 1,
                Outcome::QueueFull(_) => t.queue_full += 1,
                Outcome::Unavailable(_) => t.unavailable += 1,
            }
        }
        t
    }

    /// Valid items Kafka did not take: retry them.
    pub(crate) fn failed(&self) -> usize {
        self.queue_full + self.unavailable
    }

    /// Counts the items in `metric` by outcome: accepted (Kafka has it),
    /// rejected (a retry cannot help), failed (valid, not acknowledged).
    pub(crate) fn record(&self, metric: &'static str) {
        for (outcome, n) in [("accepted", self.accepted), ("rejected", self.rejected), ("failed", self.failed())] {
            metrics::counter!(metric, "outcome" => outcome).increment(n as u64);
        }
    }

    /// When the whole request should be retried: the status and the
    /// `Retry-After` seconds. Kafka unavailable beats a full queue (it
    /// will not clear in a second).
    pub(crate) fn retry(&self) -> Option<(StatusCode, u64)> {
        if self.unavailable > 0 {
            Some((StatusCode::SERVICE_UNAVAILABLE, 5))
        } else if self.queue_full > 0 {
            Some((StatusCode::TOO_MANY_REQUESTS, 1))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_counts_each_end_and_says_when_to_retry() {
        let outcomes = [
            Outcome::Accepted,
            Outcome::Invalid,
            Outcome::Refused("too large".into()),
            Outcome::QueueFull("full".into()),
            Outcome::Accepted,
        ];
        let t = Tally::of(&outcomes);
        assert_eq!((t.accepted, t.rejected, t.queue_full, t.unavailable, t.failed()), (2, 2, 1, 0, 1));
        assert_eq!(t.retry(), Some((StatusCode::TOO_MANY_REQUESTS, 1)));
        let t = Tally::of(&[Outcome::QueueFull(String::new()), Outcome::Unavailable(String::new())]);
        assert_eq!(t.retry(), Some((StatusCode::SERVICE_UNAVAILABLE, 5)), "unavailable wins over a full queue");
        assert_eq!(Tally::of(&[Outcome::Accepted, Outcome::Invalid]).retry(), None);
        assert_eq!(outcomes[2].reason(), Some("too large"));
        assert_eq!(outcomes[1].reason(), None);
    }
}
