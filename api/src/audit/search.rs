//! Reading the trail: the admins' search, and "who viewed my usage".

use chrono::{DateTime, Utc};
use sqlx::{PgPool, QueryBuilder};

use super::chain::{AuditRow, COLUMNS};

/// Filters of an audit search.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    pub(crate) actor: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) outcome: Option<String>,
    pub(crate) from: Option<DateTime<Utc>>,
    pub(crate) to: Option<DateTime<Utc>>,
    /// Entries with a `seq` below this (paging backwards).
    pub(crate) before: Option<i64>,
    pub(crate) limit: Option<i64>,
}

pub(crate) async fn search(pool: &PgPool, q: &AuditQuery, only_views_of: Option<&str>) -> sqlx::Result<Vec<AuditRow>> {
    let mut qb = QueryBuilder::new(format!("select {COLUMNS} from audit_log where true"));
    if let Some(s) = only_views_of {
        // Someone else looked at this user's data, tried to and was denied,
        // read everyone's at once (an admin's `user=*`, which covers this
        // user too), or a team's with this user in it.
        qb.push(" and (subject = ").push_bind(s.to_owned()).push(" or subject = '*' or covers @> array[");
        qb.push_bind(s.to_owned()).push("]::text[])");
        qb.push(" and actor is distinct from ").push_bind(s.to_owned());
        qb.push(" and outcome in ('ok', 'denied')");
    }
    for (col, v) in [("actor", &q.actor), ("subject", &q.subject), ("action", &q.action), ("outcome", &q.outcome)] {
        if let Some(v) = v {
            qb.push(format!(" and {col} = ")).push_bind(v.clone());
        }
    }
    if let Some(t) = q.from {
        qb.push(" and at >= ").push_bind(t);
    }
    if let Some(t) = q.to {
        qb.push(" and at < ").push_bind(t);
    }
    if let Some(b) = q.before {
        qb.push(" and seq < ").push_bind(b);
    }
    qb.push(" order by seq desc limit ").push_bind(q.limit.unwrap_or(100));
    qb.build_query_as().fetch_all(pool).await
}
