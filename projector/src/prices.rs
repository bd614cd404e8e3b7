//! The price book as the projector holds it: one copy per database per
//! process, shared by every path that counts events (lane commits,
//! dead-letter re-drives, `count_events`), and reloaded when a commit finds
//! that the book's version moved (`tokenusage_count_priced_events` refuses
//! a batch priced with an older version, SQLSTATE TU001).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use sqlx::PgPool;
use tokenusage_pricing::Book;

/// Books by database (host, port, name): one process may count into
/// several databases (the test suite does), and a book must never price
/// another database's events.
static BOOKS: LazyLock<RwLock<HashMap<String, Arc<Book>>>> = LazyLock::new(Default::default);

fn key(pool: &PgPool) -> String {
    let o = pool.connect_options();
    format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or(""))
}

/// The book last loaded for `pool`'s database, loading it the first time.
pub(crate) async fn current(pool: &PgPool) -> Result<Arc<Book>, sqlx::Error> {
    if let Some(b) = BOOKS.read().ok().and_then(|m| m.get(&key(pool)).cloned()) {
        return Ok(b);
    }
    reload(pool).await
}

/// Reads the book again (after a commit found it stale).
pub(crate) async fn reload(pool: &PgPool) -> Result<Arc<Book>, sqlx::Error> {
    let book = Arc::new(tokenusage_pricing::store::load(pool).await?);
    tracing::info!(version = book.version, entries = book.len(), currency = %book.currency, "price book loaded");
    if let Ok(mut m) = BOOKS.write() {
        m.insert(key(pool), book.clone());
    }
    Ok(book)
}
