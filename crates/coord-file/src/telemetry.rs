//! Telemetry from the saga engine's middleware: [`TracingMiddleware`]
//! reports every step to `tracing`; [`SpanRecorder`] turns each saga run
//! and its steps into spans, which a directory store appends to
//! `telemetry_spans.jsonl` ([`append_spans`]).
//!
//! A span is one JSON object per line: `trace_id` (32 hex digits),
//! `span_id` (16), `parent_span_id` (or null), `name`, `start` (RFC 3339
//! UTC), `duration_us`, `status` (`ok` or `error`) and `attributes`. A run's
//! span is the parent of its steps' spans; a [`TraceParent`] (W3C trace
//! context, as `TRACEPARENT` carries it) makes the run span a child of the
//! caller's span, in the caller's trace.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use coord_core::trace::{SpanRecord, TraceParent, span_id, trace_id};
use coord_core::{Clock, Timestamp};
use reactor::Middleware;
use reactor_file::AtomicWriter;
use serde_json::{Map, Value, json};

/// The span file inside the coordination directory.
pub const SPANS_FILE: &str = "telemetry_spans.jsonl";

/// The span file is rotated past this size, as the event log is.
const ROTATE_AT: u64 = 64 * 1024 * 1024;

/// Reports every workflow step to `tracing`: spans of work at `debug`,
/// failures and rollbacks at `warn`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingMiddleware;

impl<E: std::fmt::Display> Middleware<E> for TracingMiddleware {
    fn before_step(&self, step: &str) {
        tracing::debug!(step, "step started");
    }

    fn after_step(&self, step: &str, elapsed: Duration) {
        tracing::debug!(
            step,
            elapsed_us = elapsed.as_micros() as u64,
            "step finished"
        );
    }

    fn on_error(&self, step: &str, error: &E, attempt: u32) {
        tracing::debug!(step, attempt, %error, "step failed");
    }

    fn on_retry(&self, step: &str, attempt: u32) {
        tracing::info!(step, attempt, "step retried by its compensation");
    }

    fn on_undo(&self, step: &str, result: Result<(), &E>) {
        match result {
            Ok(()) => tracing::info!(step, "step undone"),
            Err(error) => tracing::warn!(step, %error, "undo failed"),
        }
    }
}

/// A span while it is open.
struct Open {
    id: u64,
    name: String,
    start: Timestamp,
    attributes: Map<String, Value>,
    failed: bool,
}

/// What the recorder holds: the run's span and its steps', open or done.
#[derive(Default)]
struct Spans {
    run: Option<Open>,
    run_done: Option<(Open, Duration)>,
    step: Option<Open>,
    /// Finished steps, with the name each ran as (for its undo).
    done: Vec<(Open, Duration)>,
}

/// A middleware that records a saga run as a span, with a span per step
/// under it. One recorder per run: [`SpanRecorder::finish`] hands the spans
/// over.
pub struct SpanRecorder {
    trace_id: u128,
    parent: Option<u64>,
    clock: Clock,
    spans: RefCell<Spans>,
}

impl std::fmt::Debug for SpanRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanRecorder")
            .field("trace_id", &format_args!("{:032x}", self.trace_id))
            .finish_non_exhaustive()
    }
}

impl SpanRecorder {
    /// A recorder whose run span joins `parent`'s trace, or starts a trace
    /// of its own.
    pub fn new(parent: Option<TraceParent>, clock: Clock) -> SpanRecorder {
        SpanRecorder {
            trace_id: parent.map_or_else(trace_id, |p| p.trace_id),
            parent: parent.map(|p| p.span_id),
            clock,
            spans: RefCell::new(Spans::default()),
        }
    }

    fn open(&self, name: &str) -> Open {
        Open {
            id: span_id(),
            name: name.to_owned(),
            start: (self.clock)(),
            attributes: Map::new(),
            failed: false,
        }
    }

