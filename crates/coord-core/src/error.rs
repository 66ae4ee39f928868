//! Every error a store can return: [`CoordError`], with the context a
//! caller needs, its stable [`ErrorKind`] (the JSON contract's `error`),
//! and for an invalid change the [`Invalid`] reason.

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
    #[error("gave up after {waited:?} waiting for the lock {lock}")]
    LockTimeout { lock: LockName, waited: Duration },
    /// A change refused as invalid; `reason` says in what way.
    #[error("{}{message}", reason.prefix())]
    ValidationFailed { reason: Invalid, message: String },
    #[error("cannot read {}: {source}", path.display())]
    FileRead { path: PathBuf, source: Source },
    /// A file could not be created, replaced or appended to; what was
    /// there before is kept.
    #[error("cannot write {}: {source}", path.display())]
    AtomicWriteFailed { path: PathBuf, source: Source },
    /// The caller's hold on the item is gone: its lease passed, or the item
    /// was taken again at a newer fence.
    #[error("lease on {work_item_id} is lost: {message}")]
    LeaseExpired {
        work_item_id: String,
        message: String,
    },
    #[error("{work_item_id} is held by {}, not by {agent} (use --force to act anyway)", owner.as_deref().unwrap_or("nobody"))]
    NotOwner {
        work_item_id: String,
        owner: Option<String>,
        agent: String,
    },
    #[error("no pending work item is ready to take{}", describe_types(work_types))]
    NothingToTake { work_types: Vec<String> },
    #[error(
        "{} is on a {filesystem} file system, where file locks do not exclude other machines; \
         use the PostgreSQL store to coordinate across machines (or --allow-unsafe-filesystem if only one machine uses it)",
        path.display()
    )]
    UnsafeFilesystem { path: PathBuf, filesystem: String },
    /// The database could not be reached, or refused a statement for a
    /// reason that is not coord's to decide (the change did not commit, or
    /// its outcome is unknown if the connection broke during the commit).
    #[error("database error: {message}")]
    Database {
        message: String,
        #[source]
        source: Option<Source>,
    },
}

/// The lock a change gave up waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockName {
    /// A lock file of the coordination directory.
    File(PathBuf),
    /// A lock in the database, on coord's tables in `schema`.
    Database { schema: String },
}

impl std::fmt::Display for LockName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockName::File(path) => write!(f, "{}", path.display()),
            LockName::Database { schema } => write!(f, "postgresql:{schema}"),
        }
    }
}

/// In what way a change was invalid: every reason is the one error kind
/// `coordination_validation_failed` (exit 6); the reason says what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Invalid {
    /// A value given that parses but makes no sense (an empty work type,
    /// progress outside 0-100, a lease under 100 ms): fix the call.
    Input,
    /// A change the state machine does not allow (completing twice, taking
    /// an item that is not pending).
    Transition,
    /// What the store holds is not what coord writes (a damaged claims file
    /// or row, a schema from a newer coord): nothing was written over it.
    StoredData,
    /// A fence or revision counter at its end: the store can hand out no
    /// more.
    Exhausted,
    /// coord broke an assumption of its own: a bug, worth a report.
    Internal,
}

impl Invalid {
    /// The stable name, the `reason` field of the CLI's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Input => "input",
            Invalid::Transition => "transition",
            Invalid::StoredData => "stored_data",
            Invalid::Exhausted => "exhausted",
            Invalid::Internal => "internal",
        }
    }

    /// What a message of this reason starts with, where the rest does not
    /// say it already.
    fn prefix(self) -> &'static str {
        match self {
            Invalid::Internal => "internal error in coord (a bug; please report it): ",
            _ => "",
        }
    }
}

fn describe_types(types: &[String]) -> String {
    if types.is_empty() {
        String::new()
    } else {
        format!(" (work types: {})", types.join(", "))
    }
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
    LeaseExpired,
    NotOwner,
    NothingToTake,
    UnsafeFilesystem,
    Database,
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
            ErrorKind::LeaseExpired => "lease_expired",
            ErrorKind::NotOwner => "not_owner",
            ErrorKind::NothingToTake => "nothing_to_take",
            ErrorKind::UnsafeFilesystem => "unsafe_filesystem",
            ErrorKind::Database => "database_error",
        }
    }
}

