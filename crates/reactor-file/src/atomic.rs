//! Atomic replacement of a file, and the temp-file naming that lets a later
//! writer recognise and sweep what a killed one left behind.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The stages of one atomic write, in order, and of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteStage {
    CreateTemp,
    WriteTemp,
    SyncTemp,
    Rename,
    SyncDir,
    /// Appending to a file ([`AtomicWriter::append`]); an injected failure
    /// here writes half the bytes first, as a full disk does.
    Append,
    /// Cutting a failed append back to the file's old length.
    CutBack,
}

impl WriteStage {
    /// The stages of one atomic replacement.
    pub const ALL: [WriteStage; 5] = [
        WriteStage::CreateTemp,
        WriteStage::WriteTemp,
        WriteStage::SyncTemp,
        WriteStage::Rename,
        WriteStage::SyncDir,
    ];
}

impl fmt::Display for WriteStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteStage::CreateTemp => "creating the temp file",
            WriteStage::WriteTemp => "writing the temp file",
            WriteStage::SyncTemp => "syncing the temp file",
            WriteStage::Rename => "renaming the temp file into place",
            WriteStage::SyncDir => "syncing the directory",
            WriteStage::Append => "appending",
            WriteStage::CutBack => "cutting a failed append back",
        })
    }
}

/// A test seam: called before each stage with the target path; an error
/// makes that stage fail as if the OS had returned it.
pub type FaultInjector = Arc<dyn Fn(&Path, WriteStage) -> io::Result<()> + Send + Sync>;

/// A failed atomic write: where it stopped and whether the target had
/// already been replaced (then only the directory sync failed). For an
/// append, `replaced` says that a partial append could not be cut back:
/// the file is no longer as it was.
#[derive(Debug)]
pub struct WriteFailure {
    pub stage: WriteStage,
    pub source: io::Error,
    pub replaced: bool,
}

/// Writes files atomically; carries the optional fault injector.
#[derive(Clone)]
pub struct AtomicWriter {
    faults: Option<FaultInjector>,
    durable: bool,
}

impl Default for AtomicWriter {
    fn default() -> Self {
        AtomicWriter {
            faults: None,
            durable: true,
        }
    }
}

impl fmt::Debug for AtomicWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicWriter")
            .field("faults", &self.faults.is_some())
            .field("durable", &self.durable)
            .finish()
    }
}

/// The marker in every temp file name, between the target's name and the
/// writer's unique suffix: `.<target>.coord-tmp.<pid>.<nanos>.<n>`.
const TEMP_MARKER: &str = ".coord-tmp.";

fn temp_prefix(target_name: &str) -> String {
    format!(".{target_name}{TEMP_MARKER}")
}

/// Whether `file_name` is one of our temp files for `target_name`.
pub fn is_temp_of(file_name: &str, target_name: &str) -> bool {
    file_name.starts_with(&temp_prefix(target_name))
}

/// The temp name prefix of `target_name`, for writers that stage files by
/// the same convention (so [`remove_stale_temps`] sweeps them too).
pub fn temp_name_prefix(target_name: &str) -> String {
    temp_prefix(target_name)
}

/// Removes the temp files that writers of any of `target_names` in `dir`
/// left behind, in one pass over the directory; this process's own (their
/// names carry its pid) are kept, since it is alive. Only call this while
/// holding the lock that every writer of the targets holds, or it may
/// delete a live writer's temp file.
pub fn remove_stale_temps(dir: &Path, target_names: &[&str]) -> io::Result<Vec<PathBuf>> {
    let prefixes: Vec<String> = target_names.iter().map(|t| temp_prefix(t)).collect();
    let own = format!("{}.", std::process::id());
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| {
            prefixes.iter().any(|p| {
                n.strip_prefix(p.as_str())
                    .is_some_and(|rest| !rest.starts_with(&own))
            })
        }) {
            // remove_file never follows a symlink: it removes the link itself.
            match fs::remove_file(entry.path()) {
                Ok(()) => removed.push(entry.path()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Deletes the temp file unless disarmed, so no early return leaks one.
struct TempGuard<'a>(Option<&'a Path>);

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}.{nanos}.{n}", std::process::id())
}

