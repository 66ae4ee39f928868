//! `coord-testkit`: what coord's tests, benchmarks and torture test share.
//!
//! - [`TestClock`]: a clock that stands still until the test moves it.
//! - [`PgCluster`]: a throwaway PostgreSQL server on a Unix socket, started
//!   from the installed server binaries and stopped when its owner (or the
//!   test process) goes away.
//! - [`conformance`]: the behaviour every [`coord_core::Store`] must show,
//!   run against each store by [`conformance_suite!`].

mod clock;
pub mod conformance;
mod pg;

pub use clock::TestClock;
pub use pg::{PgCluster, PgClusterOptions, shared_cluster};
