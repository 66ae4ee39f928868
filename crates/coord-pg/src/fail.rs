//! How a change on the database fails: [`Fail`] says why a transaction did
//! not commit (coord's own refusal, or the database's), and [`retryable`]
//! which of the database's reasons are worth running it again for.

use coord_core::CoordError;
use postgres::error::SqlState;

/// Why a transaction did not commit.
pub(crate) enum Fail {
    Coord(CoordError),
    Db(postgres::Error),
}

impl From<CoordError> for Fail {
    fn from(e: CoordError) -> Self {
        Fail::Coord(e)
    }
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(e)
    }
}

/// Errors worth running the whole transaction again for: PostgreSQL broke
/// a deadlock, two machines minted the same item id, or two changes took
/// exclusive work of one type at once (the schema kept them apart).
pub(crate) fn retryable(e: &postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return false;
    };
    let code = db.code();
    *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || (*code == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("coord_claims_pkey"))
        // Two calls with one idempotency key at once: run again, and the
        // second finds the first's answer.
        || (*code == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("coord_idempotency_keys_pkey"))
        // Two changes decided at once on a work type's exclusive work: read
        // again, and the second finds the first's claim (a conflict).
        || (*code == SqlState::EXCLUSION_VIOLATION
            && db.constraint() == Some("coord_claims_exclusive"))
}
