//! The post-commit notification: what a committed transaction changed in
//! the rollups, numbered in commit order, for live views.
//!
//! The projector writes it inside the transaction (PostgreSQL delivers it at
//! commit, all or none, in commit order); the API's hub decodes it. Live
//! views apply the committed per-minute increments in memory instead of
//! re-reading PostgreSQL for every change. The `seq` is the value of
//! `rollup_sequence` the transaction committed (migration 0007): a view read
//! at sequence S applies exactly the notices numbered above S.
//!
//! PostgreSQL caps a payload at 8000 bytes, so a commit's increments are
//! spread over several notices with the same `seq`. Past
//! [`MAX_DELTA_PAYLOADS`] the increments are not sent; the notice names the
//! users to re-read instead (or, past [`MAX_USER_PAYLOADS`], everyone).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};

use crate::rows::{RollupKey, Sums};

/// The NOTIFY channel the API listens on.
pub const NOTIFY_CHANNEL: &str = "tokenusage_rollups";

/// Bytes of rows (or user ids) per payload, well under PostgreSQL's 8000.
const PAYLOAD_BYTES: usize = 7000;
/// More increments than fit in this many payloads are not sent...
const MAX_DELTA_PAYLOADS: usize = 32;
/// ...and more users than fit in this many, not named.
const MAX_USER_PAYLOADS: usize = 16;

/// One committed increment of one minute rollup row. Serialized as a JSON
/// array, `[user, activity, model, minute (Unix seconds), [sums...],
/// source, project]` (the sums in [`Sums::to_array`] order), to keep
/// payloads small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta(pub String, pub String, pub String, pub i64, pub [i64; Sums::WIDTH], pub String, pub String);

