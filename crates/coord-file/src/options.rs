//! How a [`FileStore`](crate::FileStore) behaves: [`FileStoreOptions`],
//! and where its warnings go.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{Clock, ConflictPolicy, SeedPolicy, system_clock};
use reactor_file::AtomicWriter;

use coord_core::trace::{SpanSink, TraceParent};

/// Something worth telling a human that is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// A stable name: `lock_broken`, `cleanup_recovered`, `compaction_failed`,
    /// `agent_registry_not_updated`.
    pub kind: &'static str,
    pub message: String,
}

/// Where warnings go; the default logs them with `tracing`.
pub type WarningSink = Arc<dyn Fn(&Warning) + Send + Sync>;

/// How a [`FileStore`](crate::FileStore) behaves; `Default` gives the
/// documented defaults, and a method per field changes one.
#[derive(Clone)]
#[non_exhaustive]
pub struct FileStoreOptions {
    /// How long a writer waits for the directory lock (default 10 s).
    pub lock_timeout: Duration,
    /// Which claims exclude each other (default [`SeedPolicy`]).
    pub policy: Arc<dyn ConflictPolicy>,
    /// Writes the claims file; tests give it a fault injector.
    pub writer: AtomicWriter,
    pub clock: Clock,
    /// Automatic compaction: when a change leaves more than this many
    /// finished items in the claims file (default 256)...
    pub compact_at: usize,
    /// ...all but the newest this many (default 64) move to the archive.
    pub compact_keep: usize,
    /// The event log and the archive are rotated past this size (64 MiB).
    pub rotate_at: u64,
    /// fdatasync the event log before each change commits (default off).
    /// Off, the log survives any process crash and never shows a change that
    /// did not commit, but an OS crash or power loss can lose its last
    /// lines (never the changes). On, it costs a third sync per change.
    pub sync_events: bool,
    /// Run on a network file system anyway (unsafe across machines).
    pub allow_unsafe_filesystem: bool,
    /// Record acting agents in `agent_status.json` (default on).
    pub track_agents: bool,
    /// Also hold the older shell tools' `work_claims.json.lock` while
    /// writing (default on). Off saves a file creation and deletion per
    /// change, for directories no shell tool uses.
    pub shell_lock: bool,
    /// Append every change's spans to `telemetry_spans.jsonl` (default
    /// off in the library; the CLI turns it on unless told not to).
    pub telemetry: bool,
    /// Where spans go instead of the directory's `telemetry_spans.jsonl`.
    pub telemetry_file: Option<PathBuf>,
    /// Where spans go besides the file (an OpenTelemetry exporter).
    pub span_sink: Option<SpanSink>,
    /// The caller's span, which every change's span is a child of (the
    /// CLI reads it from `TRACEPARENT`).
    pub trace_parent: Option<TraceParent>,
    /// Group commit (default on): changes that threads sharing this store
    /// make at once are decided one after another by whichever holds the
    /// lock and written with one durable write (see `group.rs`).
    pub group_commit: bool,
    pub on_warning: WarningSink,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            lock_timeout: Duration::from_secs(10),
            policy: Arc::new(SeedPolicy),
            writer: AtomicWriter::new(),
            clock: system_clock(),
            compact_at: 256,
            compact_keep: 64,
            rotate_at: 64 * 1024 * 1024,
            sync_events: false,
            allow_unsafe_filesystem: false,
            track_agents: true,
            shell_lock: true,
            telemetry: false,
            telemetry_file: None,
            span_sink: None,
            trace_parent: None,
            group_commit: true,
            on_warning: Arc::new(|w: &Warning| tracing::warn!(kind = w.kind, "{}", w.message)),
        }
    }
}

impl FileStoreOptions {
    coord_core::setters! {
        lock_timeout: Duration,
        policy: Arc<dyn ConflictPolicy>,
        writer: AtomicWriter,
        clock: Clock,
        compact_at: usize,
        compact_keep: usize,
        rotate_at: u64,
        sync_events: bool,
        allow_unsafe_filesystem: bool,
        track_agents: bool,
        shell_lock: bool,
        telemetry: bool,
        telemetry_file: Option<PathBuf>,
        span_sink: Option<SpanSink>,
        trace_parent: Option<TraceParent>,
        group_commit: bool,
        on_warning: WarningSink,
    }

    /// How a change appends to the log (after its own settle step).
    pub(crate) fn log(&self) -> crate::events::LogOptions {
        crate::events::LogOptions {
            rotate_at: self.rotate_at,
            sync: self.sync_events,
            settled: true,
        }
    }

    /// How to append outside a change, where the tail may be torn.
    pub(crate) fn unsettled_log(&self) -> crate::events::LogOptions {
        crate::events::LogOptions {
            settled: false,
            ..self.log()
        }
    }
}

impl fmt::Debug for FileStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStoreOptions")
            .field("lock_timeout", &self.lock_timeout)
            .field("policy", &self.policy)
            .field("writer", &self.writer)
            .field("compact_at", &self.compact_at)
            .field("compact_keep", &self.compact_keep)
            .field("rotate_at", &self.rotate_at)
            .field("sync_events", &self.sync_events)
            .field("allow_unsafe_filesystem", &self.allow_unsafe_filesystem)
            .field("track_agents", &self.track_agents)
            .field("shell_lock", &self.shell_lock)
            .field("group_commit", &self.group_commit)
            .field("telemetry", &self.telemetry)
            .field("telemetry_file", &self.telemetry_file)
            .field("trace_parent", &self.trace_parent)
            .finish_non_exhaustive()
    }
}
