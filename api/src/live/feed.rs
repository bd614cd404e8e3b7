//! The feed: one task per process LISTENing for the projector's
//! post-commit notices and handing them to the hub, checking their numbers
//! have no gap (a gap, an undecodable notice or a lost connection makes
//! every view re-read), and one task polling the freshness the projector's
//! probe writes.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokenusage_schema::freshness::{self, Freshness};
use tokenusage_schema::notice::{self, Notice};
use tokenusage_schema::sequence;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::hub::Live;
use crate::history::cache::SeriesCache;

/// Listens until `shutdown`, reconnecting after a failure.
pub(crate) async fn listen(live: Arc<Live>, pool: PgPool, shutdown: CancellationToken, cache: Arc<SeriesCache>) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "live updates: cannot listen for changes; retrying");
                tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        if let Err(e) = listener.listen(notice::NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "live updates: LISTEN failed; retrying");
            tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
        }
        // Listening now: every later commit will be heard. Anything before
        // may have been missed, so every view is re-read.
        let mut last: i64 = match sequence::current(&pool).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "live updates: cannot read the rollup sequence; retrying");
                tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => continue }
            }
        };
        live.resync_everything(&cache);
        loop {
            let n = tokio::select! {
                () = shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match n {
                Ok(Some(n)) => match Notice::decode(n.payload()) {
                    // Commits are numbered without gaps and heard in order
                    // (a commit's notices share its number): a gap means
                    // notices were lost.
                    Some(notice) if notice.seq <= last + 1 => {
                        last = last.max(notice.seq);
                        live.publish(&cache, notice);
                    }
                    Some(notice) => {
                        tracing::warn!(
                            expected = last + 1,
                            got = notice.seq,
                            "live updates: notifications were missed; re-reading every view"
                        );
                        last = notice.seq;
                        live.resync_everything(&cache);
                    }
                    None => {
                        tracing::warn!("live updates: a notification was not understood; re-reading every view");
                        live.resync_everything(&cache);
                    }
                },
                // The connection dropped and was re-established: notices
                // may have been lost meanwhile.
                Ok(None) => {
                    if let Ok(s) = sequence::current(&pool).await {
                        last = s;
                    }
                    live.resync_everything(&cache);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live updates: listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Reads the freshness the projector's probe wrote, once a second, and
/// tells the sockets when it changed.
pub(crate) async fn poll_freshness(pool: PgPool, tx: watch::Sender<Freshness>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! { () = shutdown.cancelled() => return, _ = tick.tick() => {} }
        if let Ok(f) = freshness::read(&pool).await {
            tx.send_if_modified(|cur| {
                if *cur == f {
                    false
                } else {
                    *cur = f;
                    true
                }
            });
        }
    }
}
