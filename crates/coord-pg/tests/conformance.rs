//! The store conformance suite against PostgreSQL: a throwaway cluster for
//! this test process, and a schema of its own for each test.

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
