use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// How stale `last_seen` may get before a change by the agent rewrites it.
pub const SEEN_PRECISION: std::time::Duration = std::time::Duration::from_secs(1);

/// An agent in the registry (`agent_status.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub agent_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Timestamp>,
    pub last_seen: Timestamp,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `agent register` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRegistration {
    pub agent_id: String,
    pub team: Option<String>,
    pub capacity: Option<u32>,
}

impl AgentRecord {
    /// The record after `registration.agent_id` was seen at `now` (with its
    /// team and capacity when given), or `None` when `existing` already says
    /// all that: `last_seen` is kept to [`SEEN_PRECISION`], so an agent
    /// acting many times a second does not rewrite its record each time.
    pub fn seen(
        existing: Option<&AgentRecord>,
        registration: &AgentRegistration,
        now: Timestamp,
    ) -> Option<AgentRecord> {
        let registers = registration.team.is_some() || registration.capacity.is_some();
        if let Some(known) = existing
            && !registers
            && known.last_seen.saturating_add(SEEN_PRECISION) > now
        {
            return None;
        }
        let mut agent = existing.cloned().unwrap_or_else(|| AgentRecord {
            agent_id: registration.agent_id.clone(),
            team: None,
            capacity: None,
            registered_at: None,
            last_seen: now,
            extra: Map::new(),
        });
        agent.last_seen = now;
        if registers {
            agent.registered_at.get_or_insert(now);
        }
        if registration.team.is_some() {
            agent.team.clone_from(&registration.team);
        }
        if registration.capacity.is_some() {
            agent.capacity = registration.capacity;
        }
        Some(agent)
    }

    /// `active` if seen within `stale_after` of `now`, else `stale`.
    pub fn status(&self, now: Timestamp, stale_after: std::time::Duration) -> &'static str {
        if self.last_seen.saturating_add(stale_after) > now {
            "active"
        } else {
            "stale"
        }
    }
}
