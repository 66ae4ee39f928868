//! The directory lock: the one place coord takes an OS lock.
//!
//! What it guarantees: while a [`DirLock`] lives, no other coord process
//! (or thread with its own `DirLock`) on this machine holds the lock of the
//! same directory. The kernel drops the lock when the holder dies, even by
//! SIGKILL, so a crashed writer never wedges the directory.
//!
//! While it holds the flock it also holds the older shell tools' lock:
//! `work_claims.json.lock`, created exclusively with our pid and removed on
//! release. A shell tool's lock file is waited for; one whose pid is not a
//! live process on this machine is broken, and the break is reported.
//!
//! What it does not guarantee:
//! - exclusion across machines on network file systems (NFS, CIFS, FUSE),
//!   where `flock` may be emulated or local-only (see `fs_check`);
//! - exclusion from tools that take neither lock;
//! - that a pid in a shell tool's lock file was not reused by another
//!   process (then we wait for that process, or time out).
//!
//! Why this shape:
//! - `flock` (std's `File::lock`), not POSIX `fcntl` locks: an `fcntl` lock
//!   vanishes when the process closes *any* descriptor of the file.
//! - a separate `coord.lock` that is never renamed or deleted: locking the
//!   claims file itself would break at the first rename over it (the new
//!   inode is unlocked while the old one is still held).
//! - not named `work_claims.json.lock`: the older shell tools read the mere
//!   existence of that name as "locked".

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use coord_core::{CoordError, LockName};

/// The name of the lock file inside the coordination directory.
pub const LOCK_FILE: &str = "coord.lock";

/// The older shell tools' lock: its existence means "locked".
pub const LEGACY_LOCK_FILE: &str = "work_claims.json.lock";

/// A shell tool's lock file without a readable pid is taken for a crashed
/// writer's once it is this old.
const UNREADABLE_LEGACY_LOCK_AGE: Duration = Duration::from_secs(60);

/// Whether a writer also takes the older shell tools' lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShellLock {
    /// Take it too, so shell tools wait while coord writes (the default).
    Take,
    /// Do not: for directories no shell tool uses.
    Skip,
}

/// Holds the directory's exclusive lock (and the shell tools' lock file)
/// until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
    legacy: Option<LegacyLock>,
}

