//! What only the PostgreSQL store has to get right: a connection that
//! carries on after a failed statement, and one that comes back after the
//! server dropped it.

use std::time::Duration;

use coord_core::{ClaimRequest, ErrorKind, Filter, Priority, Store};
use coord_pg::{PgStore, PgStoreOptions};
use coord_testkit::shared_cluster;

/// A store on a schema of its own, whose session shows `name` as its
/// application name.
fn store(name: &str, lock_timeout: Duration) -> (PgStore, String, String) {
    let cluster = shared_cluster();
    let schema = cluster.fresh_schema("recovery");
    let options = PgStoreOptions::default()
        .schema(schema.clone())
        .lock_timeout(lock_timeout);
    let url = format!("{} application_name={name}", cluster.url());
    let store = PgStore::connect(&url, options).unwrap();
    (store, cluster.url(), schema)
}

fn high(agent: &str) -> ClaimRequest {
    ClaimRequest::new(agent, "deploy").priority(Priority::High)
}

#[test]
fn a_change_that_timed_out_on_a_lock_leaves_the_connection_usable() {
    let (store, url, schema) = store("recovery_lock", Duration::from_millis(200));
    // Another session holds the work type's lock. The claim's first batch
    // (which also prepares its statements) fails on it.
    let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&0x636f_6f72_i32, &format!("{schema}/deploy")],
    )
    .unwrap();
    let err = store.claim(&high("a")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    tx.rollback().unwrap();
    // The same store, the same connection: the transaction was rolled back
    // and the statements it prepared are known again.
    let claim = store.claim(&high("a")).unwrap();
    assert_eq!(
        store.list(&Filter::default()).unwrap(),
        vec![claim.clone()],
        "only the second claim happened"
    );
    assert_eq!(store.events(0).unwrap().events.len(), 1);
}

#[test]
fn a_store_whose_connection_was_cut_reconnects() {
    let (store, url, _) = store("recovery_cut", Duration::from_secs(5));
    store.claim(&ClaimRequest::new("a", "t")).unwrap();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let cut: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'recovery_cut'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(cut >= 1, "the store's session was found and cut");
    // Termination is asynchronous: wait until the session is gone.
    let started = std::time::Instant::now();
    while admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'recovery_cut'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
    {
        assert!(started.elapsed() < Duration::from_secs(10), "still there");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The first call may see the broken connection; it fails cleanly.
    match store.claim(&ClaimRequest::new("a", "t")) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::Database, "{e}"),
    }
    // After that, the store works on a new connection.
    store.claim(&ClaimRequest::new("a", "t")).unwrap();
    assert!(store.list(&Filter::default()).unwrap().len() >= 2);
}
