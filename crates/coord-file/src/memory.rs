//! What a long-lived store remembers between its changes, so that it does
//! not redo work whose result it already knows: re-read and re-decode the
//! claims file it wrote itself, re-read the tail of an event log it left
//! settled, re-check the file system, re-sweep temp files.
//!
//! Every shortcut is taken only when the file on disk is provably the one
//! the store left. The store keeps that file open, so its inode number
//! cannot be handed to another file, and compares what the path names now
//! with what it saw right after its own write: for the claims file the
//! inode, size and change times (any other writer replaces it by rename: a
//! new inode); for the event log the inode and length (others only append
//! or cut: a new length), plus the revision of its last append, which must
//! be the one the claims file says committed. A one-shot process makes a
//! single change and remembers nothing that costs a system call.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::claims_doc::ClaimsDoc;
use crate::lock::Staging;

/// How often a long-lived store sweeps the temp files killed writers left
/// (a one-shot process sweeps on its one change).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Who a file is: same identity means same inode, same size, and no write
/// or metadata change since it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The identity of what `path` names now (`None` if it cannot be seen).
    pub(crate) fn at(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId::of(&m))
    }
}

/// A file this store wrote, held open so its inode stays its own.
pub(crate) struct Pinned {
    _file: File,
    id: FileId,
}

/// The event log, open for appends, `len` bytes long and ending with whole
/// lines, the last of them of `revision` or earlier. A log only ever grows
/// by appends and shrinks by a settle's cut, so while its inode (held open
/// here) is still at the path with this length, and `revision` is what the
/// claims file says committed last, no one else has written to it.
pub(crate) struct OpenLog {
    pub file: File,
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub revision: u64,
}

impl OpenLog {
    /// `file` as it stands now, `len` bytes long.
    #[cfg(test)]
    pub(crate) fn new(file: File, len: u64, revision: u64) -> std::io::Result<OpenLog> {
        let meta = file.metadata()?;
        Ok(OpenLog {
            dev: meta.dev(),
            ino: meta.ino(),
            file,
            len,
            revision,
        })
    }

    fn is_at(&self, path: &Path) -> bool {
        std::fs::metadata(path)
            .is_ok_and(|m| (m.dev(), m.ino(), m.len()) == (self.dev, self.ino, self.len))
    }
}

/// What one store remembers (see the module docs).
#[derive(Default)]
pub(crate) struct Memory {
    /// The claims file as last read or written: reading it again decodes
    /// only the records whose bytes changed.
    doc: Option<ClaimsDoc>,
    /// The claims file this store wrote last (its bytes are `doc`'s).
    written: Option<Pinned>,
    log: Option<OpenLog>,
    swept: Option<Instant>,
    fs_checked: bool,
    /// The staging file for the shell tools' lock, kept between changes.
    pub staging: Option<Staging>,
    /// Changes this store committed.
    changes: u64,
    /// How many times in a row the claims file was not the one this store
    /// wrote: other writers are busy, and pinning is not worth its syscalls.
    misses: u32,
}

/// A store's memory, shared by its clones.
#[derive(Clone, Default)]
pub(crate) struct SharedMemory(Arc<Mutex<Memory>>);

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedMemory")
    }
}

impl SharedMemory {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Memory {
    /// The claims document last read or written, to reuse decoded heads.
    pub(crate) fn last_doc(&self) -> Option<ClaimsDoc> {
        self.doc.clone()
    }

    pub(crate) fn remember_read(&mut self, doc: &ClaimsDoc) {
        self.doc = Some(doc.clone());
    }

    /// The claims file's document without reading it, if `path` still names
    /// the file this store wrote last, untouched.
    pub(crate) fn unchanged_claims(&mut self, path: &Path) -> Option<ClaimsDoc> {
        let pinned = self.written.as_ref()?;
        if FileId::at(path) == Some(pinned.id) {
            self.misses = 0;
            return self.doc.clone();
        }
        self.misses = self.misses.saturating_add(1);
        self.written = None;
        None
    }

