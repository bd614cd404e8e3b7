//! Budgets and alerts: limits on a user's, a team's or a project's tokens or
//! cost over a calendar or rolling window, with thresholds that notify once
//! per window.
//!
//! - `window`: which window a budget is in now, and the forecast (no I/O);
//! - `evaluate`: spend summed from the rollups, crossings and their
//!   notifications written in one transaction (the outbox);
//! - `board`: the last evaluation in memory, for the check endpoint and
//!   live sockets;
//! - `webhooks`: endpoints, signatures and the sender;
//! - the REST routes are the API's (`api/src/budgets/routes.rs`).
//!
//! Spend is never counted twice or kept as a second counter: every
//! evaluation sums the rollups again, so late events, replays and
//! re-pricing move it the way they move every view.

pub mod board;
pub mod evaluate;
pub mod webhooks;
pub mod window;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// What a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Measure {
    /// Input + output tokens.
    Tokens,
    /// Cost in the price book's currency (priced tokens only; unpriced
    /// tokens are reported beside it).
    Cost,
}

pub use tokenusage_access::{Scope, ScopeKind};

/// The window a budget's spend is summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The calendar day in the budget's zone.
    Day,
    /// The calendar week (Monday to Sunday) in the budget's zone.
    Week,
    /// The calendar month in the budget's zone.
    Month,
    /// The last `rolling_minutes`, moving with the clock.
    Rolling,
}

impl Period {
    fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Rolling => "rolling",
        }
    }
    fn parse(s: &str) -> Period {
        match s {
            "day" => Period::Day,
            "week" => Period::Week,
            "rolling" => Period::Rolling,
            _ => Period::Month,
        }
    }
}

/// A budget as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Budget {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub measure: Measure,
    /// Tokens, or cost in nano-units of the currency.
    pub amount: i64,
    pub period: Period,
    /// IANA zone of a calendar window (`UTC` for rolling ones).
    pub zone: String,
    /// Length of a rolling window.
    pub rolling_minutes: Option<i32>,
    /// Percentages of `amount`, ascending (e.g. 50, 80, 100).
    pub thresholds: Vec<i32>,
    /// Webhook endpoints told of crossings.
    pub webhooks: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl Budget {
    /// The zone, parsed (validated when the budget was created).
    pub fn tz(&self) -> Tz {
        self.zone.parse().unwrap_or(Tz::UTC)
    }
}

/// A budget to create, as the API and the CLI take it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBudget {
    /// A label, 1 to 128 characters (default: made from the scope and window).
    pub name: Option<String>,
    pub scope: Scope,
    pub measure: Measure,
    /// Tokens (an integer), or cost as a decimal string in the currency
    /// (`"250.00"`).
    pub amount: serde_json::Value,
    pub period: Period,
    /// IANA zone of a calendar window (default `UTC`).
    pub zone: Option<String>,
    /// Rolling windows: their length, `"24h"`, `"7d"`, `"90m"`.
    pub window: Option<String>,
    /// Percentages of the amount, 1 to 1000 (default 50, 80, 100).
    pub thresholds: Option<Vec<i32>>,
    /// Webhook endpoint names told of crossings.
    #[serde(default)]
    pub webhooks: Vec<String>,
}

