//! `coord-testkit`: what coord's tests, benchmarks and torture test share.
//!
//! - [`TestClock`]: a clock that stands still until the test moves it.
//! - [`PgCluster`]: a throwaway PostgreSQL server on a Unix socket, started
//!   from the installed server binaries and stopped when its owner (or the
//!   test process) goes away.
//! - [`conformance`]: the behaviour every [`coord_core::Store`] must show,
//!   run against each store by [`conformance_suite!`].
//! - [`replace_by_rename`]: another tool's write of a file.
//! - [`Tmpfs`]: a small disk of a test's own, to fill up or make read-only.
//! - [`wait_within`], [`output_within`]: waiting for a child with a time
//!   limit, so a hang fails its test.

mod clock;
pub mod conformance;
mod pg;
mod process;
mod tmpfs;

pub use clock::{TestClock, skewed_clock};
pub use pg::{PgCluster, PgClusterOptions, shared_cluster};
pub use process::{CHILD_LIMIT, output_within, wait_within};
pub use tmpfs::Tmpfs;

/// Replaces the file at `path` the way other tools do (the shell tools, a
/// second writer): a new file renamed over it, so it gets a new inode.
pub fn replace_by_rename(path: &std::path::Path, bytes: &[u8]) {
    let temp = path.with_extension("other-tool-tmp");
    std::fs::write(&temp, bytes).unwrap();
    #[allow(clippy::disallowed_methods)] // a test playing another writer
    std::fs::rename(&temp, path).unwrap();
}
