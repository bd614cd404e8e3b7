//! The `tokenusage` command line: one binary, one subcommand per role.
//!
//! `serve` runs everything in one process (the default way to run);
//! `ingest`, `projector` and `api` run one part each so a deployment can
//! scale them separately. Every setting is a flag with an environment
//! variable; the README's configuration table and `.env.example` (both
//! generated from these definitions, `scripts/update-config-docs.sh`) list
//! them all.

pub mod commands;
pub mod demo;
pub mod embedded;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokenusage_plumbing::telemetry::LogFormat;

/// Live LLM token usage: ingest, projector, API and dashboard in one binary.
#[derive(Debug, Parser)]
#[command(name = "tokenusage", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(long, env = "TOKENUSAGE_LOG_FORMAT", value_enum, default_value = "pretty", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: projector, API and dashboard (and,
    /// with --demo, a demo user and a live demo event stream).
    Serve(Box<commands::serve::ServeArgs>),
    /// Run only the projector (Kafka to PostgreSQL rollups).
    Projector(commands::projector::ProjectorCmd),
    /// Run only the HTTP API and dashboard.
    Api(Box<commands::api::ApiCmd>),
    /// Run only the HTTP ingest endpoint (HTTP to Kafka).
    Ingest(commands::ingest::IngestCmd),
    /// Apply database migrations (a no-op when the schema is current).
    Migrate(commands::migrate::MigrateCmd),
    /// Publish events from an NDJSON or CSV file (or stdin) to Kafka.
    Publish(commands::publish::PublishCmd),
    /// Rebuild the rollups of a date range from the stored raw events.
    Replay(commands::rebuild::ReplayCmd),
    /// Compare the rollups with the raw events and report any drift.
    Verify(commands::rebuild::VerifyCmd),
    /// Build the day rows of ended days now (the projector does it every
    /// minute), optionally rebuilding them from a date on.
    Seal(commands::rebuild::SealCmd),
    /// List the records the broker lost before they were counted, and
    /// acknowledge them.
    Lost(commands::rebuild::LostCmd),
    /// List and re-drive records the projector could not count.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(commands::deadletters::DeadLettersCmd),
    /// Manage publisher API keys (ingest only).
    #[command(subcommand)]
    Keys(commands::keys::KeysCmd),
    /// Check the audit trail's hash chain for edits, deletions and reordering.
    #[command(subcommand)]
    Audit(commands::audit::AuditCmd),
    /// Manage local dashboard users.
    #[command(subcommand)]
    Users(commands::users::UsersCmd),
    /// Budgets on users, teams and projects, and their alerts.
    #[command(subcommand)]
    Budgets(commands::budgets::BudgetsCmd),
    /// Webhook endpoints budget alerts are sent to, and their deliveries.
    #[command(subcommand)]
    Webhooks(commands::budgets::WebhooksCmd),
    /// Manage teams: members, managers, names.
    #[command(subcommand)]
    Teams(commands::teams::TeamsCmd),
    /// Manage the price book: dated prices per model and token kind.
    #[command(subcommand)]
    Prices(commands::prices::PricesCmd),
    /// Price stored events again with the current book and rebuild their rollups.
    Reprice(commands::reprice::RepriceCmd),
    /// The providers' own usage and cost reports: connect, map, import.
    #[command(subcommand)]
    Providers(commands::providers::ProvidersCmd),
    /// Set the providers' reports beside what we counted, per day, model
    /// and mapped scope, with the reasons for each difference.
    Reconcile(commands::providers::ReconcileCmd),
}

impl Cli {
    /// Parses the command line, noting what was given explicitly rather
    /// than defaulted (`serve --demo` embeds a broker only when no Kafka
    /// was configured).
    pub fn parse_noting_sources() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        let mut cli = match Cli::from_arg_matches(&matches) {
            Ok(c) => c,
            Err(e) => e.exit(),
        };
        if let (Command::Serve(a), Some(m)) = (&mut cli.command, matches.subcommand_matches("serve")) {
            let given = |id: &str| m.value_source(id).is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
            a.kafka_configured = given("bootstrap_servers");
            a.fetch_wait_configured = given("fetch_wait_ms");
        }
        cli
    }
}

