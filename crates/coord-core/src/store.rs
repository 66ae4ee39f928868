use crate::error::CoordError;
use crate::model::{Claim, ClaimRequest, Filter};
use crate::transition::Update;

/// A place where claims live. Every backend (the coordination directory,
/// PostgreSQL) implements this, and one conformance suite tests them all.
///
/// Implementations decide legality with [`crate::transition`] and
/// [`crate::find_conflict`] and only make the outcome atomic.
pub trait Store {
    /// Claims work for `request.agent_id`, or fails with
    /// [`CoordError::Conflict`] naming the claim in the way.
    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError>;

    /// Applies `update` to the claim `work_item_id` and returns it as stored.
    fn update(&self, work_item_id: &str, update: &Update) -> Result<Claim, CoordError>;

    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError>;

    /// The claims that match `filter`, oldest first.
    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError>;
}
