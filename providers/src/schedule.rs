//! The scheduled import, run by API processes: every interval, each
//! connection's reports from the day after its last whole import (less two
//! days, which providers still revise) to tomorrow; a connection never
//! imported is backfilled from its `import_from` in 31-day steps, each
//! stored whole before the next. Processes take turns through the
//! connection's lease (one import at a time); a failed import is logged
//! and recorded in `provider_imports`, and tried again next interval.

use std::time::Duration;

use chrono::{NaiveDate, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::fetch::Importer;
use crate::store;

/// Days a provider may still revise after reporting them.
pub const REVISABLE_DAYS: i64 = 2;
/// The most days one scheduled import covers.
pub const STEP_DAYS: i64 = 31;

/// The next range to import for a connection, as of `today`.
pub fn next_range(
    import_from: NaiveDate,
    imported_through: Option<NaiveDate>,
    today: NaiveDate,
) -> (NaiveDate, NaiveDate) {
    let from = match imported_through {
        Some(t) => (t - TimeDelta::days(REVISABLE_DAYS)).max(import_from),
        None => import_from,
    };
    let to = (from + TimeDelta::days(STEP_DAYS)).min(today + TimeDelta::days(1));
    (from, to.max(from + TimeDelta::days(1)))
}

/// Runs until `shutdown`.
pub async fn run(pool: PgPool, importer: Importer, every: Duration, owner: String, shutdown: CancellationToken) {
    loop {
        if let Err(e) = pass(&pool, &importer, &owner).await {
            tracing::warn!(error = %e, "provider report import pass failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass over every connection; a backfill goes on step after step.
pub async fn pass(pool: &PgPool, importer: &Importer, owner: &str) -> Result<(), sqlx::Error> {
    let today = Utc::now().date_naive();
    for c in store::list(pool).await? {
        let (mut through, mut steps) = (c.imported_through, 0);
        loop {
            let (from, to) = next_range(c.import_from, through, today);
            let quiet = |_: &'static str, _: NaiveDate| {};
            match importer.import(pool, &c.name, from, to, owner, &quiet).await {
                Ok(sum) => {
                    tracing::info!(connection = %c.name, %from, %to, pages = sum.pages, usage_rows = sum.usage_rows,
                                   cost_rows = sum.cost_rows, "provider reports imported");
                    // Whole days only: today is still being counted.
                    match crate::alerts::check(pool, &c.name, from, to.min(today)).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::warn!(connection = %c.name, notifications = n, "provider days differ from ours past the alert percentage");
                        }
                        Err(e) => {
                            tracing::warn!(connection = %c.name, error = %e, "checking provider days for alerts failed");
                        }
                    }
                }
                // Another process is at it, or the failure was logged and
                // recorded by the import: next interval.
                Err(_) => break,
            }
            steps += 1;
            through = Some(to.min(today));
            if to > today || steps >= 12 {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_backfill_in_steps_and_then_reread_the_revisable_days() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        let today = d("2026-12-07");
        assert_eq!(next_range(d("2026-10-01"), None, today), (d("2026-10-01"), d("2026-11-01")));
        assert_eq!(next_range(d("2026-10-01"), Some(d("2026-11-01")), today), (d("2026-10-30"), d("2026-11-30")));
        assert_eq!(next_range(d("2026-10-01"), Some(d("2026-12-07")), today), (d("2026-12-05"), d("2026-12-08")));
    }
}
