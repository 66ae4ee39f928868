//! The database's clock decides: clients whose clocks run an hour ahead or
//! behind act at the server's time, so neither can take a live lease nor
//! write one that is already over, and what they store is the server's time.

use std::time::Duration;

use coord_core::{
    ClaimRequest, ErrorKind, Event, NextRequest, PostRequest, Priority, Store, Timestamp,
};
use coord_pg::{PgStore, PgStoreOptions};
use coord_testkit::{shared_cluster, skewed_clock};

/// A store on `schema` whose client clock is `offset_s` seconds off.
fn store(schema: &str, offset_s: i64) -> PgStore {
    let options = PgStoreOptions::default()
        .schema(schema.to_owned())
        .clock(skewed_clock(offset_s));
    PgStore::connect(&shared_cluster().url(), options).unwrap()
}

/// The server's clock, read by a connection of its own.
fn server_now() -> Timestamp {
    let mut client = postgres::Client::connect(&shared_cluster().url(), postgres::NoTls).unwrap();
    let micros: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
            &[],
        )
        .unwrap()
        .get(0);
    Timestamp::from_unix_micros(micros).unwrap()
}

/// Asserts `t` is the server's time `expected`, give or take the test's
/// own pace.
fn near(t: Option<Timestamp>, expected: Timestamp, what: &str) {
    let t = t.unwrap_or_else(|| panic!("{what} is missing"));
    let gap = (t.as_unix_micros() - expected.as_unix_micros()).abs();
    assert!(
        gap < 10_000_000,
        "{what}: {t} is not the server's time {expected}"
    );
}

fn high(agent: &str, work_type: &str, lease: Duration) -> ClaimRequest {
    ClaimRequest::new(agent, work_type)
        .priority(Priority::High)
        .lease(lease)
}

#[test]
fn a_client_an_hour_ahead_cannot_take_a_live_lease() {
    let schema = shared_cluster().fresh_schema("skew_ahead");
    let honest = store(&schema, 0);
    let ahead = store(&schema, 3600);
    let held = honest
        .claim(&high("honest", "deploy", Duration::from_secs(1800)))
        .unwrap();
    // By its own clock, the lease ended half an hour ago.
    let refused = ahead
        .claim(&high("ahead", "deploy", Duration::from_secs(60)))
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(ahead.reap("ahead").unwrap().is_empty(), "nothing lapsed");
    ahead
        .post(&PostRequest::new("boss", "deploy").priority(Priority::High))
        .unwrap();
    let nothing = ahead.next(&NextRequest::new("ahead")).unwrap_err();
    assert_eq!(nothing.kind(), ErrorKind::NothingToTake, "{nothing}");
    let still = honest.get(&held.work_item_id).unwrap();
    assert_eq!(still.lease_expires_at, held.lease_expires_at);
    assert_eq!(still.agent_id.as_deref(), Some("honest"));

    // What the fast client writes carries the server's time.
    let mine = ahead
        .claim(&high("ahead", "release", Duration::from_secs(60)))
        .unwrap();
    let server = server_now();
    near(mine.claimed_at, server, "claimed_at");
    near(
        mine.lease_expires_at,
        server.saturating_add(Duration::from_secs(60)),
        "lease_expires_at",
    );
    let events: Vec<Event> = ahead.events(0).unwrap().events;
    let last = events.last().unwrap();
    near(Some(last.time), server, "the event's time");
    let seen = ahead.agents().unwrap();
    let record = seen.iter().find(|a| a.agent_id == "ahead").unwrap();
    near(record.last_seen, server, "the agent's last_seen");
}

#[test]
fn a_client_an_hour_behind_cannot_write_a_lease_that_is_already_over() {
    let schema = shared_cluster().fresh_schema("skew_behind");
    let honest = store(&schema, 0);
    let behind = store(&schema, -3600);
    let held = behind
        .claim(&high("behind", "deploy", Duration::from_secs(600)))
        .unwrap();
    near(
        held.lease_expires_at,
        server_now().saturating_add(Duration::from_secs(600)),
        "lease_expires_at",
    );
    // For everyone else the lease is live: no one takes the work type.
    let refused = honest
        .claim(&high("honest", "deploy", Duration::from_secs(60)))
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(honest.reap("honest").unwrap().is_empty());
    // And the slow client's own view of a live claim is the server's.
    let other = honest
        .claim(&high("honest", "build", Duration::from_secs(60)))
        .unwrap();
    let refused = behind
        .claim(&high("behind", "build", Duration::from_secs(60)))
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert_eq!(
        honest.get(&other.work_item_id).unwrap().lease_expires_at,
        other.lease_expires_at
    );
}
