use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

type Source = Box<dyn StdError + Send + Sync>;

/// Everything a store operation can fail with. Each variant carries the
/// context a caller needs to act on it (the path, the ids involved).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The claim would overlap a live claim the conflict policy protects.
    #[error("work type {work_type:?} is already claimed exclusively by {conflicting_work_item_id}")]
    Conflict {
        work_type: String,
        conflicting_work_item_id: String,
    },
    #[error("no work item {work_item_id:?}")]
    NotFound { work_item_id: String },
    #[error("gave up after {waited:?} waiting for the lock {}", path.display())]
    LockTimeout { path: PathBuf, waited: Duration },
    /// Input that parses but makes no sense, a store whose contents are not
    /// what coord wrote, or a change the state machine does not allow.
    #[error("{message}")]
    ValidationFailed { message: String },
    #[error("cannot read {}: {source}", path.display())]
    FileRead { path: PathBuf, source: Source },
    #[error("atomic write of {} failed: {source}", path.display())]
    AtomicWriteFailed { path: PathBuf, source: Source },
}

/// The stable names of the error kinds: the `error` field of the CLI's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    Conflict,
    NotFound,
    LockTimeout,
    ValidationFailed,
    FileRead,
    AtomicWriteFailed,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "coordination_conflict",
            ErrorKind::NotFound => "not_found",
            ErrorKind::LockTimeout => "lock_timeout",
            ErrorKind::ValidationFailed => "coordination_validation_failed",
            ErrorKind::FileRead => "file_read_error",
            ErrorKind::AtomicWriteFailed => "atomic_write_failed",
        }
    }
}

impl CoordError {
    pub fn validation(message: impl Into<String>) -> Self {
        CoordError::ValidationFailed {
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordError::Conflict { .. } => ErrorKind::Conflict,
            CoordError::NotFound { .. } => ErrorKind::NotFound,
            CoordError::LockTimeout { .. } => ErrorKind::LockTimeout,
            CoordError::ValidationFailed { .. } => ErrorKind::ValidationFailed,
            CoordError::FileRead { .. } => ErrorKind::FileRead,
            CoordError::AtomicWriteFailed { .. } => ErrorKind::AtomicWriteFailed,
        }
    }
}
