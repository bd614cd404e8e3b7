//! Telling a database failure that retrying can fix from one it cannot.
//!
//! A writer that retries every error forever stalls on the first value the
//! database refuses (a NUL in `jsonb`, a check constraint, an overflow):
//! the same statement fails the same way every time. A writer that gives up
//! on every error loses work during a restart of PostgreSQL. So failures
//! are sorted by SQLSTATE class:
//!
//! - **data** (class 22 data exception, 23 integrity constraint violation,
//!   54 program limit exceeded, and values sqlx could not encode): caused by
//!   the rows being written. Isolate them and move on.
//! - **transient** (everything else: connection loss, pool timeout, 08
//!   connection exception, 40 serialization failure or deadlock, 53
//!   insufficient resources, 57 operator intervention such as an admin
//!   shutdown, 58 system error, and also 42 undefined table or column,
//!   which is a deployment problem, not a property of the rows): retry
//!   with backoff and report that work is not getting done.

/// How a failed database write should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The rows caused it; the same write fails the same way every time.
    Data,
    /// Retrying later can succeed.
    Transient,
}

impl Failure {
    /// Sorts `e` (see the module docs).
    pub fn of(e: &sqlx::Error) -> Failure {
        match e {
            sqlx::Error::Database(db) => match db.code() {
                Some(code) if ["22", "23", "54"].iter().any(|class| code.starts_with(class)) => Failure::Data,
                _ => Failure::Transient,
            },
            sqlx::Error::Encode(_) => Failure::Data,
            _ => Failure::Transient,
        }
    }

    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Data => "data",
            Failure::Transient => "transient",
        }
    }
}

/// Whether `e` is the database saying "not now" rather than "no": the pool
/// had no connection free within its acquire timeout, a statement or lock
/// wait timed out (57014, 55P03), the server has too many connections or
/// too little memory (class 53), is shutting down or restarting (class 57),
/// the connection broke (class 08, I/O, TLS), or a transaction lost a
/// serialization race (class 40). A reader meets these with 503 and
/// `Retry-After`, never with a 500: the request was fine and will succeed
/// once the load or the outage passes.
pub fn is_overload(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code == "55P03" || ["08", "40", "53", "57"].iter().any(|class| code.starts_with(class))
        }),
        _ => false,
    }
}

/// The database's own words for a failure, with its SQLSTATE, bounded and
/// printable: fit for a dead letter or a log line.
pub fn describe(e: &sqlx::Error) -> String {
    let text = match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    };
    let escaped = tokenusage_contract::text::escape(&text);
    tokenusage_contract::text::truncate(&escaped, 1000).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_or_restarting_database_is_an_overload_and_a_refused_value_is_not() {
        assert!(is_overload(&sqlx::Error::PoolTimedOut));
        assert!(is_overload(&sqlx::Error::PoolClosed));
        assert!(is_overload(&sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
        assert!(!is_overload(&sqlx::Error::RowNotFound));
        assert!(!is_overload(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
