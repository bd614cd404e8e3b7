//! Sealing: building the day rows (`usage_day`, migration 0013) of ended
//! UTC days from the quarter-hour rollup, off the counting path.
//!
//! Each user has a seal (`usage_day_seal`): every day before it has day
//! rows equal to its quarter-hour rows, so reads take day rows below the
//! seal and the fine rollups above it. Counting anything below a seal lowers
//! it in the counting transaction (`tokenusage_lower_day_seals`), and so do
//! rebuilds; the sealer then rebuilds those days and raises the seal again.
//!
//! The sealer works a bounded batch at a time: at most [`USERS_PER_TX`]
//! users, each at most [`DAYS_PER_TX`] days, per transaction. It locks the
//! seal rows it works on with `skip locked`, so it never waits on a counting
//! transaction, and one that lowers a seal it holds waits for it and then
//! lowers it past whatever the sealer just built. Several projectors may run
//! it at once.

use std::time::Instant;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::PgPool;
use tokenusage_schema::rows::MEASURES;

/// Users sealed per transaction.
pub const USERS_PER_TX: i64 = 64;
/// Days one user is sealed by per transaction (a user with a long unsealed
/// history, e.g. after this migration, is built over several).
pub const DAYS_PER_TX: i64 = 31;
/// How long after a UTC day ends it is sealed: events of the day that
/// arrive this late still land before sealing (later ones lower the seal,
/// which is exact but costs a rebuild of the day).
pub const GRACE: TimeDelta = TimeDelta::hours(1);

/// The first day not yet sealable at `now`: days before it have ended at
/// least [`GRACE`] ago.
pub fn target(now: DateTime<Utc>) -> NaiveDate {
    (now - GRACE).date_naive()
}

/// What one sealing pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Seals moved (a user sealed over several transactions counts in
    /// each).
    pub users: u64,
    /// Day rows written.
    pub rows: u64,
    pub transactions: u64,
}

/// Seals every user up to `target` (exclusive; never a day that ended less
/// than [`GRACE`] ago by the database's clock), in bounded transactions,
/// calling `progress` after each. Users whose seal row a counting
/// transaction holds are skipped this pass. Returns what it did.
pub async fn seal(pool: &PgPool, target: NaiveDate, mut progress: impl FnMut(&Sealed)) -> Result<Sealed, sqlx::Error> {
    let mut done = Sealed::default();
    loop {
        let mut tx = pool.begin().await?;
        // Where each picked user's building starts: their first
        // quarter-hour row at or after the seal (quiet days cost nothing),
        // or the target if there is none.
        // The target is capped by the database's clock: never a day that
        // ended less than GRACE ago, which the counting transactions rely
        // on (they lock seal rows only for days before today).
        let picked: Vec<(String, NaiveDate, NaiveDate)> = sqlx::query_as(
            r#"
            with t as (select least($1::date, ((clock_timestamp() - make_interval(secs => $3)) at time zone 'UTC')::date)
                                as target)
            select s.user_id,
                   least(t.target, coalesce((select (min(q.bucket) at time zone 'UTC')::date
                                               from usage_quarter_hour q
                                              where q.user_id = s.user_id and q.bucket >= s.sealed_through), t.target)),
                   t.target
              from usage_day_seal s, t
             where s.sealed_through < t.target
             order by s.sealed_through, s.user_id
             limit $2
               for update of s skip locked
            "#,
        )
        .bind(target)
        .bind(USERS_PER_TX)
        .bind(GRACE.num_seconds() as f64)
        .fetch_all(&mut *tx)
        .await?;
        if picked.is_empty() {
            tx.commit().await?;
            return Ok(done);
        }
        let users: Vec<&str> = picked.iter().map(|(u, _, _)| u.as_str()).collect();
        let starts: Vec<NaiveDate> = picked.iter().map(|(_, s, _)| *s).collect();
        let ends: Vec<NaiveDate> =
            picked.iter().map(|(_, s, target)| (*s + TimeDelta::days(DAYS_PER_TX)).min(*target)).collect();
        // Stale rows from the old seal on (a lowered seal leaves them).
        sqlx::query(
            r#"
            delete from usage_day d
             using usage_day_seal s, unnest($1::text[], $2::date[]) as w(u, t)
             where s.user_id = w.u and d.user_id = w.u and d.day >= s.sealed_through and d.day < w.t
            "#,
        )
        .bind(&users)
        .bind(&ends)
        .execute(&mut *tx)
        .await?;
        let rows = build(&mut tx, Target::Day, &users, &starts, &ends).await?;
        sqlx::query(
            "update usage_day_seal s set sealed_through = w.t \
             from unnest($1::text[], $2::date[]) as w(u, t) where s.user_id = w.u",
        )
        .bind(&users)
        .bind(&ends)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        done.users += picked.len() as u64;
        done.rows += rows;
        done.transactions += 1;
        progress(&done);
    }
}

/// Where [`build`] writes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The day rows themselves.
    Day,
    /// `verify`'s temporary copy.
    Check,
}

