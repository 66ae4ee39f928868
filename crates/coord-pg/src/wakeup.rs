//! Waking on commit: a connection of its own that waits inside the database
//! (`coord_wait_for_change`, see `schema.rs`) until the event log grows past
//! what it last saw. While nothing happens, a waiter costs the database one
//! transaction per `SERVER_WAIT` and the writers nothing. A wake-up only
//! says "read again".

use std::time::Duration;

use coord_core::{CoordError, Wakeup};
use postgres::error::SqlState;
use postgres::{Client, Config};

use crate::tls::{self, MakeTlsConnector};

/// The longest one wait stays inside the database: a statement that long
/// holds back the horizon of what vacuum may clean, and a server's
/// `statement_timeout` may be shorter than the caller's wait.
const SERVER_WAIT: Duration = Duration::from_secs(10);

/// How often the waiting statement looks at the log: the worst delay
/// between a commit and the wake-up.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// A waiting connection, opened again when it breaks.
pub(crate) struct LogWaiter {
    config: Config,
    tls: Option<MakeTlsConnector>,
    client: Option<Client>,
    /// The newest `seq` seen: a wait ends when the log passes it.
    mark: i64,
}

impl std::fmt::Debug for LogWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWaiter")
            .field("mark", &self.mark)
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl LogWaiter {
    /// Connects and notes where the log is: a change committed from now on
    /// ends the next wait.
    pub fn start(
        config: Config,
        tls: Option<MakeTlsConnector>,
    ) -> Result<LogWaiter, postgres::Error> {
        let mut waiter = LogWaiter {
            config,
            tls,
            client: None,
            mark: 0,
        };
        waiter.connect()?;
        Ok(waiter)
    }

    /// A new connection, and the log's newest `seq` as the mark (events
    /// committed but not yet numbered count as new).
    fn connect(&mut self) -> Result<(), postgres::Error> {
        let mut client = tls::connect(&self.config, self.tls.as_ref())?;
        let newest: Option<i64> = client
            .query_one("SELECT max(seq) FROM coord_events", &[])?
            .get(0);
        self.mark = newest.unwrap_or(0);
        self.client = Some(client);
        Ok(())
    }
}

impl Wakeup for LogWaiter {
    fn wait(&mut self, timeout: Duration) -> Result<bool, CoordError> {
        let Some(client) = self.client.as_mut().filter(|c| !c.is_closed()) else {
            self.connect().map_err(|e| CoordError::Database {
                message: format!("cannot wait for changes: {e}"),
                source: Some(Box::new(e)),
            })?;
            // Changes may have committed while no one waited.
            return Ok(true);
        };
        let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        let wait = millis(timeout.min(SERVER_WAIT));
        let every = millis(LOOK_EVERY);
        match client.query_one(
            "SELECT coord_wait_for_change($1, $2, $3)",
            &[&self.mark, &wait, &every],
        ) {
            Ok(row) => match row.get::<_, Option<i64>>(0) {
                Some(newest) => {
                    self.mark = newest;
                    Ok(true)
                }
                None => Ok(false),
            },
            // `interrupter` cut it short.
            Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => Ok(false),
            Err(_) => {
                // A lost connection, or a server that ended the statement:
                // read again, and wait on a new connection next time.
                self.client = None;
                Ok(true)
            }
        }
    }

    fn interrupter(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        let token = self.client.as_ref()?.cancel_token();
        let tls = self.tls.clone();
        Some(Box::new(move || {
            let _ = match &tls {
                Some(connector) => token.cancel_query(connector.clone()),
                None => token.cancel_query(postgres::NoTls),
            };
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PgStore, PgStoreOptions};
    use coord_core::{NextRequest, PostRequest, Store};
    use coord_testkit::shared_cluster;
    use std::time::Instant;

    #[test]
    fn a_change_of_this_schema_wakes_it_and_silence_lets_it_sleep() {
        let cluster = shared_cluster();
        let options = PgStoreOptions::default().schema(cluster.fresh_schema("wakeup"));
        let store = PgStore::connect(&cluster.url(), options).unwrap();
        let mut wakeup = store.wakeup().unwrap().unwrap();
        let started = Instant::now();
        assert!(!wakeup.wait(Duration::from_millis(300)).unwrap());
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        store.post(&PostRequest::new("boss", "build")).unwrap();
        assert!(wakeup.wait(Duration::from_secs(10)).unwrap());
        // A change that logs nothing (a `next` that found nothing) does not
        // wake it: waiters that `next` would wake themselves for ever.
        let request = NextRequest::new("worker").work_types(["other".to_owned()]);
        store.next(&request).unwrap_err();
        assert!(!wakeup.wait(Duration::from_millis(300)).unwrap());
        // Nor does a change of another schema.
        let other = PgStoreOptions::default().schema(cluster.fresh_schema("wakeup"));
        let other = PgStore::connect(&cluster.url(), other).unwrap();
        other.post(&PostRequest::new("boss", "build")).unwrap();
        assert!(!wakeup.wait(Duration::from_millis(300)).unwrap());
        // A change another reader numbered first still wakes it.
        store.post(&PostRequest::new("boss", "build")).unwrap();
        store.events(0).unwrap();
        assert!(wakeup.wait(Duration::from_secs(10)).unwrap());
        // And another thread can cut a long wait short.
        let interrupt = wakeup.interrupter().unwrap();
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                interrupt();
            });
            assert!(!wakeup.wait(Duration::from_secs(30)).unwrap());
        });
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
