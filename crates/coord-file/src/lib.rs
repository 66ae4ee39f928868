//! `coord-file`: the coordination-directory store.
//!
//! A directory holds `work_claims.json` (a JSON array of work items, one per
//! line), `coord.lock` (an empty file that writers `flock`), the event log,
//! the archive, the agent registry and the answers of recent keyed changes. Every change runs as a [`reactor`]
//! workflow while the lock is held, so the read, the decision and the atomic
//! write are one step for every other process.
//!
//! Architecture invariants:
//! - only [`lock`] takes the directory lock (clippy enforces it);
//! - readers (`get`, `list`, `agents`, `events`) never lock: the atomic
//!   rename means they see a whole file, old or new;
//! - records this store does not change keep their exact bytes;
//! - a file coord cannot parse is never written over.

mod agents;
mod archive;
mod changes;
mod claims_doc;
mod crash;
mod errors;
mod events;
mod fields;
mod fs_check;
mod keys;
pub mod lock;
mod memory;
mod options;
mod state;
mod store;
mod telemetry;

pub use agents::AGENT_FILE;
pub use archive::{ARCHIVE, CLEANUP_INTENT, Recovery};
pub use claims_doc::CLAIMS_FILE;
pub use events::EVENT_LOG;
pub use keys::{KEYS_FILE, MAX_KEYS};
pub use lock::{LEGACY_LOCK_FILE, LOCK_FILE};
pub use options::{FileStoreOptions, Warning, WarningSink};
pub use state::STATE_FILE;
pub use store::FileStore;
pub use telemetry::{SPANS_FILE, SpanRecorder, TracingMiddleware, append_spans};

/// The files coord replaces through temp (or staging) files: a change sweeps
/// what killed writers of any of them left behind.
const SWEPT: [&str; 6] = [
    CLAIMS_FILE,
    keys::KEYS_FILE,
    AGENT_FILE,
    STATE_FILE,
    CLEANUP_INTENT,
    LEGACY_LOCK_FILE,
];
