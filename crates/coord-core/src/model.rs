use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CoordError;
use crate::time::Timestamp;

/// How urgent a work item is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    pub const NAMES: [&'static str; 4] = ["low", "medium", "high", "critical"];
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Where a claim is in its life. Records written by the older shell tools
/// say `active`, which reads as `in_progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[serde(alias = "active")]
    InProgress,
    Completed,
    Failed,
}

impl Status {
    pub const NAMES: [&'static str; 3] = ["in_progress", "completed", "failed"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether the claim still holds its work (and can still change).
    pub fn is_live(self) -> bool {
        self == Status::InProgress
    }
}

macro_rules! name_enum {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                serde_json::from_value(Value::String(s.to_owned())).map_err(|_| {
                    format!(
                        "`{s}` is not a {} (expected one of: {})",
                        $what,
                        <$t>::NAMES.join(", ")
                    )
                })
            }
        }
    };
}
name_enum!(Priority, "priority");
name_enum!(Status, "status");

/// One work item as stored. Fields coord does not know (written by other
/// tools) travel in `extra` and are written back untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub work_item_id: String,
    pub agent_id: String,
    pub work_type: String,
    #[serde(default)]
    pub description: String,
    pub priority: Priority,
    pub claimed_at: Timestamp,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Claim {
    /// A fresh in-progress claim for `request`.
    pub fn new(
        request: &ClaimRequest,
        work_item_id: String,
        coordination_id: String,
        now: Timestamp,
    ) -> Self {
        Claim {
            work_item_id,
            agent_id: request.agent_id.clone(),
            work_type: request.work_type.clone(),
            description: request.description.clone(),
            priority: request.priority,
            claimed_at: now,
            status: Status::InProgress,
            coordination_id: Some(coordination_id),
            progress: None,
            last_update: None,
            completed_at: None,
            failed_at: None,
            result: None,
            reason: None,
            extra: Map::new(),
        }
    }

    pub fn head(&self) -> ClaimHead {
        ClaimHead {
            work_item_id: self.work_item_id.clone(),
            agent_id: self.agent_id.clone(),
            work_type: self.work_type.clone(),
            priority: self.priority,
            status: self.status,
            coordination_id: self.coordination_id.clone(),
        }
    }
}

/// The few fields of a claim that decisions read. Stores decode only these
/// from records they do not change, which keeps a claim cheap in a big file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ClaimHead {
    pub work_item_id: String,
    pub agent_id: String,
    pub work_type: String,
    pub priority: Priority,
    pub status: Status,
    #[serde(default)]
    pub coordination_id: Option<String>,
}

/// What an agent asks for when it claims work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub agent_id: String,
    pub work_type: String,
    pub description: String,
    pub priority: Priority,
}

/// Longest work type or agent id accepted, in bytes.
const MAX_NAME_LEN: usize = 256;

/// Checks a name-like value (work type, agent id): non-empty, short, and
/// free of control characters so it prints on one line everywhere.
pub(crate) fn validate_name(what: &str, value: &str) -> Result<(), CoordError> {
    let problem = if value.trim().is_empty() {
        Some("must not be empty".to_owned())
    } else if value.len() > MAX_NAME_LEN {
        Some(format!("must be at most {MAX_NAME_LEN} bytes"))
    } else if value.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    };
    match problem {
        Some(p) => Err(CoordError::validation(format!(
            "{what} {p} (got {value:?})"
        ))),
        None => Ok(()),
    }
}

impl ClaimRequest {
    pub fn new(agent_id: impl Into<String>, work_type: impl Into<String>) -> Self {
        ClaimRequest {
            agent_id: agent_id.into(),
            work_type: work_type.into(),
            description: String::new(),
            priority: Priority::Medium,
        }
    }

    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    pub fn validate(&self) -> Result<(), CoordError> {
        validate_name("the work type", &self.work_type)?;
        validate_name("the agent id", &self.agent_id)
    }
}

/// Which claims `list` returns; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<Status>,
    pub work_type: Option<String>,
    pub owner: Option<String>,
}

impl Filter {
    pub fn matches(&self, head: &ClaimHead) -> bool {
        self.status.is_none_or(|s| s == head.status)
            && self.work_type.as_ref().is_none_or(|t| *t == head.work_type)
            && self.owner.as_ref().is_none_or(|a| *a == head.agent_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_explained() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
        }
        assert_eq!("active".parse::<Status>().unwrap(), Status::InProgress);
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert!(err.contains("low, medium, high, critical"), "{err}");
        assert!(Priority::Low < Priority::Medium && Priority::High < Priority::Critical);
    }

    #[test]
    fn requests_with_bad_names_are_rejected() {
        assert!(ClaimRequest::new("a", "build").validate().is_ok());
        assert!(ClaimRequest::new("a", "  ").validate().is_err());
        assert!(ClaimRequest::new("", "build").validate().is_err());
        assert!(ClaimRequest::new("a", "two\nlines").validate().is_err());
        assert!(ClaimRequest::new("a", "x".repeat(300)).validate().is_err());
    }
}
