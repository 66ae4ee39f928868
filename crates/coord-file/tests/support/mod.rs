//! Helpers shared by the store tests.
#![allow(dead_code)] // each test binary uses its own part

pub use coord_testkit::TestClock as Clock;

use coord_file::FileStoreOptions;

/// Store options whose clock is `clock`.
pub fn at_time(clock: Clock) -> FileStoreOptions {
    FileStoreOptions {
        clock: clock.as_fn(),
        ..FileStoreOptions::default()
    }
}
