//! The store conformance suite against PostgreSQL: a throwaway cluster for
//! this test process, and a schema of its own for each test; and again on
//! schemas made by `import` from a directory with a past (`imported`).

use coord_core::Store;
use coord_pg::{PgStore, PgStoreOptions};
use coord_testkit::conformance::Harness;
use coord_testkit::{TestClock, shared_cluster};

struct PgHarness {
    clock: TestClock,
    url: String,
    options: PgStoreOptions,
    store: PgStore,
}

fn harness() -> PgHarness {
    let cluster = shared_cluster();
    let clock = TestClock::new("2026-01-01T00:00:00Z");
    let options = PgStoreOptions::default()
        .schema(cluster.fresh_schema("conformance"))
        .clock(clock.as_fn());
    let url = cluster.url();
    let store = PgStore::connect(&url, options.clone()).unwrap();
    PgHarness {
        clock,
        url,
        options,
        store,
    }
}

impl Harness for PgHarness {
    fn store(&self) -> &dyn Store {
        &self.store
    }

    fn clock(&self) -> &TestClock {
        &self.clock
    }

    fn another(&self) -> Box<dyn Store + Send> {
        Box::new(PgStore::connect(&self.url, self.options.clone()).unwrap())
    }

    fn archived(&self) -> Vec<serde_json::Value> {
        self.store.archived().unwrap()
    }
}

coord_testkit::conformance_suite!(harness);

/// The suite on a store made by importing a coordination directory that
/// ran work for a while: fences and revisions high, an archive. Its items
/// all finished and archived, and its event log and agents left out, so
/// the suite's tests (which count items, events and agents) see only their
/// own; the archive the harness hides.
mod imported {
    use std::collections::HashSet;
    use std::time::Duration;

    use coord_core::{Action, Actor, ClaimRequest, NextRequest, PostRequest, Store};
    use coord_file::FileStore;
    use coord_pg::{ImportSource, PgStore, PgStoreOptions};
    use coord_testkit::conformance::Harness;
    use coord_testkit::{TestClock, shared_cluster};

    use super::PgHarness;

    struct ImportedHarness {
        inner: PgHarness,
        /// The archived items the import brought.
        imported: HashSet<String>,
    }

    /// A directory after some work: claims, queue items taken, failed and
    /// retried, all finished and archived.
    fn directory_with_a_past() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        for n in 0..12 {
            let claim = store
                .claim(&ClaimRequest::new("old", format!("t{}", n % 3)))
                .unwrap();
            let done = Action::Complete { result: None };
            store
                .act(&claim.work_item_id, &done, &Actor::new("old"))
                .unwrap();
            store
                .post(&PostRequest::new("old", "queue").max_attempts(1))
                .unwrap();
            let taken = store.next(&NextRequest::new("old")).unwrap();
            let failed = Action::Fail {
                reason: None,
                requeue: false,
                retry_after: None,
            };
            store
                .act(&taken.work_item_id, &failed, &Actor::new("old"))
                .unwrap();
        }
        store.cleanup("old", Duration::ZERO).unwrap();
        dir
    }

    fn harness() -> ImportedHarness {
        let dir = directory_with_a_past();
        let source = FileStore::new(dir.path());
        assert!(source.list(&Default::default()).unwrap().is_empty());
        let archived = source.archived().unwrap();
        let imported = archived
            .iter()
            .map(|v| v["work_item_id"].as_str().unwrap().to_owned())
            .collect();
        let cluster = shared_cluster();
        let clock = TestClock::new("2026-01-01T00:00:00Z");
        let options = PgStoreOptions::default()
            .schema(cluster.fresh_schema("imported"))
            .clock(clock.as_fn());
        let url = cluster.url();
        let store = PgStore::connect(&url, options.clone()).unwrap();
        let counts = store
            .import(&ImportSource::new(
                Vec::new(),
                archived,
                Vec::new(),
                Vec::new(),
            ))
            .unwrap();
        assert_eq!(counts.archived, 24);
        ImportedHarness {
            inner: PgHarness {
                clock,
                url,
                options,
                store,
            },
            imported,
        }
    }

    impl Harness for ImportedHarness {
        fn store(&self) -> &dyn Store {
            self.inner.store()
        }

        fn clock(&self) -> &TestClock {
            self.inner.clock()
        }

        fn another(&self) -> Box<dyn Store + Send> {
            self.inner.another()
        }

        fn archived(&self) -> Vec<serde_json::Value> {
            let mut archived = self.inner.archived();
            archived.retain(|v| {
                !self
                    .imported
                    .contains(v["work_item_id"].as_str().unwrap_or_default())
            });
            archived
        }
    }

    coord_testkit::conformance_suite!(harness);

    #[test]
    fn the_imported_past_sets_where_fences_go_on() {
        let h = harness();
        let claim = h.store().claim(&ClaimRequest::new("new", "build")).unwrap();
        assert!(claim.fence.unwrap() > 24, "{claim:?}");
    }
}