/// A shell tool's lock file that was removed because its owner was dead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLock {
    pub path: PathBuf,
    /// What the file said (the pid, or why it could not be read).
    pub holder: String,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), waiting up to `timeout`
    /// for the flock and, as `shell_lock` says, the shell tools' lock file.
    pub fn acquire(
        dir: &Path,
        timeout: Duration,
        shell_lock: ShellLock,
    ) -> Result<DirLock, CoordError> {
        let mut staging = None;
        Self::acquire_staged(
            dir,
            timeout,
            (shell_lock == ShellLock::Take).then_some(&mut staging),
        )
    }

    /// [`DirLock::acquire`], taking the shell tools' lock (when `staging` is
    /// given) through a staging file the caller keeps between acquisitions:
    /// a long-lived store then creates and deletes it once, not per change.
    pub fn acquire_staged(
        dir: &Path,
        timeout: Duration,
        staging: Option<&mut Option<Staging>>,
    ) -> Result<DirLock, CoordError> {
        // A timeout too long to be a point in time never runs out.
        let deadline = Instant::now().checked_add(timeout);
        let (file, path) = Self::flock(dir, timeout)?;
        let legacy = match staging {
            Some(staging) => Some(LegacyLock::acquire(dir, deadline, timeout, staging)?),
            None => None,
        };
        Ok(DirLock {
            _file: file,
            path,
            legacy,
        })
    }

    /// The shell tools' lock files this acquisition broke.
    pub fn broken(&self) -> &[BrokenLock] {
        self.legacy.as_ref().map_or(&[], |l| &l.broken)
    }

    #[allow(clippy::disallowed_methods)] // this is the lock module
    fn flock(dir: &Path, timeout: Duration) -> Result<(File, PathBuf), CoordError> {
        let path = dir.join(LOCK_FILE);
        // Making (or opening for writing) the lock file, and locking it, are
        // what a writer does: a read-only or full file system fails here.
        let write_error = |what: &str, source: std::io::Error| CoordError::AtomicWriteFailed {
            path: path.clone(),
            source: io::Error::new(source.kind(), format!("{what}: {source}")).into(),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| write_error("cannot create or open the lock file", e))?;
        let lock_error = |e| write_error("cannot lock it", e);
        match file.try_lock() {
            Ok(()) => return Ok((file, path)),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(lock_error(e)),
        }
        let timed_out = || CoordError::LockTimeout {
            lock: LockName::File(path.clone()),
            waited: timeout,
        };
        if timeout.is_zero() {
            return Err(timed_out());
        }
        tracing::info!(lock = %path.display(), "waiting for another coord process to release the lock");
        // Poll from this thread rather than block in another: a waiter that
        // wins is already running, so the lock never sits held by a process
        // that is still waiting to be scheduled (which, with many waiters on
        // few cores, cost more than the polling). Sleeps start short and grow,
        // with jitter so waiters do not move in step.
        let started = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(timed_out());
            }
            thread::sleep(pause.mul_f64(0.5 + fastrand::f64()).min(left));
            pause = (pause * 2).min(Duration::from_millis(2));
            match file.try_lock() {
                Ok(()) => return Ok((file, path)),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(lock_error(e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Our hold on `work_claims.json.lock`; removed on drop if still ours.
#[derive(Debug)]
struct LegacyLock {
    path: PathBuf,
    /// The inode our lock file got: on release, a file of another inode at
    /// the path is someone else's (a shell tool broke ours), not ours to delete.
    inode: u64,
    broken: Vec<BrokenLock>,
}

/// Whether `pid` names a live process on this machine. A process we may not
/// signal still exists.
fn is_alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}

/// Our staging file for the shell tools' lock: our pid, in a file that an
/// acquisition hard-links to the lock name (`link` fails if the name
/// exists), so a writer killed at any moment never leaves an empty lock file
/// whose owner no one could tell. Removed on drop; one a killed process left
/// is swept with the other temp files (it is named like one).
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    inode: u64,
}

impl Staging {
    fn create(dir: &Path) -> io::Result<Staging> {
        use std::os::unix::fs::MetadataExt;
        // Unique per staging file: threads of one process each keep their own.
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = reactor_file::temp_name_prefix(LEGACY_LOCK_FILE);
        let path = dir.join(format!("{prefix}{}.{n}", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())?;
        let inode = file.metadata()?.ino();
        Ok(Staging { path, inode })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl LegacyLock {
    /// Links our staging file (made now if `staging` holds none, or if a
    /// sweep removed it since) to the lock name, waiting while a live
    /// holder's lock file is there and breaking a dead one's.
    fn acquire(
        dir: &Path,
        deadline: Option<Instant>,
        timeout: Duration,
        staging: &mut Option<Staging>,
    ) -> Result<LegacyLock, CoordError> {
        let path = dir.join(LEGACY_LOCK_FILE);
        let mut broken = Vec::new();
        // Every step here makes, links or removes a file: a failure is a
        // failed write of the shell tools' lock file.
        let io_error = |what: &str, source: io::Error| CoordError::AtomicWriteFailed {
            path: path.clone(),
            source: io::Error::new(source.kind(), format!("{what}: {source}")).into(),
        };
        let mut fresh = false;
        loop {
            let stage = match staging {
                Some(stage) => stage,
                None => {
                    fresh = true;
                    staging.insert(Staging::create(dir).map_err(|e| {
                        io_error("cannot create its staging file (holding our pid)", e)
                    })?)
                }
            };
            match fs::hard_link(&stage.path, &path) {
                Ok(()) => {
                    return Ok(LegacyLock {
                        path,
                        inode: stage.inode,
                        broken,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                // Our kept staging file was swept: make it again, once.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !fresh => {
                    *staging = None;
                    continue;
                }
                Err(e) => return Err(io_error("cannot link it into place", e)),
            }
            if let Some(holder) = Self::dead_holder(&path) {
                tracing::warn!(lock = %path.display(), %holder, "breaking a stale shell-tool lock");
                match fs::remove_file(&path) {
                    Ok(()) => broken.push(BrokenLock {
                        path: path.clone(),
                        holder,
                    }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("cannot remove a dead holder's", e)),
                }
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(CoordError::LockTimeout {
                    lock: LockName::File(path.clone()),
                    waited: timeout,
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// What a lock file says of its holder, if that holder is gone: a pid
    /// that is not a live process, or no readable pid in an old file.
    fn dead_holder(path: &Path) -> Option<String> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => format!("unreadable: {e}"),
        };
        match text.trim().parse::<i32>() {
            Ok(pid) if pid > 0 => (!is_alive(pid)).then(|| format!("pid {pid}, not running")),
            _ => {
                let age = fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())?;
                (age >= UNREADABLE_LEGACY_LOCK_AGE)
                    .then(|| format!("no pid ({:?}), {}s old", text.trim(), age.as_secs()))
            }
        }
    }
}

impl Drop for LegacyLock {
    fn drop(&mut self) {
        // Only remove the file if it is still ours: a shell tool may have
        // broken our lock (say, after our pid looked dead to it).
        use std::os::unix::fs::MetadataExt;
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_second_holder_waits_and_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take).unwrap();
        let started = Instant::now();
        let err =
            DirLock::acquire(dir.path(), Duration::from_millis(150), ShellLock::Take).unwrap_err();
        assert!(matches!(err, CoordError::LockTimeout { .. }), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        drop(held);
        DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take)
            .expect("free again after drop");
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take).unwrap();
        let d = dir.path().to_owned();
        let waiter = thread::spawn(move || {
            DirLock::acquire(&d, Duration::from_secs(10), ShellLock::Take).map(|_| ())
        });
        thread::sleep(Duration::from_millis(50));
        drop(held);
        waiter.join().unwrap().expect("acquired after release");
    }

    #[test]
    fn the_shell_tools_lock_file_is_held_with_our_pid_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_LOCK_FILE);
        let held = DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take).unwrap();
        assert_eq!(
            fs::read_to_string(&legacy).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(held);
        assert!(!legacy.exists());
        assert!(
            dir.path().join(LOCK_FILE).exists(),
            "coord.lock is never deleted"
        );
    }

    #[test]
    fn a_live_shell_tools_lock_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_LOCK_FILE);
        // Our own pid is certainly alive.
        fs::write(&legacy, format!("{}\n", std::process::id())).unwrap();
        let err =
            DirLock::acquire(dir.path(), Duration::from_millis(100), ShellLock::Take).unwrap_err();
        assert!(
            matches!(err, CoordError::LockTimeout { lock: LockName::File(ref path), .. } if path == &legacy),
            "{err:?}"
        );
        assert!(legacy.exists(), "a live holder's file is left alone");
        let remover = {
            let legacy = legacy.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                fs::remove_file(legacy).unwrap();
            })
        };
        let held = DirLock::acquire(dir.path(), Duration::from_secs(5), ShellLock::Take).unwrap();
        assert!(held.broken().is_empty());
        remover.join().unwrap();
    }

    #[test]
    fn a_dead_shell_tools_lock_is_broken_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join(LEGACY_LOCK_FILE);
        // A child that has exited and been reaped: its pid is not running.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        fs::write(&legacy, format!("{pid}\n")).unwrap();
        let held = DirLock::acquire(dir.path(), Duration::from_secs(1), ShellLock::Take).unwrap();
        assert_eq!(held.broken().len(), 1);
        assert!(held.broken()[0].holder.contains(&pid.to_string()));
    }

    /// A timeout longer than the clock can count to is waited out like
    /// any other, not a panic.
    #[test]
    fn a_timeout_too_long_for_the_clock_still_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take).unwrap();
        let d = dir.path().to_owned();
        let waiter =
            thread::spawn(move || DirLock::acquire(&d, Duration::MAX, ShellLock::Take).map(|_| ()));
        thread::sleep(Duration::from_millis(50));
        drop(held);
        waiter.join().unwrap().expect("acquired after release");
    }

    /// A lock file that cannot be made is a failed write naming it (here
    /// `coord.lock` is a link into a directory that does not exist).
    #[test]
    fn a_lock_file_that_cannot_be_made_is_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("gone/coord.lock"),
            dir.path().join(LOCK_FILE),
        )
        .unwrap();
        let err = DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take).unwrap_err();
        assert!(
            matches!(&err, CoordError::AtomicWriteFailed { path, .. } if path.ends_with(LOCK_FILE)),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("cannot create or open the lock file"),
            "{err}"
        );
    }

    #[test]
    fn a_waiter_that_gave_up_does_not_keep_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take).unwrap();
        DirLock::acquire(dir.path(), Duration::from_millis(20), ShellLock::Take).unwrap_err();
        drop(held);
        // Giving up leaves nothing behind that holds or waits for the lock.
        DirLock::acquire(dir.path(), Duration::ZERO, ShellLock::Take).expect("free at once");
    }
}
