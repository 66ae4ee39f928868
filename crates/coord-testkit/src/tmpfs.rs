//! A small tmpfs of a test's own: a disk that fills up for real, or turns
//! read-only. Mounting needs root (CI runs as root); where the test cannot
//! mount one it gets `None` and says so, and the injected-failure tests
//! cover the same code paths everywhere.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs, unmounted (lazily, so a file a test left open does not
/// stop it) when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    mount_point: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` reads it: `400k`).
    /// `None`, with a note on stderr, where this process cannot mount.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let mount_point = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(mount_point.path())
            .stderr(std::process::Stdio::null())
            .status();
        if status.is_ok_and(|s| s.success()) {
            Some(Tmpfs { mount_point })
        } else {
            eprintln!("note: cannot mount a tmpfs here (needs root): the tmpfs case is skipped");
            None
        }
    }

    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// Makes the file system read-only.
    pub fn read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "remounting read-only failed");
    }

    /// Writes a file until the disk is full; returns it, so the test can
    /// free the space again by removing it.
    pub fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut file = fs::File::create(&path).expect("the filler file");
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        // What is left is smaller than a block: take it byte by byte.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount_point.path())
            .status();
    }
}
