//! [`FileError`]: what went wrong in a file step, naming the path.

use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::WriteStage;

/// What went wrong in a file step; every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("{} exists but is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("writing {} failed while {stage}: {source}", path.display())]
    Write {
        path: PathBuf,
        stage: WriteStage,
        source: io::Error,
    },
    #[error("cannot put back the previous contents of {}: {source}", path.display())]
    Restore { path: PathBuf, source: io::Error },
}

impl FileError {
    pub fn path(&self) -> &Path {
        match self {
            FileError::CreateDir { path, .. }
            | FileError::NotADirectory { path }
            | FileError::Read { path, .. }
            | FileError::Write { path, .. }
            | FileError::Restore { path, .. } => path,
        }
    }
}
