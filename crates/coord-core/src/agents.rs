use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

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
    /// `active` if seen within `stale_after` of `now`, else `stale`.
    pub fn status(&self, now: Timestamp, stale_after: std::time::Duration) -> &'static str {
        if self.last_seen.saturating_add(stale_after) > now {
            "active"
        } else {
            "stale"
        }
    }
}