/// Why a budget was refused.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("no team {0:?}")]
    NoSuchTeam(String),
    #[error("no webhook endpoint {0:?} (admins create them: `tokenusage webhooks add`)")]
    NoSuchWebhook(String),
    #[error("a budget named {0:?} already exists for {1}; choose another name")]
    NameTaken(String, String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

fn invalid(code: &'static str, msg: impl Into<String>) -> BudgetError {
    BudgetError::Invalid(code, msg.into())
}

/// A rolling window's length: `90m`, `24h`, `7d` (1 minute to 366 days).
pub fn parse_window(s: &str) -> Result<i32, BudgetError> {
    let bad = || {
        invalid(
            "invalid_window",
            format!("a rolling window is like \"90m\", \"24h\" or \"7d\" (1 minute to 366 days), not {s:?}"),
        )
    };
    // Taken as written: " 24h" is not a window (nothing is trimmed).
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let minutes = match unit {
        "m" => n,
        "h" => n.checked_mul(60).ok_or_else(bad)?,
        "d" => n.checked_mul(1440).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    i32::try_from(minutes).ok().filter(|m| (1..=527_040).contains(m)).ok_or_else(bad)
}

/// A budget checked and normalised, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub name: String,
    /// The name was made up (none given): a taken one gets a number
    /// rather than refusing the budget.
    pub default_name: bool,
    pub scope: Scope,
    pub measure: Measure,
    pub amount: i64,
    pub period: Period,
    pub zone: String,
    pub rolling_minutes: Option<i32>,
    pub thresholds: Vec<i32>,
    pub webhooks: Vec<String>,
}

/// Validates a new budget without I/O; every error names its field.
pub fn check(b: &NewBudget) -> Result<Checked, BudgetError> {
    let id = b.scope.id();
    let id_ok = match &b.scope {
        Scope::User(u) => {
            let n = u.chars().count();
            n > 0 && n <= tokenusage_contract::Limits::ID_MAX_CHARS && !u.chars().any(char::is_control)
        }
        Scope::Team(t) => tokenusage_access::valid_team_name(t),
        Scope::Project(p) => tokenusage_contract::valid_project(p),
    };
    if !id_ok {
        return Err(invalid("invalid_scope", format!("scope.id: not a valid {} id: {id:?}", b.scope.kind().as_str())));
    }
    let amount = match (b.measure, &b.amount) {
        (Measure::Tokens, serde_json::Value::Number(n)) => n.as_i64().filter(|v| *v > 0),
        (Measure::Cost, serde_json::Value::String(s)) => {
            tokenusage_contract::money::parse_nanos_text(s).ok().filter(|v| *v > 0)
        }
        _ => None,
    }
    .ok_or_else(|| {
        invalid(
            "invalid_amount",
            match b.measure {
                Measure::Tokens => "amount: a token budget is a positive integer",
                Measure::Cost => "amount: a cost budget is a positive decimal string in the currency, like \"250.00\"",
            },
        )
    })?;
    let zone = b.zone.clone().unwrap_or_else(|| "UTC".into());
    if zone.parse::<Tz>().is_err() {
        return Err(invalid("invalid_zone", format!("zone: not an IANA time zone: {zone:?}")));
    }
    let rolling_minutes = match (b.period, &b.window) {
        (Period::Rolling, Some(w)) => Some(parse_window(w)?),
        (Period::Rolling, None) => {
            return Err(invalid("invalid_window", "window: a rolling budget needs one, like \"24h\""));
        }
        (_, Some(_)) => {
            return Err(invalid(
                "invalid_window",
                "window: only rolling budgets have one; calendar ones follow `period`",
            ));
        }
        (_, None) => None,
    };
    let mut thresholds = b.thresholds.clone().unwrap_or_else(|| vec![50, 80, 100]);
    thresholds.sort_unstable();
    thresholds.dedup();
    if thresholds.is_empty() || thresholds.len() > 16 || thresholds.iter().any(|t| !(1..=1000).contains(t)) {
        return Err(invalid("invalid_thresholds", "thresholds: 1 to 16 percentages, each 1 to 1000"));
    }
    let window_text = match (b.period, &b.window) {
        (Period::Rolling, Some(w)) => format!("last {w}"),
        (p, _) => format!("per {} ({zone})", p.as_str()),
    };
    let name = b.name.as_deref().map(str::trim).map(str::to_owned).unwrap_or_else(|| {
        format!(
            "{} {} {window_text}",
            b.scope.label(),
            match b.measure {
                Measure::Tokens => "tokens",
                Measure::Cost => "cost",
            }
        )
    });
    if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(invalid("invalid_name", "name: 1 to 128 characters without control characters"));
    }
    let mut webhooks = b.webhooks.clone();
    webhooks.sort();
    webhooks.dedup();
    if webhooks.len() > 8 {
        return Err(invalid("invalid_webhooks", "webhooks: at most 8 endpoints"));
    }
    let zone = if b.period == Period::Rolling { "UTC".into() } else { zone };
    Ok(Checked {
        default_name: b.name.is_none(),
        name,
        scope: b.scope.clone(),
        measure: b.measure,
        amount,
        period: b.period,
        zone,
        rolling_minutes,
        thresholds,
        webhooks,
    })
}

const SELECT: &str = "select b.id, b.name, b.scope_kind, coalesce(b.scope, t.name), b.measure, b.amount, b.period, b.zone, \
     b.rolling_minutes, b.thresholds, b.webhooks, b.created_by, b.created_at \
     from budgets b left join teams t on t.id = b.team_id";

