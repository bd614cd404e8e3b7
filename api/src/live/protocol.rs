//! Protocol `tokenusage.v1` (docs/LIVE.md, docs/asyncapi.yaml): the
//! messages a client sends and the server answers, typed both ways, and the
//! close codes.

use std::collections::BTreeMap;

use axum::extract::ws::{Message, Utf8Bytes};
use serde::{Deserialize, Serialize};
use tokenusage_schema::Sums;
use tokenusage_schema::freshness::Freshness;

use crate::accounts::Role;
use crate::history::present::SeriesResponse;

/// The subprotocol, echoed in the handshake.
pub const PROTOCOL: &str = "tokenusage.v1";
/// The subprotocol that carries the access token: `bearer.<token>`.
pub const BEARER_PREFIX: &str = "bearer.";
/// Subscriptions one socket may hold.
pub const MAX_SUBSCRIPTIONS: usize = 10;

/// Close codes.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const ACCOUNT_DISABLED: u16 = 4003;
    pub const IDLE: u16 = 4008;
    pub const TOO_SLOW: u16 = 4009;

    /// Every label `reason` gives, and "client" (the client closed it).
    pub const REASONS: [&str; 8] =
        ["client", "shutdown", "policy", "token_expired", "account_disabled", "idle", "too_slow", "other"];

    /// A metric label for why the server closed a socket.
    pub fn reason(code: u16) -> &'static str {
        match code {
            GOING_AWAY => "shutdown",
            POLICY => "policy",
            TOKEN_EXPIRED => "token_expired",
            ACCOUNT_DISABLED => "account_disabled",
            IDLE => "idle",
            TOO_SLOW => "too_slow",
            _ => "other",
        }
    }
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// A view in the REST vocabulary (`history::params::ViewParams`); kept
    /// as JSON here so a bad view is refused with the subscription's id.
    Subscribe {
        id: String,
        view: serde_json::Map<String, serde_json::Value>,
    },
    Unsubscribe {
        id: String,
    },
    /// A fresh access token for this socket's user.
    Auth {
        token: String,
    },
    /// Push the budgets the user can see, now and whenever their state
    /// changes.
    WatchBudgets,
    /// Admins: push each reconciliation alert (a provider's day past its
    /// connection's percentage) as it is raised.
    WatchReconciliation,
    Ping,
}

/// One changed bucket of a delta, with absolute values.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BucketUpdate {
    pub index: usize,
    pub start: String,
    pub end: String,
    #[serde(flatten)]
    pub sums: Sums,
    /// Per group key (empty unless the view is grouped).
    pub groups: BTreeMap<String, Sums>,
}

/// What the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    Hello {
        protocol: &'static str,
        user: &'a str,
        role: Role,
        expires_at: u64,
        max_subscriptions: usize,
    },
    /// A whole view, shaped exactly like the REST series.
    Snapshot {
        id: &'a str,
        /// Open-ended: the view grows with time.
        live: bool,
        /// Boxed: it is by far the largest message.
        series: Box<SeriesResponse>,
        freshness: &'a Freshness,
    },
    /// The buckets changed since the last message for this view.
    Delta {
        id: &'a str,
        buckets: Vec<BucketUpdate>,
        total: Sums,
        freshness: &'a Freshness,
    },
    /// Nothing changed, but the rollups are more current.
    Freshness {
        freshness: &'a Freshness,
    },
    Error {
        id: Option<&'a str>,
        code: &'a str,
        message: &'a str,
    },
    Pong,
    /// The budgets the user can see and their state (all of them, each time
    /// one changes).
    Budgets {
        budgets: &'a [crate::budgets::board::BudgetState],
    },
    /// Reconciliation alerts raised since the last such message (none in
    /// the answer to `watch_reconciliation`): the webhook payloads.
    Reconciliation {
        alerts: &'a [serde_json::Value],
    },
    Unsubscribed {
        id: &'a str,
    },
    Authenticated {
        expires_at: u64,
    },
    /// Sent just before the server closes the socket with `code`.
    Closing {
        code: u16,
        reason: &'a str,
    },
}

impl ServerMessage<'_> {
    /// The WebSocket text frame.
    pub fn encode(&self) -> Message {
        // Serializing strings, numbers and maps cannot fail.
        Message::Text(Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(m: &ServerMessage<'_>) -> serde_json::Value {
        let Message::Text(t) = m.encode() else { panic!("text frames only") };
        serde_json::from_str(&t).unwrap()
    }

    #[test]
    fn every_close_reason_is_a_listed_label() {
        // The metric is exported at zero for the listed labels only.
        for code in 0..=u16::MAX {
            assert!(close::REASONS.contains(&close::reason(code)), "{code}");
        }
    }

    #[test]
    fn messages_keep_the_documented_shapes() {
        let f = Freshness::default();
        let hello = ServerMessage::Hello {
            protocol: PROTOCOL,
            user: "alice",
            role: Role::Viewer,
            expires_at: 9,
            max_subscriptions: 10,
        };
        assert_eq!(
            json(&hello),
            serde_json::json!({"type": "hello", "protocol": "tokenusage.v1", "user": "alice", "role": "viewer",
                "expires_at": 9, "max_subscriptions": 10})
        );
        let err = ServerMessage::Error { id: None, code: "rate_limited", message: "slow down" };
        assert_eq!(
            json(&err),
            serde_json::json!({"type": "error", "id": null, "code": "rate_limited", "message": "slow down"})
        );
        let b = BucketUpdate {
            index: 2,
            start: "s".into(),
            end: "e".into(),
            sums: Sums::new(3, 4, 1),
            groups: BTreeMap::new(),
        };
        let delta = ServerMessage::Delta { id: "v", buckets: vec![b], total: Sums::new(3, 4, 1), freshness: &f };
        let d = json(&delta);
        assert_eq!(d["buckets"][0]["total_tokens"], 7);
        assert_eq!(d["buckets"][0]["index"], 2);
        assert_eq!(d["freshness"], serde_json::json!({"complete_through": null, "lag_records": 0, "lost_records": 0}));
        assert_eq!(json(&ServerMessage::Pong), serde_json::json!({"type": "pong"}));
        assert_eq!(
            json(&ServerMessage::Closing { code: close::TOKEN_EXPIRED, reason: "token expired" }),
            serde_json::json!({"type": "closing", "code": 4001, "reason": "token expired"})
        );
    }

    #[test]
    fn client_messages_parse_and_unknown_kinds_do_not() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"subscribe","id":"a","view":{"from":"2026-11-20"}}"#).unwrap();
        assert!(matches!(m, ClientMessage::Subscribe { ref id, ref view } if id == "a" && view.contains_key("from")));
        assert!(matches!(serde_json::from_str::<ClientMessage>(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping)));
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"shout"}"#).is_err());
    }
}
