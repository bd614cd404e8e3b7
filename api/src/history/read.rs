//! Reading views from the rollups: the SQL of history, used by the REST
//! routes and the live views alike.
//!
//! The read path sums whole rollup rows into the planned buckets inside
//! PostgreSQL (`width_bucket` over the edge array, one index range scan):
//! it never touches raw events. Views whose buckets are days or longer, and
//! ranges holding whole UTC days, read the day rows (`days`) below the
//! subject's seal and the fine rollups above it, in one statement.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, QueryBuilder, Row};
use tokenusage_schema::{Grain, Sums};

use super::days;
use super::params::Filters;
use super::plan::{GroupBy, Plan};

pub use crate::access::Subject;

fn push_filters(qb: &mut QueryBuilder<'_, sqlx::Postgres>, subject: &Subject, filters: &Filters) {
    match subject {
        Subject::User(u) => {
            qb.push(" and user_id = ").push_bind(u.clone());
        }
        Subject::Team { members, .. } => {
            qb.push(" and user_id = any(").push_bind(members.to_vec()).push(")");
        }
        Subject::All => {}
    }
    for (col, values) in filters.columns() {
        if !values.is_empty() {
            // Column names come from `Filters::columns`, never from input.
            qb.push(format!(" and {col} = any(")).push_bind(values.to_vec()).push(")");
        }
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

/// Reads a planned view together with the rollup sequence and the price
/// book's currency, in one statement and so one snapshot, so live views
/// know which notified changes the numbers already hold. One round trip:
/// a cold read's cost on 2 cores was as much in its round trips as in
/// the database.
pub async fn read_snapshot(
    pool: &PgPool,
    subject: &Subject,
    plan: &Plan,
    group: GroupBy,
    filters: &Filters,
) -> sqlx::Result<Snapshot> {
    let n = plan.edges.len();
    let mut snap = Snapshot { data: SeriesData { totals: vec![Sums::default(); n], ..SeriesData::default() }, seq: 0 };
    let data = &mut snap.data;
    let add = |data: &mut SeriesData, idx: usize, key: &str, s: &Sums| {
        data.totals[idx].add(s);
        if group != GroupBy::None {
            data.groups.entry(key.to_owned()).or_insert_with(|| vec![Sums::default(); n])[idx].add(s);
        }
    };
    // Rows of three kinds, one shape: `(kind, index, key, nine sums, the
    // day plan's running sums)`. Kind 0: day rows below the seal, summed
    // per class of like days (index: the class, folded here); kind 1: fine rollups above it, summed per
    // bucket (index: `width_bucket`); kind 2: the header (key: currency,
    // first sum: the rollup sequence).
    let days = days::day_plan(plan);
    let width = days.as_ref().map_or(0, |d| d.width);
    let nulls = ", null::int8".repeat(width * Sums::WIDTH);
    let mut qb = QueryBuilder::new("");
    if let Some(dp) = &days {
        days::push_seal(&mut qb, |qb| push_filters(qb, subject, &Filters::default()));
        let summed = summed_for(group.column(), filters);
        let several = !matches!(subject, Subject::User(_));
        days::push_day_rows(&mut qb, "0::int2, ", dp, summed, group.column(), several, |qb| {
            push_filters(qb, subject, filters);
        });
        qb.push(" union all ");
    }
    // Table and group column come from enums, never from input.
    qb.push("select 1::int2, width_bucket(bucket, ").push_bind(plan.edges.clone());
    qb.push(format!(
        ")::int4, {key}, {sums}{nulls} from {table} where bucket >= ",
        key = group.column(),
        sums = Sums::sql_sums(),
        table = plan.rollup.table()
    ));
    if days.is_some() {
        qb.push("greatest(").push_bind(plan.start()).push(", (select at from seal))");
        // A view wholly below the seal skips the fine rollups without
        // scanning them (a one-time filter): everyone's rows have no index
        // on the time alone.
        qb.push(" and (select at from seal) < ").push_bind(plan.end);
    } else {
        qb.push_bind(plan.start());
    }
    qb.push(" and bucket < ").push_bind(plan.end);
    push_filters(&mut qb, subject, filters);
    qb.push(" group by 2, 3");
    qb.push(format!(
        " union all select 2::int2, 0, p.currency, s.seq{}{nulls} from rollup_sequence s, price_book_state p",
        ", 0::int8".repeat(Sums::WIDTH - 1)
    ));
    for row in qb.build().fetch_all(pool).await? {
        let (kind, i, key): (i16, i32, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        match (kind, &days) {
            (0, Some(dp)) => {
                let total = Sums::from_row(&row, 3)?;
                let running: Vec<Sums> =
                    (0..dp.width).map(|c| Sums::from_row(&row, 3 + Sums::WIDTH * (c + 1))).collect::<Result<_, _>>()?;
                // The class's sums fold as its first day.
                let Some(&day) = usize::try_from(i).ok().and_then(|c| c.checked_sub(1)).and_then(|c| dp.classes.get(c))
                else {
                    continue;
                };
                dp.fold(day, &total, &running, |idx, s| add(data, idx, &key, s));
            }
            (1, _) => {
                // width_bucket: 1-based index of the last edge <= bucket.
                let Some(idx) = usize::try_from(i).ok().and_then(|i| i.checked_sub(1)).filter(|i| *i < n) else {
                    continue;
                };
                add(data, idx, &key, &Sums::from_row(&row, 3)?);
            }
            _ => {
                data.currency = key;
                snap.seq = row.try_get(3)?;
            }
        }
    }
    Ok(snap)
}

/// The day rows' grouping that holds the group column and every filtered
/// dimension.
fn summed_for(group_column: &str, filters: &Filters) -> i16 {
    let filtered = filters.columns().into_iter().filter(|(_, v)| !v.is_empty()).map(|(c, _)| c);
    tokenusage_schema::days::summed_keeping(filtered.chain([group_column]))
}

/// `(<the subject's rows of [from, to)>) r`: a derived table of rollup-shaped
/// rows (user, activity, model, project, source, the nine measures) whose
/// sums over `[from, to)` are exact. Whole UTC days come from the day rows
/// (grouped as `kept` and the filters need) below the subject's seal, the
/// rest from the fine rollups; `rollup` is the grain `[from, to)` lies on.
fn push_source(
    qb: &mut QueryBuilder<'_, sqlx::Postgres>,
    rollup: Grain,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    subject: &Subject,
    filters: &Filters,
    kept: &[&str],
) {
    let cols = format!("user_id, activity, model, project, source, {}", days::MEASURES.join(", "));
    // One branch per table; tables come from enums, never from input.
    let fine = |qb: &mut QueryBuilder<'_, sqlx::Postgres>, g: Grain, a: DateTime<Utc>, b: DateTime<Utc>, seal: bool| {
        qb.push(format!("select {cols} from {} where bucket >= ", g.table()));
        if seal {
            // Wholly below the seal: skipped without a scan (one-time filter).
            qb.push("greatest(")
                .push_bind(a)
                .push(", (select at from seal)) and (select at from seal) < ")
                .push_bind(b);
        } else {
            qb.push_bind(a);
        }
        qb.push(" and bucket < ").push_bind(b);
        push_filters(qb, subject, filters);
    };
    qb.push("(");
    match days::split_range(from, to) {
        Some(split) => {
            let (d0, d1) = (split.head.1, split.tail.0);
            days::push_seal(qb, |qb| push_filters(qb, subject, &Filters::default()));
            let filtered = filters.columns().into_iter().filter(|(_, v)| !v.is_empty()).map(|(c, _)| c);
            let summed = tokenusage_schema::days::summed_keeping(filtered.chain(kept.iter().copied()));
            qb.push(format!("select {cols} from usage_day where summed = ")).push_bind(summed);
            qb.push(" and day >= ").push_bind(split.days.0).push(" and day < least(").push_bind(split.days.1);
            qb.push(", (select through from seal))");
            push_filters(qb, subject, filters);
            qb.push(" union all ");
            fine(qb, Grain::coarsest_for([split.head.0, split.head.1]), split.head.0, split.head.1, false);
            qb.push(" union all ");
            fine(qb, Grain::Hour, d0, d1, true);
            qb.push(" union all ");
            fine(qb, Grain::coarsest_for([split.tail.0, split.tail.1]), split.tail.0, split.tail.1, false);
        }
        None => fine(qb, rollup, from, to, false),
    }
    qb.push(") r");
}

/// `<select> from <the subject's rows of [from, to)> r`, ready for a
/// `group by`; `kept` names the dimensions the select groups by.
fn ranged<'a>(
    select: &str,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    subject: &Subject,
    filters: &Filters,
    kept: &[&str],
) -> QueryBuilder<'a, sqlx::Postgres> {
    let mut qb = QueryBuilder::new(format!("{select} from "));
    push_source(&mut qb, rollup, (from, to), subject, filters, kept);
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
    let select = format!("select {}", Sums::sql_sums());
    let row = ranged(&select, rollup, from, to, subject, filters, &[]).build().fetch_one(pool).await?;
    Sums::from_row(&row, 0)
}

