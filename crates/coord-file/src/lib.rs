//! `coord-file`: the coordination-directory store.
//!
//! A directory holds `work_claims.json` (a JSON array of work items, one per
//! line), `coord.lock` (an empty file that writers `flock`), the event log,
//! the archive, the agent registry, the answers of recent keyed changes and
//! the paused work types. Every change runs as a [`reactor`] workflow while
//! the lock is held, so the read, the decision and the atomic write are one
//! step for every other process.
//!
//! Claiming work, and a worker's loop over the queue:
//!
//! ```
//! use coord_core::{Action, Actor, ClaimRequest, ErrorKind, NextRequest, PostRequest, Priority, Store};
//! use coord_file::FileStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::new(dir.path().join("agent_coordination"));
//!
//! // High-priority work is exclusive per work type: a second claim conflicts.
//! let deploy = store.claim(&ClaimRequest::new("agent-1", "deploy").priority(Priority::High))?;
//! let second = store.claim(&ClaimRequest::new("agent-2", "deploy").priority(Priority::High));
//! assert_eq!(second.unwrap_err().kind(), ErrorKind::Conflict);
//! let done = Action::Complete { result: Some("shipped".into()) };
//! store.act(&deploy.work_item_id, &done, &Actor::new("agent-1").fence(deploy.fence))?;
//!
//! // A queue, and a worker that takes until nothing is left.
//! for n in 0..3 {
//!     store.post(&PostRequest::new("boss", "tests").description(format!("suite {n}")))?;
//! }
//! let mut completed = 0;
//! loop {
//!     let item = match store.next(&NextRequest::new("worker")) {
//!         Ok(item) => item,
//!         Err(e) if e.kind() == ErrorKind::NothingToTake => break,
//!         Err(e) => return Err(e.into()),
//!     };
//!     // ... do the work, then record it under the fence the take gave:
//!     let done = Action::Complete { result: None };
//!     store.act(&item.work_item_id, &done, &Actor::new("worker").fence(item.fence))?;
//!     completed += 1;
//! }
//! assert_eq!(completed, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
mod group;
mod keys;
pub mod lock;
mod memory;
mod options;
mod paused;
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
