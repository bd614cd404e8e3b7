//! `tokenusage teams ...`: teams and their members (`api::teams` owns them;
//! this is their command line). Every change is written to the audit trail.

use std::process::ExitCode;

use serde_json::json;
use tokenusage_api::teams::{self, TeamRole};
use tokenusage_plumbing::DatabaseArgs;

use super::audit_cli as audit;

#[derive(Debug, clap::Subcommand)]
pub enum TeamsCmd {
    /// List teams with their members and roles.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Create a team (name: 1-64 lowercase letters, digits, '-', '_', '.').
    Create {
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Rename a team. Its members, managers and everyone's usage stay;
    /// views and exports use the new name from now on.
    Rename {
        name: String,
        new_name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Delete a team and its memberships (nobody's usage is deleted).
    Delete {
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Add users to a team, or change their role in it. The team's views
    /// include their whole history from now on.
    Add {
        team: String,
        /// User ids: the strings events carry in `user_id`.
        #[arg(required = true)]
        users: Vec<String>,
        #[arg(long, value_enum, default_value = "member")]
        role: TeamRole,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Remove users from a team; their usage leaves the team's views,
    /// for the whole history.
    Remove {
        team: String,
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub async fn run(cmd: TeamsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TeamsCmd::List { db } => {
            let pool = super::database(&db, true).await?;
            let all = teams::list(&pool).await?;
            if all.is_empty() {
                println!("no teams yet: create one with `tokenusage teams create <name>`");
            }
            for t in all {
                let managers = t.members.iter().filter(|m| m.role == TeamRole::Manager).count();
                println!("{} ({} members, {managers} managers)", t.name, t.members.len());
                for m in t.members {
                    println!("  {:<32} {:<8} {}", m.user, m.role.as_str(), m.origin);
                }
            }
        }
        TeamsCmd::Create { name, db } => {
            let pool = super::database(&db, true).await?;
            let who = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            teams::create(&pool, &name, &who).await?;
            audit(&pool, "teams.create", "tokenusage teams create", json!({"team": name})).await?;
            println!("team {name} created; add people with `tokenusage teams add {name} <user>...`");
        }
        TeamsCmd::Rename { name, new_name, db } => {
            let pool = super::database(&db, true).await?;
            teams::rename(&pool, &name, &new_name).await?;
            audit(&pool, "teams.rename", "tokenusage teams rename", json!({"team": name, "name": new_name})).await?;
            println!("team {name} is now {new_name}");
        }
        TeamsCmd::Delete { name, db } => {
            let pool = super::database(&db, true).await?;
            teams::delete(&pool, &name).await?;
            audit(&pool, "teams.delete", "tokenusage teams delete", json!({"team": name})).await?;
            println!("team {name} deleted (usage is kept)");
        }
        TeamsCmd::Add { team, users, role, db } => {
            let pool = super::database(&db, true).await?;
            teams::set_members(&pool, &team, &users, role).await?;
            let params = json!({"team": team, "users": users, "role": role});
            audit(&pool, "teams.set_member", "tokenusage teams add", params).await?;
            println!("{} user(s) are {}s of {team}", users.len(), role.as_str());
        }
        TeamsCmd::Remove { team, users, db } => {
            let pool = super::database(&db, true).await?;
            for u in &users {
                teams::remove_member(&pool, &team, u).await?;
            }
            audit(&pool, "teams.remove_member", "tokenusage teams remove", json!({"team": team, "users": users}))
                .await?;
            println!("{} user(s) removed from {team}", users.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
