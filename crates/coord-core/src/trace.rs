//! Spans: [`SpanRecord`] (one finished span, the JSON line coord writes
//! to a span file), [`TraceParent`] (W3C trace context, as `TRACEPARENT`
//! carries it), [`RunSpans`] (a change's span and its children's, for a
//! store that is not driven by the saga engine's middleware) and the
//! attributes a change's span gets: the item it ended with, the leases it
//! wrote down, and which attempt of a retried call it was.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::CoordError;
use crate::event::{Event, EventKind};
use crate::model::Claim;
use crate::time::{Clock, Timestamp};

/// The caller's place in a trace (W3C trace context): its trace id and the
/// id of the span that calls coord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
}

impl TraceParent {
    /// Parses a `traceparent` header value: `00-<32 hex>-<16 hex>-<2 hex>`
    /// (a later version's extra fields are allowed). `None` for anything
    /// else, or an all-zero id: the caller's trace is then not joined.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        let known_version = version == "00" && parts.next().is_none();
        if !hex(version, 2) || version == "ff" || !(known_version || version != "00") {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent { trace_id, span_id })
    }

    /// The `traceparent` value naming `span_id` in this trace.
    pub fn child(&self, span_id: u64) -> String {
        format!("00-{:032x}-{span_id:016x}-01", self.trace_id)
    }
}

/// One finished span, as a line of the span file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub start: Timestamp,
    pub duration_us: u64,
    pub status: &'static str,
    pub attributes: Map<String, Value>,
}

/// Where finished spans go besides a file (an exporter, say); called
/// once per change with its spans, the change's first.
pub type SpanSink = std::sync::Arc<dyn Fn(&[SpanRecord]) + Send + Sync>;