/// Runs the parsed command. `Ok` carries the exit code for commands whose
/// outcome is not simply success (e.g. `publish` with rejected lines).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => commands::serve::run(*a).await,
        Command::Projector(a) => commands::projector::run(a).await,
        Command::Api(a) => commands::api::run(*a).await,
        Command::Ingest(a) => commands::ingest::run(a).await,
        Command::Keys(a) => commands::keys::run(a).await,
        Command::Replay(a) => commands::rebuild::replay(a).await,
        Command::Verify(a) => commands::rebuild::verify(a).await,
        Command::Seal(a) => commands::rebuild::seal(a).await,
        Command::Lost(a) => commands::rebuild::lost(a).await,
        Command::DeadLetters(a) => commands::deadletters::run(a).await,
        Command::Migrate(a) => commands::migrate::run(a).await,
        Command::Publish(a) => commands::publish::run(a).await,
        Command::Users(a) => commands::users::run(a).await,
        Command::Teams(a) => commands::teams::run(a).await,
        Command::Budgets(a) => commands::budgets::run(a).await,
        Command::Webhooks(a) => commands::budgets::run_webhooks(a).await,
        Command::Audit(a) => commands::audit::run(a).await,
        Command::Prices(a) => commands::prices::run(a).await,
        Command::Reprice(a) => commands::reprice::run(a).await,
        Command::Providers(a) => commands::providers::run(a).await,
        Command::Reconcile(a) => commands::providers::reconcile(a).await,
    }
}

/// The OpenAPI document `serve` serves: the API's and ingest's.
pub fn served_openapi() -> utoipa::openapi::OpenApi {
    tokenusage_api::openapi::document([tokenusage_ingest::http::openapi()])
}

/// Every environment variable the CLI reads, with its help text and
/// default, across all subcommands (used by the docs tests).
pub fn env_vars() -> Vec<(String, String, Option<String>)> {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, String, Option<String>)>) {
        for a in cmd.get_arguments() {
            if let Some(env) = a.get_env() {
                let name = env.to_string_lossy().into_owned();
                if !out.iter().any(|(n, _, _)| *n == name) {
                    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                    let default = a.get_default_values().first().map(|d| d.to_string_lossy().into_owned());
                    out.push((name, help, default));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &mut out);
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches clashing flag names or env vars between flattened groups.
        super::Cli::command().debug_assert();
    }

    /// The served document is reviewed like code: any change to it shows up
    /// as a diff of docs/openapi.json. `UPDATE_SNAPSHOTS=1` rewrites it.
    #[test]
    fn the_openapi_document_matches_its_snapshot() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let current = super::served_openapi().to_pretty_json().unwrap() + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &current).unwrap();
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == current,
            "docs/openapi.json is out of date: run `UPDATE_SNAPSHOTS=1 cargo test -p tokenusage openapi` and review the diff"
        );
    }

    /// Every route `serve` serves (the API's and ingest's) is in the
    /// document with the error envelope, and nothing else is.
    #[test]
    fn every_served_route_is_documented_and_every_documented_route_is_served() {
        use std::collections::BTreeSet;
        let served: BTreeSet<(String, String)> = tokenusage_api::openapi::routes()
            .into_iter()
            .chain(tokenusage_ingest::http::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())))
            .collect();
        let (documented, without) = tokenusage_api::openapi::operations(&super::served_openapi());
        assert!(without.is_empty(), "operations without the error envelope: {without:?}");
        assert_eq!(served, documented, "served routes and documented operations differ");
    }

    #[test]
    fn every_flag_of_serve_has_an_environment_variable() {
        let cmd = super::Cli::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        let missing: Vec<String> = serve
            .get_arguments()
            .filter(|a| a.get_long().is_some() && !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|a| a.get_env().is_none())
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(missing.is_empty(), "flags without an env var: {missing:?}");
    }
}