/// One row of a breakdown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BreakdownRow {
    pub activity: String,
    pub model: String,
    /// `""`: no project.
    pub project: String,
    /// The publisher (`""`: counted before sources were kept in rollups).
    pub source: String,
    #[serde(flatten)]
    pub sums: Sums,
}

/// Sums per activity, model, project and source over `[from, to)` (on
/// `rollup`'s grid).
pub async fn read_breakdown(
    pool: &PgPool,
    subject: &Subject,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
) -> sqlx::Result<Vec<BreakdownRow>> {
    let select = format!("select activity, model, project, source, {}", Sums::sql_sums());
    let mut qb = ranged(&select, rollup, from, to, subject, filters, &tokenusage_schema::days::DIMENSIONS);
    qb.push(" group by 1, 2, 3, 4 order by sum(input_tokens + output_tokens) desc, 1, 2, 3, 4");
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            Ok(BreakdownRow {
                activity: r.try_get(0)?,
                model: r.try_get(1)?,
                project: r.try_get(2)?,
                source: r.try_get(3)?,
                sums: Sums::from_row(r, 4)?,
            })
        })
        .collect()
}

/// The values of each dimension seen in a range.
#[derive(Debug, Default)]
pub struct Dimensions {
    pub activities: BTreeSet<String>,
    pub models: BTreeSet<String>,
    pub projects: BTreeSet<String>,
    pub sources: BTreeSet<String>,
}

