//! Dead letters: listing them, and re-driving them once the cause is fixed
//! (a publisher's clock, a bug in our validation, or an edited payload).
//!
//! Re-driving decodes the stored record again and, if it is now valid,
//! counts it through the same path as live records (de-duplicated by
//! (source, event id)), in one transaction with marking it re-driven.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use tokenusage_contract::text;
use tokenusage_plumbing::failure::{self, Failure};

use crate::batch::{Positioned, Record};

/// A dead letter as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The raw value bytes, exactly as read from Kafka.
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub kafka_offset: i64,
    /// The raw value as UTF-8 (lossy, for reading); `payload` is untouched.
    #[sqlx(skip)]
    pub payload_text: Option<String>,
    pub error: String,
    pub received_at: DateTime<Utc>,
    pub redriven_at: Option<DateTime<Utc>>,
    pub redrive_requested_at: Option<DateTime<Utc>>,
    pub redrive_error: Option<String>,
}

/// Newest first; `pending_only` hides those already re-driven.
pub async fn list(pool: &PgPool, limit: i64, pending_only: bool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        r#"
        select id, topic, partition, kafka_offset, payload, error,
               received_at, redriven_at, redrive_requested_at, redrive_error
        from dead_letters
        where not $2 or redriven_at is null
        order by id desc limit $1
        "#,
    )
    .bind(limit.clamp(1, 10_000))
    .bind(pending_only)
    .fetch_all(pool)
    .await
    .map(|rows: Vec<DeadLetter>| {
        rows.into_iter()
            .map(|mut d| {
                d.payload_text = d.payload.as_deref().map(|p| String::from_utf8_lossy(p).into_owned());
                d
            })
            .collect()
    })
}

/// Asks for a re-drive of one dead letter (or, with `None`, of all that are
/// not yet re-driven), optionally replacing its payload. Returns how many
/// were marked.
pub async fn request_redrive(pool: &PgPool, id: Option<i64>, new_payload: Option<&[u8]>) -> Result<u64, sqlx::Error> {
    let n = sqlx::query(
        r#"
        update dead_letters set redrive_requested_at = now(), redrive_error = null,
               payload = coalesce($2, payload)
        where redriven_at is null and ($1::int8 is null or id = $1)
        "#,
    )
    .bind(id)
    .bind(new_payload)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

/// Outcome of processing requested re-drives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// Now valid and counted (or already counted: a duplicate).
    pub counted: u64,
    /// Still invalid; `redrive_error` says why.
    pub still_invalid: u64,
}

/// A dead letter's stored record: id, partition, offset, key, value, headers.
type StoredRecord = (i64, i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, sqlx::types::Json<serde_json::Value>);

/// Kafka headers as stored in `dead_letters.headers`: one object per header,
/// `{"name", "value"}` with both escaped to storable text
/// (`contract::text::escape`), or `{"name", "hex"}` for a value that is not
/// UTF-8. Lossless, and always storable as `jsonb`.
pub(crate) fn encode_headers(headers: &[(String, Vec<u8>)]) -> sqlx::types::Json<serde_json::Value> {
    let items = headers
        .iter()
        .map(|(k, v)| {
            let name = text::escape(k).into_owned();
            match std::str::from_utf8(v) {
                Ok(s) => serde_json::json!({ "name": name, "value": text::escape(s) }),
                Err(_) => serde_json::json!({ "name": name, "hex": hex::encode(v) }),
            }
        })
        .collect();
    sqlx::types::Json(serde_json::Value::Array(items))
}

/// Reads headers back; also understands the earlier `[[name, value]]`
/// form. Entries it cannot read are skipped.
pub(crate) fn decode_headers(stored: &serde_json::Value) -> Vec<(String, Vec<u8>)> {
    use serde_json::Value;
    let Some(items) = stored.as_array() else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match item {
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(k), Value::String(v)] => Some((k.clone(), v.clone().into_bytes())),
                _ => None,
            },
            Value::Object(o) => {
                let name = text::unescape(o.get("name")?.as_str()?)?;
                let value = match (o.get("value").and_then(Value::as_str), o.get("hex").and_then(Value::as_str)) {
                    (Some(v), _) => text::unescape(v)?.into_bytes(),
                    (None, Some(h)) => hex::decode(h).ok()?,
                    (None, None) => return None,
                };
                Some((name, value))
            }
            _ => None,
        })
        .collect()
}

/// Processes every requested re-drive, each in its own transaction. A
/// record that is still invalid, or that the database still refuses, keeps
/// its dead letter with the reason in `redrive_error`; only a transient
/// database failure stops the run (it is retried on the next tick).
pub async fn process_requested(pool: &PgPool) -> Result<Redriven, sqlx::Error> {
    let rows: Vec<StoredRecord> = sqlx::query_as(
        "select id, partition, kafka_offset, record_key, payload, headers from dead_letters \
         where redrive_requested_at is not null and redriven_at is null order by id limit 10000",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Redriven::default();
    for (id, partition, offset, key, payload, headers) in rows {
        let record = Record { partition, offset, key, payload, headers: decode_headers(&headers.0) };
        let mut batch = crate::batch::Batch::default();
        batch.push(record, Utc::now());
        let invalid = match batch.dead.first() {
            Some(dead) => Some(dead.error.clone()),
            None => match count_redriven(pool, id, &batch.events).await {
                Ok(()) => None,
                Err(e) if Failure::of(&e) == Failure::Data => Some(failure::describe(&e)),
                Err(e) => return Err(e),
            },
        };
        match invalid {
            None => out.counted += 1,
            Some(error) => {
                sqlx::query("update dead_letters set redrive_requested_at = null, redrive_error = $2 where id = $1")
                    .bind(id)
                    .bind(text::escape(&error).as_ref())
                    .execute(pool)
                    .await?;
                out.still_invalid += 1;
            }
        }
    }
    if out != Redriven::default() {
        tracing::info!(counted = out.counted, still_invalid = out.still_invalid, "dead letters re-driven");
    }
    Ok(out)
}

/// Counts a re-driven dead letter's event and marks it re-driven, in one
/// transaction under the shared rebuild lock.
async fn count_redriven(pool: &PgPool, id: i64, events: &[Positioned]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("select pg_advisory_xact_lock_shared($1)").bind(crate::rebuild::REBUILD_LOCK).execute(&mut *tx).await?;
    crate::store::write_events(&mut tx, events).await?;
    sqlx::query(
        "update dead_letters set redrive_requested_at = null, redrive_error = null, redriven_at = now() where id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_stored_losslessly_whatever_they_hold() {
        let headers = vec![
            ("request-id".to_owned(), b"abc".to_vec()),
            ("ce_type\0".to_owned(), b"x\0y\\z".to_vec()),
            ("bin".to_owned(), vec![0xff, 0x00, 0x01]),
        ];
        let stored = encode_headers(&headers).0;
        assert!(tokenusage_contract::text::storable_json(&stored).is_ok(), "{stored}");
        assert_eq!(decode_headers(&stored), headers);
        let legacy = serde_json::json!([["content-type", "application/json"]]);
        assert_eq!(decode_headers(&legacy), vec![("content-type".to_owned(), b"application/json".to_vec())]);
    }
}
