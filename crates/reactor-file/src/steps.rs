//! The file steps: [`EnsureDir`] and [`AtomicWrite`], each able to undo
//! what it did; and [`FileSnapshot`], a file as it was read, whose bytes
//! an [`AtomicWrite`] puts back.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use reactor::{Compensation, Step};

use crate::atomic::{AtomicWriter, remove_stale_temps};
use crate::error::FileError;
use crate::{ensure_dir, read_optional};

/// A file's bytes, shared without copying between a snapshot and whatever
/// the caller's parse keeps of them.
pub type Contents = std::sync::Arc<Vec<u8>>;

/// A file as it was read: its exact bytes (`None` when it did not exist)
/// and the caller's parse of them.
#[derive(Debug, Clone)]
pub struct FileSnapshot<T> {
    pub path: PathBuf,
    pub bytes: Option<Contents>,
    pub value: T,
}

impl<T> FileSnapshot<T> {
    /// Reads `path` (a missing file is `None`) and parses it with `parse`,
    /// which gets the shared bytes, so what it builds can point into them.
    pub fn read<E: From<FileError>>(
        path: &Path,
        parse: impl FnOnce(&Path, Option<&Contents>) -> Result<T, E>,
    ) -> Result<FileSnapshot<T>, E> {
        let bytes = read_optional(path)?.map(Contents::new);
        let value = parse(path, bytes.as_ref())?;
        Ok(FileSnapshot {
            path: path.to_owned(),
            bytes,
            value,
        })
    }
}

/// Makes sure a directory exists.
#[derive(Debug, Clone)]
pub struct EnsureDir {
    path: PathBuf,
    sweep_temps_of: Vec<String>,
    created: bool,
}

/// What [`EnsureDir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirStatus {
    pub created: bool,
    pub removed_temps: Vec<PathBuf>,
}

impl EnsureDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            sweep_temps_of: Vec::new(),
            created: false,
        }
    }

    /// Also removes the temp files that killed writers of `target_name` left
    /// in the directory (call it once per target). Only safe under the lock
    /// all those writers take.
    #[must_use]
    pub fn sweeping_temps_of(mut self, target_name: impl Into<String>) -> Self {
        self.sweep_temps_of.push(target_name.into());
        self
    }
}

impl<E: From<FileError>> Step<E> for EnsureDir {
    type Output = DirStatus;

    fn run(&mut self) -> Result<DirStatus, E> {
        let path = &self.path;
        self.created = ensure_dir(path)?;
        let targets: Vec<&str> = self.sweep_temps_of.iter().map(String::as_str).collect();
        let removed_temps = if targets.is_empty() {
            Vec::new()
        } else {
            remove_stale_temps(path, &targets).map_err(|source| FileError::Read {
                path: path.clone(),
                source,
            })?
        };
        Ok(DirStatus {
            created: self.created,
            removed_temps,
        })
    }

    /// Removes the directory if this step created it and nothing has been
    /// put in it since; a directory with contents is left alone.
    fn undo(&mut self) -> Result<(), E> {
        if !self.created {
            return Ok(());
        }
        match fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(source) => Err(FileError::Restore {
                path: self.path.clone(),
                source,
            }
            .into()),
        }
    }
}

/// Replaces a file atomically with `contents`, keeping the bytes it had
/// (`previous`, from the snapshot the caller read) to put back.
pub struct AtomicWrite<C> {
    path: PathBuf,
    contents: C,
    previous: Option<Contents>,
    writer: AtomicWriter,
    /// How the last attempt failed: whether the target had been replaced,
    /// and the OS error kind (for the retry decision).
    last_failure: Option<(bool, io::ErrorKind)>,
}

impl<C> std::fmt::Debug for AtomicWrite<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicWrite")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What [`AtomicWrite`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    pub len: usize,
}

/// Errors worth another attempt: the same write may well succeed.
fn is_transient(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock)
}

impl<C: AsRef<[u8]>> AtomicWrite<C> {
    /// Writes `contents` over `path`, whose bytes before were `previous`
    /// (`None`: it did not exist).
    pub fn new(path: impl Into<PathBuf>, contents: C, previous: Option<Contents>) -> Self {
        Self {
            path: path.into(),
            contents,
            previous,
            writer: AtomicWriter::new(),
            last_failure: None,
        }
    }

    #[must_use]
    pub fn with_writer(mut self, writer: AtomicWriter) -> Self {
        self.writer = writer;
        self
    }

    fn put_back(&self) -> Result<(), FileError> {
        self.writer
            .restore(&self.path, self.previous.as_deref().map(Vec::as_slice))
            .map_err(|source| FileError::Restore {
                path: self.path.clone(),
                source,
            })
    }
}

impl<E: From<FileError>, C: AsRef<[u8]>> Step<E> for AtomicWrite<C> {
    type Output = Written;

    fn run(&mut self) -> Result<Written, E> {
        let contents = self.contents.as_ref();
        self.last_failure = None;
        match self.writer.write(&self.path, contents) {
            Ok(()) => Ok(Written {
                path: self.path.clone(),
                len: contents.len(),
            }),
            Err(failure) => {
                self.last_failure = Some((failure.replaced, failure.source.kind()));
                Err(FileError::Write {
                    path: self.path.clone(),
                    stage: failure.stage,
                    source: failure.source,
                }
                .into())
            }
        }
    }

    /// The temp file is already gone; if the target had been replaced (the
    /// directory sync failed), the previous bytes go back, so a failed write
    /// leaves the file as it was. Transient errors are retried once.
    fn compensate(&mut self, error: E, attempt: u32) -> Compensation<Written, E> {
        let Some((replaced, kind)) = self.last_failure else {
            return Compensation::Fail(error);
        };
        if replaced && let Err(restore_error) = self.put_back() {
            return Compensation::Fail(restore_error.into());
        }
        if is_transient(kind) && attempt < 2 {
            Compensation::Retry
        } else {
            Compensation::Fail(error)
        }
    }

    fn undo(&mut self) -> Result<(), E> {
        self.put_back().map_err(E::from)
    }
}
