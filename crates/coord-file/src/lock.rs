//! The directory lock: the one place coord takes an OS lock.
//!
//! What it guarantees: while a [`DirLock`] lives, no other coord process
//! (or thread with its own `DirLock`) on this machine holds the lock of the
//! same directory. The kernel drops the lock when the holder dies, even by
//! SIGKILL, so a crashed writer never wedges the directory.
//!
//! What it does not guarantee:
//! - exclusion across machines on network file systems (NFS, CIFS, FUSE),
//!   where `flock` may be emulated or local-only;
//! - exclusion from tools that do not take this lock.
//!
//! Why this shape:
//! - `flock` (std's `File::lock`), not POSIX `fcntl` locks: an `fcntl` lock
//!   vanishes when the process closes *any* descriptor of the file.
//! - a separate `coord.lock` that is never renamed or deleted: locking the
//!   claims file itself would break at the first rename over it (the new
//!   inode is unlocked while the old one is still held).
//! - not named `work_claims.json.lock`: the older shell tools read the mere
//!   existence of that name as "locked".

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use coord_core::CoordError;

/// The name of the lock file inside the coordination directory.
pub const LOCK_FILE: &str = "coord.lock";

/// Holds the directory's exclusive lock until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), waiting up to `timeout`.
    #[allow(clippy::disallowed_methods)] // this is the lock module
    pub fn acquire(dir: &Path, timeout: Duration) -> Result<DirLock, CoordError> {
        let path = dir.join(LOCK_FILE);
        let read_error = |source: std::io::Error| CoordError::FileRead {
            path: path.clone(),
            source: source.into(),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(read_error)?;
        match file.try_lock() {
            Ok(()) => return Ok(DirLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(read_error(e)),
        }
        let timed_out = || CoordError::LockTimeout {
            path: path.clone(),
            waited: timeout,
        };
        if timeout.is_zero() {
            return Err(timed_out());
        }
        tracing::info!(lock = %path.display(), "waiting for another coord process to release the lock");
        // std has no timed flock, and polling try_lock wakes late and burns
        // CPU under contention. A helper thread blocks in the kernel's queue
        // instead; the clone shares the open file description, and with it
        // the lock. If we give up first, the thread's send fails when it
        // finally gets the lock, and dropping its descriptor releases it.
        let waiter = file.try_clone().map_err(read_error)?;
        let (tx, rx) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name("coord-lock-wait".into())
            .spawn(move || {
                let result = waiter.lock().map(|()| waiter);
                let _ = tx.send(result);
            })
            .map_err(read_error)?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(waiter)) => Ok(DirLock {
                _file: waiter,
                path,
            }),
            Ok(Err(e)) => Err(read_error(e)),
            Err(_) => Err(timed_out()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_second_holder_waits_and_then_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let started = Instant::now();
        let err = DirLock::acquire(dir.path(), Duration::from_millis(150)).unwrap_err();
        assert!(matches!(err, CoordError::LockTimeout { .. }), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        drop(held);
        DirLock::acquire(dir.path(), Duration::ZERO).expect("free again after drop");
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), Duration::ZERO).unwrap();
        let d = dir.path().to_owned();
        let waiter =
            thread::spawn(move || DirLock::acquire(&d, Duration::from_secs(10)).map(|_| ()));
        thread::sleep(Duration::from_millis(50));
        drop(held);
        waiter.join().unwrap().expect("acquired after release");
    }

    #[test]
    fn a_waiter_that_gave_up_does_not_keep_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), Duration::ZERO).unwrap();
        DirLock::acquire(dir.path(), Duration::from_millis(20)).unwrap_err();
        drop(held);
        // The abandoned helper thread may grab the lock for an instant;
        // it must let go straight away.
        DirLock::acquire(dir.path(), Duration::from_secs(5)).expect("released by the helper");
    }
}
