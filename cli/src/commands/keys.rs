//! `tokenusage keys ...`: publisher API keys.

use std::process::ExitCode;

use tokenusage_plumbing::DatabaseArgs;
use tokenusage_schema::keys;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCmd {
    /// Create a key. It is printed once; only its hash is stored.
    Create {
        /// A label for operators, e.g. "billing-svc prod".
        name: String,
        /// The `source` stamped on every event sent with this key (defaults
        /// to the name). Keys rotated for one publisher should share it, so
        /// de-duplication spans the rotation.
        #[arg(long)]
        source: Option<String>,
        /// Events per second this key may send.
        #[arg(long, default_value_t = 5000)]
        rate_per_sec: i32,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List keys (never the secrets).
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a key by id or prefix (`tu_xxxxxxxx`).
    Revoke {
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(cmd: KeysCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCmd::Create { name, source, rate_per_sec, db } => {
            anyhow::ensure!(rate_per_sec > 0, "--rate-per-sec must be positive");
            let pool = super::database(&db, true).await?;
            let source = source.as_deref().unwrap_or(&name);
            tokenusage_contract::check_publisher_source(source).map_err(|why| anyhow::anyhow!("--source {why}"))?;
            let k = keys::create(&pool, &name, source, rate_per_sec).await?;
            eprintln!(
                "created key {} for source `{}`; store it now, it is not shown again:",
                k.info.key_prefix, k.info.source
            );
            println!("{}", k.key);
        }
        KeysCmd::List { db } => {
            let pool = super::database(&db, true).await?;
            println!("{:<12} {:<24} {:<24} {:>8}  status", "prefix", "name", "source", "rate/s");
            for k in keys::list(&pool).await? {
                let status =
                    k.revoked_at.map_or_else(|| "active".to_owned(), |t| format!("revoked {}", t.format("%Y-%m-%d")));
                println!("{:<12} {:<24} {:<24} {:>8}  {status}", k.key_prefix, k.name, k.source, k.rate_per_sec);
            }
        }
        KeysCmd::Revoke { id, db } => {
            let pool = super::database(&db, true).await?;
            anyhow::ensure!(keys::revoke(&pool, &id).await?, "no active key {id}");
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
