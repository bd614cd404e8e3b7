//! Rebuilding rollups from the stored raw events (`tokenusage replay`) and
//! checking them against the raw events (`tokenusage verify`).
//!
//! Both work a day at a time. A replay day is one transaction holding the
//! rebuild lock exclusively; the projector takes the same lock shared for
//! each commit, so a rebuild never interleaves with live counting and the
//! rebuilt rows equal what live projection would have produced.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use tokenusage_schema::{Grain, notice};

/// The advisory lock id shared by rebuilds (exclusive) and commits (shared).
pub(crate) const REBUILD_LOCK: i64 = 0x746f_6b65_6e75; // "tokenu"

/// How one grain's stored rollups differ from the raw events in a range.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Drift {
    pub grain: String,
    /// Rows whose sums differ.
    pub changed: u64,
    /// Rows the raw events imply but the rollup lacks.
    pub missing: u64,
    /// Rollup rows with no raw events behind them.
    pub extra: u64,
    /// Stored minus recomputed, summed over the range.
    pub input_tokens_delta: i64,
    pub output_tokens_delta: i64,
    pub events_delta: i64,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.changed == 0 && self.missing == 0 && self.extra == 0
    }

    fn add(&mut self, o: &Drift) {
        self.changed += o.changed;
        self.missing += o.missing;
        self.extra += o.extra;
        self.input_tokens_delta += o.input_tokens_delta;
        self.output_tokens_delta += o.output_tokens_delta;
        self.events_delta += o.events_delta;
    }
}

/// Widens `[from, to)` to whole hours, the coarsest grain, so every rebuilt
/// bucket is complete.
pub fn align(from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let h = TimeDelta::hours(1);
    let from = from.duration_trunc(h).unwrap_or(from);
    let t = to.duration_trunc(h).unwrap_or(to);
    (from, if t < to { t + h } else { t })
}

/// Compares (and unless `dry_run`, rewrites) the rollups of one grain over
/// `[from, to)` inside `tx`.
async fn one_grain(
    tx: &mut Transaction<'_, Postgres>,
    grain: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    user: Option<&str>,
    dry_run: bool,
) -> Result<Drift, sqlx::Error> {
    // Table and bucket expression come from a fixed enum, never from input.
    let recomputed = format!(
        r#"
        select user_id, {bucket} as bucket, activity, model,
               sum(input_tokens)::int8 as input_tokens, sum(output_tokens)::int8 as output_tokens, count(*)::int8 as events
        from usage_events
        where occurred_at >= $1 and occurred_at < $2 and ($3::text is null or user_id = $3)
        group by 1, 2, 3, 4
        "#,
        bucket = grain.sql_floor("occurred_at")
    );
    let diff_sql = format!(
        r#"
        with r as ({recomputed}),
             s as (select * from {table} where bucket >= $1 and bucket < $2 and ($3::text is null or user_id = $3))
        select
          count(*) filter (where s.user_id is not null and r.user_id is not null
                           and (s.input_tokens, s.output_tokens, s.events) <> (r.input_tokens, r.output_tokens, r.events))::int8,
          count(*) filter (where s.user_id is null)::int8,
          count(*) filter (where r.user_id is null)::int8,
          (coalesce(sum(s.input_tokens), 0) - coalesce(sum(r.input_tokens), 0))::int8,
          (coalesce(sum(s.output_tokens), 0) - coalesce(sum(r.output_tokens), 0))::int8,
          (coalesce(sum(s.events), 0) - coalesce(sum(r.events), 0))::int8
        from r full outer join s using (user_id, bucket, activity, model)
        "#,
        table = grain.table()
    );
    let (changed, missing, extra, di, dout, de): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(&diff_sql).bind(from).bind(to).bind(user).fetch_one(&mut **tx).await?;
    let drift = Drift {
        grain: grain.table().to_owned(),
        changed: changed as u64,
        missing: missing as u64,
        extra: extra as u64,
        input_tokens_delta: di,
        output_tokens_delta: dout,
        events_delta: de,
    };
    if !dry_run && !drift.is_clean() {
        let delete = format!(
            "delete from {table} where bucket >= $1 and bucket < $2 and ($3::text is null or user_id = $3)",
            table = grain.table()
        );
        sqlx::query(&delete).bind(from).bind(to).bind(user).execute(&mut **tx).await?;
        let insert = format!(
            "insert into {table} (user_id, bucket, activity, model, input_tokens, output_tokens, events) {recomputed}",
            table = grain.table()
        );
        sqlx::query(&insert).bind(from).bind(to).bind(user).execute(&mut **tx).await?;
    }
    Ok(drift)
}

/// Replays (or with `dry_run`, only compares) `[from, to)` a day at a time,
/// calling `progress(days_done, days_total)` after each day. Returns the
/// drift found per grain, summed over the range; after a real replay the
/// rollups equal the raw events, so running it again finds no drift.
pub async fn replay(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    user: Option<&str>,
    dry_run: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<Drift>, sqlx::Error> {
    let (from, to) = align(from, to);
    let days = ((to - from).num_hours() as u64).div_ceil(24).max(1);
    let mut totals: Vec<Drift> =
        Grain::ALL.iter().map(|g| Drift { grain: g.table().to_owned(), ..Drift::default() }).collect();
    let mut start = from;
    let mut done = 0;
    while start < to {
        let end = (start + TimeDelta::days(1)).min(to);
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock($1)").bind(REBUILD_LOCK).execute(&mut *tx).await?;
        let mut changed = false;
        for (i, g) in Grain::ALL.iter().enumerate() {
            let d = one_grain(&mut tx, *g, start, end, user, dry_run).await?;
            changed |= !d.is_clean();
            totals[i].add(&d);
        }
        if changed && !dry_run {
            // Rewritten rows have no increments to send: live views re-read.
            notice::send(&mut tx, &[notice::everyone()]).await?;
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        done += 1;
        progress(done, days);
        start = end;
    }
    Ok(totals)
}

/// The span of stored raw events, for `verify` without a range.
pub async fn raw_span(pool: &PgPool) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
    let r: (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("select min(occurred_at), max(occurred_at) from usage_events").fetch_one(pool).await?;
    Ok(r.0.zip(r.1).map(|(a, b)| (a, b + TimeDelta::seconds(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_widen_to_whole_hours() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            align(t("2026-11-20T10:15:00Z"), t("2026-11-20T12:00:00Z")),
            (t("2026-11-20T10:00:00Z"), t("2026-11-20T12:00:00Z"))
        );
        assert_eq!(
            align(t("2026-11-20T10:00:00Z"), t("2026-11-20T12:00:01Z")),
            (t("2026-11-20T10:00:00Z"), t("2026-11-20T13:00:00Z"))
        );
    }
}
