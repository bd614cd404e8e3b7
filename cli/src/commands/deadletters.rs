//! `tokenusage dead-letters ...`: records the projector could not count.

use std::process::ExitCode;

use tokenusage_plumbing::DatabaseArgs;
use tokenusage_projector::deadletters;
use tokenusage_schema::dead_letters;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCmd {
    /// List dead letters, newest first.
    List {
        /// Most rows to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Include those already re-driven.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Re-drive one dead letter (or --all) through the normal counting path.
    Redrive {
        /// The dead letter's id (see `list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter not yet re-driven.
        #[arg(long)]
        all: bool,
        /// Replace the stored payload with this file's bytes first (for a
        /// record that needs fixing, not just retrying).
        #[arg(long, conflicts_with = "all")]
        payload: Option<std::path::PathBuf>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(cmd: DeadLettersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DeadLettersCmd::List { limit, all, db } => {
            let pool = super::database(&db, true).await?;
            let rows = dead_letters::list(&pool, limit, !all).await?;
            if rows.is_empty() {
                println!("no dead letters");
            }
            for d in rows {
                let state = match (d.redriven_at, d.redrive_requested_at) {
                    (Some(t), _) => format!("re-driven {}", t.format("%Y-%m-%d %H:%M")),
                    (None, Some(_)) => "re-drive requested".into(),
                    (None, None) => "pending".into(),
                };
                println!(
                    "#{} {}[{}]@{} {} ({state})",
                    d.id,
                    d.topic,
                    d.partition,
                    d.kafka_offset,
                    d.received_at.format("%Y-%m-%d %H:%M:%S")
                );
                println!("    error:   {}", d.redrive_error.as_deref().unwrap_or(&d.error));
                let text = d.payload_text.unwrap_or_else(|| "(not UTF-8)".into());
                let short: String = text.chars().take(200).collect();
                println!("    payload: {short}{}", if text.chars().count() > 200 { "…" } else { "" });
            }
        }
        DeadLettersCmd::Redrive { id, all, payload, db } => {
            let pool = super::database(&db, true).await?;
            let bytes = payload.map(std::fs::read).transpose()?;
            let marked = dead_letters::request_redrive(&pool, if all { None } else { id }, bytes.as_deref()).await?;
            anyhow::ensure!(marked > 0, "nothing to re-drive (unknown id, or already re-driven)");
            let r = deadletters::process_requested(&pool).await?;
            println!("{} counted, {} still invalid (see `tokenusage dead-letters list`)", r.counted, r.still_invalid);
            if r.still_invalid > 0 {
                return Ok(ExitCode::from(2));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
