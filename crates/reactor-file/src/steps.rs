use std::fs;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use reactor::{Compensation, InputError, Inputs, Step};

use crate::atomic::{AtomicWriter, remove_stale_temps};
use crate::error::FileError;
use crate::{ensure_dir, read_optional};

/// Makes sure a directory exists.
#[derive(Debug, Clone)]
pub struct EnsureDir {
    path: PathBuf,
    sweep_temps_of: Vec<String>,
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

    fn run(&mut self, _inputs: &Inputs<'_>) -> Result<DirStatus, E> {
        let path = &self.path;
        let created = ensure_dir(path)?;
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
            created,
            removed_temps,
        })
    }

    /// Removes the directory if this step created it and nothing has been
    /// put in it since; a directory with contents is left alone.
    fn undo(&mut self, output: &DirStatus, _inputs: &Inputs<'_>) -> Result<(), E> {
        if !output.created {
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

/// Reads a file and parses it with a caller's function, which also sees a
/// missing file (as `None`) and decides what that means. The function gets
/// the shared bytes, so what it builds can point into them without a copy.
pub struct ReadFile<T, P> {
    path: PathBuf,
    parse: P,
    _value: PhantomData<fn() -> T>,
}

impl<T, P> std::fmt::Debug for ReadFile<T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<T, P> ReadFile<T, P> {
    pub fn new(path: impl Into<PathBuf>, parse: P) -> Self {
        Self {
            path: path.into(),
            parse,
            _value: PhantomData,
        }
    }
}

impl<E, T, P> Step<E> for ReadFile<T, P>
where
    E: From<FileError>,
    T: 'static,
    P: FnMut(&Path, Option<&Contents>) -> Result<T, E>,
{
    type Output = FileSnapshot<T>;

    fn run(&mut self, _inputs: &Inputs<'_>) -> Result<FileSnapshot<T>, E> {
        let bytes = read_optional(&self.path)?.map(Contents::new);
        let value = (self.parse)(&self.path, bytes.as_ref())?;
        Ok(FileSnapshot {
            path: self.path.clone(),
            bytes,
            value,
        })
    }
}

/// Replaces a file atomically with the bytes of the step named
/// `contents_from` (any `C: AsRef<[u8]>`), keeping the previous contents from
/// the [`FileSnapshot<T>`] of the step named `previous_from` for undo.
pub struct AtomicWrite<C, T> {
    path: PathBuf,
    contents_from: String,
    previous_from: String,
    writer: AtomicWriter,
    /// How the last attempt failed: whether the target had been replaced,
    /// and the OS error kind (for the retry decision).
    last_failure: Option<(bool, io::ErrorKind)>,
    _types: PhantomData<fn() -> (C, T)>,
}

impl<C, T> std::fmt::Debug for AtomicWrite<C, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicWrite")
            .field("path", &self.path)
            .field("contents_from", &self.contents_from)
            .field("previous_from", &self.previous_from)
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

impl<C, T> AtomicWrite<C, T> {
    pub fn new(
        path: impl Into<PathBuf>,
        contents_from: impl Into<String>,
        previous_from: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            contents_from: contents_from.into(),
            previous_from: previous_from.into(),
            writer: AtomicWriter::new(),
            last_failure: None,
            _types: PhantomData,
        }
    }

    #[must_use]
    pub fn with_writer(mut self, writer: AtomicWriter) -> Self {
        self.writer = writer;
        self
    }

    fn put_back<E>(&self, inputs: &Inputs<'_>) -> Result<(), E>
    where
        E: From<FileError> + From<InputError>,
        T: 'static,
    {
        let previous = inputs.get::<FileSnapshot<T>>(&self.previous_from)?;
        self.writer
            .restore(&self.path, previous.bytes.as_deref().map(Vec::as_slice))
            .map_err(|source| {
                FileError::Restore {
                    path: self.path.clone(),
                    source,
                }
                .into()
            })
    }
}

impl<E, C, T> Step<E> for AtomicWrite<C, T>
where
    E: From<FileError> + From<InputError>,
    C: AsRef<[u8]> + 'static,
    T: 'static,
{
    type Output = Written;

    fn run(&mut self, inputs: &Inputs<'_>) -> Result<Written, E> {
        let contents = inputs.get::<C>(&self.contents_from)?.as_ref();
        // Checked now so a wiring mistake fails before the file is touched.
        inputs.get::<FileSnapshot<T>>(&self.previous_from)?;
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
    fn compensate(
        &mut self,
        error: E,
        inputs: &Inputs<'_>,
        attempt: u32,
    ) -> Compensation<Written, E> {
        let Some((replaced, kind)) = self.last_failure else {
            return Compensation::Fail(error);
        };
        if replaced && let Err(restore_error) = self.put_back::<E>(inputs) {
            return Compensation::Fail(restore_error);
        }
        if is_transient(kind) && attempt < 2 {
            Compensation::Retry
        } else {
            Compensation::Fail(error)
        }
    }

    fn undo(&mut self, _output: &Written, inputs: &Inputs<'_>) -> Result<(), E> {
        self.put_back(inputs)
    }
}
