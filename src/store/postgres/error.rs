//! How sqlx's errors become [`StoreError`]s: by error variant and SQLSTATE
//! code, never by message text.

use std::time::Duration;

use sqlx::migrate::MigrateError;

use super::BACKEND;
use crate::store::{Operation, StoreError, StoreErrorKind};

/// Wraps a sqlx error, keeping it as the source.
pub(super) fn from_sqlx(operation: Operation, error: sqlx::Error) -> StoreError {
    let kind = kind_of(&error);
    StoreError::new(BACKEND, operation, kind, error)
}

/// Wraps a migration error, keeping it as the source.
pub(super) fn from_migrate(error: MigrateError) -> StoreError {
    let kind = match &error {
        MigrateError::Execute(inner) => kind_of(inner),
        // Applied migrations that this build does not know, or that differ
        // from it: the database belongs to another version of the schema.
        _ => StoreErrorKind::Config,
    };
    StoreError::new(BACKEND, Operation::Migrate, kind, error)
}

/// An operation that got no answer in time.
pub(super) fn timed_out(operation: Operation, limit: Duration) -> StoreError {
    let cause = std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from PostgreSQL within {limit:?}"),
    );
    StoreError::new(BACKEND, operation, StoreErrorKind::Unavailable, cause)
}

/// The kind of a sqlx error.
pub(super) fn kind_of(error: &sqlx::Error) -> StoreErrorKind {
    use sqlx::Error as E;
    match error {
        E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
            StoreErrorKind::Unavailable
        }
        E::Configuration(_) => StoreErrorKind::Config,
        E::ColumnDecode { .. } | E::Decode(_) | E::ColumnNotFound(_) => StoreErrorKind::Corrupt,
        E::Database(db) => db
            .code()
            .map_or(StoreErrorKind::Backend, |code| kind_of_sqlstate(&code)),
        _ => StoreErrorKind::Backend,
    }
}

/// The kind of a PostgreSQL error by its SQLSTATE.
fn kind_of_sqlstate(code: &str) -> StoreErrorKind {
    match code {
        // Class 08, connection exception: the connection broke.
        c if c.starts_with("08") => StoreErrorKind::Unavailable,
        // Class 53, insufficient resources (too many connections, out of
        // memory, disk full): passing, another try may succeed.
        c if c.starts_with("53") => StoreErrorKind::Unavailable,
        // admin_shutdown (the connection was terminated), crash_shutdown,
        // cannot_connect_now (starting up or shutting down).
        "57P01" | "57P02" | "57P03" => StoreErrorKind::Unavailable,
        // query_canceled (statement_timeout), serialization_failure,
        // deadlock_detected, lock_not_available: a retry may succeed.
        "57014" | "40001" | "40P01" | "55P03" => StoreErrorKind::Unavailable,
        // invalid_authorization_specification, invalid_password,
        // invalid_catalog_name (no such database), undefined_table (the
        // schema was not migrated), insufficient_privilege.
        "28000" | "28P01" | "3D000" | "42P01" | "3F000" | "42501" => StoreErrorKind::Config,
        _ => StoreErrorKind::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_conditions_are_unavailable() {
        for code in [
            "57P01", "57P02", "57P03", "08006", "08001", "53300", "40P01",
        ] {
            assert_eq!(
                kind_of_sqlstate(code),
                StoreErrorKind::Unavailable,
                "{code}"
            );
        }
        assert_eq!(
            kind_of(&sqlx::Error::PoolTimedOut),
            StoreErrorKind::Unavailable
        );
        assert_eq!(
            kind_of(&sqlx::Error::PoolClosed),
            StoreErrorKind::Unavailable
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(
            kind_of(&sqlx::Error::Io(reset)),
            StoreErrorKind::Unavailable
        );
    }

    #[test]
    fn other_failures_are_not_unavailable() {
        assert_eq!(kind_of_sqlstate("42P01"), StoreErrorKind::Config);
        assert_eq!(kind_of_sqlstate("23505"), StoreErrorKind::Backend);
        assert_eq!(kind_of_sqlstate("22021"), StoreErrorKind::Backend);
        assert_eq!(
            kind_of(&sqlx::Error::Decode("bad".into())),
            StoreErrorKind::Corrupt
        );
    }

    #[test]
    fn timeout_names_backend_and_operation() {
        let e = timed_out(Operation::Load, Duration::from_secs(1));
        assert!(e.is_unavailable());
        assert_eq!(e.to_string(), "postgres store: load failed: unavailable");
    }
}
