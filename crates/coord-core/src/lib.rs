//! `coord-core`: what a work item is and which changes to it are legal.
//!
//! - [`Claim`] and its parts ([`Priority`], [`Status`], [`Origin`],
//!   [`Timestamp`]); [`ClaimHead`], the fields decisions read.
//! - [`ConflictPolicy`]: which live claims a new claim must not overlap.
//! - [`transition`]: the state machine, leases and fencing, the queue's
//!   choice of the next item.
//! - [`decide`]: every change to a store, decided once from what the store
//!   read: the one place its rules live. Stores read, then apply the
//!   [`Decision`] atomically.
//! - [`Event`]: one line of the event log.
//! - [`RetryPolicy`]: exponential backoff with full jitter.
//! - [`CoordError`]: every error a store can return, with a stable
//!   [`ErrorKind`] string for the JSON contract.
//! - [`Store`]: the one trait every storage backend implements.
//! - [`trace`]: spans, W3C trace context, a change's span attributes.
//! - [`IdempotencyKey`]: a change made once however often it is retried
//!   ([`Store::apply_once`]).
//! - [`operate`]: what operators do to items not theirs (cancel, retry),
//!   by id or by filter ([`Store::operate`]).
//!
//! Architecture invariant: this crate knows nothing of how or where items
//! are stored (no files, no locks, no SQL).

mod agents;
pub mod decide;
mod duration;
mod error;
mod event;
mod ids;
mod model;
mod once;
pub mod operate;
mod policy;
mod retry;
mod stats;
mod store;
mod time;
pub mod trace;
pub mod transition;

pub use agents::{AgentRecord, AgentRegistration, SEEN_PRECISION, STOPPED_AT, Sightings};
pub use decide::{Decision, Sweep, Written};
pub use duration::parse_duration;
pub use error::{CoordError, ErrorKind, Invalid, LockName};
pub use event::{Event, EventKind};
pub use ids::unique_id;
pub use model::{
    Claim, ClaimHead, ClaimRequest, DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS, Filter, MAX_TAKE,
    NextRequest, OnDependencyFailure, Origin, PostRequest, Priority, Status, validate_name,
};
pub use once::{Answer, IdempotencyKey, KEY_TTL, KeyedChange, Refusal, Remembered};
pub use policy::{
    ConflictPolicy, ExclusivePerWorkType, SeedPolicy, Slot, find_conflict, needs_exclusion,
};
pub use retry::{RetryPolicy, backoff};
pub use stats::{Activity, AgentCounts, EXPIRING_WITHIN, ItemCounts, OldestLive, Stats, WaitTimes};
pub use store::{EventPage, SAFETY_POLL, Store, Wakeup};
pub use time::{Clock, Timestamp, system_clock};
pub use transition::{Action, Actor, Change, NewIds};

/// Builder-style setters for an options struct's fields, one
/// `fn field(self, value) -> Self` per field named: options structs are
/// `#[non_exhaustive]` (a new option is no breaking change), so callers in
/// other crates set them by name, `FileStoreOptions::default().lock_timeout(d)`.
#[macro_export]
macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("Sets `", stringify!($field), "` (see the field).")]
            #[must_use]
            pub fn $field(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}
