//! The price book in PostgreSQL (migration 0010): loading it, changing it
//! (each change bumps `price_book_state.version` in its transaction), and
//! seeding the shipped catalogue once.

use sqlx::{PgPool, Postgres, Transaction};

use std::collections::BTreeMap;

use tokenusage_contract::ServiceTier;

use crate::book::{Book, Entry, Kind, Price, Tier};

/// The SQLSTATE `tokenusage_count_priced_events` raises when the book
/// changed after a batch was priced: reload and write the batch again.
/// (Consistency comes from the counting lock: a change holds it
/// exclusively, every counting transaction shared, so the version a
/// counting transaction reads stays current until it commits.)
pub const STALE_BOOK: &str = "TU001";

/// Did this error come from a stale price book?
pub fn is_stale_book(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(STALE_BOOK))
}

const COLUMNS: &str = "id, model, currency, effective_from, effective_to, input, output, cache_read, cache_write, \
                       cache_write_1h, reasoning, audio_input, audio_output, image_input, image_output, source, \
                       long_context_above, long_context, service_tiers, web_search";

fn decode(row: &sqlx::postgres::PgRow) -> Result<Entry, sqlx::Error> {
    use sqlx::Row as _;
    let mut p = [None; 10];
    for (i, slot) in p.iter_mut().enumerate() {
        *slot = row.try_get(5 + i)?;
    }
    let above: Option<i64> = row.try_get(16)?;
    let tier: Option<serde_json::Value> = row.try_get(17)?;
    let long_context = match (above, tier) {
        (Some(above_input_tokens), Some(v)) => {
            Some(Tier { above_input_tokens, price: tier_price(&v).map_err(|e| sqlx::Error::Decode(e.into()))? })
        }
        _ => None,
    };
    let tiers: serde_json::Value = row.try_get(18)?;
    let service_tiers = service_tiers_of(&tiers).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(Entry {
        service_tiers,
        web_search: row.try_get(19)?,
        id: Some(row.try_get(0)?),
        model: row.try_get(1)?,
        currency: row.try_get(2)?,
        effective_from: row.try_get(3)?,
        effective_to: row.try_get(4)?,
        price: Price(p),
        long_context,
        source: row.try_get(15)?,
    })
}

/// A tier's prices as stored: `{kind: nanos per million}`.
fn tier_json(p: &Price) -> serde_json::Value {
    p.named().map(|(k, n)| (k.name().to_owned(), serde_json::Value::from(n))).collect::<serde_json::Map<_, _>>().into()
}

fn tier_price(v: &serde_json::Value) -> Result<Price, String> {
    let mut p = Price::default();
    for (k, n) in v.as_object().ok_or("long_context must be an object")? {
        let kind = Kind::parse(k).ok_or_else(|| format!("unknown token kind {k:?}"))?;
        p.set(kind, Some(n.as_i64().ok_or_else(|| format!("{k}: not an integer"))?));
    }
    Ok(p)
}

/// Service-tier prices as stored: `{tier: {kind: nanos per million}}`.
fn service_tiers_json(tiers: &BTreeMap<ServiceTier, Price>) -> serde_json::Value {
    tiers.iter().map(|(t, p)| (t.name().to_owned(), tier_json(p))).collect::<serde_json::Map<_, _>>().into()
}

fn service_tiers_of(v: &serde_json::Value) -> Result<BTreeMap<ServiceTier, Price>, String> {
    let mut out = BTreeMap::new();
    for (name, p) in v.as_object().ok_or("service_tiers must be an object")? {
        let tier = ServiceTier::parse(name).ok_or_else(|| format!("unknown service tier {name:?}"))?;
        out.insert(tier, tier_price(p)?);
    }
    Ok(out)
}

/// The book's currency and version.
pub async fn state(db: impl sqlx::PgExecutor<'_>) -> Result<(String, i64), sqlx::Error> {
    sqlx::query_as("select currency, version from price_book_state").fetch_one(db).await
}

/// Every entry, in model then date order (for listing and export).
pub async fn entries(db: impl sqlx::PgExecutor<'_>, model: Option<&str>) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "select {COLUMNS} from price_book where $1::text is null or model = $1 order by model, effective_from"
    ))
    .bind(model)
    .fetch_all(db)
    .await?;
    rows.iter().map(decode).collect()
}

