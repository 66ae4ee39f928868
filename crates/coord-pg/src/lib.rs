//! `coord-pg`: work items in PostgreSQL, for agents on many machines.
//!
//! [`PgStore`] implements the same [`coord_core::Store`] trait as the
//! coordination directory, and the same conformance suite tests both. It
//! decides every change with [`coord_core::decide`] on rows it has
//! locked, and lets PostgreSQL make the outcome atomic and durable:
//!
//! - one transaction per operation, at READ COMMITTED;
//! - the item a change acts on is locked with `SELECT ... FOR UPDATE`;
//! - claims that may exclude each other (high priority, by default) first
//!   take a transaction-scoped advisory lock on their work type, then lock
//!   that type's in-progress rows, so two claimers never both see the slot
//!   free;
//! - `next` locks its candidates with `FOR UPDATE SKIP LOCKED`, so
//!   concurrent workers take different items instead of queueing; when the
//!   best one needs no other row looked at, it is taken in one statement
//!   that applies what `transition::take` does, learnt as a patch (see
//!   `take.rs`);
//! - fences and revisions come from sequences, which never go back;
//! - the event log's cursor is assigned after commit (see
//!   `Store::events` on [`PgStore`]), so a follower never skips a late commit.
//!
//! - the schema itself refuses a second live high or critical claim of a
//!   work type (`schema.rs`, layout 3);
//! - TLS is set the libpq way, `sslmode` and `sslrootcert` (`tls.rs`);
//! - the time is the database's (`time.rs`), and waiters for the next
//!   change wait inside the database, not by polling (`wakeup.rs`);
//! - an idempotency key is written in the commit of the change it answers
//!   (`keys.rs`).
//!
//! Tables live in their own schema (`coord` unless told otherwise); see
//! `schema.rs`.

mod changes;
mod conn;
mod fail;
mod import;
mod keys;
mod options;
mod rows;
mod schema;
mod spans;
mod sql;
mod store;
mod take;
mod time;
mod tls;
mod tx;
mod wakeup;

pub use import::{ImportSource, Imported};
pub use options::PgStoreOptions;
pub use schema::SCHEMA_VERSION;
pub use store::PgStore;
