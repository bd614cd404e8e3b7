//! Connections, mappings, imported rows and import runs in PostgreSQL
//! (migration 0015). The admin key is read by [`key_of`] alone; every
//! listing leaves it out.

use chrono::{DateTime, NaiveDate, Utc};
use secrecy::SecretString;
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

mod mappings;
pub use mappings::{Mapping, map, mappings, unmap};

use crate::Provider;
use crate::report::{CostRow, UsageRow};

/// A connection as listed: never its key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Connection {
    pub id: i64,
    pub name: String,
    pub provider: Provider,
    pub base_url: String,
    pub import_from: NaiveDate,
    pub imported_through: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The latest import run, if any.
    pub last_import: Option<ImportRun>,
    /// Its mapped usage is counted as usage where we counted none
    /// ([`crate::as_usage`]).
    pub as_usage: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct ImportRun {
    pub id: i64,
    pub range_from: NaiveDate,
    pub range_to: NaiveDate,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub pages: i32,
    pub usage_rows: i32,
    pub cost_rows: i32,
    pub outcome: String,
    pub error: Option<String>,
}

/// Why a connection or mapping change is refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("no provider connection named {0:?}")]
    NoSuchConnection(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A connection name: 1 to 63 of `a-z 0-9 _ . -`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "a connection name is 1 to 63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit; got {name:?}"
        )))
    }
}

/// A base URL: http(s), a host, no credentials, query or fragment.
pub fn check_base_url(url: &str) -> Result<reqwest::Url, StoreError> {
    let u = reqwest::Url::parse(url).map_err(|e| StoreError::Invalid(format!("base URL {url:?}: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(StoreError::Invalid(format!("base URL {url:?} must be an http:// or https:// URL with a host")));
    }
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() {
        return Err(StoreError::Invalid(
            "a base URL carries no credentials, query or fragment (the key is given apart)".into(),
        ));
    }
    Ok(u)
}

pub async fn add(
    pool: &PgPool,
    name: &str,
    provider: Provider,
    base_url: Option<&str>,
    key: &SecretString,
    import_from: NaiveDate,
    who: &str,
) -> Result<i64, StoreError> {
    use secrecy::ExposeSecret;
    check_name(name)?;
    let base = check_base_url(base_url.unwrap_or(provider.default_base_url()))?;
    let k = key.expose_secret();
    if k.trim().is_empty() || k.len() > 1024 || k.chars().any(char::is_control) {
        return Err(StoreError::Invalid("the admin key must be 1 to 1024 printable characters".into()));
    }
    let id = sqlx::query_scalar(
        "insert into provider_connections (name, provider, base_url, admin_key, import_from, created_by) \
         values ($1, $2, $3, $4, $5, $6) on conflict (name) do nothing returning id",
    )
    .bind(name)
    .bind(provider.name())
    .bind(base.as_str().trim_end_matches('/'))
    .bind(k)
    .bind(import_from)
    .bind(who)
    .fetch_optional(pool)
    .await?;
    id.ok_or_else(|| StoreError::Invalid(format!("a provider connection named {name:?} exists already")))
}

/// Turns counting the connection's mapped usage as usage on or off.
pub async fn set_as_usage(pool: &PgPool, name: &str, on: bool) -> Result<(), StoreError> {
    let done = sqlx::query("update provider_connections set as_usage = $2 where name = $1")
        .bind(name)
        .bind(on)
        .execute(pool)
        .await?
        .rows_affected();
    if done == 0 {
        return Err(StoreError::NoSuchConnection(name.to_owned()));
    }
    Ok(())
}

pub async fn remove(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("delete from provider_connections where name = $1").bind(name).execute(pool).await?.rows_affected()
        > 0)
}

/// Connections (all, or the one named) with their latest import, in one
/// statement.
async fn connections(pool: &PgPool, name: Option<&str>) -> Result<Vec<Connection>, sqlx::Error> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "select c.id, c.name, c.provider, c.base_url, c.import_from, c.imported_through, c.created_at, c.created_by, \
                c.as_usage, i.id as run_id, i.range_from, i.range_to, i.started_at, i.finished_at, i.pages, \
                i.usage_rows, i.cost_rows, i.outcome, i.error \
         from provider_connections c \
         left join lateral (select * from provider_imports where connection_id = c.id \
                            order by started_at desc, id desc limit 1) i on true \
         where $1::text is null or c.name = $1 order by c.name",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let Some(provider) = Provider::parse(r.try_get::<&str, _>("provider")?) else { continue };
        let last_import = match r.try_get::<Option<i64>, _>("run_id")? {
            None => None,
            Some(id) => Some(ImportRun {
                id,
                range_from: r.try_get("range_from")?,
                range_to: r.try_get("range_to")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                pages: r.try_get("pages")?,
                usage_rows: r.try_get("usage_rows")?,
                cost_rows: r.try_get("cost_rows")?,
                outcome: r.try_get("outcome")?,
                error: r.try_get("error")?,
            }),
        };
        out.push(Connection {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            provider,
            base_url: r.try_get("base_url")?,
            import_from: r.try_get("import_from")?,
            imported_through: r.try_get("imported_through")?,
            created_at: r.try_get("created_at")?,
            created_by: r.try_get("created_by")?,
            last_import,
            as_usage: r.try_get("as_usage")?,
        });
    }
    Ok(out)
}

