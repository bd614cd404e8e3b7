//! The token fields of an event: the totals, the kinds, the billing
//! details, a provider's own usage object read into them, and the subset
//! rule (the kinds are parts of the totals).

use serde_json::Value;

use super::{FieldReader, kind};
use crate::event::{Billing, Limits, ServiceTier, TokenKinds};
use crate::providers::{self, UsageFormat};

/// Our token fields: the totals and the v2 kinds.
const TOKEN_FIELDS: [&str; 10] = [
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "cache_write_1h_input_tokens",
    "audio_input_tokens",
    "image_input_tokens",
    "reasoning_output_tokens",
    "audio_output_tokens",
    "image_output_tokens",
];

impl FieldReader<'_> {
    pub(crate) fn tokens(&mut self, field: &'static str) -> Option<u64> {
        let Some(v) = self.get(field) else {
            self.fail(field, "is required");
            return None;
        };
        match v {
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    if u > Limits::MAX_TOKENS {
                        self.fail(field, format!("must be at most {}, got {u}", Limits::MAX_TOKENS));
                        None
                    } else {
                        Some(u)
                    }
                } else if n.as_i64().is_some() {
                    self.fail(field, format!("must not be negative, got {n}"));
                    None
                } else {
                    self.fail(field, format!("must be a whole number, got {n}"));
                    None
                }
            }
            other => {
                self.fail(field, format!("must be a whole number, got {}", kind(other)));
                None
            }
        }
    }

    /// An optional token count: absent or null is 0.
    pub(crate) fn optional_tokens(&mut self, field: &'static str) -> Option<u64> {
        if self.obj.get(field).is_none_or(Value::is_null) {
            self.seen.push(field);
            return Some(0);
        }
        self.tokens(field)
    }

    /// The token totals and the v2 kinds inside them, checked against the
    /// subset rule ([`TokenKinds`]): a kind larger than its total is refused
    /// naming the kind.
    pub(crate) fn token_fields(&mut self) -> Option<(u64, u64, TokenKinds, Billing)> {
        let given = self.billing();
        if self.obj.get("usage").is_some_and(|v| !v.is_null()) {
            let (input, output, kinds, read) = self.provider_usage()?;
            return Some((input, output, kinds, self.merge_billing(given?, read)?));
        }
        self.seen.push("usage");
        if let Some(v) = self.get("usage_format") {
            self.fail("usage_format", format!("goes with a `usage` object, which this event does not have (got {v})"));
        }
        let input = self.tokens("input_tokens");
        let output = self.tokens("output_tokens");
        let kinds = (|| {
            Some(TokenKinds {
                cache_read_input_tokens: self.optional_tokens("cache_read_input_tokens")?,
                cache_write_input_tokens: self.optional_tokens("cache_write_input_tokens")?,
                cache_write_1h_input_tokens: self.optional_tokens("cache_write_1h_input_tokens")?,
                audio_input_tokens: self.optional_tokens("audio_input_tokens")?,
                image_input_tokens: self.optional_tokens("image_input_tokens")?,
                reasoning_output_tokens: self.optional_tokens("reasoning_output_tokens")?,
                audio_output_tokens: self.optional_tokens("audio_output_tokens")?,
                image_output_tokens: self.optional_tokens("image_output_tokens")?,
            })
        })();
        let (input, output, kinds, billing) = (input?, output?, kinds?, given?);
        self.subset_rule(input, output, &kinds, None).then_some((input, output, kinds, billing))
    }

    /// The optional `service_tier` and `web_search_requests`.
    fn billing(&mut self) -> Option<Billing> {
        let service_tier = match self.get("service_tier") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(name)) => match ServiceTier::parse(name) {
                Some(t) => Some(Some(t)),
                None => {
                    self.fail("service_tier", format!("must be one of {}, got {name:?}", ServiceTier::NAMES));
                    None
                }
            },
            Some(v) => {
                self.fail("service_tier", format!("must be a string, got {}", kind(v)));
                None
            }
        };
        let web_search_requests = self.optional_tokens("web_search_requests");
        if let Some(n) = web_search_requests
            && n > Limits::MAX_REQUESTS
        {
            self.fail("web_search_requests", format!("must be at most {}, got {n}", Limits::MAX_REQUESTS));
            return None;
        }
        Some(Billing { service_tier: service_tier?, web_search_requests: web_search_requests? })
    }

    /// The event's own billing fields and those read out of a provider's
    /// usage object: either may give each; when both do they must agree.
    fn merge_billing(&mut self, given: Billing, read: Billing) -> Option<Billing> {
        let mut ok = true;
        let service_tier = match (given.service_tier, read.service_tier) {
            (Some(a), Some(b)) if a != b => {
                self.fail("service_tier", format!("is {} but the usage object says {}", a.name(), b.name()));
                ok = false;
                None
            }
            (a, b) => a.or(b),
        };
        let web_search_requests = match (given.web_search_requests, read.web_search_requests) {
            (a, b) if a > 0 && b > 0 && a != b => {
                self.fail("web_search_requests", format!("is {a} but the usage object says {b}"));
                ok = false;
                0
            }
            (a, b) => a.max(b),
        };
        ok.then_some(Billing { service_tier, web_search_requests })
    }

    /// The subset rule: each total holds its kinds. A break is named by the
    /// one kind given (or the total), or by `whole` when the counts were
    /// read out of another field (a provider's `usage`).
    fn subset_rule(&mut self, input: u64, output: u64, kinds: &TokenKinds, whole: Option<&str>) -> bool {
        let inputs = [
            ("cache_read_input_tokens", kinds.cache_read_input_tokens),
            ("cache_write_input_tokens", kinds.cache_write_input_tokens),
            ("cache_write_1h_input_tokens", kinds.cache_write_1h_input_tokens),
            ("audio_input_tokens", kinds.audio_input_tokens),
            ("image_input_tokens", kinds.image_input_tokens),
        ];
        let outputs = [
            ("reasoning_output_tokens", kinds.reasoning_output_tokens),
            ("audio_output_tokens", kinds.audio_output_tokens),
            ("image_output_tokens", kinds.image_output_tokens),
        ];
        let ok_in = self.within_total("input_tokens", input, &inputs, "cache and audio/image tokens", whole);
        let ok_out = self.within_total("output_tokens", output, &outputs, "reasoning and audio/image tokens", whole);
        ok_in && ok_out
    }

    /// The totals and kinds out of a provider's own usage object
    /// (`usage`, optionally with `usage_format`), checked like ours.
    fn provider_usage(&mut self) -> Option<(u64, u64, TokenKinds, Billing)> {
        let both: Vec<&str> =
            TOKEN_FIELDS.iter().copied().filter(|f| self.obj.get(*f).is_some_and(|v| !v.is_null())).collect();
        self.seen.extend_from_slice(&TOKEN_FIELDS);
        self.seen.extend_from_slice(&["usage", "usage_format"]);
        if !both.is_empty() {
            self.fail(
                "usage",
                format!("send either a provider's usage object or token counts, not both (found {})", both.join(", ")),
            );
            return None;
        }
        let format = match self.get("usage_format") {
            None => None,
            Some(Value::String(name)) => match UsageFormat::from_name(name) {
                Some(f) => Some(f),
                None => {
                    self.fail("usage_format", format!("must be one of {}, got {name:?}", UsageFormat::names()));
                    return None;
                }
            },
            Some(v) => {
                self.fail("usage_format", format!("must be a string, got {}", kind(v)));
                return None;
            }
        };
        let usage = match self.get("usage") {
            Some(Value::Object(u)) => u,
            Some(v) => {
                self.fail("usage", format!("must be the provider's usage object, got {}", kind(v)));
                return None;
            }
            None => return None,
        };
        let m = match providers::map_usage(format, usage) {
            Ok(m) => m,
            Err(errors) => {
                for e in errors {
                    self.fail(&e.field, e.reason);
                }
                return None;
            }
        };
        // Each count is bounded; a provider's sum of them may not be.
        let largest = m.input_tokens.max(m.output_tokens);
        if largest > Limits::MAX_TOKENS {
            self.fail(
                "usage",
                format!("sums to {largest} input or output tokens; the limit is {}", Limits::MAX_TOKENS),
            );
            return None;
        }
        if m.billing.web_search_requests > Limits::MAX_REQUESTS {
            self.fail(
                "usage",
                format!("holds {} web searches; the limit is {}", m.billing.web_search_requests, Limits::MAX_REQUESTS),
            );
            return None;
        }
        self.subset_rule(m.input_tokens, m.output_tokens, &m.kinds, Some("usage")).then_some((
            m.input_tokens,
            m.output_tokens,
            m.kinds,
            m.billing,
        ))
    }

    /// Checks that `parts` (kind, count) sum to at most `total`; if not,
    /// fails naming the one kind given, or the total when several are.
    fn within_total(
        &mut self,
        total_field: &str,
        total: u64,
        parts: &[(&str, u64)],
        what: &str,
        whole: Option<&str>,
    ) -> bool {
        let sum: u64 = parts.iter().map(|(_, n)| n).sum();
        if sum <= total {
            return true;
        }
        let named: Vec<&str> = parts.iter().filter(|(_, n)| *n > 0).map(|(f, _)| *f).collect();
        let field = whole.unwrap_or(if named.len() == 1 { named[0] } else { total_field });
        self.fail(
            field,
            format!(
                "{} sum to {sum}, more than {total_field} ({total}); {what} are part of {total_field}",
                named.join(" + ")
            ),
        );
        false
    }
}
