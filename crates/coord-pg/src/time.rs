//! The database's clock, as the store reads it: every time a PostgreSQL
//! store compares or writes comes from the server. A connection reads the
//! server's clock when it opens (and again every `RESYNC`); in between, the
//! store adds the time elapsed on the client's clock since that reading.
//! So a client whose clock is an hour off acts at the server's time, and
//! the client's clock contributes only durations.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use coord_core::{Clock, Timestamp};

/// How long one reading of the server's clock is used. Bounds how far a
/// client's clock stepped (say, by NTP) or drifted can move the store's.
pub const RESYNC: Duration = Duration::from_secs(300);

/// The SQL that reads the server's clock, in microseconds since the epoch.
pub const SERVER_NOW_SQL: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

/// One reading: the server's time, the client's at the same moment, and
/// when (by the monotonic clock) it was taken.
#[derive(Debug, Clone, Copy)]
struct Reading {
    server: Timestamp,
    client: Timestamp,
    taken: Instant,
}

/// The server's clock, carried forward by the client's.
pub struct ServerClock {
    client: Clock,
    reading: Mutex<Option<Reading>>,
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClock")
            .field("reading", &self.reading())
            .finish_non_exhaustive()
    }
}

impl ServerClock {
    pub fn new(client: Clock) -> ServerClock {
        ServerClock {
            client,
            reading: Mutex::new(None),
        }
    }

    fn reading(&self) -> Option<Reading> {
        *self.reading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client's clock now: taken just before and after a round trip
    /// that reads the server's.
    pub fn client_now(&self) -> Timestamp {
        (self.client)()
    }

    /// Records that the server said `server_micros` in answer to a query
    /// sent at the client's `sent`. The server read its clock after `sent`,
    /// so taking `sent` as the moment of the reading keeps the store's time
    /// from ever running behind the server's; it runs ahead by at most the
    /// time the query took to reach the server.
    pub fn record(&self, sent: Timestamp, server_micros: i64) {
        let Some(server) = Timestamp::from_unix_micros(server_micros) else {
            return;
        };
        *self.reading.lock().unwrap_or_else(|e| e.into_inner()) = Some(Reading {
            server,
            client: sent,
            taken: Instant::now(),
        });
    }

    /// Whether the reading should be taken again before the next change.
    pub fn stale(&self) -> bool {
        self.reading().is_none_or(|r| r.taken.elapsed() >= RESYNC)
    }

    /// The server's time now: its last reading, plus the time elapsed on
    /// the client's clock since (none if that clock went back). Before any
    /// reading, the client's own clock.
    pub fn now(&self) -> Timestamp {
        let client = (self.client)();
        match self.reading() {
            None => client,
            Some(r) => {
                let elapsed = client
                    .as_unix_micros()
                    .saturating_sub(r.client.as_unix_micros());
                let micros = r.server.as_unix_micros().saturating_add(elapsed.max(0));
                Timestamp::from_unix_micros(micros).unwrap_or(r.server)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_testkit::TestClock;

    #[test]
    fn the_server_reading_moves_on_by_the_time_elapsed_on_the_client() {
        let client = TestClock::new("2026-01-01T00:00:00Z");
        let clock = ServerClock::new(client.as_fn());
        assert_eq!(clock.now(), client.now(), "no reading yet");
        assert!(clock.stale());
        let server: Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        clock.record(client.now(), server.as_unix_micros());
        assert!(!clock.stale());
        assert_eq!(clock.now(), server);
        client.advance(Duration::from_secs(3600));
        assert_eq!(
            clock.now(),
            server.saturating_add(Duration::from_secs(3600))
        );
    }

    #[test]
    fn a_client_clock_that_goes_back_does_not_move_the_server_time_back() {
        let client = TestClock::new("2026-01-01T00:00:00Z");
        let clock = ServerClock::new(client.as_fn());
        let later = TestClock::new("2026-01-01T01:00:00Z");
        let server: Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        clock.record(later.now(), server.as_unix_micros());
        assert_eq!(clock.now(), server);
    }
}