thread_local! {
    /// The `traceparent` of the change span this thread recorded last.
    static LAST_RUN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// Which attempt of a retried call this thread is making (0 outside
    /// [`crate::RetryPolicy::run`]).
    static ATTEMPT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs `op` as attempt number `attempt` (1 for the first) of a retried
/// call: the spans of the changes it makes say so (`coord.attempt`).
pub fn with_attempt<T>(attempt: u32, op: impl FnOnce() -> T) -> T {
    let outer = ATTEMPT.with(|a| a.replace(attempt));
    let result = op();
    ATTEMPT.with(|a| a.set(outer));
    result
}

/// The events that wrote down a lapsed lease among `events`, as the
/// change's `coord.expired` attribute (nothing when there are none).
pub fn expired_attribute(events: &[Event], attributes: &mut Map<String, Value>) {
    let expired = events
        .iter()
        .filter(|e| e.event == EventKind::Expired)
        .count();
    if expired > 0 {
        attributes.insert("coord.expired".into(), expired.into());
    }
}

/// Remembers `spans`' first (a change's own span) as this thread's last,
/// for `Store::trace_parent`.
pub fn remember_run(spans: &[SpanRecord]) {
    if let Some(run) = spans.first() {
        let parent = format!("00-{}-{}-01", run.trace_id, run.span_id);
        LAST_RUN.with(|last| *last.borrow_mut() = Some(parent));
    }
}

/// The `traceparent` of the change span this thread recorded last.
pub fn last_run() -> Option<String> {
    LAST_RUN.with(|last| last.borrow().clone())
}

/// A span id: random, never zero (W3C reserves the all-zero id).
pub fn span_id() -> u64 {
    fastrand::u64(1..)
}

/// A trace id for a trace of coord's own.
pub fn trace_id() -> u128 {
    fastrand::u128(1..)
}

/// A span that ended: what its record holds besides the ids.
struct Ended {
    name: String,
    start: Timestamp,
    duration: Duration,
    ok: bool,
    attributes: Map<String, Value>,
}

/// A change's span and its children's, collected as they end.
pub struct RunSpans {
    trace_id: u128,
    parent: Option<u64>,
    id: u64,
    name: String,
    start: Timestamp,
    clock: Clock,
    children: Vec<SpanRecord>,
}

impl std::fmt::Debug for RunSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpans")
            .field("name", &self.name)
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

impl RunSpans {
    /// The span of the change `name`, begun now: a child of `parent` in its
    /// trace, or the root of a trace of its own.
    pub fn start(name: &str, parent: Option<TraceParent>, clock: Clock) -> RunSpans {
        RunSpans {
            trace_id: parent.map_or_else(trace_id, |p| p.trace_id),
            parent: parent.map(|p| p.span_id),
            id: span_id(),
            name: name.to_owned(),
            start: clock(),
            clock,
            children: Vec::new(),
        }
    }

    fn record(&self, id: u64, parent: Option<u64>, ended: Ended) -> SpanRecord {
        SpanRecord {
            trace_id: format!("{:032x}", self.trace_id),
            span_id: format!("{id:016x}"),
            parent_span_id: parent.map(|p| format!("{p:016x}")),
            name: ended.name,
            start: ended.start,
            duration_us: u64::try_from(ended.duration.as_micros()).unwrap_or(u64::MAX),
            status: if ended.ok { "ok" } else { "error" },
            attributes: ended.attributes,
        }
    }

    /// A child span that began at `start` and took `duration`.
    pub fn child(
        &mut self,
        name: &str,
        start: Timestamp,
        duration: Duration,
        ok: bool,
        attributes: Map<String, Value>,
    ) {
        let ended = Ended {
            name: name.to_owned(),
            start,
            duration,
            ok,
            attributes,
        };
        let record = self.record(span_id(), Some(self.id), ended);
        self.children.push(record);
    }

    /// The change's span, ended now with `attributes`, then its children.
    pub fn finish(self, ok: bool, attributes: Map<String, Value>) -> Vec<SpanRecord> {
        let ended = Ended {
            name: self.name.clone(),
            start: self.start,
            duration: (self.clock)().saturating_duration_since(self.start),
            ok,
            attributes,
        };
        let run = self.record(self.id, self.parent, ended);
        let mut spans = vec![run];
        spans.extend(self.children);
        spans
    }
}

/// The attributes of a change's span: what it ended with (`result`), by
/// `agent`, on `store` (`directory`, `postgresql`).
pub fn outcome_attributes<T>(
    agent: Option<&str>,
    store: &str,
    result: &Result<T, CoordError>,
    describe: impl Fn(&T, &mut Map<String, Value>),
) -> Map<String, Value> {
    let mut attributes = Map::new();
    if let Some(agent) = agent {
        attributes.insert("coord.agent".into(), agent.into());
    }
    attributes.insert("coord.store".into(), store.into());
    let attempt = ATTEMPT.with(std::cell::Cell::get);
    if attempt > 1 {
        attributes.insert("coord.attempt".into(), attempt.into());
    }
    match result {
        Ok(value) => describe(value, &mut attributes),
        Err(e) => {
            attributes.insert("coord.error".into(), e.kind().as_str().into());
        }
    }
    attributes
}

/// The attributes of a span whose change ended with `claim`.
pub fn item_attributes(claim: &Claim, attributes: &mut Map<String, Value>) {
    let mut put = |key: &str, value: Value| {
        attributes.insert(key.to_owned(), value);
    };
    put("coord.work_item_id", claim.work_item_id.as_str().into());
    put("coord.work_type", claim.work_type.as_str().into());
    put("coord.priority", json!(claim.priority));
    put("coord.status", json!(claim.status));
    if let Some(id) = &claim.coordination_id {
        put("coord.coordination_id", id.as_str().into());
    }
    if let Some(owner) = &claim.agent_id {
        put("coord.owner", owner.as_str().into());
    }
    if let Some(fence) = claim.fence {
        put("coord.fence", fence.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_read_as_w3c_writes_it() {
        let p = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("the W3C example");
        assert_eq!(
            p.child(0x00f0_67aa_0ba9_02b7),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
