//! One line of the event log: [`Event`] and its [`EventKind`].

use serde::{Deserialize, Serialize};

use crate::model::{Claim, Priority, Status};
use crate::time::Timestamp;

/// What happened, in the event log's `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Posted,
    Claimed,
    Progress,
    Completed,
    Failed,
    Requeued,
    Expired,
    Released,
    /// Ended by an operator (`coord cancel`), or failed because an item it
    /// depends on ended without completing (`dependency_failed`).
    Cancelled,
    DependencyFailed,
    /// Sent back to the queue by an operator (`coord retry`).
    Retried,
    /// A stale `work_claims.json.lock` of a dead process was removed.
    LockBroken,
}

/// One line of the event log. `time`, `agent`, `work_item_id`, `from`, `to`
/// and `fence` are always present (`null` where they do not apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub time: Timestamp,
    pub agent: Option<String>,
    pub work_item_id: Option<String>,
    pub from: Option<Status>,
    pub to: Option<Status>,
    pub fence: Option<u64>,
    pub event: EventKind,
    /// The store revision of the change; events of one change share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The change was made with `--force` by someone other than the owner.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
}

impl Event {
    /// The event for `after`, which was `before` (or nothing, for a new item).
    pub fn change(
        kind: EventKind,
        agent: &str,
        before: Option<&Claim>,
        after: &Claim,
        now: Timestamp,
    ) -> Self {
        Event {
            time: now,
            agent: Some(agent.to_owned()),
            work_item_id: Some(after.work_item_id.clone()),
            from: before.map(|c| c.status),
            to: Some(after.status),
            fence: after.fence.or_else(|| before.and_then(|c| c.fence)),
            event: kind,
            revision: None,
            work_type: Some(after.work_type.clone()),
            priority: Some(after.priority),
            reason: None,
            forced: false,
        }
    }

    #[must_use]
    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }
}
