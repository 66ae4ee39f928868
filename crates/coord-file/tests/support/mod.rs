//! Helpers shared by the store tests: a clock the test moves by hand.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use coord_core::Timestamp;
use coord_file::FileStoreOptions;

/// A clock that stands still until the test advances it.
#[derive(Debug, Clone)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    pub fn new(start: &str) -> Self {
        let t: Timestamp = start.parse().unwrap();
        Clock(Arc::new(AtomicI64::new((t.as_unix_nanos() / 1000) as i64)))
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_unix_nanos(i128::from(self.0.load(Ordering::SeqCst)) * 1000).unwrap()
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }
}

/// Store options whose clock is `clock`.
pub fn at_time(clock: Clock) -> FileStoreOptions {
    FileStoreOptions {
        clock: Arc::new(move || clock.now()),
        ..FileStoreOptions::default()
    }
}