    /// Records a committed change that wrote `doc` to `path`. From the
    /// second change on (a long-lived store), the file is pinned so the next
    /// change can skip reading it; while other writers keep replacing it,
    /// only every 16th change tries.
    ///
    /// Returns the file pinned before, if any: it is the one this change
    /// replaced, and closing it frees its blocks (about a millisecond for a
    /// 3.7 MB file), so the caller drops it after releasing the lock.
    #[must_use = "drop it once the lock is released"]
    pub(crate) fn committed(&mut self, path: &Path, doc: &ClaimsDoc) -> Option<Pinned> {
        self.changes += 1;
        self.doc = Some(doc.clone());
        let replaced = self.written.take();
        if self.changes < 2 || (self.misses > 0 && !self.changes.is_multiple_of(16)) {
            return replaced;
        }
        // Opened by path after the rename, under the lock: it is our file.
        if let Ok(file) = File::open(path)
            && let Ok(meta) = file.metadata()
            && meta.len() == doc.as_bytes().len() as u64
        {
            self.written = Some(Pinned {
                id: FileId::of(&meta),
                _file: file,
            });
        }
        replaced
    }

    /// The event log as this store left it, if `path` still names it
    /// unchanged and its last events are of `committed`, the revision the
    /// claims file says committed last (so they are not a failed change's).
    /// Taken out: the caller puts back what it leaves.
    pub(crate) fn settled_log(&mut self, path: &Path, committed: u64) -> Option<OpenLog> {
        let log = self.log.take()?;
        (log.revision == committed && log.is_at(path)).then_some(log)
    }

    pub(crate) fn put_log(&mut self, log: OpenLog) {
        self.log = Some(log);
    }

    /// The log as the settle step of this change left it (see `settled_log`).
    pub(crate) fn take_log(&mut self) -> Option<OpenLog> {
        self.log.take()
    }

    /// Whether this store made a change before: then it is likely to make
    /// more, and keeping files open between changes pays.
    pub(crate) fn long_lived(&self) -> bool {
        self.changes >= 1
    }

    /// Whether temp files are due for a sweep; notes the sweep if so.
    pub(crate) fn sweep_due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return false;
        }
        self.swept = Some(now);
        true
    }

    /// Whether the file system still needs its check (it is done once).
    pub(crate) fn fs_unchecked(&self) -> bool {
        !self.fs_checked
    }

    pub(crate) fn fs_checked(&mut self) {
        self.fs_checked = true;
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use super::*;
    use coord_testkit::replace_by_rename;

    const FILE: &[u8] = b"[\n  {\"work_item_id\":\"w\",\"work_type\":\"t\",\"priority\":\"low\",\"status\":\"pending\"}\n]\n";

    fn doc() -> ClaimsDoc {
        let bytes = reactor_file::Contents::new(FILE.to_vec());
        ClaimsDoc::parse(Path::new("f"), Some(&bytes), None).unwrap()
    }

    #[test]
    fn a_written_file_stands_in_for_a_read_only_while_it_is_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claims.json");
        let mut memory = Memory::default();
        fs::write(&path, FILE).unwrap();
        drop(memory.committed(&path, &doc()));
        assert!(
            memory.unchanged_claims(&path).is_none(),
            "a one-shot store pins nothing"
        );
        drop(memory.committed(&path, &doc()));
        assert!(memory.unchanged_claims(&path).is_some());
        assert!(memory.unchanged_claims(&path).is_some(), "still the same");
        // Another writer's file, byte for byte the same: still not ours.
        replace_by_rename(&path, FILE);
        assert!(memory.unchanged_claims(&path).is_none());
        drop(memory.committed(&path, &doc()));
        assert!(
            memory.unchanged_claims(&path).is_none(),
            "after a miss, pinning waits for the 16th change"
        );
    }

    #[test]
    fn a_kept_log_is_trusted_only_unchanged_and_at_the_revision_that_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        fs::write(&path, b"{}\n").unwrap();
        let open = || fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut memory = Memory::default();

        memory.put_log(OpenLog::new(open(), 3, 7).unwrap());
        assert!(memory.settled_log(&path, 7).is_some());
        memory.put_log(OpenLog::new(open(), 3, 7).unwrap());
        assert!(
            memory.settled_log(&path, 6).is_none(),
            "its last append never committed"
        );
        memory.put_log(OpenLog::new(open(), 3, 7).unwrap());
        open().write_all(b"{}\n").unwrap();
        assert!(
            memory.settled_log(&path, 7).is_none(),
            "another writer appended"
        );
        memory.put_log(OpenLog::new(open(), 6, 7).unwrap());
        replace_by_rename(&path, b"{}\n{}\n");
        assert!(memory.settled_log(&path, 7).is_none(), "rotated away");
    }
}
