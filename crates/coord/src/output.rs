//! What goes to stdout and stderr, and the exit codes.
//!
//! JSON by default, everywhere (pipes and terminals alike); `--human` swaps
//! in short lines for people, never for scripts.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coord_core::{Claim, CoordError, ErrorKind, Event, SAFETY_POLL, Stats, Status, Store};

use crate::cli::LogArgs;
use serde_json::{Value, json};

/// Whether output is for people (`--human`); set once, at start.
static HUMAN: AtomicBool = AtomicBool::new(false);

pub fn set_human(on: bool) {
    HUMAN.store(on, Ordering::Relaxed);
}

fn human() -> bool {
    HUMAN.load(Ordering::Relaxed)
}

/// The longest a line for people gets when stdout is not a terminal
/// (on a terminal: its width).
const HUMAN_LINE_MAX: usize = 200;

/// Text from a store (or anyone) made safe for a terminal, on one line:
/// control characters (escape sequences, newlines, tabs) shown escaped
/// (`\u{1b}`, `\n`), everything else as it is.
pub fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `line` cut to `max` characters, the cut marked with an ellipsis.
pub fn cut(line: &str, max: usize) -> String {
    match line.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if line.chars().count() > max => format!("{}…", &line[..at]),
        _ => line.to_owned(),
    }
}

/// How wide a line for people may be: the terminal's width, or
/// [`HUMAN_LINE_MAX`].
fn line_width() -> usize {
    if io::stdout().is_terminal()
        && let Ok((width, _)) = ratatui::crossterm::terminal::size()
        && width > 0
    {
        return usize::from(width);
    }
    HUMAN_LINE_MAX
}

/// One work item on one line, for people: safe text, cut to the width.
fn claim_line(c: &Claim) -> String {
    let mut parts = vec![
        safe(&c.work_item_id),
        c.status.to_string(),
        format!("{} ({})", safe(&c.work_type), c.priority),
    ];
    parts.extend(c.agent_id.as_ref().map(|a| format!("held by {}", safe(a))));
    parts.extend(c.fence.map(|f| format!("fence {f}")));
    if c.status == Status::InProgress {
        let lapsed = c.extra.get("lease_lapsed") == Some(&Value::Bool(true));
        parts.extend(c.lease_expires_at.map(|t| {
            if lapsed {
                format!("lease lapsed at {t}")
            } else {
                format!("lease until {t}")
            }
        }));
    }
    parts.extend(c.progress.map(|p| format!("{p}%")));
    parts.extend(c.result.as_ref().map(|r| format!("result: {}", safe(r))));
    parts.extend(c.reason.as_ref().map(|r| format!("reason: {}", safe(r))));
    if !c.description.is_empty() {
        parts.push(format!("- {}", safe(&c.description)));
    }
    cut(&parts.join("  "), line_width())
}

/// `coord agents --human`: a table, one agent a line.
fn agents_table(agents: &[Value]) -> String {
    if agents.is_empty() {
        return "no agents".to_owned();
    }
    let field = |a: &Value, key: &str| match &a[key] {
        Value::Null => "-".to_owned(),
        Value::String(s) => safe(s),
        other => safe(&other.to_string()),
    };
    let mut lines = vec![format!(
        "{:<28} {:<8} {:<28} {:<12} {:<8} {}",
        "agent", "status", "last seen", "team", "capacity", "holds"
    )];
    for a in agents {
        let holds: Vec<String> = a["holds"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).map(safe).collect())
            .unwrap_or_default();
        let line = format!(
            "{:<28} {:<8} {:<28} {:<12} {:<8} {}",
            field(a, "agent_id"),
            field(a, "status"),
            field(a, "last_seen"),
            field(a, "team"),
            field(a, "capacity"),
            if holds.is_empty() {
                "-".to_owned()
            } else {
                holds.join(", ")
            },
        );
        lines.push(cut(&line, line_width()));
    }
    lines.join("\n")
}

