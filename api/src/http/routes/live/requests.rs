//! What a socket does with each client message, and the sending of what
//! changed in its views. Every refused message is audited (docs/SECURITY.md)
//! before the client is told why.

use std::time::Duration;

use serde_json::{Value, json};
use tokenusage_schema::freshness::Freshness;

use super::socket::{OUT_QUEUE, Socket};
use crate::audit;
use crate::history::params::{self, View, ViewParams};
use crate::http::error::ApiError;
use crate::http::extract as auth;
use crate::live::protocol::{ClientMessage, MAX_SUBSCRIPTIONS, ServerMessage};
use crate::live::view::Sub;

/// A client message the socket refuses, for the audit trail and the client.
pub(super) struct Refusal {
    pub action: &'static str,
    /// The subscription it was about, if any.
    pub id: Option<String>,
    /// Whose data it asked for, if any.
    pub subject: Option<String>,
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Socket {
    fn action<'a>(
        &'a self,
        action: &'static str,
        subject: Option<&'a str>,
        params: Value,
        status: u16,
    ) -> audit::Action<'a> {
        audit::Action {
            actor: (&self.user.id, self.user.role),
            action,
            subject,
            params,
            rows: None,
            covers: &[],
            status,
        }
    }

    /// Audits a refused message, then tells the client. If the record cannot
    /// be written the client is still told no, and nothing is served.
    pub(super) async fn refuse(&mut self, r: Refusal) {
        let params = json!({ "id": r.id, "code": r.code });
        let recorded = audit::record_action(
            &self.state.audit,
            &self.facts,
            self.action(r.action, r.subject.as_deref(), params, r.status),
        )
        .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "a refused live message could not be audited");
        }
        self.error(r.id.as_deref(), r.code, &r.message);
    }

    pub(super) async fn refuse_rate_limited(&mut self) {
        let message = "too many messages; slow down".into();
        self.refuse(Refusal {
            action: "live.message",
            id: None,
            subject: None,
            status: 429,
            code: "rate_limited",
            message,
        })
        .await;
    }

    pub(super) async fn refuse_binary(&mut self) {
        let message = "binary messages are not part of the protocol".into();
        self.refuse(Refusal {
            action: "live.message",
            id: None,
            subject: None,
            status: 400,
            code: "unsupported",
            message,
        })
        .await;
    }

    /// Handles a client message; returns a new time-to-expiry after re-authentication.
    pub(super) async fn on_client(&mut self, raw: &str) -> Option<Duration> {
        let msg: ClientMessage = match serde_json::from_str(raw) {
            Ok(m) => m,
            Err(e) => {
                let message = format!("not a protocol message: {e}");
                let r = Refusal {
                    action: "live.message",
                    id: None,
                    subject: None,
                    status: 400,
                    code: "invalid_message",
                    message,
                };
                self.refuse(r).await;
                return None;
            }
        };
        match msg {
            ClientMessage::Ping => {
                self.send(&ServerMessage::Pong);
            }
            ClientMessage::Unsubscribe { id } => {
                if self.subs.remove(&id).is_some() {
                    self.rescope();
                    self.send(&ServerMessage::Unsubscribed { id: &id });
                } else {
                    let message = "no subscription with this id".into();
                    let r = Refusal {
                        action: "live.unsubscribe",
                        id: Some(id),
                        subject: None,
                        status: 400,
                        code: "unknown_subscription",
                        message,
                    };
                    self.refuse(r).await;
                }
            }
            ClientMessage::Auth { token } => return self.reauthenticate(&token).await,
            ClientMessage::WatchBudgets => {
                // Every watch is answered with the current list, a repeated
                // one too, and is on the record.
                self.last_budgets = None;
                self.budgets_watch_asked = true;
                self.budgets_watch = Some(self.state.budgets.subscribe());
                self.push_budgets().await;
            }
            ClientMessage::WatchReconciliation => {
                if self.user.role != crate::access::Role::Admin {
                    let r = Refusal {
                        action: "live.watch_reconciliation",
                        id: None,
                        subject: None,
                        status: 403,
                        code: "forbidden",
                        message: "reconciliation alerts are for admins".into(),
                    };
                    self.refuse(r).await;
                    return None;
                }
                let action = self.action("live.watch_reconciliation", None, json!({}), 200);
                if audit::record_action(&self.state.audit, &self.facts, action).await.is_err() {
                    self.error(None, "audit_unavailable", "cannot record this request; retry shortly");
                    return None;
                }
                // From now on: alerts already queued were for earlier.
                let last: Result<Option<i64>, _> = sqlx::query_scalar(
                    "select max(id) from webhook_deliveries where event = 'reconciliation.difference'",
                )
                .fetch_one(&self.state.pool)
                .await;
                self.reconciliation_seen = last.ok().flatten().unwrap_or(0);
                self.reconciliation_watch = Some(self.state.reconciliation.subscribe());
                self.send(&ServerMessage::Reconciliation { alerts: &[] });
            }
            ClientMessage::Subscribe { id, view } => {
                // The user the view asked about, whether or not it is allowed.
                let subject = match (view.get("team"), view.get("user")) {
                    (Some(Value::String(t)), _) => format!("team:{t}"),
                    (_, Some(Value::String(u))) => u.clone(),
                    _ => self.user.id.clone(),
                };
                if let Err(e) = self.subscribe(&id, view).await {
                    let (code, message) = e.code_and_message();
                    let status = e.status().as_u16();
                    let r = Refusal {
                        action: "live.subscribe",
                        id: Some(id),
                        subject: Some(subject),
                        status,
                        code,
                        message,
                    };
                    self.refuse(r).await;
                }
            }
        }
        None
    }

    /// A fresh token for the same user extends the socket's life.
    /// Decides every subscription's subject again (after a renewal): a
    /// team's members or a manager's reach may have changed since it was
    /// opened. A view no longer allowed is dropped with an error; one whose
    /// team changed is re-read with today's members. So a socket that
    /// renews its token forever never keeps a reach it has lost for longer
    /// than one token lifetime.
    async fn reauthorize(&mut self) {
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        let mut changed = false;
        for id in ids {
            let Some(sub) = self.subs.get(&id) else { continue };
            let (user, team) = (sub.view.user.clone(), sub.view.team.clone());
            match self.user.usage_subject(&self.state, user.as_deref(), team.as_deref()).await {
                Ok(subject) if subject == sub.subject => {}
                Ok(subject) => {
                    if let Some(sub) = self.subs.get_mut(&id) {
                        sub.subject = subject;
                        sub.needs_snapshot = true;
                    }
                    changed = true;
                }
                // A database hiccup keeps the view; the next renewal decides.
                Err(e) if !matches!(e, ApiError::Forbidden(_) | ApiError::NotFound(_)) => {}
                Err(e) => {
                    let label = self.subs.remove(&id).map(|s| s.subject.label().to_owned());
                    changed = true;
                    let (code, message) = e.code_and_message();
                    let r = Refusal {
                        action: "live.reauthorize",
                        id: Some(id),
                        subject: label,
                        status: e.status().as_u16(),
                        code,
                        message,
                    };
                    self.refuse(r).await;
                }
            }
        }
        if changed {
            self.rescope();
        }
    }

    async fn reauthenticate(&mut self, token: &str) -> Option<Duration> {
        let outcome = auth::authenticate(&self.state, token).await;
        match outcome {
            Ok(u) if u.id == self.user.id => {
                let action = self.action("live.auth", Some(&self.user.id), json!({}), 200);
                if audit::record_action(&self.state.audit, &self.facts, action).await.is_err() {
                    self.error(None, "audit_unavailable", "cannot record the renewal; retry shortly");
                    return None;
                }
                self.user = u;
                self.send(&ServerMessage::Authenticated { expires_at: self.user.expires_at });
                self.reauthorize().await;
                Some(self.until_expiry())
            }
            Ok(_) => {
                let message = "the new token belongs to someone else".into();
                self.refuse(Refusal {
                    action: "live.auth",
                    id: None,
                    subject: None,
                    status: 403,
                    code: "wrong_user",
                    message,
                })
                .await;
                None
            }
            Err(_) => {
                let message = "the token is not valid".into();
                self.refuse(Refusal {
                    action: "live.auth",
                    id: None,
                    subject: None,
                    status: 401,
                    code: "unauthorized",
                    message,
                })
                .await;
                None
            }
        }
    }

    async fn subscribe(&mut self, id: &str, raw: serde_json::Map<String, Value>) -> Result<(), ApiError> {
        if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
            return Err(ApiError::bad_request("invalid_id", "`id` must be 1 to 64 printable characters"));
        }
        if !self.subs.contains_key(id) && self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::bad_request(
                "too_many_subscriptions",
                format!("at most {MAX_SUBSCRIPTIONS} per socket"),
            ));
        }
        crate::http::hygiene::check_json(&raw)?;
        let q: ViewParams =
            serde_json::from_value(Value::Object(raw)).map_err(|e| ApiError::from_deserialize(&e.to_string()))?;
        let open_ended = q.to.is_none();
        let mut view = View::parse(&q, self.state.config.history.week_start.weekday(), false)?;
        if open_ended {
            view.to = chrono::Utc::now().max(view.from + chrono::Duration::seconds(1));
        }
        let subject = self.user.usage_subject(&self.state, view.user.as_deref(), view.team.as_deref()).await?;
        let plan = params::plan_view(&view, self.state.config.history.max_points)?;
        // Later re-plans (open-ended views grow) keep the granularity.
        view.granularity = Some(plan.granularity);
        // Hear this subject's changes before reading, so none committed
        // after the read can be missed (those before it are skipped by seq).
        self.membership.set_scope(self.subs.values().map(|s| &s.subject).chain([&subject]));
        let read =
            self.state.series_cache.read(self.state.reads.primary(), &subject, &plan, view.group, &view.filters).await;
        let snap = match read {
            Ok(snap) => snap,
            Err(e) => {
                self.rescope();
                return Err(e.into());
            }
        };
        let recorded = json!({"id": id, "from": view.from, "to": if open_ended { Value::Null } else { json!(view.to) },
            "granularity": plan.granularity, "tz": view.tz.name(), "group": view.group, "filters": view.filters});
        let mut action = self.action("live.subscribe", Some(subject.label()), recorded, 200);
        action.rows = Some(snap.data.totals.len() as i64);
        action.covers = subject.covers();
        if audit::record_action(&self.state.audit, &self.facts, action).await.is_err() {
            self.rescope();
            return Err(ApiError::AuditUnavailable);
        }
        let sub = Sub::new(view, plan, subject, open_ended, &snap);
        let current = self.state.live.freshness().borrow().clone();
        self.send(&sub.snapshot(id, &current));
        self.subs.insert(id.to_owned(), sub);
        Ok(())
    }

    /// Sends the reconciliation alerts queued since the last push, one per
    /// connection and day (the outbox has one row per endpoint).
    pub(super) async fn push_reconciliation(&mut self) {
        let rows: Result<Vec<(i64, Value)>, _> = sqlx::query_as(
            "select max(id), (array_agg(payload order by id))[1] from webhook_deliveries \
             where event = 'reconciliation.difference' and id > $1 \
             group by idempotency_key order by 1 limit 100",
        )
        .bind(self.reconciliation_seen)
        .fetch_all(&self.state.pool)
        .await;
        let Ok(rows) = rows else { return }; // retried on the next alert
        if let Some(last) = rows.iter().map(|(id, _)| *id).max() {
            self.reconciliation_seen = last;
            let alerts: Vec<Value> = rows.into_iter().map(|(_, p)| p).collect();
            self.send(&ServerMessage::Reconciliation { alerts: &alerts });
        }
    }

    /// Sends the budgets this user can see, if they changed since the last
    /// time.
    pub(super) async fn push_budgets(&mut self) {
        let Ok(reach) = crate::access::reach_of(&self.state.teams, &self.state.pool, &self.user).await else {
            return; // retried on the next change
        };
        let visible = self.state.budgets.visible(&crate::access::visible_scopes(&self.user, &reach));
        // What a reader sees, not when it was computed: a pass that changed
        // other budgets sends nothing here.
        let same = self.last_budgets.as_ref().is_some_and(|last| {
            last.len() == visible.len()
                && last.iter().zip(&visible).all(|(a, b)| {
                    a.budget == b.budget
                        && match (&a.state, &b.state) {
                            (Some(x), Some(y)) => {
                                (x.spent, x.window_start, &x.crossed, x.unpriced_tokens)
                                    == (y.spent, y.window_start, &y.crossed, y.unpriced_tokens)
                            }
                            (x, y) => x.is_none() && y.is_none(),
                        }
                })
        });
        if !same {
            // On the record before it leaves: the watch itself (first push)
            // and anyone whose budget a push shows for the first time.
            let first = std::mem::take(&mut self.budgets_watch_asked);
            let people = match crate::budgets::shown_people(
                &self.state.teams,
                &self.state.pool,
                &self.user.id,
                visible.iter().map(|b| &b.budget.scope),
            )
            .await
            {
                Ok(p) => p,
                Err(_) => return, // retried on the next change
            };
            let new: Vec<String> = people.into_iter().filter(|p| !self.budgets_covered.contains(p)).collect();
            if first || !new.is_empty() {
                let mut action = self.action("live.watch_budgets", Some(&self.user.id), json!({}), 200);
                action.covers = &new;
                action.rows = Some(visible.len() as i64);
                if audit::record_action(&self.state.audit, &self.facts, action).await.is_err() {
                    self.budgets_watch_asked = first;
                    self.error(None, "audit_unavailable", "cannot record this request; retry shortly");
                    return;
                }
                self.budgets_covered.extend(new);
            }
            self.send(&ServerMessage::Budgets { budgets: &visible });
            self.last_budgets = Some(visible);
        }
    }

    /// `flush`, logging a failed read; true if data went out.
    pub(super) async fn flush_logged(&mut self, freshness: &Freshness) -> bool {
        match Box::pin(self.flush(freshness)).await {
            Ok(sent) => sent,
            Err(e) => {
                tracing::warn!(error = %e, "live update failed");
                self.error(None, "update_failed", "could not read the latest numbers; retrying");
                false
            }
        }
    }

    /// Sends what changed since the last send; true if data went out.
    async fn flush(&mut self, freshness: &Freshness) -> Result<bool, sqlx::Error> {
        if self.out.len() < OUT_QUEUE / 2 {
            self.stuck_since = None;
        } else if self.stuck_since.is_some() {
            return Ok(false);
        }
        let now = chrono::Utc::now();
        let ids: Vec<String> = self.subs.keys().cloned().collect();
        let mut sent_data = false;
        for id in ids {
            let Some(sub) = self.subs.get_mut(&id) else { continue };
            if sub.open_ended && now >= sub.plan.end {
                sub.view.to = now + chrono::Duration::seconds(1);
                match params::plan_view(&sub.view, self.state.config.history.max_points) {
                    Ok(p) => sub.plan = p,
                    Err(_) => {
                        self.subs.remove(&id);
                        self.error(
                            Some(&id),
                            "too_many_points",
                            "the live view grew past the point limit; subscribe again with a later start",
                        );
                        continue;
                    }
                }
                sub.needs_snapshot = true;
            }
            if sub.needs_snapshot {
                // Sockets watching the same view share one read (the cache).
                let fresh = self
                    .state
                    .series_cache
                    .read(self.state.reads.primary(), &sub.subject, &sub.plan, sub.view.group, &sub.view.filters)
                    .await?;
                sub.reset(&fresh);
                let msg = sub.snapshot(&id, freshness).encode();
                sent_data |= self.send_encoded(msg);
                continue;
            }
            if let Some(delta) = sub.take_delta(&id, freshness) {
                let msg = delta.encode();
                sent_data |= self.send_encoded(msg);
            }
        }
        if sent_data {
            self.last_freshness = Some(freshness.clone());
        }
        Ok(sent_data)
    }
}
