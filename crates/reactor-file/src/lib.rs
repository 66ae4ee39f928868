//! `reactor-file`: file steps with undo for the [`reactor`] engine.
//!
//! - [`EnsureDir`]: make sure a directory exists (undo removes it again if
//!   this step created it and it is still empty), optionally sweeping the
//!   temp files a killed writer left behind.
//! - [`FileSnapshot`]: a file as it was read (a missing file is `None`),
//!   parsed by a caller's function, with the exact bytes kept for an undo.
//! - [`AtomicWrite`]: replace a file atomically (temp file in the same
//!   directory, write, fsync, rename, fsync the directory). If it fails after
//!   the rename, its compensation puts the previous bytes back; its undo does
//!   the same when a later step fails.
//!
//! Architecture invariant: this is the only crate that renames files into
//! place (clippy's `disallowed-methods` enforces it).

mod atomic;
mod error;
mod steps;

pub use atomic::{
    AtomicWriter, FaultInjector, WriteFailure, WriteStage, is_temp_of, remove_stale_temps, rotate,
    temp_name_prefix,
};
pub use error::FileError;
pub use steps::{AtomicWrite, Contents, DirStatus, EnsureDir, FileSnapshot, Written};

/// Reads `path`, treating a missing file as `None`.
pub fn read_optional(path: &std::path::Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(FileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates `path` (and its parents) unless it is already a directory.
/// Returns whether it was created.
pub fn ensure_dir(path: &std::path::Path) -> Result<bool, FileError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(FileError::NotADirectory {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path)
            .map(|()| true)
            .map_err(|source| FileError::CreateDir {
                path: path.to_owned(),
                source,
            }),
        Err(source) => Err(FileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}