/// `coord stats --human`: a few aligned sections.
fn stats_table(s: &Stats) -> String {
    let counts = |title: &str, map: &std::collections::BTreeMap<String, u64>| {
        let mut out = format!("{title}:");
        if map.is_empty() {
            out.push_str(" none");
        }
        for (name, n) in map {
            out.push_str(&format!("\n  {:<24} {n:>8}", safe(name)));
        }
        out
    };
    let activity = |title: &str, a: &coord_core::Activity| {
        format!(
            "{title}: posted {}, claimed {}, completed {}, failed {}, requeued {}, released {}, expired {}, cancelled {}, retried {}",
            a.posted,
            a.claimed,
            a.completed,
            a.failed,
            a.requeued,
            a.released,
            a.expired,
            a.cancelled,
            a.retried
        )
    };
    let mut lines = vec![
        format!("at {}: {} items", s.at, s.items.total),
        counts("by status", &s.items.by_status),
        counts("by priority", &s.items.by_priority),
        counts("by work type", &s.items.by_work_type),
        counts("live claims by agent", &s.items.live_by_agent),
    ];
    lines.push(match &s.oldest_live {
        Some(o) => format!(
            "oldest live claim: {} ({}) held by {} for {}s",
            safe(&o.work_item_id),
            safe(&o.work_type),
            safe(o.agent_id.as_deref().unwrap_or("nobody")),
            o.age_s
        ),
        None => "oldest live claim: none".to_owned(),
    });
    lines.push(format!(
        "leases ending within a minute: {}",
        s.expiring_within_minute
    ));
    lines.push(format!(
        "agents: {} active, {} stale, {} unknown",
        s.agents.active, s.agents.stale, s.agents.unknown
    ));
    lines.push(activity("last hour", &s.last_hour));
    lines.push(activity("last day", &s.last_day));
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    lines.push(format!(
        "wait from post to take (last day, {} items): p50 {}, p95 {}",
        s.wait.samples,
        ms(s.wait.p50_ms),
        ms(s.wait.p95_ms)
    ));
    if !s.paused.is_empty() {
        lines.push(format!("paused: {}", safe(&s.paused.join(", "))));
    }
    lines.join("\n")
}

/// One event on one line, for people.
fn event_line(e: &Event) -> String {
    let or_dash = |s: Option<String>| s.unwrap_or_else(|| "-".to_owned());
    // The event's name as the JSON spells it (`claimed`, `lock_broken`).
    let kind = serde_json::to_value(e.event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut line = format!(
        "{}  {kind}  {}  {} -> {}  by {}",
        e.time,
        or_dash(e.work_item_id.as_deref().map(safe)),
        or_dash(e.from.map(|s| s.to_string())),
        or_dash(e.to.map(|s| s.to_string())),
        or_dash(e.agent.as_deref().map(safe)),
    );
    if let Some(f) = e.fence {
        line.push_str(&format!("  fence {f}"));
    }
    if e.forced {
        line.push_str("  (forced)");
    }
    if let Some(r) = &e.reason {
        line.push_str(&format!("  reason: {}", safe(r)));
    }
    cut(&line, line_width())
}

pub enum Output {
    One(Box<Claim>),
    Many(Vec<Claim>),
    Value(Value),
    Stats(Box<Stats>),
    /// `coord agents`: their entries (a table for people).
    Agents(Vec<Value>),
    /// `coord show` of an archived item: as it stood, `"archived": true`.
    Archived(Value),
    /// Text as it is (`dashboard --once`).
    Text(String),
    /// Nothing to print (the live dashboard drew its own).
    Nothing,
}

/// The exit code of each error kind: part of the CLI contract.
pub fn exit_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Conflict => 3,
        ErrorKind::NotFound => 4,
        ErrorKind::LockTimeout => 5,
        ErrorKind::ValidationFailed => 6,
        ErrorKind::FileRead | ErrorKind::AtomicWriteFailed => 7,
        ErrorKind::LeaseExpired => 8,
        ErrorKind::NotOwner => 9,
        ErrorKind::NothingToTake => 10,
        ErrorKind::UnsafeFilesystem => 11,
        ErrorKind::Database => 12,
        _ => 1,
    }
}

