//! `coord-file`: the coordination-directory store.
//!
//! A directory holds `work_claims.json` (a JSON array of claims, one per
//! line) and `coord.lock`, an empty file that writers `flock`. Every change
//! runs as a [`reactor`] workflow while the lock is held, so the read, the
//! decision and the atomic write are one step for every other process.
//!
//! Architecture invariants:
//! - only [`lock`] takes the directory lock (clippy enforces it);
//! - readers (`get`, `list`) never lock: the atomic rename means they see a
//!   whole file, old or new;
//! - records this store does not change keep their exact bytes.

mod claims_doc;
mod flow;
pub mod lock;
mod store;
mod telemetry;

pub use store::{CLAIMS_FILE, FileStore, FileStoreOptions, LOCK_FILE};
pub use telemetry::TracingMiddleware;
