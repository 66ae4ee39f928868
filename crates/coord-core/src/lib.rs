//! `coord-core`: what a claim is and which changes to it are legal.
//!
//! - [`Claim`] and its parts ([`Priority`], [`Status`], [`Timestamp`]).
//! - [`ConflictPolicy`]: which live claims a new claim must not overlap.
//! - [`transition`]: the state machine. Every store decides legality here,
//!   once, and only applies the result atomically.
//! - [`CoordError`]: every error a store can return, with a stable
//!   [`ErrorKind`] string for the JSON contract.
//! - [`Store`]: the one trait every storage backend implements.
//!
//! Architecture invariant: this crate knows nothing of how or where claims
//! are stored (no files, no locks, no SQL).

mod error;
mod ids;
mod model;
mod policy;
mod store;
mod time;
pub mod transition;

pub use error::{CoordError, ErrorKind};
pub use ids::unique_id;
pub use model::{Claim, ClaimHead, ClaimRequest, Filter, Priority, Status};
pub use policy::{ConflictPolicy, ExclusivePerWorkType, SeedPolicy, Slot, find_conflict};
pub use store::Store;
pub use time::Timestamp;
pub use transition::Update;