/// Any other answer, for people: an object as `key: value` lines, an
/// array as one line per element (an object's fields as `key=value`), or
/// `none`; text escaped and every line cut to the terminal's width.
fn value_lines(value: &Value) -> String {
    let scalar = |v: &Value| match v {
        Value::String(s) => safe(s),
        other => safe(&other.to_string()),
    };
    let fields = |map: &serde_json::Map<String, Value>, sep: &str| -> Vec<String> {
        map.iter()
            .map(|(k, v)| format!("{}{sep}{}", safe(k), scalar(v)))
            .collect()
    };
    let lines: Vec<String> = match value {
        Value::Object(map) => fields(map, ": "),
        Value::Array(items) if items.is_empty() => vec!["none".to_owned()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(map) => fields(map, "=").join("  "),
                other => scalar(other),
            })
            .collect(),
        other => vec![scalar(other)],
    };
    let width = line_width();
    lines
        .iter()
        .map(|l| cut(l, width))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints `out` as one line of compact JSON (or, with `--human`, lines
/// for people).
pub fn print(out: &Output) -> ExitCode {
    if human() {
        let text = match out {
            Output::One(claim) => claim_line(claim),
            Output::Many(claims) if claims.is_empty() => "no work items".to_owned(),
            Output::Many(claims) => claims.iter().map(claim_line).collect::<Vec<_>>().join("\n"),
            Output::Value(value) => value_lines(value),
            Output::Stats(stats) => stats_table(stats),
            Output::Agents(agents) => agents_table(agents),
            Output::Archived(item) => match serde_json::from_value::<Claim>(item.clone()) {
                Ok(claim) => format!("{}  (archived)", claim_line(&claim)),
                Err(_) => cut(&safe(&item.to_string()), line_width()),
            },
            Output::Text(text) => text.trim_end().to_owned(),
            Output::Nothing => return ExitCode::SUCCESS,
        };
        return match print_line(&text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        };
    }
    let line = match out {
        Output::One(claim) => serde_json::to_string(claim),
        Output::Many(claims) => serde_json::to_string(claims),
        Output::Value(value) => serde_json::to_string(value),
        Output::Stats(stats) => serde_json::to_string(stats),
        Output::Agents(agents) => serde_json::to_string(agents),
        Output::Archived(item) => serde_json::to_string(item),
        Output::Text(text) => Ok(text.trim_end().to_owned()),
        Output::Nothing => return ExitCode::SUCCESS,
    }
    .expect("claims always serialise");
    match print_line(&line) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Writes one line to stdout. A closed pipe (`| head`) ends quietly with
/// success; any other failure to write is an error.
fn print_line(line: &str) -> Result<(), ExitCode> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(ExitCode::SUCCESS),
        Err(e) => {
            let message = format!("cannot write to stdout: {e}");
            eprintln!("{}", json!({"error": "output_failed", "message": message}));
            Err(ExitCode::FAILURE)
        }
    }
}

/// Writes `line` and a newline to stderr in one write: stderr is
/// unbuffered, and a line written piecewise could interleave with another
/// process's on a shared pipe.
fn stderr_line(line: &str) {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    let _ = io::stderr().lock().write_all(buf.as_bytes());
}

/// Reports a command line clap refused and returns its exit code (2). To
/// a terminal clap prints it itself, in colour; elsewhere (an agent, a
/// script, a log) it goes out in one write, like every other stderr line,
/// so it cannot interleave with another process's output. `--help` and
/// `--version` are clap's as well.
pub fn usage_error(error: clap::Error) -> ExitCode {
    if !error.use_stderr() || io::stderr().is_terminal() {
        error.exit();
    }
    let text = error.render().to_string();
    let _ = io::stderr().lock().write_all(text.as_bytes());
    ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
}

/// A warning: one line of JSON on stderr, `{"warning": KIND, "message": ...}`.
pub fn warn(kind: &str, message: &str) {
    stderr_line(&json!({"warning": kind, "message": message}).to_string());
}

/// Prints the event log, one event per line; with `follow`, keeps polling
/// for new events until stdout closes or the process is stopped.
/// How long `log --follow` keeps trying to read again after losing its
/// database connection.
const FOLLOW_PATIENCE: Duration = Duration::from_secs(30);