/// The book as it is now, in one snapshot.
pub async fn load(pool: &PgPool) -> Result<Book, sqlx::Error> {
    let mut tx = pool.begin_with("begin isolation level repeatable read read only").await?;
    let (currency, version) = state(&mut *tx).await?;
    let all = entries(&mut *tx, None).await?;
    tx.commit().await?;
    Ok(Book::new(version, &currency, all.into_iter().filter(|e| e.currency == currency)))
}

/// What a change did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Changed {
    pub added: u64,
    pub replaced: u64,
    pub removed: u64,
}

/// Adds entries, replacing any with the same (model, currency,
/// effective_from), and bumps the version, in `tx`. Waits for projector
/// commits in flight and holds new ones off until `tx` ends (the counting
/// lock, `schema::locks`): keep `tx` short.
pub async fn put(tx: &mut Transaction<'_, Postgres>, entries: &[Entry], who: &str) -> Result<Changed, sqlx::Error> {
    let mut changed = Changed::default();
    bump(tx).await?;
    for e in entries {
        let p = |k: Kind| e.price.own(k);
        let (inserted,): (bool,) = sqlx::query_as(
            "insert into price_book as b (model, currency, effective_from, effective_to, input, output, cache_read, \
             cache_write, cache_write_1h, reasoning, audio_input, audio_output, image_input, image_output, source, created_by, \
             long_context_above, long_context, service_tiers, web_search) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20) \
             on conflict (model, currency, effective_from) do update set effective_to = excluded.effective_to, \
             input = excluded.input, output = excluded.output, cache_read = excluded.cache_read, \
             cache_write = excluded.cache_write, cache_write_1h = excluded.cache_write_1h, reasoning = excluded.reasoning, \
             audio_input = excluded.audio_input, audio_output = excluded.audio_output, image_input = excluded.image_input, \
             image_output = excluded.image_output, source = excluded.source, created_by = excluded.created_by, created_at = now(), \
             long_context_above = excluded.long_context_above, long_context = excluded.long_context, \
             service_tiers = excluded.service_tiers, web_search = excluded.web_search \
             returning (xmax = 0)",
        )
        .bind(&e.model)
        .bind(&e.currency)
        .bind(e.effective_from)
        .bind(e.effective_to)
        .bind(p(Kind::Input))
        .bind(p(Kind::Output))
        .bind(p(Kind::CacheRead))
        .bind(p(Kind::CacheWrite))
        .bind(p(Kind::CacheWrite1h))
        .bind(p(Kind::Reasoning))
        .bind(p(Kind::AudioInput))
        .bind(p(Kind::AudioOutput))
        .bind(p(Kind::ImageInput))
        .bind(p(Kind::ImageOutput))
        .bind(&e.source)
        .bind(who)
        .bind(e.long_context.map(|t| t.above_input_tokens))
        .bind(e.long_context.map(|t| tier_json(&t.price)))
        .bind(service_tiers_json(&e.service_tiers))
        .bind(e.web_search)
        .fetch_one(&mut **tx)
        .await?;
        if inserted {
            changed.added += 1;
        } else {
            changed.replaced += 1;
        }
    }
    Ok(changed)
}

/// Removes the entry with `id`; returns it if there was one.
pub async fn remove(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<Option<Entry>, sqlx::Error> {
    bump(tx).await?;
    let row = sqlx::query(&format!("delete from price_book where id = $1 returning {COLUMNS}"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| decode(&r)).transpose()
}

/// Takes the counting lock exclusively (waiting for counting transactions
/// in flight, holding off new ones until `tx` ends) and bumps the version.
async fn bump(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock($1)").bind(tokenusage_schema::locks::COUNTING).execute(&mut **tx).await?;
    sqlx::query("update price_book_state set version = version + 1").execute(&mut **tx).await?;
    Ok(())
}

/// Loads the shipped catalogue into a book that was never seeded (a new
/// installation, or one upgraded from before prices). Returns how many
/// entries it added; 0 once seeded, even if an operator emptied the book.
pub async fn seed(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (seeded, currency): (bool, String) =
        sqlx::query_as("select seeded, currency from price_book_state for update").fetch_one(&mut *tx).await?;
    if seeded || currency != "USD" {
        return Ok(0);
    }
    let catalogue = crate::catalogue::entries();
    let changed = put(&mut tx, &catalogue.entries, "tokenusage (default catalogue)").await?;
    sqlx::query("update price_book_state set seeded = true").execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(changed.added)
}
