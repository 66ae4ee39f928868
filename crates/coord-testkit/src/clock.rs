//! [`TestClock`]: a clock the test moves by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use coord_core::Timestamp;

/// A clock that stands still until the test advances it. Clones share it.
#[derive(Debug, Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    /// A clock at `start` (RFC 3339).
    pub fn new(start: &str) -> Self {
        let t: Timestamp = start.parse().expect("a valid RFC 3339 start time");
        TestClock(Arc::new(AtomicI64::new(t.as_unix_micros())))
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_unix_micros(self.0.load(Ordering::SeqCst)).expect("in range")
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as i64, Ordering::SeqCst);
    }

    /// This clock as a store's clock option.
    pub fn as_fn(&self) -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
        let clock = self.clone();
        Arc::new(move || clock.now())
    }
}

/// The system's clock, `offset_s` seconds off (ahead if positive): a
/// machine whose clock is wrong.
pub fn skewed_clock(offset_s: i64) -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
    let shift = Duration::from_secs(offset_s.unsigned_abs());
    Arc::new(move || {
        let now = Timestamp::now();
        if offset_s >= 0 {
            now.saturating_add(shift)
        } else {
            now.saturating_sub(shift)
        }
    })
}