impl AtomicWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose stages first ask `faults` (for tests).
    pub fn with_faults(faults: FaultInjector) -> Self {
        Self {
            faults: Some(faults),
            durable: true,
        }
    }

    /// Skips both fsyncs: still atomic (a reader sees the old file or the
    /// new one), but a power loss may lose the write. For advisory files.
    #[must_use]
    pub fn without_sync(mut self) -> Self {
        self.durable = false;
        self
    }

    fn check(&self, target: &Path, stage: WriteStage) -> Result<(), WriteFailure> {
        match &self.faults {
            Some(f) => f(target, stage).map_err(|source| WriteFailure {
                stage,
                source,
                replaced: stage == WriteStage::SyncDir,
            }),
            None => Ok(()),
        }
    }

    /// Replaces `target` with `bytes`: a reader sees the old file or the new
    /// one, never a mix, and after `Ok` the new one survives a power loss.
    /// The target keeps its permissions. A temp file is never left behind by
    /// a failure this process survives.
    pub fn write(&self, target: &Path, bytes: &[u8]) -> Result<(), WriteFailure> {
        let fail = |stage| {
            move |source| WriteFailure {
                stage,
                source,
                replaced: false,
            }
        };
        let dir = parent_dir(target);
        let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            fail(WriteStage::CreateTemp)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the target has no UTF-8 file name",
            ))
        })?;
        // Renaming over a symbolic link replaces the link itself with a
        // regular file, leaving what it pointed to stale: refused.
        let existing = fs::symlink_metadata(target).ok();
        if existing
            .as_ref()
            .is_some_and(|m| m.file_type().is_symlink())
        {
            return Err(fail(WriteStage::CreateTemp)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symbolic link, and replacing it by rename would turn the link into a \
                 copy; put the file itself there",
            )));
        }
        let permissions = existing.map(|m| m.permissions());

        self.check(target, WriteStage::CreateTemp)?;
        let (temp_path, mut file) = create_temp(dir, name).map_err(fail(WriteStage::CreateTemp))?;
        let mut guard = TempGuard(Some(&temp_path));
        if let Some(p) = permissions {
            file.set_permissions(p)
                .map_err(fail(WriteStage::CreateTemp))?;
        }

        self.check(target, WriteStage::WriteTemp)?;
        file.write_all(bytes).map_err(fail(WriteStage::WriteTemp))?;

        self.check(target, WriteStage::SyncTemp)?;
        if self.durable {
            file.sync_all().map_err(fail(WriteStage::SyncTemp))?;
        }
        drop(file);

        self.check(target, WriteStage::Rename)?;
        #[allow(clippy::disallowed_methods)] // this module is the one place that renames
        fs::rename(&temp_path, target).map_err(fail(WriteStage::Rename))?;
        guard.0 = None;

        self.check(target, WriteStage::SyncDir)?;
        if !self.durable {
            return Ok(());
        }
        sync_dir(dir).map_err(|source| WriteFailure {
            stage: WriteStage::SyncDir,
            source,
            replaced: true,
        })
    }

    /// Appends `bytes` to `file` (open for appending to `target`, whose
    /// length before is `len_before`), all or nothing: a failure (a full
    /// disk, say) cuts the file back to `len_before`, so no partial record
    /// is left behind. With `sync`, the data is synced before `Ok`. Should
    /// the cut fail too, the failure says `replaced`: the caller must keep
    /// whatever lets a later writer settle the file (an intent).
    pub fn append(
        &self,
        target: &Path,
        file: &mut File,
        len_before: u64,
        bytes: &[u8],
        sync: bool,
    ) -> Result<(), WriteFailure> {
        let written = match self.check(target, WriteStage::Append) {
            // As a full disk would: part of it lands, then the error.
            Err(injected) => file
                .write_all(&bytes[..bytes.len() / 2])
                .and(Err(injected.source)),
            Ok(()) => file
                .write_all(bytes)
                .and_then(|()| if sync { file.sync_data() } else { Ok(()) }),
        };
        let Err(source) = written else {
            return Ok(());
        };
        let cut = self.cut_back_open(target, file, len_before, sync);
        match cut {
            Ok(()) => Err(WriteFailure {
                stage: WriteStage::Append,
                source,
                replaced: false,
            }),
            Err(cut_error) => Err(WriteFailure {
                stage: WriteStage::CutBack,
                source: io::Error::new(
                    source.kind(),
                    format!("{source}; cutting the partial append back failed: {cut_error}"),
                ),
                replaced: true,
            }),
        }
    }

    /// Cuts `target` back to `len` bytes if it is longer (a missing file is
    /// left missing), durably: how an append is undone.
    pub fn cut_back(&self, target: &Path, len: u64) -> io::Result<()> {
        let mut file = match OpenOptions::new().write(true).open(target) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if file.metadata()?.len() <= len {
            return Ok(());
        }
        self.cut_back_open(target, &mut file, len, true)
    }

    fn cut_back_open(
        &self,
        target: &Path,
        file: &mut File,
        len: u64,
        sync: bool,
    ) -> io::Result<()> {
        self.check(target, WriteStage::CutBack)
            .map_err(|f| f.source)?;
        file.set_len(len)?;
        if sync { file.sync_data() } else { Ok(()) }
    }

    /// Puts `previous` back as the contents of `target` (`None`: the target
    /// did not exist, so remove it).
    pub fn restore(&self, target: &Path, previous: Option<&[u8]>) -> io::Result<()> {
        match previous {
            Some(bytes) => self.write(target, bytes).map_err(|f| f.source),
            None => match fs::remove_file(target) {
                Ok(()) => sync_dir(parent_dir(target)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
    }
}

/// Moves `path` (`<stem>.<ext>`) aside to `<stem>.<unix nanos>.<ext>` in the
/// same directory, durably, and returns the new name. For size-rotated
/// append-only files; call it under the lock their writers share.
pub fn rotate(path: &Path, ext: &str) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the file has no UTF-8 name"))?;
    let stem = name.strip_suffix(&format!(".{ext}")).unwrap_or(name);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let rotated = parent_dir(path).join(format!("{stem}.{nanos}.{ext}"));
    #[allow(clippy::disallowed_methods)] // this module is the one place that renames
    fs::rename(path, &rotated)?;
    sync_dir(parent_dir(path))?;
    Ok(rotated)
}

fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `create_new` is O_CREAT|O_EXCL: it never opens an existing file and never
/// follows a symlink planted at the temp name.
fn create_temp(dir: &Path, target_name: &str) -> io::Result<(PathBuf, File)> {
    let prefix = temp_prefix(target_name);
    let mut last_error = None;
    for _ in 0..8 {
        let path = dir.join(format!("{prefix}{}", unique_suffix()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.expect("the loop ran"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
