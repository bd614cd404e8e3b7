//! Dead letters (`dead_letters`): records the projector could not count,
//! kept with their raw bytes; listed and re-driven by admins (API and CLI),
//! written and re-driven by the projector.
//!
//! Writing one never fails on content: key and value are `bytea`, headers
//! are stored losslessly as storable text (escaped, or hex for values that
//! are not UTF-8), and the error is escaped (`contract::text`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokenusage_contract::text;

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
    let rows: Vec<DeadLetter> = sqlx::query_as(
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
    .await?;
    Ok(rows
        .into_iter()
        .map(|mut d| {
            d.payload_text = d.payload.as_deref().map(|p| String::from_utf8_lossy(p).into_owned());
            d
        })
        .collect())
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

/// A record to dead-letter.
#[derive(Debug, Clone, Copy)]
pub struct NewDeadLetter<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub headers: &'a [(String, Vec<u8>)],
    pub error: &'a str,
}

/// Stores dead letters of `topic` (a record dead-lettered before stays as it was).
pub async fn insert(conn: &mut PgConnection, topic: &str, dead: &[NewDeadLetter<'_>]) -> Result<(), sqlx::Error> {
    for d in dead {
        sqlx::query(
            r#"
            insert into dead_letters (topic, partition, kafka_offset, record_key, payload, headers, error)
            values ($1, $2, $3, $4, $5, $6, $7)
            on conflict on constraint dead_letters_position do nothing
            "#,
        )
        .bind(topic)
        .bind(d.partition)
        .bind(d.offset)
        .bind(d.key)
        .bind(d.payload)
        .bind(encode_headers(d.headers))
        .bind(text::escape(d.error).as_ref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A dead letter whose re-drive was requested, as stored.
#[derive(Debug, Clone)]
pub struct Requested {
    pub id: i64,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

type RequestedRow = (i64, i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, sqlx::types::Json<serde_json::Value>);

/// The dead letters waiting for a re-drive, oldest first, at most `limit`.
pub async fn requested(pool: &PgPool, limit: i64) -> Result<Vec<Requested>, sqlx::Error> {
    let rows: Vec<RequestedRow> = sqlx::query_as(
        "select id, partition, kafka_offset, record_key, payload, headers from dead_letters \
         where redrive_requested_at is not null and redriven_at is null order by id limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, partition, offset, key, payload, headers)| Requested {
            id,
            partition,
            offset,
            key,
            payload,
            headers: decode_headers(&headers.0),
        })
        .collect())
}

/// Marks a dead letter counted (in the transaction that counted it).
pub async fn mark_redriven(conn: &mut PgConnection, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update dead_letters set redrive_requested_at = null, redrive_error = null, redriven_at = now() where id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a re-drive that failed again, with why.
pub async fn mark_still_invalid(pool: &PgPool, id: i64, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update dead_letters set redrive_requested_at = null, redrive_error = $2 where id = $1")
        .bind(id)
        .bind(text::escape(error).as_ref())
        .execute(pool)
        .await?;
    Ok(())
}

/// Kafka headers as stored in `dead_letters.headers`: one object per header,
/// `{"name", "value"}` with both escaped to storable text, or
/// `{"name", "hex"}` for a value that is not UTF-8.
fn encode_headers(headers: &[(String, Vec<u8>)]) -> sqlx::types::Json<serde_json::Value> {
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
fn decode_headers(stored: &serde_json::Value) -> Vec<(String, Vec<u8>)> {
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
        assert!(text::storable_json(&stored).is_ok(), "{stored}");
        assert_eq!(decode_headers(&stored), headers);
        let legacy = serde_json::json!([["content-type", "application/json"]]);
        assert_eq!(decode_headers(&legacy), vec![("content-type".to_owned(), b"application/json".to_vec())]);
    }
}
