//! `tokenusage audit ...`: the tamper-evident audit trail.

use std::process::ExitCode;

use tokenusage_plumbing::DatabaseArgs;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Walk the hash chain from the first entry and report every edit,
    /// deletion or reordering. Exits 1 if the chain is broken. Prints the
    /// head (last sequence number and hash): record it elsewhere to detect
    /// a later removal of the newest entries.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify { json, db } => {
            let pool = super::database(&db, false).await?;
            let report = tokenusage_api::audit::verify(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for p in &report.problems {
                    println!("BROKEN  {p}");
                }
                match &report.head {
                    Some((seq, hash)) => println!("{} entries checked; head: seq {seq}, hash {hash}", report.entries),
                    None => println!("the audit trail is empty"),
                }
                if report.problems.is_empty() {
                    println!("the chain is intact");
                } else {
                    println!("the chain is BROKEN ({} problem(s) shown)", report.problems.len());
                }
            }
            Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}
