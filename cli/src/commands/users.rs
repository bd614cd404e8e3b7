//! `tokenusage users ...`: local accounts for the dashboard (`api::accounts`
//! owns them; this is their command line).

use std::io::BufRead;
use std::process::ExitCode;

use tokenusage_api::Role;
use tokenusage_api::accounts;
use tokenusage_plumbing::DatabaseArgs;

#[derive(Debug, clap::Subcommand)]
pub enum UsersCmd {
    /// Create a user, or reset the password of an existing one. The password
    /// comes from TOKENUSAGE_NEW_PASSWORD or, if unset, the first line of stdin.
    Add {
        /// The new password. Prefer the environment variable or stdin: a
        /// command-line flag is visible to other users in `ps`.
        #[arg(long, env = "TOKENUSAGE_NEW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// The user id: the same string events carry in `user_id`.
        id: String,
        /// Display name (defaults to the id).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "viewer")]
        role: Role,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List users.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Disable a user: they can no longer sign in, their sessions end, and
    /// their access tokens stop working within seconds.
    Disable {
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Change a user's role.
    SetRole {
        id: String,
        #[arg(value_enum)]
        role: Role,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(cmd: UsersCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        UsersCmd::Add { id, name, role, db, password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let pool = super::database(&db, true).await?;
            accounts::upsert(&pool, &id, name.as_deref().unwrap_or(&id), role, &password).await?;
            println!("user {id} ({}) is ready", role.as_str());
        }
        UsersCmd::List { db } => {
            let pool = super::database(&db, true).await?;
            println!("{:<32} {:<8} {:<9} name", "id", "role", "status");
            for a in accounts::list(&pool).await? {
                let status = if a.disabled { "disabled" } else { "active" };
                println!("{:<32} {:<8} {status:<9} {}", a.id, a.role.as_str(), a.display_name);
            }
        }
        UsersCmd::Disable { id, db } => {
            let pool = super::database(&db, true).await?;
            let sessions = accounts::disable(&pool, &id).await?;
            println!("user {id} is disabled ({sessions} open session(s) ended)");
        }
        UsersCmd::SetRole { id, role, db } => {
            let pool = super::database(&db, true).await?;
            accounts::set_role(&pool, &id, role).await?;
            println!("user {id} is now {}", role.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}
