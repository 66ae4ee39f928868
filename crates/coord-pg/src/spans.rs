//! Spans of the PostgreSQL store's changes: one for each change (`claim`,
//! `next`, ...) with a child for each round trip to the server, named
//! after the prepared statements it ran, with the rows it returned;
//! appended to the file `PgStoreOptions::telemetry_file` names.
//!
//! A change runs on its caller's thread, so the round trips are collected
//! in a thread-local while it runs (`Conn::batch` and `Conn::query` report
//! to [`round_trip`], a commit to [`note_expired`]); nothing is collected
//! without a span file or sink.
//!
//! Lock waits are measured apart from the change: the round trips that run
//! a statement able to wait for a lock (`FOR UPDATE` or `FOR SHARE` without
//! `SKIP LOCKED`, an advisory lock) are marked `db.waits_for_locks`, and
//! their time, the round trip included, is the change's `coord.lock_wait_us`.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use coord_core::trace::{RunSpans, SpanRecord, expired_attribute};
use coord_core::{Event, EventKind, Timestamp};
use serde_json::{Map, Value, json};

use crate::sql::waits_for_locks;

/// A round trip while a change's spans are collected.
struct Trip {
    name: String,
    start: Timestamp,
    duration: Duration,
    rows: u64,
    ok: bool,
}

/// What a change's spans collect while it runs.
#[derive(Default)]
struct Collected {
    trips: Vec<Trip>,
    /// Leases the change's commit wrote down.
    events: Vec<Event>,
}

thread_local! {
    static COLLECTED: RefCell<Option<Collected>> = const { RefCell::new(None) };
}

/// Starts collecting this thread's round trips.
pub(crate) fn collect() {
    COLLECTED.with(|t| *t.borrow_mut() = Some(Collected::default()));
}

/// Whether round trips are being collected.
pub(crate) fn collecting() -> bool {
    COLLECTED.with(|t| t.borrow().is_some())
}

/// While collecting, keeps the `Expired` events among `events` (a commit's)
/// for the change's `coord.expired`.
pub(crate) fn note_expired(events: &[Event]) {
    COLLECTED.with(|t| {
        if let Some(collected) = t.borrow_mut().as_mut() {
            collected.events.extend(
                events
                    .iter()
                    .filter(|e| e.event == EventKind::Expired)
                    .cloned(),
            );
        }
    });
}

/// Runs `trip` (one round trip named `name`) and, while collecting,
/// records it with the rows `count` finds in its result.
pub(crate) fn round_trip<T, E>(
    name: impl FnOnce() -> String,
    now: impl FnOnce() -> Timestamp,
    count: impl FnOnce(&T) -> u64,
    trip: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if !collecting() {
        return trip();
    }
    let (start, started) = (now(), Instant::now());
    let result = trip();
    let record = Trip {
        name: name(),
        start,
        duration: started.elapsed(),
        rows: result.as_ref().map_or(0, count),
        ok: result.is_ok(),
    };
    COLLECTED.with(|t| {
        if let Some(collected) = t.borrow_mut().as_mut() {
            collected.trips.push(record);
        }
    });
    result
}

/// Stops collecting, adds the round trips to `run` as its children, and
/// adds to `attributes` (the run's) what the change waited for locks and,
/// when it `succeeded`, the leases it wrote down.
pub(crate) fn finish_trips(
    run: &mut RunSpans,
    attributes: &mut Map<String, Value>,
    succeeded: bool,
) {
    let collected = COLLECTED
        .with(|t| t.borrow_mut().take())
        .unwrap_or_default();
    let mut lock_wait = Duration::ZERO;
    for trip in collected.trips {
        let mut trip_attributes = Map::new();
        trip_attributes.insert("db.system".into(), json!("postgresql"));
        trip_attributes.insert("db.rows".into(), Value::from(trip.rows));
        if trip.name.split(' ').any(waits_for_locks) {
            trip_attributes.insert("db.waits_for_locks".into(), json!(true));
            lock_wait += trip.duration;
        }
        run.child(
            &trip.name,
            trip.start,
            trip.duration,
            trip.ok,
            trip_attributes,
        );
    }
    let micros = u64::try_from(lock_wait.as_micros()).unwrap_or(u64::MAX);
    attributes.insert("coord.lock_wait_us".into(), micros.into());
    if succeeded {
        expired_attribute(&collected.events, attributes);
    }
}

/// Appends `spans` to `path`, one JSON object per line, in one write.
pub(crate) fn append(path: &Path, spans: &[SpanRecord]) -> std::io::Result<()> {
    let mut text = Vec::new();
    for span in spans {
        serde_json::to_writer(&mut text, span).expect("a span always serialises");
        text.push(b'\n');
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?
        .write_all(&text)
}
