//! Parsing and validating events field by field, so that a rejection names
//! the field and the reason instead of a serde position.

use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value};
use std::fmt;

use crate::event::{Limits, SuppliedCost, UsageEvent};
use crate::text;

mod tokens;

/// One thing wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field's path, e.g. `input_tokens` or `data.model`; empty for the
    /// event as a whole.
    pub field: String,
    /// Why, in words a publisher can act on.
    pub reason: String,
}

/// Everything wrong with one event. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if e.field.is_empty() {
                write!(f, "{}", e.reason)?;
            } else {
                write!(f, "{}: {}", e.field, e.reason)?;
            }
        }
        Ok(())
    }
}

impl ValidationErrors {
    /// An error about the event as a whole rather than one field.
    pub fn whole(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Self(vec![FieldError { field: String::new(), reason: text::escape(&reason).into_owned() }])
    }
}

/// A description of the allowed characters and the test for one.
pub(crate) type Charset = (&'static str, fn(char) -> bool);

/// Reads fields out of a JSON object, recording every problem instead of
/// stopping at the first, and tracking which keys were consumed so unknown
/// ones can be reported.
pub(crate) struct FieldReader<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'static str,
    seen: Vec<&'static str>,
    pub(crate) errors: Vec<FieldError>,
}

impl<'a> FieldReader<'a> {
    pub(crate) fn new(obj: &'a Map<String, Value>, prefix: &'static str) -> Self {
        Self { obj, prefix, seen: Vec::new(), errors: Vec::new() }
    }

    /// Records a problem. Field names and reasons can quote what the
    /// publisher sent (an unknown key, a wrong `type`), so both are escaped:
    /// an error is always printable and storable, even about a NUL.
    pub(crate) fn fail(&mut self, field: &str, reason: impl Into<String>) {
        let field = format!("{}{field}", self.prefix);
        let reason = reason.into();
        self.errors
            .push(FieldError { field: text::escape(&field).into_owned(), reason: text::escape(&reason).into_owned() });
    }