#[allow(clippy::type_complexity)]
fn from_row(
    r: (
        i64,
        String,
        String,
        Option<String>,
        String,
        i64,
        String,
        String,
        Option<i32>,
        Vec<i32>,
        Vec<String>,
        String,
        DateTime<Utc>,
    ),
) -> sqlx::Result<Budget> {
    let (
        id,
        name,
        kind,
        scope,
        measure,
        amount,
        period,
        zone,
        rolling_minutes,
        thresholds,
        webhooks,
        created_by,
        created_at,
    ) = r;
    let scope = scope.unwrap_or_default();
    // The table's check constraint admits only the known kinds; anything
    // else is a schema this build does not know, not a user.
    let kind = ScopeKind::parse(&kind)
        .ok_or_else(|| sqlx::Error::Decode(format!("budget {id}: unknown scope kind {kind:?}").into()))?;
    Ok(Budget {
        id,
        name,
        scope: Scope::new(kind, scope),
        measure: if measure == "cost" { Measure::Cost } else { Measure::Tokens },
        amount,
        period: Period::parse(&period),
        zone,
        rolling_minutes,
        thresholds,
        webhooks,
        created_by,
        created_at,
    })
}

/// Stores a checked budget (its team and webhooks must exist).
pub async fn create(pool: &PgPool, b: &Checked, by: &str) -> Result<Budget, BudgetError> {
    let mut tx = pool.begin().await?;
    let team_id: Option<i64> = match &b.scope {
        Scope::Team(t) => Some(
            sqlx::query_scalar("select id from teams where name = $1")
                .bind(t)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| BudgetError::NoSuchTeam(t.clone()))?,
        ),
        _ => None,
    };
    let known: Vec<String> = sqlx::query_scalar("select name from webhook_endpoints where name = any($1)")
        .bind(&b.webhooks)
        .fetch_all(&mut *tx)
        .await?;
    if let Some(missing) = b.webhooks.iter().find(|w| !known.contains(w)) {
        return Err(BudgetError::NoSuchWebhook(missing.clone()));
    }
    let scope: Option<&str> = match &b.scope {
        Scope::Team(_) => None,
        s => Some(s.id()),
    };
    // Names are unique per scope (`budgets_name_per_scope`): a name given
    // and taken is refused; a made-up one that is taken gets a number.
    let mut id = None;
    for n in 1..=100 {
        let name =
            if n == 1 { b.name.clone() } else { format!("{} ({n})", b.name.chars().take(120).collect::<String>()) };
        id = sqlx::query_scalar(
            "insert into budgets (name, scope_kind, scope, team_id, measure, amount, period, zone, rolling_minutes, \
             thresholds, webhooks, created_by) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             on conflict (scope_kind, coalesce(scope, team_id::text), lower(name)) do nothing returning id",
        )
        .bind(&name)
        .bind(b.scope.kind().as_str())
        .bind(scope)
        .bind(team_id)
        .bind(match b.measure {
            Measure::Tokens => "tokens",
            Measure::Cost => "cost",
        })
        .bind(b.amount)
        .bind(b.period.as_str())
        .bind(&b.zone)
        .bind(b.rolling_minutes)
        .bind(&b.thresholds)
        .bind(&b.webhooks)
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        if id.is_some() || !b.default_name {
            break;
        }
    }
    let id: i64 = id.ok_or_else(|| BudgetError::NameTaken(b.name.clone(), b.scope.label()))?;
    tx.commit().await?;
    Ok(get(pool, id).await?.expect("the budget just created"))
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Budget>, sqlx::Error> {
    let r = sqlx::query_as(&format!("{SELECT} where b.id = $1")).bind(id).fetch_optional(pool).await?;
    r.map(from_row).transpose()
}

/// Every budget, by id.
pub async fn list(db: impl sqlx::PgExecutor<'_>) -> Result<Vec<Budget>, sqlx::Error> {
    let rows = sqlx::query_as(&format!("{SELECT} order by b.id")).fetch_all(db).await?;
    rows.into_iter().map(from_row).collect()
}

/// Deletes a budget (its crossings and state go with it; deliveries
/// already owed are still sent).
pub async fn delete(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("delete from budgets where id = $1").bind(id).execute(pool).await?.rows_affected() > 0)
}

#[cfg(test)]
mod tests;
