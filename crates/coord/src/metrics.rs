//! Metrics of a long-lived `coord` (`coord work`): served in Prometheus'
//! text format at any path of `--metrics-listen ADDR`, and sent over OTLP
//! when the environment configures it (`otlp::MetricsExporter`, which
//! encodes a [`Snapshot`]; `runner::Published` ties the two to a worker).
//!
//! Counters and histograms come from the spans the stores produce (one
//! source of truth: whatever a span says, a metric counts), handed over
//! through a `SpanSink` and kept here as cumulative totals; gauges of the
//! board are read from the store (`Store::stats`) for each snapshot. A
//! [`Snapshot`] is what both exports encode.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord_core::trace::{SpanRecord, SpanSink};
use coord_core::{CoordError, Store, Timestamp};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// A metric's labels, in the order given.
pub type Labels = Vec<(String, String)>;

/// What a metric measures, as both exports describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Seconds, in [`bounds`]' buckets.
    Histogram,
}

/// One metric: its name without the `coord_` prefix, its help text, its kind.
#[derive(Debug, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

const fn def(name: &'static str, help: &'static str, kind: Kind) -> Def {
    Def { name, help, kind }
}

const CHANGES: Def = def(
    "changes",
    "Changes made, by store, change and outcome (ok or the error kind)",
    Kind::Counter,
);
const CONFLICTS: Def = def(
    "conflicts",
    "Claims refused for a conflict, by store",
    Kind::Counter,
);
const LOCK_TIMEOUTS: Def = def(
    "lock_timeouts",
    "Changes that gave up waiting for a lock, by store",
    Kind::Counter,
);
const RETRIES: Def = def(
    "retries",
    "Changes made again by a retry (--retry, --wait-for, a record retried after a lost answer), by store and change",
    Kind::Counter,
);
const EXPIRATIONS: Def = def(
    "expirations",
    "Lapsed leases written down (expired, requeued or failed), by store",
    Kind::Counter,
);
const COMPENSATIONS: Def = def(
    "compensations",
    "Saga steps run again by their compensation or undone, by step and kind",
    Kind::Counter,
);
const CHANGE_SECONDS: Def = def(
    "change_duration_seconds",
    "How long a whole change took, by store and change",
    Kind::Histogram,
);
const LOCK_WAIT_SECONDS: Def = def(
    "lock_wait_seconds",
    "How long a change waited for locks, by store (PostgreSQL: the round trips that wait for locks)",
    Kind::Histogram,
);
const STEP_SECONDS: Def = def(
    "step_duration_seconds",
    "How long a saga step or a round trip to the database took",
    Kind::Histogram,
);
const ITEMS: Def = def("items", "Work items by status, when read", Kind::Gauge);
const ITEMS_BY_PRIORITY: Def = def(
    "items_by_priority",
    "Work items by priority, when read",
    Kind::Gauge,
);
const AGENTS: Def = def(
    "agents",
    "Agents by state (active, stale, unknown), when read",
    Kind::Gauge,
);
const EXPIRED_LAST_HOUR: Def = def(
    "expired_last_hour",
    "Leases written down as expired in the last hour, from the event log",
    Kind::Gauge,
);

/// Every metric, in the order the exports list them.
const ALL: [&Def; 13] = [
    &CHANGES,
    &CONFLICTS,
    &LOCK_TIMEOUTS,
    &RETRIES,
    &EXPIRATIONS,
    &COMPENSATIONS,
    &CHANGE_SECONDS,
    &LOCK_WAIT_SECONDS,
    &STEP_SECONDS,
    &ITEMS,
    &ITEMS_BY_PRIORITY,
    &AGENTS,
    &EXPIRED_LAST_HOUR,
];

/// The histograms' bucket bounds in seconds: 50 µs to about 26 s.
pub fn bounds() -> [f64; 20] {
    std::array::from_fn(|i| 0.000_05 * f64::powi(2.0, i as i32))
}

/// A metric's value at one set of labels.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(u64),
    Gauge(i64),
    /// `buckets[i]` counts the values in bucket `i` alone (not
    /// cumulative); one more bucket than [`bounds`], for the rest.
    Histogram {
        count: u64,
        sum: f64,
        buckets: Vec<u64>,
    },
}

/// One metric at one set of labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub def: &'static Def,
    pub labels: Labels,
    pub value: Value,
}

/// Every metric's points at one moment, the start of the totals with it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub started: Timestamp,
    pub taken: Timestamp,
    pub points: Vec<Point>,
}

/// The cumulative totals, and when they began.
pub struct Metrics {
    totals: Mutex<BTreeMap<(&'static str, Labels), Point>>,
    started: Timestamp,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn gauge_value(n: u64) -> Value {
    Value::Gauge(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            totals: Mutex::new(BTreeMap::new()),
            started: Timestamp::now(),
        })
    }

    /// Adds `by` to the counter `def` at `labels`.
    fn count(&self, def: &'static Def, labels: Labels, by: u64) {
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let point = totals
            .entry((def.name, labels.clone()))
            .or_insert_with(|| Point {
                def,
                labels,
                value: Value::Counter(0),
            });
        if let Value::Counter(n) = &mut point.value {
            *n = n.saturating_add(by);
        }
    }

