//! Which store a command works on: the coordination directory (the
//! default), or a PostgreSQL database when `--database-url` is given.

use std::sync::Arc;

use coord_core::trace::{SpanSink, TraceParent};
use coord_core::{CoordError, Store};
use coord_file::{FileStore, FileStoreOptions, Warning};
use coord_pg::{PgStore, PgStoreOptions};

use crate::cli::Cli;
use crate::output;

#[derive(Debug)]
pub enum Backend {
    File(Box<FileStore>),
    Pg(Box<PgStore>),
}

/// The caller's span, from `TRACEPARENT` (W3C trace context); a value
/// that is not one is ignored, as W3C asks, and a trace of coord's own
/// begins.
fn trace_parent() -> Option<TraceParent> {
    TraceParent::parse(&std::env::var("TRACEPARENT").ok()?)
}

impl Backend {
    /// The store `cli` names; `track_agents` is off for a generated agent
    /// id, which names one call, not an agent worth listing.
    pub fn open(
        cli: &Cli,
        track_agents: bool,
        sink: Option<SpanSink>,
    ) -> Result<Backend, CoordError> {
        if let Some(url) = &cli.database_url {
            let options = PgStoreOptions::default()
                .schema(cli.schema.clone())
                .lock_timeout(cli.lock_timeout)
                .track_agents(track_agents)
                .telemetry_file(cli.telemetry_file.clone().filter(|_| cli.telemetry_on()))
                .span_sink(sink)
                .trace_parent(trace_parent());
            return PgStore::connect(url, options).map(|s| Backend::Pg(Box::new(s)));
        }
        Ok(Backend::File(Box::new(FileStore::with_options(
            &cli.dir,
            FileStoreOptions::default()
                .lock_timeout(cli.lock_timeout)
                .allow_unsafe_filesystem(cli.allow_unsafe_filesystem)
                .compact_at(cli.compact_at)
                .sync_events(cli.sync_events)
                .shell_lock(!cli.no_shell_lock)
                .compact_keep(cli.compact_keep)
                .track_agents(track_agents)
                .telemetry(cli.telemetry_on())
                .telemetry_file(cli.telemetry_file.clone())
                .span_sink(sink)
                .trace_parent(trace_parent())
                .on_warning(Arc::new(|w: &Warning| output::warn(w.kind, &w.message))),
        ))))
    }

    pub fn store(&self) -> &(dyn Store + Sync) {
        match self {
            Backend::File(store) => store.as_ref(),
            Backend::Pg(store) => store.as_ref(),
        }
    }

    /// Where a child of `coord run` / `coord work` finds the same store.
    /// The directory is made absolute, so a child that changes directory
    /// still finds it.
    pub fn child_env(&self, cli: &Cli) -> Vec<(&'static str, String)> {
        match self {
            Backend::File(store) => {
                let dir =
                    std::path::absolute(store.dir()).unwrap_or_else(|_| store.dir().to_owned());
                vec![("COORD_DIR", dir.display().to_string())]
            }
            Backend::Pg(store) => vec![
                (
                    "COORD_DATABASE_URL",
                    cli.database_url.clone().unwrap_or_default(),
                ),
                ("COORD_SCHEMA", store.options().schema.clone()),
            ],
        }
    }
}
