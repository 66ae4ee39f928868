//! Spans of the PostgreSQL store's changes: one for each change (`claim`,
//! `next`, ...) with a child for each round trip to the server, named
//! after the prepared statements it ran, with the rows it returned;
//! appended to the file `PgStoreOptions::telemetry_file` names.
//!
//! A change runs on its caller's thread, so the round trips are collected
//! in a thread-local while it runs (`Conn::batch` and `Conn::query` report
//! to [`round_trip`]); nothing is collected without a span file.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use coord_core::Timestamp;
use coord_core::trace::{RunSpans, SpanRecord};
use serde_json::{Map, Value, json};

/// A round trip while a change's spans are collected.
struct Trip {
    name: String,
    start: Timestamp,
    started: Instant,
    rows: u64,
    ok: bool,
}

thread_local! {
    static TRIPS: RefCell<Option<Vec<Trip>>> = const { RefCell::new(None) };
}

/// Starts collecting this thread's round trips.
pub(crate) fn collect() {
    TRIPS.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Whether round trips are being collected.
pub(crate) fn collecting() -> bool {
    TRIPS.with(|t| t.borrow().is_some())
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
        started,
        rows: result.as_ref().map_or(0, count),
        ok: result.is_ok(),
    };
    TRIPS.with(|t| {
        if let Some(trips) = t.borrow_mut().as_mut() {
            trips.push(record);
        }
    });
    result
}

/// Stops collecting and adds the round trips to `run` as its children.
pub(crate) fn finish_trips(run: &mut RunSpans) {
    let trips = TRIPS.with(|t| t.borrow_mut().take()).unwrap_or_default();
    for trip in trips {
        let mut attributes = Map::new();
        attributes.insert("db.system".into(), json!("postgresql"));
        attributes.insert("db.rows".into(), Value::from(trip.rows));
        run.child(
            &trip.name,
            trip.start,
            trip.started.elapsed(),
            trip.ok,
            attributes,
        );
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