impl Delta {
    /// The increment of one rollup row.
    pub fn of(k: &RollupKey, s: &Sums) -> Delta {
        Delta(
            k.user_id.clone(),
            k.activity.clone(),
            k.model.clone(),
            k.bucket.timestamp(),
            s.to_array(),
            k.source.clone(),
            k.project.clone(),
        )
    }
    pub fn source(&self) -> &str {
        &self.5
    }
    pub fn project(&self) -> &str {
        &self.6
    }
    pub fn user(&self) -> &str {
        &self.0
    }
    pub fn activity(&self) -> &str {
        &self.1
    }
    pub fn model(&self) -> &str {
        &self.2
    }
    /// Start of the minute, in Unix seconds.
    pub fn minute(&self) -> i64 {
        self.3
    }
    /// What was added.
    pub fn sums(&self) -> Sums {
        Sums::from_array(self.4)
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The commit's number in `rollup_sequence`.
    pub seq: i64,
    /// Increments, ordered by user (one commit may span several notices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Delta>,
    /// The increments did not fit: these users' views must be re-read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
    /// Re-read every view.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl Notice {
    /// Decodes a payload; `None` if it is not a notice of this version
    /// (the listener then treats it as "anything may have changed").
    pub fn decode(payload: &str) -> Option<Notice> {
        serde_json::from_str(payload).ok()
    }
}

/// Splits a commit's minute increments into notification bodies, in key
/// order (so by user). Falls back to naming the users, then to "everyone".
///
/// A body is a notice without its leading `{"seq":N`: the number is taken
/// in the database, in the same call that sends the notices (migration
/// 0009), so `'{"seq":' || seq || body` is the payload. [`PAYLOAD_BYTES`]
/// leaves room for any seq under PostgreSQL's 8000-byte cap.
pub fn bodies(minute_rows: &BTreeMap<RollupKey, Sums>) -> Vec<String> {
    const HEAD: &str = ",\"rows\":[";
    let mut out = Vec::new();
    let mut cur = HEAD.to_owned();
    for (k, s) in minute_rows {
        let row = serde_json::to_string(&Delta::of(k, s)).unwrap_or_default();
        if cur.len() + row.len() + 2 > PAYLOAD_BYTES && cur.len() > HEAD.len() {
            cur.push_str("]}");
            out.push(std::mem::replace(&mut cur, HEAD.to_owned()));
            if out.len() >= MAX_DELTA_PAYLOADS {
                return users_bodies(minute_rows);
            }
        }
        if cur.len() > HEAD.len() {
            cur.push(',');
        }
        cur.push_str(&row);
    }
    if cur.len() > HEAD.len() {
        cur.push_str("]}");
        out.push(cur);
    }
    out
}

fn users_bodies(minute_rows: &BTreeMap<RollupKey, Sums>) -> Vec<String> {
    let mut users: Vec<&str> = minute_rows.keys().map(|k| k.user_id.as_str()).collect();
    users.dedup();
    let mut out = Vec::new();
    let mut chunk: Vec<&str> = Vec::new();
    let mut bytes = 0;
    for u in users {
        if bytes + u.len() + 3 > PAYLOAD_BYTES && !chunk.is_empty() {
            out.push(body(serde_json::json!({ "users": std::mem::take(&mut chunk) })));
            bytes = 0;
            if out.len() >= MAX_USER_PAYLOADS {
                return vec![everyone()];
            }
        }
        bytes += u.len() + 3;
        chunk.push(u);
    }
    out.push(body(serde_json::json!({ "users": chunk })));
    out
}

/// The body of a notice that every view must be re-read.
pub fn everyone() -> String {
    body(serde_json::json!({ "all": true }))
}

/// `{"a":..}` as a body: `,"a":..}`.
fn body(members: serde_json::Value) -> String {
    let json = members.to_string();
    format!(",{}", &json[1..])
}

/// Takes the next number in `rollup_sequence` and queues the notices with
/// it; PostgreSQL sends them at commit, or never. Call it last in a
/// transaction (see migration 0009).
pub async fn send(tx: &mut Transaction<'_, Postgres>, bodies: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("select tokenusage_notify_rollups($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(bodies)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};

    fn rows(users: usize, minutes: i64) -> BTreeMap<RollupKey, Sums> {
        let t0: DateTime<Utc> = "2026-11-28T10:00:00Z".parse().unwrap();
        let mut m = BTreeMap::new();
        for u in 0..users {
            for i in 0..minutes {
                m.insert(
                    RollupKey {
                        user_id: format!("user-{u}"),
                        bucket: t0 + TimeDelta::minutes(i),
                        activity: "chat".into(),
                        model: "gpt-x".into(),
                        source: "s".into(),
                        project: String::new(),
                    },
                    Sums::new(u as i64 + i, 2, 1),
                );
            }
        }
        m
    }

    /// The payload `tokenusage_notify_rollups` sends for a body (checked
    /// against PostgreSQL in cli/tests/it/projector.rs).
    fn with_seq(seq: i64, body: &str) -> String {
        format!("{{\"seq\":{seq}{body}")
    }

    fn payloads(seq: i64, m: &BTreeMap<RollupKey, Sums>) -> Vec<String> {
        bodies(m).iter().map(|b| with_seq(seq, b)).collect()
    }

    #[test]
    fn increments_round_trip_over_several_payloads_under_the_cap() {
        let m = rows(300, 2);
        let p = payloads(7, &m);
        assert!(p.len() > 1, "600 rows need several payloads");
        assert!(bodies(&m).iter().all(|b| b.len() <= PAYLOAD_BYTES));
        assert!(payloads(i64::MAX, &m).iter().all(|s| s.len() < 8000), "room for any seq");
        let decoded: Vec<Delta> = p
            .iter()
            .flat_map(|s| {
                let n = Notice::decode(s).unwrap();
                assert_eq!((n.seq, n.all, n.users.is_none()), (7, false, true));
                n.rows
            })
            .collect();
        assert_eq!(decoded.len(), m.len());
        for (d, (k, s)) in decoded.iter().zip(&m) {
            assert_eq!(
                (d.user(), d.activity(), d.model(), d.minute()),
                (k.user_id.as_str(), "chat", "gpt-x", k.bucket.timestamp())
            );
            assert_eq!(d.sums(), *s);
        }
    }

    #[test]
    fn too_many_increments_name_the_users_and_too_many_users_mean_everyone() {
        let many_minutes = rows(50, 200);
        let p = payloads(9, &many_minutes);
        let users: Vec<String> = p.iter().flat_map(|s| Notice::decode(s).unwrap().users.unwrap()).collect();
        assert_eq!(users.len(), 50);
        assert!(p.iter().all(|s| s.len() <= 8000));
        let many_users = rows(20_000, 2);
        assert_eq!(bodies(&many_users), vec![everyone()]);
        let all = Notice::decode(&with_seq(9, &everyone())).unwrap();
        assert!(all.all && all.seq == 9 && all.rows.is_empty() && all.users.is_none());
        assert!(Notice::decode("{\"users\":[\"a\"],\"from\":1}").is_none(), "a notice without seq is not this version");
    }
}