pub async fn list(pool: &PgPool) -> Result<Vec<Connection>, sqlx::Error> {
    connections(pool, None).await
}

pub async fn get(pool: &PgPool, name: &str) -> Result<Connection, StoreError> {
    connections(pool, Some(name)).await?.pop().ok_or_else(|| StoreError::NoSuchConnection(name.to_owned()))
}

/// The admin key, for the importer only.
pub async fn key_of(pool: &PgPool, id: i64) -> Result<SecretString, sqlx::Error> {
    let k: String =
        sqlx::query_scalar("select admin_key from provider_connections where id = $1").bind(id).fetch_one(pool).await?;
    Ok(SecretString::from(k))
}

/// Takes (or renews) the connection's import lease for `owner`; false if
/// another process holds it.
pub async fn lease(pool: &PgPool, id: i64, owner: &str, secs: i64) -> Result<bool, sqlx::Error> {
    let got: Option<i64> = sqlx::query_scalar(
        "update provider_connections set lease_owner = $2, lease_until = now() + make_interval(secs => $3) \
         where id = $1 and (lease_until is null or lease_until < now() or lease_owner = $2) returning id",
    )
    .bind(id)
    .bind(owner)
    .bind(secs as f64)
    .fetch_optional(pool)
    .await?;
    Ok(got.is_some())
}

pub async fn release(pool: &PgPool, id: i64, owner: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update provider_connections set lease_owner = null, lease_until = null where id = $1 and lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn start_run(pool: &PgPool, id: i64, from: NaiveDate, to: NaiveDate) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "insert into provider_imports (connection_id, range_from, range_to) values ($1, $2, $3) returning id",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
}

