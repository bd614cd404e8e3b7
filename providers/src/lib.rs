//! The providers' own usage and cost reports, as a second ledger beside
//! what we count (docs/RECONCILIATION.md).
//!
//! `openai` and `anthropic` know each provider's organisation report API
//! (URLs, headers, page shapes) and turn a page into [`report`] rows, our
//! token kinds; `fetch` walks the pages through the outbound client
//! (address rules, no redirects), backing off on 429 and 5xx; `store` keeps
//! connections, rows (a revised row's old figures go to
//! `provider_revisions`), import runs and mappings (migration 0015);
//! `reconcile` sets the provider's figures beside ours per day, model and
//! mapped scope and names the reason for a difference where it can;
//! `schedule` runs imports on an interval in API processes, and `alerts`
//! notifies webhooks of days past a connection's percentage; `as_usage`
//! counts a connection's mapped usage as usage where we counted none.

// In the order a report travels: the providers' pages, read into rows,
// fetched and stored on a schedule, then compared, alerted on, and
// (where nothing was published) counted as usage.
pub mod openai;
pub mod anthropic;
pub mod report;
pub mod fetch;
pub mod store;
pub mod schedule;
pub mod summary;
pub mod reconcile;
pub mod alerts;
pub mod as_usage;

use std::fmt;

/// A provider whose organisation reports we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::OpenAi, Provider::Anthropic];

    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == s)
    }

    /// Where the provider serves its admin API.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }

    /// What the provider calls the scope its usage is grouped by.
    pub fn scope_noun(self) -> &'static str {
        match self {
            Provider::OpenAi => "project",
            Provider::Anthropic => "workspace",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