/// Activities, models, projects and sources seen in a range (hour grid,
/// widened to whole hours).
pub async fn read_dimensions(
    pool: &PgPool,
    subject: &Subject,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> sqlx::Result<Dimensions> {
    let (from, to) =
        (Grain::Hour.floor(from), Grain::Hour.floor(to - chrono::TimeDelta::nanoseconds(1)) + Grain::Hour.width());
    let mut qb = QueryBuilder::new("select distinct activity, model, project, source from ");
    let everything = tokenusage_schema::days::DIMENSIONS;
    push_source(&mut qb, Grain::Hour, (from, to), subject, &Filters::default(), &everything);
    let rows: Vec<(String, String, String, String)> = qb.build_query_as().fetch_all(pool).await?;
    let mut d = Dimensions::default();
    for (a, m, p, s) in rows {
        d.activities.insert(a);
        d.models.insert(m);
        d.projects.insert(p);
        d.sources.insert(s);
    }
    Ok(d)
}

/// What an overview ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranked {
    /// A rollup column (user, project, model, ...).
    By(GroupBy),
    /// Teams: each member's usage counts in every team they are in.
    Team,
}

/// The heaviest values of one dimension over `[from, to)` (on `rollup`'s
/// grid) within a subject's rows, by total tokens.
#[allow(clippy::too_many_arguments)]
pub async fn read_top(
    pool: &PgPool,
    subject: &Subject,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
    ranked: Ranked,
    limit: i64,
) -> sqlx::Result<Vec<(String, Sums)>> {
    let mut qb = match ranked {
        Ranked::By(g) => {
            let select = format!("select {}, {}", g.column(), Sums::sql_sums());
            ranged(&select, rollup, from, to, subject, filters, &[g.column()])
        }
        Ranked::Team => team_ranking(subject, rollup, from, to, filters),
    };
    qb.push(" group by 1 order by sum(input_tokens + output_tokens) desc, 1 limit ").push_bind(limit);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, Sums::from_row(r, 1)?))).collect()
}

/// `select team, sums from (<the subject's rows>) join memberships`.
fn team_ranking<'a>(
    subject: &Subject,
    rollup: Grain,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    filters: &Filters,
) -> QueryBuilder<'a, sqlx::Postgres> {
    let mut qb = QueryBuilder::new(format!("select t.name, {} from ", Sums::sql_sums()));
    push_source(&mut qb, rollup, (from, to), subject, filters, &[]);
    qb.push(" join team_members m on m.user_id = r.user_id join teams t on t.id = m.team_id");
    qb
}
