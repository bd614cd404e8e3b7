//! One import: both reports of one connection for a range of days, page by
//! page through the outbound client, each page stored in its own
//! transaction. 429 and 5xx answers are retried after the provider's
//! `Retry-After` (or a doubling backoff), a bounded number of times; any
//! other failure (a refused key, a malformed page) ends the import loudly,
//! keeping every page stored before it. Only a range read whole removes
//! the rows the provider stopped reporting.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokenusage_plumbing::outbound;

use crate::report::{self, Malformed, Page};
use crate::{Provider, anthropic, openai, store};

/// How often and how long to retry a page the provider could not serve.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 6, first_delay: Duration::from_secs(1), max_delay: Duration::from_secs(60) }
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("another process is importing {0} now")]
    Busy(String),
    #[error("the provider refused the admin key ({0}): it may have expired or been revoked")]
    Unauthorized(u16),
    #[error("the provider answered {status} to {what}: {body}")]
    Refused { status: u16, what: &'static str, body: String },
    #[error("the provider could not serve {what} after {attempts} attempts (last: {last})")]
    Unavailable { what: &'static str, attempts: u32, last: String },
    #[error("{what}: {err}")]
    Malformed { what: &'static str, err: Malformed },
    #[error("the outbound address rules refused {0}")]
    Outbound(#[from] outbound::Refused),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What an import read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub run: i64,
    pub pages: u32,
    pub usage_rows: u64,
    pub cost_rows: u64,
    /// What counting the usage as usage did, when the connection does.
    pub as_usage: Option<crate::as_usage::Outcome>,
}

/// Progress after each stored page: the day the page reached.
pub type Progress<'a> = &'a (dyn Fn(&'static str, NaiveDate) + Send + Sync);

/// The importer: the outbound client and the retry rule.
#[derive(Debug, Clone)]
pub struct Importer {
    pub client: outbound::Client,
    pub retry: Retry,
}

/// How long a lease lasts without renewal (renewed on every page).
const LEASE_SECS: i64 = 300;

impl Importer {
    /// Imports days `from .. to` (exclusive) of connection `name` as
    /// `owner` (a process id: one import per connection at a time).
    pub async fn import(
        &self,
        pool: &PgPool,
        name: &str,
        from: NaiveDate,
        to: NaiveDate,
        owner: &str,
        progress: Progress<'_>,
    ) -> Result<Summary, ImportError> {
        let conn = store::get(pool, name).await?;
        if !store::lease(pool, conn.id, owner, LEASE_SECS).await? {
            return Err(ImportError::Busy(name.to_owned()));
        }
        let run = store::start_run(pool, conn.id, from, to).await?;
        let mut result = self.run(pool, &conn, run, from, to, owner, progress).await;
        if let (Ok(sum), true) = (&mut result, conn.as_usage) {
            // Usage counted from the report follows it, over the imported
            // days and the month before (our own events arriving late for a
            // day take the provider's figures out of it).
            let since = (from - chrono::TimeDelta::days(crate::as_usage::RECHECK_DAYS)).max(conn.import_from);
            match crate::as_usage::sync(pool, name, since, to).await {
                Ok(o) => sum.as_usage = Some(o),
                Err(e) => result = Err(e.into()),
            }
        }
        let error = result.as_ref().err().map(ToString::to_string);
        if let Some(e) = &error {
            tracing::warn!(connection = %name, run, error = %e, "provider import failed; pages stored before the failure are kept");
        }
        store::finish_run(pool, run, error.as_deref()).await?;
        store::release(pool, conn.id, owner).await?;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        pool: &PgPool,
        conn: &store::Connection,
        run: i64,
        from: NaiveDate,
        to: NaiveDate,
        owner: &str,
        progress: Progress<'_>,
    ) -> Result<Summary, ImportError> {
        let key = store::key_of(pool, conn.id).await?;
        let base = store::check_base_url(&conn.base_url)?;
        let mut sum = Summary { run, ..Summary::default() };
        for what in ["usage", "costs"] {
            let mut cursor: Option<String> = None;
            loop {
                let url = match (conn.provider, what) {
                    (Provider::OpenAi, "usage") => openai::usage_url(&base, from, to, cursor.as_deref()),
                    (Provider::OpenAi, _) => openai::costs_url(&base, from, to, cursor.as_deref()),
                    (Provider::Anthropic, "usage") => anthropic::usage_url(&base, from, to, cursor.as_deref()),
                    (Provider::Anthropic, _) => anthropic::costs_url(&base, from, to, cursor.as_deref()),
                };
                let body = self.get(conn.provider, &url, key.expose_secret(), what).await?;
                let malformed = |err| ImportError::Malformed { what, err };
                let next = if what == "usage" {
                    let page = match conn.provider {
                        Provider::OpenAi => openai::parse_usage(&body),
                        Provider::Anthropic => anthropic::parse_usage(&body),
                    }
                    .map_err(malformed)?;
                    let rows = report::merge_usage(in_range(page.rows, from, to, |r| r.day).map_err(malformed)?);
                    store::put_usage(pool, conn.id, run, &rows).await?;
                    sum.usage_rows += rows.len() as u64;
                    if let Some(last) = rows.last() {
                        progress(what, last.day);
                    }
                    page.next_page
                } else {
                    let page: Page<_> = match conn.provider {
                        Provider::OpenAi => openai::parse_costs(&body),
                        Provider::Anthropic => anthropic::parse_costs(&body),
                    }
                    .map_err(malformed)?;
                    let rows = report::merge_costs(in_range(page.rows, from, to, |r| r.day).map_err(malformed)?)
                        .map_err(malformed)?;
                    store::put_costs(pool, conn.id, run, &rows).await?;
                    sum.cost_rows += rows.len() as u64;
                    if let Some(last) = rows.last() {
                        progress(what, last.day);
                    }
                    page.next_page
                };
                sum.pages += 1;
                store::lease(pool, conn.id, owner, LEASE_SECS).await?;
                match next {
                    Some(c) if Some(&c) == cursor.as_ref() => {
                        return Err(ImportError::Malformed {
                            what,
                            err: Malformed(format!("next_page {c:?} repeats")),
                        });
                    }
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        store::complete_range(pool, conn.id, run, from, to, Utc::now().date_naive()).await?;
        Ok(sum)
    }

    /// One page, retried on 429 and 5xx. Errors never carry the key: it is
    /// in a header, and bodies are cut short and shown only for 4xx.
    async fn get(
        &self,
        provider: Provider,
        url: &reqwest::Url,
        key: &str,
        what: &'static str,
    ) -> Result<Vec<u8>, ImportError> {
        let mut delay = self.retry.first_delay;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts.max(1) {
            let req = self.client.get(url.as_str())?;
            let req = match provider {
                Provider::OpenAi => openai::authorize(req, key),
                Provider::Anthropic => anthropic::authorize(req, key),
            };
            let wait = match req.timeout(Duration::from_secs(60)).send().await {
                Ok(r) if r.status().is_success() => match r.bytes().await {
                    Ok(b) => return Ok(b.to_vec()),
                    Err(e) => {
                        last = format!("reading the body: {}", without_url(e));
                        None
                    }
                },
                Ok(r) if r.status().as_u16() == 401 || r.status().as_u16() == 403 => {
                    return Err(ImportError::Unauthorized(r.status().as_u16()));
                }
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    last = format!("HTTP {}", r.status().as_u16());
                    retry_after(r.headers())
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    return Err(ImportError::Refused { status, what, body: body.chars().take(300).collect() });
                }
                Err(e) => {
                    last = without_url(e);
                    None
                }
            };
            if attempt < self.retry.attempts {
                let pause = wait.unwrap_or(delay).min(self.retry.max_delay);
                tracing::info!(what, attempt, pause_ms = pause.as_millis() as u64, last = %last, "provider report page not served; retrying");
                tokio::time::sleep(pause).await;
                delay = (delay * 2).min(self.retry.max_delay);
            }
        }
        Err(ImportError::Unavailable { what, attempts: self.retry.attempts, last })
    }
}

/// A transport error without its URL, with its causes ("error sending
/// request" alone says nothing).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Rows outside the requested range are malformed (a provider answering a
/// different range than asked).
fn in_range<T>(
    rows: Vec<T>,
    from: NaiveDate,
    to: NaiveDate,
    day: impl Fn(&T) -> NaiveDate,
) -> Result<Vec<T>, Malformed> {
    if let Some(r) = rows.iter().find(|r| day(r) < from || day(r) >= to) {
        return Err(Malformed(format!("a bucket on {} is outside the requested {from} .. {to}", day(r))));
    }
    Ok(rows)
}
