//! The store conformance suite against the coordination directory: a fresh
//! temporary directory for each test.

use coord_core::Store;
use coord_file::{FileStore, FileStoreOptions};
use coord_testkit::TestClock;
use coord_testkit::conformance::Harness;

struct FileHarness {
    dir: tempfile::TempDir,
    clock: TestClock,
    options: FileStoreOptions,
    store: FileStore,
}

fn harness() -> FileHarness {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new("2026-01-01T00:00:00Z");
    let options = FileStoreOptions {
        clock: clock.as_fn(),
        ..FileStoreOptions::default()
    };
    let store = FileStore::with_options(dir.path(), options.clone());
    FileHarness {
        dir,
        clock,
        options,
        store,
    }
}

impl Harness for FileHarness {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn clock(&self) -> &TestClock {
        &self.clock
    }

    fn another(&self) -> Box<dyn Store + Send> {
        Box::new(FileStore::with_options(
            self.dir.path(),
            self.options.clone(),
        ))
    }

    fn archived_ids(&self) -> Vec<String> {
        self.store
            .archived()
            .unwrap()
            .iter()
            .map(|v| v["work_item_id"].as_str().unwrap().to_owned())
            .collect()
    }
}

coord_testkit::conformance_suite!(harness);