pub async fn finish_run(pool: &PgPool, run: i64, error: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update provider_imports set finished_at = now(), outcome = case when $2::text is null then 'ok' else 'failed' end, \
         error = $2 where id = $1",
    )
    .bind(run)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Stores one page of usage for import `run` in one transaction (one
/// statement: the page's rows as arrays); counts it. The rows' keys are
/// distinct (`report::merge_usage`).
/// Re-sums the days `days` span into the day tables (migration 0020), in
/// the transaction that changed them.
async fn resum(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    conn: i64,
    days: impl Iterator<Item = NaiveDate>,
) -> Result<(), sqlx::Error> {
    let (mut lo, mut hi) = (None::<NaiveDate>, None::<NaiveDate>);
    for d in days {
        lo = Some(lo.map_or(d, |l| l.min(d)));
        hi = Some(hi.map_or(d, |h| h.max(d)));
    }
    let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(()) };
    sqlx::query("select tokenusage_resum_provider_days($1, $2, $3)")
        .bind(conn)
        .bind(lo)
        .bind(hi + chrono::TimeDelta::days(1))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn put_usage(pool: &PgPool, conn: i64, run: i64, rows: &[UsageRow]) -> Result<(), sqlx::Error> {
    let col = |f: fn(&UsageRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let text = |f: fn(&UsageRow) -> &str| rows.iter().map(|r| f(r).to_owned()).collect::<Vec<String>>();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into provider_usage (connection_id, day, scope, api_key, model, service_tier, context_window, \
         input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, \
         audio_input_tokens, audio_output_tokens, requests, web_search_requests, import_id) \
         select $1, * , $17 from unnest($2::date[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[]) \
         on conflict on constraint provider_usage_pkey do update set input_tokens = excluded.input_tokens, \
         output_tokens = excluded.output_tokens, cache_read_tokens = excluded.cache_read_tokens, \
         cache_write_tokens = excluded.cache_write_tokens, cache_write_1h_tokens = excluded.cache_write_1h_tokens, \
         audio_input_tokens = excluded.audio_input_tokens, audio_output_tokens = excluded.audio_output_tokens, \
         requests = excluded.requests, web_search_requests = excluded.web_search_requests, import_id = excluded.import_id",
    )
    .bind(conn)
    .bind(rows.iter().map(|r| r.day).collect::<Vec<NaiveDate>>())
    .bind(text(|r| &r.key.scope))
    .bind(text(|r| &r.key.api_key))
    .bind(text(|r| &r.key.model))
    .bind(text(|r| &r.key.service_tier))
    .bind(text(|r| &r.key.context_window))
    .bind(col(|r| r.tokens.input))
    .bind(col(|r| r.tokens.output))
    .bind(col(|r| r.tokens.cache_read))
    .bind(col(|r| r.tokens.cache_write))
    .bind(col(|r| r.tokens.cache_write_1h))
    .bind(col(|r| r.tokens.audio_input))
    .bind(col(|r| r.tokens.audio_output))
    .bind(col(|r| r.tokens.requests))
    .bind(col(|r| r.tokens.web_search_requests))
    .bind(run)
    .execute(&mut *tx)
    .await?;
    count_page(&mut tx, run, rows.len(), 0).await?;
    resum(&mut tx, conn, rows.iter().map(|r| r.day)).await?;
    tx.commit().await
}

/// As [`put_usage`], for a page of costs.
pub async fn put_costs(pool: &PgPool, conn: i64, run: i64, rows: &[CostRow]) -> Result<(), sqlx::Error> {
    let text = |f: fn(&CostRow) -> &str| rows.iter().map(|r| f(r).to_owned()).collect::<Vec<String>>();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into provider_costs (connection_id, day, scope, line_item, model, service_tier, context_window, \
         currency, amount_nanos, import_id) \
         select $1, *, $10 from unnest($2::date[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
             $8::text[], $9::int8[]) \
         on conflict on constraint provider_costs_pkey do update set currency = excluded.currency, \
         amount_nanos = excluded.amount_nanos, import_id = excluded.import_id",
    )
    .bind(conn)
    .bind(rows.iter().map(|r| r.day).collect::<Vec<NaiveDate>>())
    .bind(text(|r| &r.key.scope))
    .bind(text(|r| &r.key.line_item))
    .bind(text(|r| &r.key.model))
    .bind(text(|r| &r.key.service_tier))
    .bind(text(|r| &r.key.context_window))
    .bind(text(|r| &r.currency))
    .bind(rows.iter().map(|r| r.amount_nanos).collect::<Vec<i64>>())
    .bind(run)
    .execute(&mut *tx)
    .await?;
    count_page(&mut tx, run, 0, rows.len()).await?;
    resum(&mut tx, conn, rows.iter().map(|r| r.day)).await?;
    tx.commit().await
}

async fn count_page(
    tx: &mut Transaction<'_, Postgres>,
    run: i64,
    usage: usize,
    costs: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query("update provider_imports set pages = pages + 1, usage_rows = usage_rows + $2, cost_rows = cost_rows + $3 where id = $1")
        .bind(run)
        .bind(usage as i32)
        .bind(costs as i32)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// After a whole range was read: rows of the range the provider no longer
/// reports are removed (the revision trigger keeps their figures), and the
/// connection's `imported_through` moves on to the end of the range (today
/// at most) if the range joins what was imported before.
pub async fn complete_range(
    pool: &PgPool,
    conn: i64,
    run: i64,
    from: NaiveDate,
    to: NaiveDate,
    today: NaiveDate,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for table in ["provider_usage", "provider_costs"] {
        sqlx::query(&format!(
            "delete from {table} where connection_id = $1 and day >= $2 and day < $3 and import_id <> $4"
        ))
        .bind(conn)
        .bind(from)
        .bind(to)
        .bind(run)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("select tokenusage_resum_provider_days($1, $2, $3)")
        .bind(conn)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?;
    // Today is still being counted by the provider: not whole yet.
    let through = to.min(today);
    sqlx::query(
        "update provider_connections set imported_through = greatest(imported_through, $2) \
         where id = $1 and $3 <= coalesce(imported_through, import_from)",
    )
    .bind(conn)
    .bind(through)
    .bind(from)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests;
