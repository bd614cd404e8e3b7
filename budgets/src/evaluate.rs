//! Evaluating budgets: spend summed from the rollups, thresholds compared,
//! and every crossing (or its undoing) written together with the
//! notifications it owes, in one transaction.
//!
//! Evaluations take turns through a transaction-level advisory lock, and
//! read the rollups after taking it, so two API processes (each evaluates)
//! cannot act on sums older than the other's: a crossing row is inserted
//! once, and its deliveries with it (`webhook_deliveries_once` backs that
//! up). Only budgets whose users, team members or projects the projector's
//! notices named are evaluated, plus all of them once a sweep is due (new
//! windows, re-pricing, anything missed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};
use tokenusage_schema::Grain;
use tokio_util::sync::CancellationToken;

use super::board::{Board, Status, Touched};
use super::window::{ROLLING_WINDOW_START, Window};
use super::{Budget, Measure, Period, Scope, ScopeKind};

/// The advisory lock evaluations take turns with ("budgets" in ASCII).
const EVALUATION_LOCK: i64 = 0x0062_7564_6765_7473;
/// Every budget is evaluated at least this often.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// Notices arriving together are evaluated together: at most one pass per
/// this interval.
const PASS_SPACING: Duration = Duration::from_millis(200);

/// Spend of one scope in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Spend {
    tokens: i64,
    cost: i64,
    unpriced: i64,
}

/// One crossing as the board and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Crossing {
    pub threshold: i32,
    pub crossed_at: DateTime<Utc>,
    /// When the spend fell back under it (re-pricing, a rolling window).
    pub resolved_at: Option<DateTime<Utc>>,
}

/// What happened to a threshold in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Crossed { episode: i32 },
    Resolved { episode: i32 },
}

/// Whether `spent` reaches `threshold` percent of `amount` (exact).
pub fn reached(spent: i64, amount: i64, threshold: i32) -> bool {
    i128::from(spent) * 100 >= i128::from(amount) * i128::from(threshold)
}

/// Percent of the amount, for display.
pub fn percent(spent: i64, amount: i64) -> f64 {
    if amount <= 0 { 0.0 } else { spent as f64 * 100.0 / amount as f64 }
}

/// A stored crossing: (budget, window key, threshold) → (episode, crossed at, resolved at).
type CrossingKey = (i64, DateTime<Utc>, i32);
type CrossingRow = (i32, DateTime<Utc>, Option<DateTime<Utc>>);

/// Which scopes of which kind a group of budgets asks about.
type GroupKey = (ScopeKind, Vec<(Grain, DateTime<Utc>, DateTime<Utc>)>);

/// Sums `[from, to)` of one grain per scope id of one kind.
async fn sum_piece(
    tx: &mut Transaction<'_, Postgres>,
    kind: ScopeKind,
    ids: &[String],
    team_ids: &[i64],
    (grain, from, to): (Grain, DateTime<Utc>, DateTime<Utc>),
) -> sqlx::Result<Vec<(String, Spend)>> {
    let sums = "coalesce(sum(r.input_tokens + r.output_tokens), 0)::int8, coalesce(sum(r.cost_nanos), 0)::int8, \
                coalesce(sum(r.unpriced_tokens), 0)::int8";
    // Tables and columns come from enums and constants, never from input.
    let mut qb: QueryBuilder<'_, Postgres> = match kind {
        ScopeKind::Team => {
            let mut qb = QueryBuilder::new(format!(
                "select m.team_id::text, {sums} from {} r join team_members m on m.user_id = r.user_id \
                 where m.team_id = any(",
                grain.table()
            ));
            qb.push_bind(team_ids.to_vec()).push(")");
            qb
        }
        ScopeKind::Project => {
            let mut qb =
                QueryBuilder::new(format!("select r.project, {sums} from {} r where r.project = any(", grain.table()));
            qb.push_bind(ids.to_vec()).push(")");
            qb
        }
        ScopeKind::User => {
            let mut qb =
                QueryBuilder::new(format!("select r.user_id, {sums} from {} r where r.user_id = any(", grain.table()));
            qb.push_bind(ids.to_vec()).push(")");
            qb
        }
    };
    qb.push(" and r.bucket >= ").push_bind(from).push(" and r.bucket < ").push_bind(to).push(" group by 1");
    let rows = qb.build().fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, Spend { tokens: r.try_get(1)?, cost: r.try_get(2)?, unpriced: r.try_get(3)? })))
        .collect()
}