    fn get(&mut self, field: &'static str) -> Option<&'a Value> {
        self.seen.push(field);
        match self.obj.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A required string of 1..=max characters without control characters,
    /// and, if `allowed` is given, only of those characters.
    pub(crate) fn string(&mut self, field: &'static str, max: usize, allowed: Option<Charset>) -> Option<String> {
        let Some(v) = self.get(field) else {
            self.fail(field, "is required");
            return None;
        };
        let Some(s) = v.as_str() else {
            self.fail(field, format!("must be a string, got {}", kind(v)));
            return None;
        };
        self.check_str(field, s, max, allowed).then(|| s.to_owned())
    }

    pub(crate) fn check_str(&mut self, field: &str, s: &str, max: usize, allowed: Option<Charset>) -> bool {
        let chars = s.chars().count();
        if chars == 0 || s.trim().is_empty() {
            self.fail(field, "must not be empty");
            false
        } else if chars > max {
            self.fail(field, format!("must be at most {max} characters, got {chars}"));
            false
        } else if s.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
            false
        } else if let Some((what, ok)) = allowed
            && let Some(bad) = s.chars().find(|c| !ok(*c))
        {
            self.fail(field, format!("may only contain {what}; found {bad:?}"));
            false
        } else {
            true
        }
    }

    pub(crate) fn optional_string(&mut self, field: &'static str, max: usize) -> Option<Option<String>> {
        self.optional_checked(field, max, None)
    }

    /// An optional string held to a character set (absent, or valid).
    pub(crate) fn optional_checked(
        &mut self,
        field: &'static str,
        max: usize,
        allowed: Option<Charset>,
    ) -> Option<Option<String>> {
        match self.get(field) {
            None => Some(None),
            Some(Value::String(s)) => self.check_str(field, s, max, allowed).then(|| Some(s.clone())),
            Some(v) => {
                self.fail(field, format!("must be a string, got {}", kind(v)));
                None
            }
        }
    }

    /// The optional supplied cost: `{"amount": "<decimal>", "currency": "USD"}`.
    pub(crate) fn cost(&mut self, field: &'static str) -> Option<Option<SuppliedCost>> {
        let Some(v) = self.get(field) else {
            return Some(None);
        };
        let Some(obj) = v.as_object() else {
            self.fail(
                field,
                format!("must be an object like {{\"amount\": \"0.0123\", \"currency\": \"USD\"}}, got {}", kind(v)),
            );
            return None;
        };
        let before = self.errors.len();
        // Text is taken strictly as written (plain decimal digits); a JSON
        // number is read by its text, the shortest that reads back as the
        // same number (which may use an exponent).
        let strict = matches!(obj.get("amount"), Some(Value::String(_)));
        let amount = match obj.get("amount") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                self.fail(&format!("{field}.amount"), format!("must be a decimal string, got {}", kind(other)));
                None
            }
            None => {
                self.fail(&format!("{field}.amount"), "is required");
                None
            }
        };
        let parse = if strict { crate::money::parse_nanos_text } else { crate::money::parse_nanos };
        let amount = amount.and_then(|a| parse(&a).map_err(|why| self.fail(&format!("{field}.amount"), why)).ok());
        let currency = match obj.get("currency") {
            Some(Value::String(c)) if crate::money::is_currency_code(c) => Some(c.clone()),
            Some(Value::String(c)) => {
                self.fail(&format!("{field}.currency"), format!("must be an ISO 4217 code like USD, got {c:?}"));
                None
            }
            Some(other) => {
                self.fail(&format!("{field}.currency"), format!("must be a string, got {}", kind(other)));
                None
            }
            None => {
                self.fail(&format!("{field}.currency"), "is required");
                None
            }
        };
        for k in obj.keys().filter(|k| !matches!(k.as_str(), "amount" | "currency")) {
            self.fail(&format!("{field}.{k}"), "is not a field of cost (amount, currency)");
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Some(SuppliedCost { amount: amount?, currency: currency? }))
    }

    pub(crate) fn time(&mut self, field: &'static str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let s = self.string(field, 64, None)?;
        check_time(&s, now).map_err(|reason| self.fail(field, reason)).ok()
    }

    pub(crate) fn metadata(&mut self, field: &'static str) -> Option<Option<Map<String, Value>>> {
        let Some(v) = self.get(field) else {
            return Some(None);
        };
        let Some(map) = v.as_object() else {
            self.fail(field, format!("must be an object, got {}", kind(v)));
            return None;
        };
        let before = self.errors.len();
        if map.len() > Limits::METADATA_MAX_KEYS {
            self.fail(field, format!("may have at most {} keys, got {}", Limits::METADATA_MAX_KEYS, map.len()));
        }
        for (k, v) in map {
            let path = format!("{field}.{k}");
            self.check_str(&path, k, Limits::METADATA_KEY_MAX_CHARS, None);
            match v {
                Value::String(s) if s.chars().count() > Limits::METADATA_VALUE_MAX_CHARS => {
                    self.fail(&path, format!("must be at most {} characters", Limits::METADATA_VALUE_MAX_CHARS));
                }
                // Other control characters (tabs, newlines) are kept: jsonb
                // holds them. NUL it cannot (crate::text).
                Value::String(s) => {
                    if let Err(why) = text::storable(s) {
                        self.fail(&path, why.reason());
                    }
                }
                Value::Array(_) | Value::Object(_) => {
                    self.fail(&path, "must be a string, number, boolean or null (metadata is flat)");
                }
                _ => {}
            }
        }
        let bytes = serde_json::to_vec(map).map(|b| b.len()).unwrap_or(usize::MAX);
        if bytes > Limits::METADATA_MAX_BYTES {
            self.fail(field, format!("must serialize to at most {} bytes, got {bytes}", Limits::METADATA_MAX_BYTES));
        }
        (self.errors.len() == before).then(|| Some(map.clone()))
    }

    /// The optional `project`: the `activity` characters, so a project
    /// name is safe in URLs, CSV and metric-free labels alike.
    /// It must hold a letter or digit: `-` alone means "no project" in views.
    pub(crate) fn project(&mut self) -> Option<Option<String>> {
        let p = self.optional_checked("project", Limits::PROJECT_MAX_CHARS, Some((ACTIVITY_CHARS, activity_char)))?;
        if let Some(name) = &p
            && !name.chars().any(|c| c.is_ascii_alphanumeric())
        {
            self.fail("project", "must contain a letter or a digit");
            return None;
        }
        Some(p)
    }

    /// Reports keys that no `get` asked for. Call last.
    pub(crate) fn reject_unknown(&mut self) {
        let unknown: Vec<String> = self.obj.keys().filter(|k| !self.seen.contains(&k.as_str())).cloned().collect();
        for k in unknown {
            self.fail(&k, "is not a field of this event (check the spelling against docs/EVENTS.md)");
        }
    }

    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ValidationErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ if self.errors.is_empty() => Err(ValidationErrors::whole("invalid event")),
            _ => Err(ValidationErrors(self.errors)),
        }
    }
}

