//! `tokenusage users ...`: local accounts for the dashboard.

use std::io::BufRead;
use std::process::ExitCode;

use tokenusage_api::{Role, hash_password};
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
        #[arg(long, default_value = "viewer", value_parser = ["viewer", "admin"])]
        role: String,
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
        #[arg(value_parser = ["viewer", "admin"])]
        role: String,
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
            if password.chars().count() < 8 {
                anyhow::bail!("the password must be at least 8 characters");
            }
            let pool = super::database(&db, true).await?;
            let role = Role::parse(&role).unwrap_or(Role::Viewer);
            upsert_user(&pool, &id, name.as_deref().unwrap_or(&id), role, &password).await?;
            println!("user {id} ({}) is ready", role.as_str());
        }
        UsersCmd::List { db } => {
            let pool = super::database(&db, true).await?;
            let rows: Vec<(String, String, String, bool)> =
                sqlx::query_as("select id, display_name, role, disabled from users order by id")
                    .fetch_all(&pool)
                    .await?;
            println!("{:<32} {:<8} {:<9} name", "id", "role", "status");
            for (id, name, role, disabled) in rows {
                println!("{id:<32} {role:<8} {:<9} {name}", if disabled { "disabled" } else { "active" });
            }
        }
        UsersCmd::Disable { id, db } => {
            let pool = super::database(&db, true).await?;
            let mut tx = pool.begin().await?;
            let n = sqlx::query("update users set disabled = true where id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                anyhow::bail!("no user {id}");
            }
            let sessions = sqlx::query(
                "update refresh_tokens set revoked_at = now() where user_id = $1 and revoked_at is null and rotated_at is null",
            )
            .bind(&id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            println!("user {id} is disabled ({sessions} open session(s) ended)");
        }
        UsersCmd::SetRole { id, role, db } => {
            let pool = super::database(&db, true).await?;
            let n = sqlx::query("update users set role = $2 where id = $1")
                .bind(&id)
                .bind(&role)
                .execute(&pool)
                .await?
                .rows_affected();
            if n == 0 {
                anyhow::bail!("no user {id}");
            }
            println!("user {id} is now {role}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates or updates a user with an argon2id hash (computed off the
/// async runtime).
pub async fn upsert_user(pool: &sqlx::PgPool, id: &str, name: &str, role: Role, password: &str) -> anyhow::Result<()> {
    let pw = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await??;
    sqlx::query(
        r#"
        insert into users (id, display_name, password_hash, role) values ($1, $2, $3, $4)
        on conflict (id) do update set display_name = excluded.display_name,
            password_hash = excluded.password_hash, role = excluded.role, disabled = false
        "#,
    )
    .bind(id)
    .bind(name)
    .bind(hash)
    .bind(role.as_str())
    .execute(pool)
    .await?;
    Ok(())
}