/// The key a budget's spend is filed under in its group's sums.
fn spend_key(b: &Budget, team_ids: &HashMap<String, i64>) -> String {
    match &b.scope {
        Scope::Team(t) => team_ids.get(t).map(i64::to_string).unwrap_or_default(),
        s => s.id().to_owned(),
    }
}

/// One evaluation pass over `touched`'s budgets (all of them for a sweep)
/// as of `now`. Returns the states it computed; the board has them too.
pub async fn pass(pool: &PgPool, board: &Board, touched: &Touched, now: DateTime<Utc>) -> sqlx::Result<Vec<Status>> {
    let t_start = std::time::Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock($1)").bind(EVALUATION_LOCK).execute(&mut *tx).await?;
    let budgets = super::list(&mut *tx).await?;
    let teams = tokenusage_schema::teams::all(&mut *tx).await?;
    let team_ids: HashMap<String, i64> = teams.iter().map(|t| (t.name.clone(), t.id)).collect();
    let members: HashMap<String, Vec<String>> = teams.into_iter().map(|t| (t.name, t.members)).collect();
    let (seq, currency): (i64, String) =
        sqlx::query_as("select s.seq, p.currency from rollup_sequence s, price_book_state p")
            .fetch_one(&mut *tx)
            .await?;

    let t_loaded = std::time::Instant::now();
    let known = board.known_ids();
    // Rolling windows move on by themselves, a minute at a time: each is
    // evaluated once a minute even when nothing touched it.
    let minute = now.timestamp().div_euclid(60);
    let rolling_due = board.rolling_minute_passed(minute);
    let chosen: Vec<&Budget> = budgets
        .iter()
        .filter(|b| {
            touched.everything
                || !known.contains(&b.id)
                || match &b.scope {
                    Scope::User(u) => touched.users.contains(u),
                    Scope::Team(t) => members.get(t).is_some_and(|m| m.iter().any(|u| touched.users.contains(u))),
                    Scope::Project(p) => touched.all_projects || touched.projects.contains(p),
                }
                || (rolling_due && b.period == Period::Rolling)
        })
        .collect();

    // One query per scope kind and window layout, whatever the number of
    // budgets sharing it.
    let mut groups: BTreeMap<GroupKey, (Vec<String>, Vec<i64>)> = BTreeMap::new();
    let windows: Vec<Window> = chosen.iter().map(|b| Window::of(b, now)).collect();
    for (b, w) in chosen.iter().zip(&windows) {
        let g = groups.entry((b.scope.kind(), w.pieces())).or_default();
        match &b.scope {
            Scope::Team(t) => g.1.extend(team_ids.get(t)),
            s => g.0.push(s.id().to_owned()),
        }
    }
    let mut spend: HashMap<GroupKey, HashMap<String, Spend>> = HashMap::new();
    for ((kind, pieces), (mut ids, mut tids)) in groups {
        ids.sort();
        ids.dedup();
        tids.sort_unstable();
        tids.dedup();
        let mut acc: HashMap<String, Spend> = HashMap::new();
        for p in &pieces {
            for (k, s) in sum_piece(&mut tx, kind, &ids, &tids, *p).await? {
                let e = acc.entry(k).or_default();
                e.tokens += s.tokens;
                e.cost += s.cost;
                e.unpriced += s.unpriced;
            }
        }
        spend.insert((kind, pieces), acc);
    }

    let t_summed = std::time::Instant::now();
    let ids: Vec<i64> = chosen.iter().map(|b| b.id).collect();
    #[allow(clippy::type_complexity)] // one row, named below
    let existing: Vec<(i64, DateTime<Utc>, i32, i32, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "select budget_id, window_start, threshold, episode, crossed_at, resolved_at from budget_crossings \
         where budget_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut crossings: HashMap<CrossingKey, CrossingRow> =
        existing.into_iter().map(|(b, w, t, e, c, r)| ((b, w, t), (e, c, r))).collect();

    let t_crossings = std::time::Instant::now();
    let mut statuses = Vec::with_capacity(chosen.len());
    let mut changes = 0usize;
    let (mut crossed_n, mut resolved_n) = (0u64, 0u64);
    let (mut s_id, mut s_start, mut s_end, mut s_spent, mut s_unpriced) = (vec![], vec![], vec![], vec![], vec![]);
    for (b, w) in chosen.iter().zip(windows) {
        let s = spend
            .get(&(b.scope.kind(), w.pieces()))
            .and_then(|m| m.get(&spend_key(b, &team_ids)))
            .copied()
            .unwrap_or_default();
        let spent = match b.measure {
            Measure::Tokens => s.tokens,
            Measure::Cost => s.cost,
        };
        let mut changed_here = false;
        for &t in &b.thresholds {
            let key = (b.id, w.key, t);
            let over = reached(spent, b.amount, t);
            let change = match crossings.get(&key) {
                None if over => Some(Change::Crossed { episode: 1 }),
                Some((e, _, Some(_))) if over => Some(Change::Crossed { episode: e + 1 }),
                Some((e, _, None)) if !over => Some(Change::Resolved { episode: *e }),
                _ => None,
            };
            let Some(change) = change else { continue };
            changes += 1;
            changed_here = true;
            match change {
                Change::Crossed { .. } => crossed_n += 1,
                Change::Resolved { .. } => resolved_n += 1,
            }
            record(&mut tx, b, &w, t, change, spent, s.unpriced, &currency, now).await?;
            let entry = crossings.entry(key).or_insert((1, now, None));
            match change {
                Change::Crossed { episode } => *entry = (episode, now, None),
                Change::Resolved { .. } => entry.2 = Some(now),
            }
        }
        let crossed: Vec<Crossing> = b
            .thresholds
            .iter()
            .filter_map(|t| {
                crossings.get(&(b.id, w.key, *t)).map(|(_, c, r)| Crossing {
                    threshold: *t,
                    crossed_at: *c,
                    resolved_at: *r,
                })
            })
            .collect();
        // The stored copy (for the CLI and other processes; this process
        // answers from the board) is rewritten on sweeps, on crossings and
        // for new budgets: under load every budget's spend moves every
        // pass, and rewriting thousands of rows each time would double the
        // evaluation's cost.
        if touched.everything || changed_here || !known.contains(&b.id) {
            s_id.push(b.id);
            s_start.push(w.start);
            s_end.push(w.end);
            s_spent.push(spent);
            s_unpriced.push(s.unpriced);
        }
        let forecast = w.forecast(w.key == ROLLING_WINDOW_START, spent, now);
        statuses.push(Status {
            budget: (*b).clone(),
            window_start: w.start,
            window_end: w.end,
            spent,
            unpriced_tokens: s.unpriced,
            forecast,
            crossed,
            evaluated_at: now,
            currency: currency.clone(),
        });
    }
    sqlx::query(
        "insert into budget_state (budget_id, window_start, window_end, spent, unpriced, evaluated_at, seq) \
         select *, $6, $7 from unnest($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::int8[], $5::int8[]) \
         on conflict (budget_id) do update set window_start = excluded.window_start, window_end = excluded.window_end, \
         spent = excluded.spent, unpriced = excluded.unpriced, evaluated_at = excluded.evaluated_at, seq = excluded.seq",
    )
    .bind(&s_id)
    .bind(&s_start)
    .bind(&s_end)
    .bind(&s_spent)
    .bind(&s_unpriced)
    .bind(now)
    .bind(seq)
    .execute(&mut *tx)
    .await?;
    let t_written = std::time::Instant::now();
    tx.commit().await?;
    tracing::debug!(
        budgets = budgets.len(),
        evaluated = chosen.len(),
        load_ms = (t_loaded - t_start).as_millis() as u64,
        sums_ms = (t_summed - t_loaded).as_millis() as u64,
        crossings_ms = (t_crossings - t_summed).as_millis() as u64,
        write_ms = (t_written - t_crossings).as_millis() as u64,
        "budget evaluation pass"
    );
    // Counted once they are facts.
    metrics::counter!("tokenusage_budget_crossings_total", "event" => "crossed").increment(crossed_n);
    metrics::counter!("tokenusage_budget_crossings_total", "event" => "resolved").increment(resolved_n);
    board.update(budgets, members, statuses.clone());
    if changes > 0 {
        tracing::debug!(changes, "budget thresholds changed");
        board.deliveries_due();
    }
    Ok(statuses)
}

/// Writes one threshold's crossing (or its undoing) and the deliveries it
/// owes to the budget's endpoints, in the evaluation's transaction.
#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &mut Transaction<'_, Postgres>,
    b: &Budget,
    w: &Window,
    threshold: i32,
    change: Change,
    spent: i64,
    unpriced: i64,
    currency: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let (event, episode) = match change {
        Change::Crossed { episode } => {
            sqlx::query(
                "insert into budget_crossings (budget_id, window_start, threshold, episode, crossed_at) \
                 values ($1, $2, $3, $4, $5) on conflict (budget_id, window_start, threshold) \
                 do update set episode = excluded.episode, crossed_at = excluded.crossed_at, resolved_at = null",
            )
            .bind(b.id)
            .bind(w.key)
            .bind(threshold)
            .bind(episode)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            ("budget.crossed", episode)
        }
        Change::Resolved { episode } => {
            sqlx::query(
                "update budget_crossings set resolved_at = $4 where budget_id = $1 and window_start = $2 and threshold = $3",
            )
            .bind(b.id)
            .bind(w.key)
            .bind(threshold)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            ("budget.resolved", episode)
        }
    };
    let what = event.trim_start_matches("budget.");
    tracing::info!(budget = b.id, threshold, event, spent, "budget threshold {what}");
    if b.webhooks.is_empty() {
        return Ok(());
    }
    let key = format!(
        "tu-budget-{}-{}-{threshold}-{episode}-{}",
        b.id,
        w.key.timestamp(),
        event.trim_start_matches("budget.")
    );
    let payload = super::webhooks::payload(b, w, threshold, event, &key, spent, unpriced, currency, now);
    sqlx::query(
        "insert into webhook_deliveries (endpoint_id, budget_id, event, idempotency_key, payload) \
         select e.id, $2, $3, $4, $5 from webhook_endpoints e where e.name = any($1) \
         on conflict (endpoint_id, idempotency_key) do nothing",
    )
    .bind(&b.webhooks)
    .bind(b.id)
    .bind(event)
    .bind(&key)
    .bind(payload)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Evaluates budgets until `shutdown`: after the projector's notices named
/// a budget's scope, and every [`SWEEP_EVERY`].
pub async fn run(pool: PgPool, board: Arc<Board>, shutdown: CancellationToken) {
    board.activate();
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = board.touched_notified() => {}
            () = tokio::time::sleep_until(next_sweep) => {}
        }
        let mut touched = board.take_touched();
        if tokio::time::Instant::now() >= next_sweep {
            touched.everything = true;
            next_sweep = tokio::time::Instant::now() + SWEEP_EVERY;
        }
        let started = std::time::Instant::now();
        match pass(&pool, &board, &touched, Utc::now()).await {
            Ok(s) => {
                metrics::counter!("tokenusage_budget_evaluations_total").increment(1);
                metrics::histogram!("tokenusage_budget_evaluation_seconds").record(started.elapsed().as_secs_f64());
                tracing::debug!(budgets = s.len(), "budgets evaluated");
            }
            Err(e) => {
                tracing::warn!(error = %e, "budget evaluation failed; retrying");
                board.touch(Touched { everything: true, ..Touched::default() });
                tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(Duration::from_secs(1)) => {} }
            }
        }
        tokio::select! { () = shutdown.cancelled() => return, () = tokio::time::sleep(PASS_SPACING) => {} }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_reached_exactly() {
        assert!(reached(800, 1000, 80));
        assert!(!reached(799, 1000, 80));
        assert!(reached(i64::MAX, i64::MAX, 100));
        assert!(!reached(i64::MAX - 1, i64::MAX, 100));
        assert!(reached(3, 1, 300));
    }
}