    /// Observes `seconds` in the histogram `def` at `labels`.
    fn observe(&self, def: &'static Def, labels: Labels, seconds: f64) {
        let bounds = bounds();
        let mut totals = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let point = totals
            .entry((def.name, labels.clone()))
            .or_insert_with(|| Point {
                def,
                labels,
                value: Value::Histogram {
                    count: 0,
                    sum: 0.0,
                    buckets: vec![0; bounds.len() + 1],
                },
            });
        if let Value::Histogram {
            count,
            sum,
            buckets,
        } = &mut point.value
        {
            *count += 1;
            *sum += seconds;
            let bucket = bounds
                .iter()
                .position(|b| seconds <= *b)
                .unwrap_or(bounds.len());
            buckets[bucket] += 1;
        }
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
        };
        let number = |key: &str| run.attributes.get(key).and_then(|v| v.as_u64());
        let (store, error, change) = (text("coord.store"), text("coord.error"), run.name.as_str());
        let outcome = if error.is_empty() { "ok" } else { error };
        self.count(
            &CHANGES,
            labels([("store", store), ("change", change), ("outcome", outcome)]),
            1,
        );
        match error {
            "coordination_conflict" => self.count(&CONFLICTS, labels([("store", store)]), 1),
            "lock_timeout" => self.count(&LOCK_TIMEOUTS, labels([("store", store)]), 1),
            _ => {}
        }
        if number("coord.attempt").is_some_and(|n| n > 1) {
            self.count(&RETRIES, labels([("store", store), ("change", change)]), 1);
        }
        if let Some(expired) = number("coord.expired") {
            self.count(&EXPIRATIONS, labels([("store", store)]), expired);
        }
        let seconds = |us: u64| us as f64 / 1e6;
        self.observe(
            &CHANGE_SECONDS,
            labels([("store", store), ("change", change)]),
            seconds(run.duration_us),
        );
        if let Some(waited) = number("coord.lock_wait_us") {
            self.observe(
                &LOCK_WAIT_SECONDS,
                labels([("store", store)]),
                seconds(waited),
            );
        }
        for step in &spans[1..] {
            self.observe(
                &STEP_SECONDS,
                labels([("store", store), ("step", &step.name)]),
                seconds(step.duration_us),
            );
            for (attribute, kind) in [("coord.retried", "retried"), ("coord.undone", "undone")] {
                if step.attributes.contains_key(attribute) {
                    self.count(
                        &COMPENSATIONS,
                        labels([("step", &step.name), ("kind", kind)]),
                        1,
                    );
                }
            }
        }
    }

    /// What the stores give their spans to.
    pub fn sink(self: &Arc<Self>) -> SpanSink {
        let metrics = Arc::clone(self);
        Arc::new(move |spans: &[SpanRecord]| metrics.record(spans))
    }

    /// The totals so far and the board's gauges read from `store` now.
    pub fn snapshot(&self, store: &dyn Store) -> Result<Snapshot, CoordError> {
        let stats = store.stats(Duration::from_secs(300))?;
        let mut points: Vec<Point> = self
            .totals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut gauge = |def: &'static Def, label: Option<(&str, &str)>, n: u64| {
            points.push(Point {
                def,
                labels: label.map(|(k, v)| labels([(k, v)])).unwrap_or_default(),
                value: gauge_value(n),
            });
        };
        for (status, n) in &stats.items.by_status {
            gauge(&ITEMS, Some(("status", status)), *n);
        }
        for (priority, n) in &stats.items.by_priority {
            gauge(&ITEMS_BY_PRIORITY, Some(("priority", priority)), *n);
        }
        for (state, n) in [
            ("active", stats.agents.active),
            ("stale", stats.agents.stale),
            ("unknown", stats.agents.unknown),
        ] {
            gauge(&AGENTS, Some(("state", state)), n);
        }
        gauge(&EXPIRED_LAST_HOUR, None, stats.last_hour.expired);
        // In the order of `ALL`, a metric's points together.
        let rank = |def: &Def| ALL.iter().position(|d| *d == def).unwrap_or(ALL.len());
        points.sort_by_key(|p| rank(p.def));
        Ok(Snapshot {
            started: self.started,
            taken: Timestamp::now(),
            points,
        })
    }

    /// The text a scrape gets (Prometheus' text format).
    fn scrape(&self, store: &dyn Store) -> Result<String, CoordError> {
        let mut registry = Registry::with_prefix("coord");
        registry.register_collector(Box::new(self.snapshot(store)?));
        let mut text = String::new();
        encode(&mut text, &registry)
            .map_err(|e| CoordError::internal(format!("cannot encode the metrics: {e}")))?;
        Ok(text)
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let bounds = bounds();
        for def in ALL {
            let points: Vec<&Point> = self.points.iter().filter(|p| p.def == def).collect();
            if points.is_empty() {
                continue;
            }
            let kind = match def.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut family = encoder.encode_descriptor(def.name, def.help, None, kind)?;
            for point in points {
                let metric = family.encode_family(&point.labels)?;
                match &point.value {
                    Value::Counter(n) => ConstCounter::new(*n).encode(metric)?,
                    Value::Gauge(n) => ConstGauge::new(*n).encode(metric)?,
                    Value::Histogram {
                        count,
                        sum,
                        buckets,
                    } => {
                        let upper = bounds.iter().copied().chain([f64::INFINITY]);
                        let buckets: Vec<(f64, u64)> = upper.zip(buckets.iter().copied()).collect();
                        let mut metric = metric;
                        metric.encode_histogram::<NoLabelSet>(*sum, *count, &buckets, None)?;
                    }
                }
            }
        }
        Ok(())
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