/// Writes the day rows of `[starts[i], ends[i])` for each `users[i]` from
/// the quarter-hour rollup. Returns how many.
async fn build(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    into: Target,
    users: &[&str],
    starts: &[NaiveDate],
    ends: &[NaiveDate],
) -> Result<u64, sqlx::Error> {
    // One of two fixed identifiers, never input.
    let table = match into {
        Target::Day => "usage_day",
        Target::Check => "day_check",
    };
    // Each quarter-hour row summed at every grouping the reads use
    // (grouping sets; `grouping()` names the dimensions summed away), then
    // running sums per (user, grouping, day, series) in quarter order, then
    // one row per series-day with its quarters and their running sums as
    // an [n][9] array (the order of `Sums::to_array`).
    // Every measure list comes from `MEASURES` (one definition of what a
    // row holds), in its order.
    let each = |f: &dyn Fn(&str) -> String| MEASURES.map(f).join(", ");
    let columns = MEASURES.join(", ");
    let sums = each(&|m| format!("sum({m})::int8"));
    let running = each(&|m| format!("r_{m}"));
    let window_sums = each(&|m| format!("(sum({m}) over w)::int8 as r_{m}"));
    let quarter_sums = each(&|m| format!("sum(q.{m}) as {m}"));
    let sql = format!(
        r#"
        insert into {table} (user_id, summed, day, activity, model, source, project, {columns}, quarters, running)
        select user_id, summed, day, activity, model, source, project, {sums},
               array_agg(quarter order by quarter),
               array_agg(array[{running}] order by quarter)
          from (
            select g.*, {window_sums}
              from (
                select q.user_id, grouping(q.activity, q.model, q.source, q.project)::int2 as summed,
                       (q.bucket at time zone 'UTC')::date as day,
                       coalesce(q.activity, '') as activity, coalesce(q.model, '') as model,
                       coalesce(q.source, '') as source, coalesce(q.project, '') as project,
                       ((extract(epoch from q.bucket)::int8 / 900) % 96)::int4 as quarter,
                       {quarter_sums}
                  from unnest($1::text[], $2::date[], $3::date[]) as u(user_id, f, t)
                  join usage_quarter_hour q
                    on q.user_id = u.user_id and q.bucket >= u.f::timestamp at time zone 'UTC'
                   and q.bucket < u.t::timestamp at time zone 'UTC'
                 group by grouping sets (
                       (q.user_id, q.bucket, q.activity, q.model, q.source, q.project),
                       (q.user_id, q.bucket, q.activity), (q.user_id, q.bucket, q.model),
                       (q.user_id, q.bucket, q.source), (q.user_id, q.bucket, q.project),
                       (q.user_id, q.bucket))
              ) g
            window w as (partition by user_id, summed, day, activity, model, source, project order by quarter)
          ) x
         group by user_id, summed, day, activity, model, source, project
        "#
    );
    let r = sqlx::query(&sql).bind(users).bind(starts).bind(ends).execute(&mut **tx).await?;
    Ok(r.rows_affected())
}

/// How the sealed day rows compare with the quarter-hour rollup they stand
/// for (`tokenusage verify`, tests): rows that differ in any sum, quarter
/// or running sum, are missing, or have nothing behind them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DayDrift {
    pub rows_checked: u64,
    pub differing: u64,
}

/// Compares the day rows below each user's seal with rows rebuilt from the
/// quarter-hour rollup now, over the days of `[from, to)`.
pub async fn verify(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> Result<DayDrift, sqlx::Error> {
    let mut tx = pool.begin_with("begin isolation level repeatable read").await?;
    // Rebuild into a temporary copy, in the same snapshot, and compare.
    sqlx::query("create temporary table day_check (like usage_day) on commit drop").execute(&mut *tx).await?;
    let seals: Vec<(String, NaiveDate)> = sqlx::query_as(
        "select user_id, least(sealed_through, $2::date) from usage_day_seal where sealed_through > $1::date",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    let users: Vec<&str> = seals.iter().map(|(u, _)| u.as_str()).collect();
    let starts = vec![from; seals.len()];
    let ends: Vec<NaiveDate> = seals.iter().map(|(_, t)| *t).collect();
    build(&mut tx, Target::Check, &users, &starts, &ends).await?;
    let (checked, differing): (i64, i64) = sqlx::query_as(
        r#"
        with s as (select d.* from usage_day d join usage_day_seal x using (user_id)
                    where d.day >= $1 and d.day < least(x.sealed_through, $2))
        select count(*), count(*) filter (where s.user_id is null or c.user_id is null
                                            or row(s.*)::text <> row(c.*)::text)
          from s full outer join day_check c using (user_id, summed, day, activity, model, source, project)
        "#,
    )
    .bind(from)
    .bind(to)
    .fetch_one(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(DayDrift { rows_checked: checked as u64, differing: differing as u64 })
}

/// Runs [`seal`] for `target(now)` and logs what it did; errors are
/// logged, and the next tick tries again.
pub(crate) async fn tick(pool: &PgPool) {
    let started = Instant::now();
    let mut said = started;
    // A long first pass (a history built after the migration) says how it goes.
    let progress = |s: &Sealed| {
        if said.elapsed() >= std::time::Duration::from_secs(10) {
            said = Instant::now();
            tracing::info!(users = s.users, rows = s.rows, transactions = s.transactions, "sealing day rows");
        }
    };
    let result = seal(pool, target(Utc::now()), progress).await;
    if let Ok(s) = &result {
        metrics::counter!("tokenusage_day_rows_written_total").increment(s.rows);
    }
    // Users a pass could not finish (their seal row held by a late write,
    // or an error): reads of their older days stay on the fine rollups.
    let behind: Result<i64, _> = sqlx::query_scalar("select count(*) from usage_day_seal where sealed_through < $1")
        .bind(target(Utc::now()))
        .fetch_one(pool)
        .await;
    if let Ok(n) = behind {
        metrics::gauge!("tokenusage_day_rows_users_behind").set(n as f64);
    }
    match result {
        Ok(s) if s.users == 0 => {}
        Ok(s) => tracing::info!(
            users = s.users,
            rows = s.rows,
            transactions = s.transactions,
            ms = started.elapsed().as_millis() as u64,
            "day rows sealed"
        ),
        Err(e) => tracing::warn!(error = %e, "sealing day rows failed; will retry"),
    }
}
