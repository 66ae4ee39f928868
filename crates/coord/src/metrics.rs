//! Metrics of a long-lived `coord` (`coord work --metrics-listen ADDR`),
//! served in Prometheus' text format at any path of that address.
//!
//! Counters and histograms come from the spans the stores produce (one
//! source of truth: whatever a span says, a metric counts), handed over
//! through a `SpanSink`; gauges of the board are read from the store
//! (`Store::stats`) when scraped.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use coord_core::trace::{SpanRecord, SpanSink};
use coord_core::{CoordError, Store};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn new_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// The metrics, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    changes: Family<Labels, Counter>,
    conflicts: Family<Labels, Counter>,
    lock_timeouts: Family<Labels, Counter>,
    compensations: Family<Labels, Counter>,
    change_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    lock_wait_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    step_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    items: Family<Labels, Gauge>,
    items_by_priority: Family<Labels, Gauge>,
    agents: Family<Labels, Gauge>,
    expired_last_hour: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("coord");
        let metrics = Metrics {
            changes: Family::default(),
            conflicts: Family::default(),
            lock_timeouts: Family::default(),
            compensations: Family::default(),
            change_seconds: Family::new_with_constructor(new_histogram),
            lock_wait_seconds: Family::new_with_constructor(new_histogram),
            step_seconds: Family::new_with_constructor(new_histogram),
            items: Family::default(),
            items_by_priority: Family::default(),
            agents: Family::default(),
            expired_last_hour: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "changes",
            "Changes made, by store, change and outcome (ok or the error kind)",
            metrics.changes.clone(),
        );
        registry.register(
            "conflicts",
            "Claims refused for a conflict, by store",
            metrics.conflicts.clone(),
        );
        registry.register(
            "lock_timeouts",
            "Changes that gave up waiting for a lock, by store",
            metrics.lock_timeouts.clone(),
        );
        registry.register(
            "compensations",
            "Saga steps run again by their compensation or undone, by step and kind",
            metrics.compensations.clone(),
        );
        registry.register(
            "change_duration_seconds",
            "How long a whole change took, by store and change",
            metrics.change_seconds.clone(),
        );
        registry.register(
            "lock_wait_seconds",
            "How long a change waited for the directory lock, by store",
            metrics.lock_wait_seconds.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "How long a saga step or a round trip to the database took",
            metrics.step_seconds.clone(),
        );
        registry.register(
            "items",
            "Work items by status, when scraped",
            metrics.items.clone(),
        );
        registry.register(
            "items_by_priority",
            "Work items by priority, when scraped",
            metrics.items_by_priority.clone(),
        );
        registry.register(
            "agents",
            "Agents by state (active, stale, unknown), when scraped",
            metrics.agents.clone(),
        );
        registry.register(
            "expired_last_hour",
            "Leases written down as expired in the last hour, from the event log",
            metrics.expired_last_hour.clone(),
        );
        Arc::new(Metrics {
            registry,
            ..metrics
        })
    }

    /// Counts a change's spans (its own first, then its steps').
    fn record(&self, spans: &[SpanRecord]) {
        let Some(run) = spans.first() else {
            return;
        };
        let text = |key: &str| {
            run.attributes
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let store = text("coord.store");
        let error = text("coord.error");
        let outcome = if error.is_empty() {
            "ok".to_owned()
        } else {
            error.clone()
        };
        self.changes
            .get_or_create(&vec![
                ("store".into(), store.clone()),
                ("change".into(), run.name.clone()),
                ("outcome".into(), outcome),
            ])
            .inc();
        let by_store = vec![("store".to_owned(), store.clone())];
        match error.as_str() {
            "coordination_conflict" => {
                self.conflicts.get_or_create(&by_store).inc();
            }
            "lock_timeout" => {
                self.lock_timeouts.get_or_create(&by_store).inc();
            }
            _ => {}
        }
        let seconds = |us: u64| us as f64 / 1e6;
        self.change_seconds
            .get_or_create(&vec![
                ("store".into(), store.clone()),
                ("change".into(), run.name.clone()),
            ])
            .observe(seconds(run.duration_us));
        if let Some(waited) = run
            .attributes
            .get("coord.lock_wait_us")
            .and_then(|v| v.as_u64())
        {
            self.lock_wait_seconds
                .get_or_create(&vec![("store".into(), store.clone())])
                .observe(seconds(waited));
        }
        for step in &spans[1..] {
            self.step_seconds
                .get_or_create(&vec![
                    ("store".into(), store.clone()),
                    ("step".into(), step.name.clone()),
                ])
                .observe(seconds(step.duration_us));
            for (attribute, kind) in [("coord.retried", "retried"), ("coord.undone", "undone")] {
                if step.attributes.contains_key(attribute) {
                    self.compensations
                        .get_or_create(&vec![
                            ("step".into(), step.name.clone()),
                            ("kind".into(), kind.into()),
                        ])
                        .inc();
                }
            }
        }
    }

    /// What the stores give their spans to.
    pub fn sink(self: &Arc<Self>) -> SpanSink {
        let metrics = Arc::clone(self);
        Arc::new(move |spans: &[SpanRecord]| metrics.record(spans))
    }

    /// The text a scrape gets: the board's gauges read from `store` now.
    fn scrape(&self, store: &dyn Store) -> Result<String, CoordError> {
        let stats = store.stats(Duration::from_secs(300))?;
        let set = |family: &Family<Labels, Gauge>,
                   label: &str,
                   counts: &mut dyn Iterator<Item = (String, u64)>| {
            family.clear();
            for (name, n) in counts {
                family
                    .get_or_create(&vec![(label.to_owned(), name)])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        };
        set(
            &self.items,
            "status",
            &mut stats.items.by_status.clone().into_iter(),
        );
        set(
            &self.items_by_priority,
            "priority",
            &mut stats.items.by_priority.clone().into_iter(),
        );
        set(
            &self.agents,
            "state",
            &mut [
                ("active".to_owned(), stats.agents.active),
                ("stale".to_owned(), stats.agents.stale),
                ("unknown".to_owned(), stats.agents.unknown),
            ]
            .into_iter(),
        );
        self.expired_last_hour
            .set(i64::try_from(stats.last_hour.expired).unwrap_or(i64::MAX));
        let mut text = String::new();
        encode(&mut text, &self.registry)
            .map_err(|e| CoordError::internal(format!("cannot encode the metrics: {e}")))?;
        Ok(text)
    }
}

/// The address to serve on, bound before any work starts (a bad or busy
/// address is an error the caller sees).
pub fn bind(addr: &str) -> Result<TcpListener, CoordError> {
    let parsed: SocketAddr = addr.parse().map_err(|e| {
        CoordError::invalid_input(format!(
            "--metrics-listen {addr:?} is not an address and port: {e}"
        ))
    })?;
    TcpListener::bind(parsed).map_err(|e| {
        CoordError::invalid_input(format!("--metrics-listen {addr}: cannot listen there: {e}"))
    })
}

/// Answers every request on `listener` with the metrics, until `stop`.
pub fn serve(
    listener: &TcpListener,
    metrics: &Metrics,
    store: &dyn Store,
    stop: &dyn Fn() -> bool,
) {
    // Looked at between connections, so a stop is seen within a tick.
    let _ = listener.set_nonblocking(true);
    while !stop() {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, metrics, store),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener failed");
                return;
            }
        }
    }
}

/// One scrape: the request is read up to its blank line and answered with
/// the text format (or a 500 naming the error).
fn answer(stream: TcpStream, metrics: &Metrics, store: &dyn Store) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" && line != "\n" {
        line.clear();
    }
    let (status, body) = match metrics.scrape(store) {
        Ok(text) => ("200 OK", text),
        Err(e) => ("500 Internal Server Error", format!("{e}\n")),
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
