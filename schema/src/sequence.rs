//! The commit sequence (`rollup_sequence`, migration 0007): the number of
//! the last transaction that changed rollups. Every such transaction takes
//! the next number as its last statement (`tokenusage_notify_rollups`) and
//! notifies it; row locks make the numbers follow commit order. A reader
//! that sees `seq = S` in its snapshot sees exactly the changes 1..=S.

/// The current number, as of the executor's snapshot.
pub async fn current(db: impl sqlx::PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("select seq from rollup_sequence").fetch_one(db).await
}
