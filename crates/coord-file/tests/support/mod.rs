//! Helpers shared by the store tests.
#![allow(dead_code)] // each test binary uses its own part

pub use coord_testkit::TestClock as Clock;

use coord_core::Store;
use coord_file::{FileStore, FileStoreOptions};
use coord_testkit::conformance::Harness;

/// Store options whose clock is `clock`.
pub fn at_time(clock: Clock) -> FileStoreOptions {
    FileStoreOptions::default().clock(clock.as_fn())
}

/// A fresh coordination directory for the conformance suite.
pub struct FileHarness {
    dir: tempfile::TempDir,
    clock: Clock,
    options: FileStoreOptions,
    store: FileStore,
}

impl FileHarness {
    /// With `tune` applied to the default options (and the test's clock).
    pub fn new(tune: impl FnOnce(FileStoreOptions) -> FileStoreOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::new("2026-01-01T00:00:00Z");
        let options = tune(at_time(clock.clone()));
        let store = FileStore::with_options(dir.path(), options.clone());
        FileHarness {
            dir,
            clock,
            options,
            store,
        }
    }
}

impl Harness for FileHarness {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }

    fn another(&self) -> Box<dyn Store + Send> {
        Box::new(FileStore::with_options(
            self.dir.path(),
            self.options.clone(),
        ))
    }

    fn archived(&self) -> Vec<serde_json::Value> {
        self.store.archived().unwrap()
    }
}
