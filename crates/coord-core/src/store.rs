//! The [`Store`] trait every backend implements, and [`EventPage`].

use std::time::Duration;

use crate::agents::{AgentRecord, AgentRegistration};
use crate::error::CoordError;
use crate::event::Event;
use crate::model::{Claim, ClaimRequest, Filter, NextRequest, PostRequest};
use crate::time::Timestamp;
use crate::transition::{Action, Actor};

/// Events read from a store's log, and where to read on from.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass back to [`Store::events`] to read only newer events.
    pub cursor: u64,
}

/// A place where work items live. Every backend (the coordination
/// directory, PostgreSQL) implements this, and one conformance suite tests
/// them all.
///
/// Implementations decide legality with [`crate::transition`] and
/// [`crate::find_conflict`] and only make the outcome atomic. Every mutation
/// also writes down the leases that lapsed since the last one.
pub trait Store {
    /// Claims work on the spot, or fails with [`CoordError::Conflict`]
    /// naming the claim in the way.
    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError>;

    /// Adds a pending item to the queue.
    fn post(&self, request: &PostRequest) -> Result<Claim, CoordError>;

    /// Takes the best ready pending item, or [`CoordError::NothingToTake`].
    fn next(&self, request: &NextRequest) -> Result<Claim, CoordError>;

    /// Applies `action` by `actor` to `work_item_id` and returns the item.
    fn act(
        &self,
        work_item_id: &str,
        action: &Action,
        actor: &Actor<'_>,
    ) -> Result<Claim, CoordError>;

    /// Writes down every lapsed lease now; returns the items it changed.
    fn reap(&self, agent_id: &str) -> Result<Vec<Claim>, CoordError>;

    /// Archives final items that finished more than `older_than` ago;
    /// returns the ids it moved.
    fn cleanup(&self, agent_id: &str, older_than: Duration) -> Result<Vec<String>, CoordError>;

    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError>;

    /// The items that match `filter`, oldest first.
    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError>;

    fn register_agent(&self, registration: &AgentRegistration) -> Result<AgentRecord, CoordError>;

    fn agents(&self) -> Result<Vec<AgentRecord>, CoordError>;

    /// Events after `cursor` (0: from the start of the current log).
    fn events(&self, cursor: u64) -> Result<EventPage, CoordError>;

    /// The time the store acts at now, which statuses (an agent gone
    /// `stale`) are worked out against: the machine's clock for a
    /// directory, the database's for PostgreSQL. Default: the system's.
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
