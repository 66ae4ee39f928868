//! How a store behaves: [`PgStoreOptions`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use coord_core::trace::{SpanSink, TraceParent};
use coord_core::{Clock, ConflictPolicy, SeedPolicy, system_clock};

/// How a [`PgStore`](crate::PgStore) behaves; `Default` gives the
/// documented defaults, and a method per field changes one.
#[derive(Clone)]
#[non_exhaustive]
pub struct PgStoreOptions {
    /// The schema holding coord's tables (default `coord`), created if
    /// missing. Stores with different schemas are independent.
    pub schema: String,
    /// How long a change waits for a lock another change holds (default
    /// 10 s), as PostgreSQL's `lock_timeout`.
    pub lock_timeout: Duration,
    /// Which claims exclude each other (default [`SeedPolicy`]). Conflicts
    /// must stay within one work type: exclusion is locked per work type.
    pub policy: Arc<dyn ConflictPolicy>,
    /// The client's clock (default the system's). The store takes from it
    /// only the time elapsed since it last read the database's clock, which
    /// every time it compares or writes comes from.
    pub clock: Clock,
    /// Record acting agents in `coord_agents` (default on).
    pub track_agents: bool,
    /// Append each change's spans (its run and its round trips) to this
    /// file, one JSON object per line (default none).
    pub telemetry_file: Option<PathBuf>,
    /// Where each change's spans go besides the file (an exporter).
    pub span_sink: Option<SpanSink>,
    /// The caller's span, which every change's span is a child of.
    pub trace_parent: Option<TraceParent>,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        PgStoreOptions {
            schema: "coord".to_owned(),
            lock_timeout: Duration::from_secs(10),
            policy: Arc::new(SeedPolicy),
            clock: system_clock(),
            track_agents: true,
            telemetry_file: None,
            span_sink: None,
            trace_parent: None,
        }
    }
}

impl PgStoreOptions {
    coord_core::setters! {
        schema: String,
        lock_timeout: Duration,
        policy: Arc<dyn ConflictPolicy>,
        clock: Clock,
        track_agents: bool,
        telemetry_file: Option<PathBuf>,
        span_sink: Option<SpanSink>,
        trace_parent: Option<TraceParent>,
    }
}

impl fmt::Debug for PgStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStoreOptions")
            .field("schema", &self.schema)
            .field("lock_timeout", &self.lock_timeout)
            .field("policy", &self.policy)
            .field("track_agents", &self.track_agents)
            .field("telemetry_file", &self.telemetry_file)
            .field("trace_parent", &self.trace_parent)
            .finish_non_exhaustive()
    }
}