/// RFC 3339 with an explicit offset; not before 2000, not too far ahead.
///
/// A leap second (`23:59:60`) is kept in the second it extends: it becomes
/// the last microsecond of `23:59:59`. Left as chrono parses it, it would
/// be stored one second later, in the next minute (and often the next day).
fn check_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("must be an RFC 3339 timestamp with an offset, like 2026-11-27T09:30:00Z ({e})"))?
        .with_timezone(&Utc);
    let t = normalise_leap_second(t);
    if t.year() < Limits::MIN_YEAR {
        return Err(format!("must not be before {}-01-01, got {s}", Limits::MIN_YEAR));
    }
    if (t - now).num_seconds() > Limits::MAX_FUTURE_SECS {
        return Err(format!(
            "is more than {} seconds in the future (got {s}, server time {}); check the publisher's clock",
            Limits::MAX_FUTURE_SECS,
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok(t)
}

/// Maps chrono's representation of a leap second (a nanosecond field of a
/// second or more) to the last microsecond of the second before it.
pub fn normalise_leap_second(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    if t.nanosecond() >= 1_000_000_000 { t.with_nanosecond(999_999_000).unwrap_or(t) } else { t }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The sources of usage turned out of providers' reports
/// (`provider:<connection>`): no publisher may use them, so such usage is
/// always what it says it is and can be told apart from counted events.
pub const PROVIDER_SOURCE_PREFIX: &str = "provider:";

/// Refuses a publisher's source that only provider-reported usage may have.
pub fn check_publisher_source(source: &str) -> Result<(), String> {
    if source.get(..PROVIDER_SOURCE_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PROVIDER_SOURCE_PREFIX)) {
        return Err(format!(
            "must not start with {PROVIDER_SOURCE_PREFIX:?}: that is reserved for usage imported from providers' reports"
        ));
    }
    Ok(())
}

/// Whether `p` is a project name an event may carry (the rule of
/// `project` below), for callers that name projects outside events.
pub fn valid_project(p: &str) -> bool {
    (1..=Limits::PROJECT_MAX_CHARS).contains(&p.chars().count())
        && p.chars().all(activity_char)
        && p.chars().any(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn activity_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
}

pub(crate) fn model_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '+')
}

pub(crate) const ACTIVITY_CHARS: &str = "lowercase letters, digits, '-', '_' and '.'";
pub(crate) const MODEL_CHARS: &str = "letters, digits and - _ . : / @ +";

/// Parses the body into a JSON object, or explains why it is not one.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ValidationErrors> {
    if bytes.len() > Limits::MAX_EVENT_BYTES {
        return Err(ValidationErrors::whole(format!(
            "event is {} bytes; the limit is {}",
            bytes.len(),
            Limits::MAX_EVENT_BYTES
        )));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(ValidationErrors::whole(format!("event must be a JSON object, got {}", kind(&other)))),
        Err(e) => Err(ValidationErrors::whole(format!("not valid JSON: {e}"))),
    }
}

/// Parses and validates one event in the native JSON encoding.
///
/// `default_source` is used when the payload has no `source` (direct Kafka
/// producers may omit it); `now` is the clock the future-time bound is
/// checked against.
pub fn parse_native(bytes: &[u8], default_source: &str, now: DateTime<Utc>) -> Result<UsageEvent, ValidationErrors> {
    let obj = parse_object(bytes)?;
    native_from_object(&obj, default_source, now)
}

/// Like [`parse_native`], for an already-parsed JSON value (one item of a
/// batch).
pub fn parse_native_value(
    value: &Value,
    default_source: &str,
    now: DateTime<Utc>,
) -> Result<UsageEvent, ValidationErrors> {
    match value {
        Value::Object(obj) => native_from_object(obj, default_source, now),
        other => Err(ValidationErrors::whole(format!("event must be a JSON object, got {}", kind(other)))),
    }
}

pub(crate) fn native_from_object(
    obj: &Map<String, Value>,
    default_source: &str,
    now: DateTime<Utc>,
) -> Result<UsageEvent, ValidationErrors> {
    let mut r = FieldReader::new(obj, "");
    if let Some(v) = r.get("schema_version")
        && !matches!(v.as_u64(), Some(1 | 2))
    {
        r.fail("schema_version", format!("must be 1 or 2 for this contract, got {v}"));
    }
    let source = r.optional_string("source", Limits::SOURCE_MAX_CHARS);
    if let Some(Some(s)) = &source
        && let Err(why) = check_publisher_source(s)
    {
        r.fail("source", why);
    }
    let event_id = r.string("event_id", Limits::ID_MAX_CHARS, None);
    let user_id = r.string("user_id", Limits::ID_MAX_CHARS, None);
    let occurred_at = r.time("occurred_at", now);
    let activity = r.string("activity", Limits::ACTIVITY_MAX_CHARS, Some((ACTIVITY_CHARS, activity_char)));
    let model = r.string("model", Limits::MODEL_MAX_CHARS, Some((MODEL_CHARS, model_char)));
    let project = r.project();
    let tokens = r.token_fields();
    let cost = r.cost("cost");
    let metadata = r.metadata("metadata");
    r.reject_unknown();
    let event = (|| {
        let (input_tokens, output_tokens, kinds, billing) = tokens?;
        Some(UsageEvent {
            source: source?.unwrap_or_else(|| default_source.to_owned()),
            event_id: event_id?,
            user_id: user_id?,
            occurred_at: occurred_at?,
            activity: activity?,
            model: model?,
            project: project?,
            input_tokens,
            output_tokens,
            kinds,
            billing,
            cost: cost?,
            metadata: metadata?,
        })
    })();
    r.finish(event)
}

#[cfg(test)]
mod tests;
