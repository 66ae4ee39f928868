//! How the directory store's steps fail: [`FlowError`], coord's own errors
//! or a file step's, and how a file step's error becomes coord's
//! ([`file_error`]). The bottom of the crate: every module may use it.

use std::fmt;
use std::path::Path;

use coord_core::CoordError;
use reactor::Failure;
use reactor_file::FileError;

/// The error inside a change's saga: coord's own errors and the file
/// steps' errors, turned into a [`CoordError`] at the end.
#[derive(Debug)]
pub(crate) enum FlowError {
    Coord(CoordError),
    File(FileError),
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::Coord(e) => e.fmt(f),
            FlowError::File(e) => e.fmt(f),
        }
    }
}

impl From<CoordError> for FlowError {
    fn from(e: CoordError) -> Self {
        FlowError::Coord(e)
    }
}

impl From<FileError> for FlowError {
    fn from(e: FileError) -> Self {
        FlowError::File(e)
    }
}

impl From<FlowError> for CoordError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Coord(e) => e,
            FlowError::File(e) => file_error(e),
        }
    }
}

/// A file step's error as coord's: reading is `file_read_error`, making
/// or writing anything `atomic_write_failed`. The message names the path
/// once (the step's own error names it too).
pub(crate) fn file_error(e: FileError) -> CoordError {
    let path = e.path().to_owned();
    let cause =
        |what: String, source: std::io::Error| -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(std::io::Error::new(
                source.kind(),
                format!("{what}{source}"),
            ))
        };
    match e {
        FileError::Read { source, .. } => CoordError::FileRead {
            path,
            source: Box::new(source),
        },
        FileError::NotADirectory { .. } => CoordError::FileRead {
            path,
            source: "it exists but is not a directory".into(),
        },
        FileError::CreateDir { source, .. } => CoordError::AtomicWriteFailed {
            path,
            source: cause("cannot create the directory: ".to_owned(), source),
        },
        FileError::Write { stage, source, .. } => CoordError::AtomicWriteFailed {
            path,
            source: cause(format!("{stage}: "), source),
        },
        FileError::Restore { source, .. } => CoordError::AtomicWriteFailed {
            path,
            source: cause("cannot put back its previous contents: ".to_owned(), source),
        },
        other => CoordError::AtomicWriteFailed {
            path,
            source: Box::new(other),
        },
    }
}

/// A saga's failure as one error. An undo that failed leaves the files in
/// doubt, so it turns the whole failure into `atomic_write_failed` and
/// names every undo that failed.
pub(crate) fn saga_error(failure: Failure<FlowError>, claims_path: &Path) -> CoordError {
    if failure.undo_failures.is_empty() {
        return failure.error.into();
    }
    CoordError::AtomicWriteFailed {
        path: claims_path.to_owned(),
        source: failure.to_string().into(),
    }
}

/// A failure to write `path`.
pub(crate) fn write_error(path: &Path, source: std::io::Error) -> CoordError {
    CoordError::AtomicWriteFailed {
        path: path.to_owned(),
        source: source.into(),
    }
}