impl CoordError {
    /// The same error again, for each of several callers one failure
    /// answers (changes written together, one write failing them all); a
    /// cause becomes its message.
    pub fn duplicate(&self) -> CoordError {
        let text = |source: &Source| -> Source { source.to_string().into() };
        match self {
            CoordError::Conflict {
                work_type,
                conflicting_work_item_id,
            } => CoordError::Conflict {
                work_type: work_type.clone(),
                conflicting_work_item_id: conflicting_work_item_id.clone(),
            },
            CoordError::NotFound { work_item_id } => CoordError::NotFound {
                work_item_id: work_item_id.clone(),
            },
            CoordError::LockTimeout { lock, waited } => CoordError::LockTimeout {
                lock: lock.clone(),
                waited: *waited,
            },
            CoordError::ValidationFailed { reason, message } => CoordError::ValidationFailed {
                reason: *reason,
                message: message.clone(),
            },
            CoordError::FileRead { path, source } => CoordError::FileRead {
                path: path.clone(),
                source: text(source),
            },
            CoordError::AtomicWriteFailed { path, source } => CoordError::AtomicWriteFailed {
                path: path.clone(),
                source: text(source),
            },
            CoordError::LeaseExpired {
                work_item_id,
                message,
            } => CoordError::LeaseExpired {
                work_item_id: work_item_id.clone(),
                message: message.clone(),
            },
            CoordError::NotOwner {
                work_item_id,
                owner,
                agent,
            } => CoordError::NotOwner {
                work_item_id: work_item_id.clone(),
                owner: owner.clone(),
                agent: agent.clone(),
            },
            CoordError::NothingToTake { work_types } => CoordError::NothingToTake {
                work_types: work_types.clone(),
            },
            CoordError::UnsafeFilesystem { path, filesystem } => CoordError::UnsafeFilesystem {
                path: path.clone(),
                filesystem: filesystem.clone(),
            },
            CoordError::Database { message, source } => CoordError::Database {
                message: message.clone(),
                source: source.as_ref().map(text),
            },
        }
    }

    /// A value given that makes no sense ([`Invalid::Input`]).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::invalid(Invalid::Input, message)
    }

    /// A change the state machine does not allow ([`Invalid::Transition`]).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::invalid(Invalid::Transition, message)
    }

    /// Stored data coord cannot work on ([`Invalid::StoredData`]).
    pub fn damaged(message: impl Into<String>) -> Self {
        Self::invalid(Invalid::StoredData, message)
    }

    /// A broken assumption of coord's own ([`Invalid::Internal`]).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::invalid(Invalid::Internal, message)
    }

    fn invalid(reason: Invalid, message: impl Into<String>) -> Self {
        CoordError::ValidationFailed {
            reason,
            message: message.into(),
        }
    }

    /// Why a change was refused as invalid, for that kind of error.
    pub fn invalid_reason(&self) -> Option<Invalid> {
        match self {
            CoordError::ValidationFailed { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The store's `counter` (`fence` or `revision`) has handed out its
    /// largest value, `last`: the next would wrap around to a number given
    /// out before, which a fence or revision must never be.
    pub fn counter_exhausted(counter: &str, last: u64) -> Self {
        Self::invalid(
            Invalid::Exhausted,
            format!(
                "the store's {counter} counter is exhausted: {last} has been handed out and no \
             larger {counter} exists; coord will not wrap it around to reuse one"
            ),
        )
    }

    /// `last + 1` for the store's `counter`, or the error saying it is
    /// exhausted.
    pub fn next_of(counter: &str, last: u64) -> Result<u64, Self> {
        last.checked_add(1)
            .ok_or_else(|| Self::counter_exhausted(counter, last))
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordError::Conflict { .. } => ErrorKind::Conflict,
            CoordError::NotFound { .. } => ErrorKind::NotFound,
            CoordError::LockTimeout { .. } => ErrorKind::LockTimeout,
            CoordError::ValidationFailed { .. } => ErrorKind::ValidationFailed,
            CoordError::FileRead { .. } => ErrorKind::FileRead,
            CoordError::AtomicWriteFailed { .. } => ErrorKind::AtomicWriteFailed,
            CoordError::LeaseExpired { .. } => ErrorKind::LeaseExpired,
            CoordError::NotOwner { .. } => ErrorKind::NotOwner,
            CoordError::NothingToTake { .. } => ErrorKind::NothingToTake,
            CoordError::UnsafeFilesystem { .. } => ErrorKind::UnsafeFilesystem,
            CoordError::Database { .. } => ErrorKind::Database,
        }
    }
}
