//! Refuses file systems where `flock` does not exclude other machines.
//!
//! NFS, SMB/CIFS and most FUSE mounts either emulate `flock` locally or
//! map it onto locks with weaker semantics; a published measurement saw
//! thousands of double acquisitions with flock on NFS. Such a directory is
//! refused unless the user insists (then only one machine may use it).

use std::path::Path;

use coord_core::CoordError;

/// `statfs` magic numbers of file systems that may be shared between
/// machines (from linux/magic.h and the file systems' sources).
const NETWORK_FILESYSTEMS: [(i64, &str); 12] = [
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFE53_4D42, "SMB2"),
    (0xFF53_4D42, "CIFS"),
    (0x6573_5546, "FUSE"),
    (0x00C3_6400, "Ceph"),
    (0x0102_1997, "9P"),
    (0x5346_414F, "AFS"),
    (0x7371_7245, "Coda"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
    (0x0BD0_0BD0, "Lustre"),
];

/// The name of the network file system with this magic number, if it is one.
pub(crate) fn network_filesystem(magic: i64) -> Option<&'static str> {
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// Fails with [`CoordError::UnsafeFilesystem`] if `dir` is on a network
/// file system.
pub(crate) fn check(dir: &Path) -> Result<(), CoordError> {
    let stat = rustix::fs::statfs(dir).map_err(|e| CoordError::FileRead {
        path: dir.to_owned(),
        source: Box::new(std::io::Error::from(e)),
    })?;
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    // f_type's type differs by platform
    let magic = i64::from(stat.f_type as i64) & 0xFFFF_FFFF;
    match network_filesystem(magic) {
        Some(name) => Err(CoordError::UnsafeFilesystem {
            path: dir.to_owned(),
            filesystem: name.to_owned(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_file_systems_are_recognised() {
        assert_eq!(network_filesystem(0x6969), Some("NFS"));
        assert_eq!(network_filesystem(0xFF53_4D42), Some("CIFS"));
        assert_eq!(network_filesystem(0x6573_5546), Some("FUSE"));
        // ext4, tmpfs, xfs, btrfs, overlayfs are local.
        for local in [0xEF53, 0x0102_1994, 0x5846_5342, 0x9123_683E, 0x794C_7630] {
            assert_eq!(network_filesystem(local), None, "{local:#x}");
        }
    }

    #[test]
    fn the_test_machines_temp_dir_is_local() {
        let dir = tempfile::tempdir().unwrap();
        check(dir.path()).unwrap();
    }
}