pub fn follow_log(store: &dyn Store, args: &LogArgs) -> ExitCode {
    let follow = args.follow;
    let since = args.since.map(|s| s.at(store.now()));
    let wanted = |e: &Event| {
        args.work_item
            .as_ref()
            .is_none_or(|id| e.work_item_id.as_ref() == Some(id))
            && since.is_none_or(|t| e.time >= t)
    };
    let mut first = true;
    // The waiter starts before the first read, so no change slips between
    // a read and the wait after it.
    let waiting = if follow { store.wakeup() } else { Ok(None) };
    let mut wakeup = match waiting {
        Ok(wakeup) => wakeup,
        Err(e) => return fail(&e),
    };
    let mut cursor = 0;
    loop {
        // A follower outlives a dropped connection: reading from a cursor
        // can be repeated, and the store opens a new connection.
        let page = match store.events(cursor) {
            Ok(page) => page,
            Err(e) if follow && e.kind() == ErrorKind::Database => {
                // Read again on a new connection, with backoff for a while
                // (the server may be busy or restarting).
                let mut delays = coord_core::RetryPolicy::wait_for(FOLLOW_PATIENCE).delays();
                loop {
                    match store.events(cursor) {
                        Ok(page) => break page,
                        Err(e) if e.kind() == ErrorKind::Database => match delays.next() {
                            Some(delay) => std::thread::sleep(delay),
                            None => return fail(&e),
                        },
                        Err(e) => return fail(&e),
                    }
                }
            }
            Err(e) => return fail(&e),
        };
        let mut shown: Vec<&Event> = page.events.iter().filter(|e| wanted(e)).collect();
        if first && let Some(n) = args.last {
            shown.drain(..shown.len().saturating_sub(n));
        }
        first = false;
        for event in shown {
            let line = if human() {
                event_line(event)
            } else {
                serde_json::to_string(event).expect("an event always serialises")
            };
            if let Err(code) = print_line(&line) {
                return code;
            }
        }
        cursor = page.cursor;
        if !follow {
            return ExitCode::SUCCESS;
        }
        match &mut wakeup {
            // Until woken, or `SAFETY_POLL` passed (a store's wait may end
            // sooner, with nothing new).
            Some(wakeup) => {
                let started = std::time::Instant::now();
                loop {
                    match wakeup.wait(SAFETY_POLL.saturating_sub(started.elapsed())) {
                        Ok(false) if started.elapsed() < SAFETY_POLL => {}
                        Ok(_) => break,
                        Err(e) => return fail(&e),
                    }
                }
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Prints `error` as one line of JSON on stderr and returns its exit code.
pub fn fail(error: &CoordError) -> ExitCode {
    fail_with(error, Vec::new())
}

/// [`fail`], with `more` context fields in the error's JSON.
pub fn fail_with(error: &CoordError, more: Vec<(&str, Value)>) -> ExitCode {
    let mut body = json!({
        "error": error.kind().as_str(),
        "message": error.to_string(),
    });
    let path = |p: &std::path::Path| json!(p.display().to_string());
    let extra: Vec<(&str, Value)> = match error {
        CoordError::Conflict {
            work_type,
            conflicting_work_item_id,
        } => vec![
            ("work_type", json!(work_type)),
            ("conflicting_work_item_id", json!(conflicting_work_item_id)),
        ],
        CoordError::NotFound { work_item_id } | CoordError::LeaseExpired { work_item_id, .. } => {
            vec![("work_item_id", json!(work_item_id))]
        }
        CoordError::LockTimeout { lock, waited } => {
            vec![
                ("path", json!(lock.to_string())),
                ("waited_ms", json!(waited.as_millis() as u64)),
            ]
        }
        CoordError::ValidationFailed { reason, .. } => vec![("reason", json!(reason.as_str()))],
        CoordError::FileRead { path: p, .. } | CoordError::AtomicWriteFailed { path: p, .. } => {
            vec![("path", path(p))]
        }
        CoordError::NotOwner {
            work_item_id,
            owner,
            ..
        } => vec![
            ("work_item_id", json!(work_item_id)),
            ("owner", json!(owner)),
        ],
        CoordError::NothingToTake { work_types } => vec![("work_types", json!(work_types))],
        CoordError::UnsafeFilesystem {
            path: p,
            filesystem,
        } => {
            vec![("path", path(p)), ("filesystem", json!(filesystem))]
        }
        _ => Vec::new(),
    };
    for (key, value) in extra.into_iter().chain(more) {
        body[key] = value;
    }
    if human() {
        let message = safe(&error.to_string());
        stderr_line(&format!("error[{}]: {message}", error.kind().as_str()));
    } else {
        stderr_line(&body.to_string());
    }
    ExitCode::from(exit_code(error.kind()))
}
