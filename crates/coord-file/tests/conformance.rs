//! The store conformance suite against the coordination directory: a fresh
//! temporary directory for each test.

mod support;

fn harness() -> support::FileHarness {
    support::FileHarness::new(|options| options)
}

coord_testkit::conformance_suite!(harness);
