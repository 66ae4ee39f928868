//! The agent registry's rules, for both stores: [`AgentRecord`] (read
//! leniently: other tools write entries too), what registering or being
//! seen changes ([`AgentRecord::seen`]), and how often a sighting is
//! written ([`Sightings`]).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CoordError;
use crate::model::validate_name;
use crate::time::Timestamp;

/// How stale `last_seen` may get before a change by the agent rewrites it.
pub const SEEN_PRECISION: std::time::Duration = std::time::Duration::from_secs(1);

/// An agent in the registry (`agent_status.json`).
///
/// Other tools write entries too (the older shell tools' `claim` writes
/// agents without `last_seen` or `registered_at`): a field that is missing,
/// or not of the type coord writes, is unknown, not invalid. It stays in
/// `extra` as it was, and is written back untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct AgentRecord {
    pub agent_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Timestamp>,
    /// When the agent last acted; unknown for entries another tool wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The registry field that says an agent's process ended.
pub const STOPPED_AT: &str = "stopped_at";

impl TryFrom<Map<String, Value>> for AgentRecord {
    type Error = String;

    fn try_from(mut fields: Map<String, Value>) -> Result<Self, String> {
        let agent_id = match fields.remove("agent_id") {
            Some(Value::String(id)) => id,
            Some(other) => {
                return Err(format!(
                    "an agent's `agent_id` must be a string, got {other}"
                ));
            }
            None => return Err("an agent has no `agent_id`".to_owned()),
        };
        // Each known field is taken when it reads as what coord writes;
        // otherwise it stays among the other fields, as it was.
        fn take<T: serde::de::DeserializeOwned>(
            fields: &mut Map<String, Value>,
            key: &str,
        ) -> Option<T> {
            let value = serde_json::from_value(fields.get(key)?.clone()).ok()?;
            fields.remove(key);
            Some(value)
        }
        Ok(AgentRecord {
            agent_id,
            team: take(&mut fields, "team"),
            capacity: take(&mut fields, "capacity"),
            registered_at: take(&mut fields, "registered_at"),
            last_seen: take(&mut fields, "last_seen"),
            extra: fields,
        })
    }
}

/// What `agent register` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRegistration {
    pub agent_id: String,
    pub team: Option<String>,
    pub capacity: Option<u32>,
}

impl AgentRegistration {
    /// A sighting of `agent_id` (no team or capacity to record).
    pub fn sighting(agent_id: impl Into<String>) -> Self {
        AgentRegistration {
            agent_id: agent_id.into(),
            team: None,
            capacity: None,
        }
    }

    pub fn validate(&self) -> Result<(), CoordError> {
        validate_name("the agent id", &self.agent_id)?;
        if let Some(team) = &self.team {
            validate_name("the team", team)?;
        }
        Ok(())
    }
}

/// When a store last recorded each agent as seen: a store records an agent
/// that acts many times a second once a second ([`SEEN_PRECISION`]), and
/// need not read the registry to know that it is up to date.
#[derive(Debug, Default)]
pub struct Sightings(Mutex<HashMap<String, Timestamp>>);

impl Sightings {
    /// Whether `agent`'s `last_seen` may be older than [`SEEN_PRECISION`].
    pub fn due(&self, agent: &str, now: Timestamp) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(agent)
            .is_none_or(|at| at.saturating_add(SEEN_PRECISION) <= now)
    }

    /// Notes that `agent` was recorded as seen at `now`.
    pub fn record(&self, agent: &str, now: Timestamp) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(agent.to_owned(), now);
    }
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
            // A stopped agent that acts again is recorded at once.
            && known.stopped_at().is_none()
            && known
                .last_seen
                .is_some_and(|seen| seen.saturating_add(SEEN_PRECISION) > now)
        {
            return None;
        }
        let mut agent = existing.cloned().unwrap_or_else(|| AgentRecord {
            agent_id: registration.agent_id.clone(),
            team: None,
            capacity: None,
            registered_at: None,
            last_seen: None,
            extra: Map::new(),
        });
        agent.last_seen = Some(now);
        // Another tool's field of that name, of another type, gives way.
        agent.extra.remove("last_seen");
        if registers {
            agent.registered_at.get_or_insert(now);
        }
        if registration.team.is_some() {
            agent.team.clone_from(&registration.team);
            agent.extra.remove("team");
        }
        if registration.capacity.is_some() {
            agent.capacity = registration.capacity;
            agent.extra.remove("capacity");
        }
        if agent.registered_at.is_some() {
            agent.extra.remove("registered_at");
        }
        Some(agent)
    }

    /// `active` if seen within `stale_after` of `now`, else `stale`;
    /// `unknown` for an entry that does not say when it was seen.
    /// When its `coord work` or `coord run` last ended (`stopped_at`, kept
    /// among the entry's other fields), if it has not acted since.
    pub fn stopped_at(&self) -> Option<Timestamp> {
        let stopped: Timestamp = self.extra.get(STOPPED_AT)?.as_str()?.parse().ok()?;
        self.last_seen
            .is_none_or(|seen| stopped >= seen)
            .then_some(stopped)
    }

    pub fn status(&self, now: Timestamp, stale_after: std::time::Duration) -> &'static str {
        if self.stopped_at().is_some() {
            return "stopped";
        }
        match self.last_seen {
            None => "unknown",
            Some(seen) if seen.saturating_add(stale_after) > now => "active",
            Some(_) => "stale",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> Result<AgentRecord, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn entries_of_other_tools_read_with_unknown_fields_kept_as_they_were() {
        let shell = record(r#"{"agent_id":"a","team":"blue","status":"active","capacity":"lots"}"#)
            .unwrap();
        assert_eq!((shell.last_seen, shell.registered_at), (None, None));
        assert_eq!(shell.team.as_deref(), Some("blue"));
        assert_eq!(shell.capacity, None);
        assert_eq!(
            shell.extra["capacity"], "lots",
            "a field of another type is kept"
        );
        assert_eq!(
            shell.status(Timestamp::now(), std::time::Duration::MAX),
            "unknown"
        );
        let written = serde_json::to_value(&shell).unwrap();
        assert_eq!(written["capacity"], "lots");
        assert_eq!(written["status"], "active");
        assert!(written.get("last_seen").is_none());

        for bad in [r#"{"team":"blue"}"#, r#"{"agent_id":7}"#, "[]"] {
            assert!(record(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seeing_an_entry_of_another_tool_gives_it_a_last_seen() {
        let shell = record(r#"{"agent_id":"a","last_seen":12345}"#).unwrap();
        let now = Timestamp::now();
        let sighting = AgentRegistration {
            agent_id: "a".into(),
            team: None,
            capacity: None,
        };
        let seen = AgentRecord::seen(Some(&shell), &sighting, now).expect("must be written");
        assert_eq!(seen.last_seen, Some(now));
        let written = serde_json::to_value(&seen).unwrap();
        assert_eq!(written["last_seen"], now.to_string());
    }
}
