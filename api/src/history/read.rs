//! Reading views from the rollups: the SQL of history, used by the REST
//! routes and the live views alike.
//!
//! The read path sums whole rollup rows into the planned buckets inside
//! PostgreSQL (`width_bucket` over the edge array, one index range scan):
//! it never touches raw events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, QueryBuilder, Row};
use tokenusage_schema::{Grain, Sums};

use super::params::Filters;
use super::plan::{GroupBy, Plan};

/// Whose usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(String),
    /// Everyone together (admins).
    All,
}

impl Subject {
    pub fn label(&self) -> &str {
        match self {
            Subject::User(u) => u,
            Subject::All => "*",
        }
    }
}

fn push_filters(qb: &mut QueryBuilder<'_, sqlx::Postgres>, subject: &Subject, filters: &Filters) {
    if let Subject::User(u) = subject {
        qb.push(" and user_id = ").push_bind(u.clone());
    }
    if !filters.activity.is_empty() {
        qb.push(" and activity = any(").push_bind(filters.activity.clone()).push(")");
    }
    if !filters.model.is_empty() {
        qb.push(" and model = any(").push_bind(filters.model.clone()).push(")");
    }
}

/// A series read: totals per bucket and, when grouped, per key.
#[derive(Debug, Clone, Default)]
pub struct SeriesData {
    pub totals: Vec<Sums>,
    /// Group key to per-bucket sums (empty when not grouped).
    pub groups: BTreeMap<String, Vec<Sums>>,
    /// The price book's currency, which every cost is in (ISO 4217).
    pub currency: String,
}

impl SeriesData {
    pub fn total(&self) -> Sums {
        let mut t = Sums::default();
        self.totals.iter().for_each(|s| t.add(s));
        t
    }
}

/// A series read and the rollup sequence it includes (migration 0007):
/// every change numbered up to `seq`, none above.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub data: SeriesData,
    pub seq: i64,
}

/// Reads a planned view together with the rollup sequence, in one
/// repeatable-read snapshot, so live views know which notified changes
/// the numbers already hold.
pub async fn read_snapshot(
    pool: &PgPool,
    subject: &Subject,
    plan: &Plan,
    group: GroupBy,
    filters: &Filters,
) -> sqlx::Result<Snapshot> {
    let mut tx = pool.begin_with("begin isolation level repeatable read read only").await?;
    // The sequence and the book's currency in one round trip.
    let (seq, currency): (i64, String) =
        sqlx::query_as("select s.seq, p.currency from rollup_sequence s, price_book_state p")
            .fetch_one(&mut *tx)
            .await?;
    let mut data = read_series(&mut *tx, subject, plan, group, filters).await?;
    data.currency = currency;
    tx.commit().await?;
    Ok(Snapshot { data, seq })
}

/// Reads a planned view.
pub async fn read_series(
    db: impl sqlx::PgExecutor<'_>,
    subject: &Subject,
    plan: &Plan,
    group: GroupBy,
    filters: &Filters,
) -> sqlx::Result<SeriesData> {
    // Table and group column come from enums, never from input.
    let mut qb = QueryBuilder::new("select width_bucket(bucket, ");
    qb.push_bind(plan.edges.clone());
    qb.push(format!(
        ")::int4 as i, {key} as key, {sums} from {table} where bucket >= ",
        key = group.column(),
        sums = Sums::SQL_SUMS,
        table = plan.rollup.table()
    ));
    qb.push_bind(plan.start()).push(" and bucket < ").push_bind(plan.end);
    push_filters(&mut qb, subject, filters);
    qb.push(" group by 1, 2");
    let rows = qb.build().fetch_all(db).await?;
    let n = plan.edges.len();
    let mut data = SeriesData { totals: vec![Sums::default(); n], ..SeriesData::default() };
    for row in rows {
        let (i, key): (i32, String) = (row.try_get(0)?, row.try_get(1)?);
        // width_bucket: 1-based index of the last edge <= bucket.
        let Some(idx) = usize::try_from(i).ok().and_then(|i| i.checked_sub(1)).filter(|i| *i < n) else { continue };
        let s = Sums::from_row(&row, 2)?;
        data.totals[idx].add(&s);
        if group != GroupBy::None {
            data.groups.entry(key).or_insert_with(|| vec![Sums::default(); n])[idx].add(&s);
        }
    }
    Ok(data)
}

/// `<select> from <rollup> where bucket in [from, to)` and the subject's and
/// filters' conditions, ready for a `group by`.
fn ranged<'a>(
    select: &str,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    subject: &Subject,
    filters: &Filters,
) -> QueryBuilder<'a, sqlx::Postgres> {
    // The table comes from an enum, never from input.
    let mut qb = QueryBuilder::new(format!("{select} from {} where bucket >= ", rollup.table()));
    qb.push_bind(from).push(" and bucket < ").push_bind(to);
    push_filters(&mut qb, subject, filters);
    qb
}

/// Sums over `[from, to)`, which must lie on `rollup`'s grid.
pub async fn read_total(
    pool: &PgPool,
    subject: &Subject,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
) -> sqlx::Result<Sums> {
    let select = format!("select {}", Sums::SQL_TOTALS);
    let row = ranged(&select, rollup, from, to, subject, filters).build().fetch_one(pool).await?;
    Sums::from_row(&row, 0)
}

/// One row of a breakdown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BreakdownRow {
    pub activity: String,
    pub model: String,
    #[serde(flatten)]
    pub sums: Sums,
}

/// Sums per activity and model over `[from, to)` (on `rollup`'s grid).
pub async fn read_breakdown(
    pool: &PgPool,
    subject: &Subject,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
) -> sqlx::Result<Vec<BreakdownRow>> {
    let select = format!("select activity, model, {}", Sums::SQL_SUMS);
    let mut qb = ranged(&select, rollup, from, to, subject, filters);
    qb.push(" group by 1, 2 order by sum(input_tokens + output_tokens) desc, 1, 2");
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| Ok(BreakdownRow { activity: r.try_get(0)?, model: r.try_get(1)?, sums: Sums::from_row(r, 2)? }))
        .collect()
}

/// Activities and models seen in a range (hour grid, widened to whole hours).
pub async fn read_dimensions(
    pool: &PgPool,
    subject: &Subject,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let from = Grain::Hour.floor(from);
    let mut qb =
        QueryBuilder::new(format!("select distinct activity, model from {} where bucket >= ", Grain::Hour.table()));
    qb.push_bind(from).push(" and bucket < ").push_bind(to);
    push_filters(&mut qb, subject, &Filters::default());
    let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().unzip())
}

/// Users by total tokens over `[from, to)` (on `rollup`'s grid).
pub async fn read_top_users(
    pool: &PgPool,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<(String, Sums)>> {
    let rows = sqlx::query(&format!(
        "select user_id, {} from {} \
         where bucket >= $1 and bucket < $2 group by 1 order by sum(input_tokens + output_tokens) desc, 1 limit $3",
        Sums::SQL_SUMS,
        rollup.table()
    ))
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, Sums::from_row(r, 1)?))).collect()
}
