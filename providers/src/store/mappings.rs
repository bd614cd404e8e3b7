//! Mappings: which provider scope (project, workspace) or API key stands
//! for which of our sources and projects. Targets never overlap.

use serde::Serialize;
use sqlx::PgPool;

use super::StoreError;

/// A mapping: a provider scope (project, workspace) or API key → our source and/or project.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct Mapping {
    pub connection: String,
    /// `scope` (an OpenAI project, an Anthropic workspace) or `api_key`.
    pub kind: String,
    pub external_id: String,
    pub target_source: Option<String>,
    pub target_project: Option<String>,
}

impl Mapping {
    /// Do two targets share any of our events? (Equal targets are one.)
    pub(super) fn overlaps(&self, o: &Mapping) -> bool {
        let meet = |a: &Option<String>, b: &Option<String>| a.is_none() || b.is_none() || a == b;
        let same = self.target_source == o.target_source && self.target_project == o.target_project;
        !same && meet(&self.target_source, &o.target_source) && meet(&self.target_project, &o.target_project)
    }

    pub fn target_label(&self) -> String {
        crate::reconcile::Target { source: self.target_source.clone(), project: self.target_project.clone() }.label()
    }
}

pub async fn mappings(pool: &PgPool) -> Result<Vec<Mapping>, sqlx::Error> {
    sqlx::query_as(
        "select c.name as connection, m.kind, m.external_id, m.target_source, m.target_project \
         from provider_mappings m join provider_connections c on c.id = m.connection_id order by c.name, m.kind, m.external_id",
    )
    .fetch_all(pool)
    .await
}

/// Adds or replaces a mapping. Refused if its target overlaps another
/// mapping's target without being equal to it (an event of ours would
/// then reconcile twice).
pub async fn map(pool: &PgPool, m: &Mapping) -> Result<(), StoreError> {
    if !matches!(m.kind.as_str(), "scope" | "api_key") {
        return Err(StoreError::Invalid(format!("a mapping's kind is 'scope' or 'api_key', got {:?}", m.kind)));
    }
    let text_ok = |s: &str| !s.is_empty() && s.len() <= 256 && s.trim() == s && !s.chars().any(char::is_control);
    if !text_ok(&m.external_id) {
        return Err(StoreError::Invalid("the provider's id is 1 to 256 printable characters".into()));
    }
    if m.target_source.is_none() && m.target_project.is_none() {
        return Err(StoreError::Invalid("a mapping names our source, our project, or both".into()));
    }
    if [&m.target_source, &m.target_project].into_iter().flatten().any(|s| !text_ok(s)) {
        return Err(StoreError::Invalid("a source or project is 1 to 256 printable characters, not padded".into()));
    }
    let mut tx = pool.begin().await?;
    // One mapping change at a time, so the overlap check sees them all.
    sqlx::query("lock table provider_mappings in share row exclusive mode").execute(&mut *tx).await?;
    let conn: i64 = sqlx::query_scalar("select id from provider_connections where name = $1")
        .bind(&m.connection)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NoSuchConnection(m.connection.clone()))?;
    let others: Vec<Mapping> = sqlx::query_as(
        "select c.name as connection, m.kind, m.external_id, m.target_source, m.target_project \
         from provider_mappings m join provider_connections c on c.id = m.connection_id \
         where not (m.connection_id = $1 and m.kind = $2 and m.external_id = $3)",
    )
    .bind(conn)
    .bind(&m.kind)
    .bind(&m.external_id)
    .fetch_all(&mut *tx)
    .await?;
    if let Some(o) = others.iter().find(|o| o.overlaps(m)) {
        return Err(StoreError::Invalid(format!(
            "target {} overlaps {} (mapped from {} {} {:?}): one of our events would reconcile twice; map to the same target or to disjoint ones",
            m.target_label(),
            o.target_label(),
            o.connection,
            o.kind,
            o.external_id
        )));
    }
    sqlx::query(
        "insert into provider_mappings (connection_id, kind, external_id, target_source, target_project) \
         values ($1, $2, $3, $4, $5) on conflict on constraint provider_mappings_pkey do update \
         set target_source = excluded.target_source, target_project = excluded.target_project, created_at = now()",
    )
    .bind(conn)
    .bind(&m.kind)
    .bind(&m.external_id)
    .bind(&m.target_source)
    .bind(&m.target_project)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn unmap(pool: &PgPool, connection: &str, kind: &str, external_id: &str) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "delete from provider_mappings m using provider_connections c \
         where c.id = m.connection_id and c.name = $1 and m.kind = $2 and m.external_id = $3",
    )
    .bind(connection)
    .bind(kind)
    .bind(external_id)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n > 0)
}
