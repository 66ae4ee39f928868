//! The physical limit: one durable atomic update of a file, done directly
//! (lock, write a temp file, fsync, rename, fsync the directory, unlock).
//! Shared by the benchmark and the minimal `durable-once` program.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Opens (creating) the lock file the bare loop locks.
pub fn lock_file(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("bare.lock"))
}

/// One durable atomic replacement of `dir/bare.json` with `bytes`.
#[allow(clippy::disallowed_methods)] // the baseline does by hand what coord does through its modules
pub fn durable_update(dir: &Path, lock: &File, bytes: &[u8]) -> io::Result<()> {
    lock.lock()?;
    let temp = dir.join("bare.json.tmp");
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temp, dir.join("bare.json"))?;
    File::open(dir)?.sync_all()?;
    lock.unlock()
}