    /// The run's spans, the run's first, with `attributes` added to the
    /// run's (the item's ids, work type and so on, known once it ended).
    /// Empty if no saga ran.
    pub fn finish(&self, attributes: Map<String, Value>) -> Vec<SpanRecord> {
        let mut spans = self.spans.borrow_mut();
        let Some((mut run, run_elapsed)) = spans.run_done.take() else {
            return Vec::new();
        };
        run.attributes.extend(attributes);
        let record = |open: Open, elapsed: Duration, parent: Option<u64>| SpanRecord {
            trace_id: format!("{:032x}", self.trace_id),
            span_id: format!("{:016x}", open.id),
            parent_span_id: parent.map(|p| format!("{p:016x}")),
            name: open.name,
            start: open.start,
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            status: if open.failed { "error" } else { "ok" },
            attributes: open.attributes,
        };
        let run_id = run.id;
        let mut out = vec![record(run, run_elapsed, self.parent)];
        out.extend(
            spans
                .done
                .drain(..)
                .map(|(open, elapsed)| record(open, elapsed, Some(run_id))),
        );
        out
    }
}

impl<E: std::fmt::Display> Middleware<E> for SpanRecorder {
    fn saga_started(&self, name: &'static str) {
        let run = self.open(name);
        self.spans.borrow_mut().run = Some(run);
    }

    fn saga_finished(&self, _name: &'static str, elapsed: Duration, outcome: Result<(), &str>) {
        let mut spans = self.spans.borrow_mut();
        // A step whose failure stood never finished: it ends with the run.
        if let Some(step) = spans.step.take() {
            let took = (self.clock)().saturating_duration_since(step.start);
            spans.done.push((step, took));
        }
        let Some(mut run) = spans.run.take() else {
            return;
        };
        if let Err(step) = outcome {
            run.failed = true;
            run.attributes
                .insert("coord.failed_step".into(), json!(step));
        }
        spans.run_done = Some((run, elapsed));
    }

    fn before_step(&self, step: &str) {
        let open = self.open(step);
        self.spans.borrow_mut().step = Some(open);
    }

    fn after_step(&self, _step: &str, elapsed: Duration) {
        let mut spans = self.spans.borrow_mut();
        if let Some(open) = spans.step.take() {
            spans.done.push((open, elapsed));
        }
    }

    fn on_error(&self, _step: &str, error: &E, attempt: u32) {
        if let Some(open) = self.spans.borrow_mut().step.as_mut() {
            open.attributes
                .insert("coord.attempts".into(), json!(attempt));
            open.attributes
                .insert("coord.error".into(), json!(error.to_string()));
            open.failed = true;
        }
    }

    fn on_retry(&self, _step: &str, attempt: u32) {
        // Its compensation runs it again: not failed unless that fails.
        if let Some(open) = self.spans.borrow_mut().step.as_mut() {
            open.attributes
                .insert("coord.retried".into(), json!(attempt));
            open.failed = false;
        }
    }

    fn on_undo(&self, step: &str, result: Result<(), &E>) {
        let mut spans = self.spans.borrow_mut();
        let Some((open, _)) = spans.done.iter_mut().rev().find(|(o, _)| o.name == step) else {
            return;
        };
        match result {
            Ok(()) => {
                open.attributes.insert("coord.undone".into(), json!(true));
            }
            Err(e) => {
                open.attributes.insert("coord.undone".into(), json!(false));
                open.attributes
                    .insert("coord.undo_error".into(), json!(e.to_string()));
            }
        }
    }
}

/// Appends `spans` to the span file at `path`, one line each, without a
/// sync and all or nothing (a full disk leaves no part of a line); past
/// 64 MiB the file is rotated first. A file that does not end in a
/// newline (another tool's object, cut short) gets one first, so every line
/// coord writes is whole.
pub fn append_spans(
    path: &Path,
    spans: &[SpanRecord],
    writer: &AtomicWriter,
) -> std::io::Result<()> {
    if spans.is_empty() {
        return Ok(());
    }
    let mut text = Vec::new();
    for span in spans {
        serde_json::to_writer(&mut text, span).expect("a span always serialises");
        text.push(b'\n');
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= ROTATE_AT) {
        reactor_file::rotate(path, "jsonl")?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            text.insert(0, b'\n');
        }
    }
    writer
        .append(path, &mut file, len, &text, false)
        .map_err(|f| f.source)
}
