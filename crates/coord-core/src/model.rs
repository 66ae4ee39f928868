//! What a work item is: [`Claim`] (every field), [`ClaimHead`] (the fields
//! decisions read), [`Priority`], [`Status`], [`Origin`], the requests a
//! change is asked for ([`ClaimRequest`], [`PostRequest`], [`NextRequest`])
//! with their validation, and [`Filter`] for `list`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::duration::parse_duration;
use crate::error::CoordError;
use crate::time::Timestamp;

/// The lease a claim gets when none is asked for, and the one assumed for
/// records of the older tools that carry no `estimated_duration`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30 * 60);

/// How many times a queue item may be taken before a failure is final.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

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

/// Where a work item is in its life (see [`crate::transition`]). Records
/// written by the older shell tools say `active`, which reads as
/// `in_progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    #[serde(alias = "active")]
    InProgress,
    Completed,
    Failed,
    Expired,
    /// Ended by an operator (`coord cancel`), not by its owner.
    Cancelled,
}

impl Status {
    pub const NAMES: [&'static str; 6] = [
        "pending",
        "in_progress",
        "completed",
        "failed",
        "expired",
        "cancelled",
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether the item is done for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Failed | Status::Expired | Status::Cancelled
        )
    }

    /// Whether the item ended without completing: an item that depends on
    /// it can never be taken as things stand.
    pub fn ended_badly(self) -> bool {
        self.is_final() && self != Status::Completed
    }
}

/// What becomes of a pending item when an item it depends on ends without
/// completing (failed, expired or cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnDependencyFailure {
    /// It fails too, its `reason` naming the dependency (and so on down).
    #[default]
    Fail,
    /// It stays pending, blocked (`blocked_by`), until the dependency is
    /// retried and completes, or it is cancelled.
    Wait,
}

impl OnDependencyFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDependencyFailure::Fail => "fail",
            OnDependencyFailure::Wait => "wait",
        }
    }
}

/// How an item came to be: claimed on the spot, or posted to the queue.
/// It decides what a lapsed lease does (see [`crate::transition::expire`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Claim,
    Queue,
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
    /// The owner; absent while the item is `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub work_type: String,
    #[serde(default)]
    pub description: String,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Timestamp>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination_id: Option<String>,
    /// Absent in records of the older tools, which count as `claim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// The store revision of the record's last change (see the event log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires_at: Option<Timestamp>,
    /// The lease length, which heartbeats and progress renew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// A requeued item is not taken again before this time (retry backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<Timestamp>,
    /// What becomes of this pending item when one of its dependencies ends
    /// without completing (absent: [`OnDependencyFailure::Fail`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_dependency_failure: Option<OnDependencyFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The fields of a claim that decisions read. Stores decode only these
/// from records they do not change, which keeps a claim cheap in a big file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClaimHead {
    pub work_item_id: String,
    #[serde(default)]
    pub agent_id: Option<String>,
    pub work_type: String,
    pub priority: Priority,
    pub status: Status,
    #[serde(default)]
    pub coordination_id: Option<String>,
    #[serde(default)]
    pub origin: Option<Origin>,
    #[serde(default)]
    pub fence: Option<u64>,
    #[serde(default)]
    pub revision: Option<u64>,
    #[serde(default)]
    pub lease_expires_at: Option<Timestamp>,
    #[serde(default)]
    pub claimed_at: Option<Timestamp>,
    /// The older tools' lease, e.g. `"30m"` or a number of seconds.
    #[serde(default)]
    pub estimated_duration: Option<Value>,
    #[serde(default)]
    pub posted_at: Option<Timestamp>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub retry_at: Option<Timestamp>,
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    #[serde(default)]
    pub failed_at: Option<Timestamp>,
    #[serde(default)]
    pub expired_at: Option<Timestamp>,
    #[serde(default)]
    pub cancelled_at: Option<Timestamp>,
    // The other fields a full decode reads, type-checked and not kept: a
    // record a store could not show is refused when it is first read, so a
    // change never carries it into the file it writes.
    #[serde(default, rename = "description")]
    _description: Checked<Text>,
    #[serde(default, rename = "lease_ms")]
    _lease_ms: Checked<Option<u64>>,
    #[serde(default, rename = "posted_by")]
    _posted_by: Checked<Option<Text>>,
    #[serde(default, rename = "attempt")]
    _attempt: Checked<Option<u32>>,
    #[serde(default, rename = "max_attempts")]
    _max_attempts: Checked<Option<u32>>,
    #[serde(default, rename = "progress")]
    _progress: Checked<Option<u8>>,
    #[serde(default, rename = "last_update")]
    _last_update: Checked<Option<Timestamp>>,
    #[serde(default, rename = "result")]
    _result: Checked<Option<Text>>,
    #[serde(default, rename = "reason")]
    _reason: Checked<Option<Text>>,
}

/// Checks that a field decodes as `T`, keeping nothing.
struct Checked<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Default for Checked<T> {
    fn default() -> Self {
        Checked(std::marker::PhantomData)
    }
}
impl<T> Clone for Checked<T> {
    fn clone(&self) -> Self {
        Checked::default()
    }
}
impl<T> PartialEq for Checked<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> fmt::Debug for Checked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("checked")
    }
}
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Checked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|_| Checked::default())
    }
}

/// A JSON string, checked without being copied.
struct Text;

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IsText;
        impl serde::de::Visitor<'_> for IsText {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Text, E> {
                Ok(Text)
            }
        }
        d.deserialize_str(IsText)
    }
}

/// A legacy `estimated_duration`: seconds as a number, or a duration text.
fn legacy_lease(estimate: Option<&Value>) -> Duration {
    match estimate {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_LEASE, Duration::from_secs_f64),
        Some(Value::String(s)) => parse_duration(s).unwrap_or(DEFAULT_LEASE),
        _ => DEFAULT_LEASE,
    }
}

impl ClaimHead {
    /// A head whose checked-only fields are blank (for building one by hand).
    fn unchecked() -> ClaimHead {
        ClaimHead {
            work_item_id: String::new(),
            agent_id: None,
            work_type: String::new(),
            priority: Priority::Medium,
            status: Status::Pending,
            coordination_id: None,
            origin: None,
            fence: None,
            revision: None,
            lease_expires_at: None,
            claimed_at: None,
            estimated_duration: None,
            posted_at: None,
            depends_on: Vec::new(),
            retry_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelled_at: None,
            _description: Checked::default(),
            _lease_ms: Checked::default(),
            _posted_by: Checked::default(),
            _attempt: Checked::default(),
            _max_attempts: Checked::default(),
            _progress: Checked::default(),
            _last_update: Checked::default(),
            _result: Checked::default(),
            _reason: Checked::default(),
        }
    }

    /// When the lease ends: `lease_expires_at`, or for the older tools'
    /// records `claimed_at` + `estimated_duration` (30 minutes if absent).
    /// `None` for a record with neither, which never lapses on its own.
    pub fn lease_deadline(&self) -> Option<Timestamp> {
        self.lease_expires_at.or_else(|| {
            self.claimed_at
                .map(|t| t.saturating_add(legacy_lease(self.estimated_duration.as_ref())))
        })
    }

    /// In progress with a lease that has not passed: it holds its work.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.status == Status::InProgress && self.lease_deadline().is_none_or(|d| d > now)
    }

    /// In progress, but its lease has passed: expired, written down or not.
    pub fn is_lapsed(&self, now: Timestamp) -> bool {
        self.status == Status::InProgress && self.lease_deadline().is_some_and(|d| d <= now)
    }

    pub fn origin(&self) -> Origin {
        self.origin.unwrap_or(Origin::Claim)
    }

    /// When a final item finished.
    pub fn finished_at(&self) -> Option<Timestamp> {
        match self.status {
            Status::Completed => self.completed_at,
            Status::Failed => self.failed_at,
            Status::Expired => self.expired_at,
            Status::Cancelled => self.cancelled_at,
            _ => None,
        }
    }
}

impl Claim {
    pub fn head(&self) -> ClaimHead {
        ClaimHead {
            work_item_id: self.work_item_id.clone(),
            agent_id: self.agent_id.clone(),
            work_type: self.work_type.clone(),
            priority: self.priority,
            status: self.status,
            coordination_id: self.coordination_id.clone(),
            origin: self.origin,
            fence: self.fence,
            revision: self.revision,
            lease_expires_at: self.lease_expires_at,
            claimed_at: self.claimed_at,
            estimated_duration: self.extra.get("estimated_duration").cloned(),
            posted_at: self.posted_at,
            depends_on: self.depends_on.clone(),
            retry_at: self.retry_at,
            completed_at: self.completed_at,
            failed_at: self.failed_at,
            expired_at: self.expired_at,
            cancelled_at: self.cancelled_at,
            ..ClaimHead::unchecked()
        }
    }

    /// An empty record of `work_type`; the transition functions fill it in.
    pub(crate) fn blank(
        work_item_id: String,
        coordination_id: String,
        work_type: &str,
        description: &str,
        priority: Priority,
    ) -> Self {
        Claim {
            work_item_id,
            agent_id: None,
            work_type: work_type.to_owned(),
            description: description.to_owned(),
            priority,
            claimed_at: None,
            status: Status::Pending,
            coordination_id: Some(coordination_id),
            origin: None,
            fence: None,
            revision: None,
            lease_expires_at: None,
            lease_ms: None,
            posted_at: None,
            posted_by: None,
            depends_on: Vec::new(),
            attempt: None,
            max_attempts: None,
            retry_at: None,
            progress: None,
            last_update: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelled_at: None,
            on_dependency_failure: None,
            result: None,
            reason: None,
            extra: Map::new(),
        }
    }
}

/// What an agent asks for when it claims work on the spot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub agent_id: String,
    pub work_type: String,
    pub description: String,
    pub priority: Priority,
    pub lease: Duration,
    /// Any JSON the work needs, stored as the item's `payload`.
    pub payload: Option<Value>,
}

/// What an agent posts to the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRequest {
    pub agent_id: String,
    pub work_type: String,
    pub description: String,
    pub priority: Priority,
    pub depends_on: Vec<String>,
    pub max_attempts: u32,
    /// Any JSON the work needs, stored as the item's `payload`.
    pub payload: Option<Value>,
    /// What the item does if a dependency ends without completing (`None`:
    /// the default, [`OnDependencyFailure::Fail`], not written down).
    pub on_dependency_failure: Option<OnDependencyFailure>,
}

/// What an agent asks of `next`: the best ready item of these work types
/// (any type when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRequest {
    pub agent_id: String,
    pub work_types: Vec<String>,
    pub lease: Duration,
}

/// Longest work type or agent id accepted, in bytes.
const MAX_NAME_LEN: usize = 256;
/// Shortest lease accepted: anything shorter could lapse before the claim
/// is even printed.
const MIN_LEASE: Duration = Duration::from_millis(100);

/// Checks a name-like value (work type, agent id): non-empty, short, and
/// free of control characters so it prints on one line everywhere.
pub fn validate_name(what: &str, value: &str) -> Result<(), CoordError> {
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
        Some(p) => Err(CoordError::invalid_input(format!(
            "{what} {p} (got {})",
            quoted_start(value)
        ))),
        None => Ok(()),
    }
}

/// How much of a refused value an error message quotes.
const QUOTED_CHARS: usize = 64;

/// `value` quoted for a message, cut after its first [`QUOTED_CHARS`]
/// characters (a refused 120 KB name is not echoed whole).
fn quoted_start(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= QUOTED_CHARS {
        return format!("{value:?}");
    }
    let start: String = value.chars().take(QUOTED_CHARS).collect();
    format!("{start:?}... ({} bytes in all)", value.len())
}

pub(crate) fn validate_lease(lease: Duration) -> Result<(), CoordError> {
    if lease < MIN_LEASE {
        return Err(CoordError::invalid_input(format!(
            "a lease must be at least {MIN_LEASE:?}, got {lease:?}"
        )));
    }
    Ok(())
}

impl ClaimRequest {
    pub fn new(agent_id: impl Into<String>, work_type: impl Into<String>) -> Self {
        ClaimRequest {
            agent_id: agent_id.into(),
            work_type: work_type.into(),
            description: String::new(),
            priority: Priority::Medium,
            lease: DEFAULT_LEASE,
            payload: None,
        }
    }

    #[must_use]
    pub fn payload(mut self, payload: Option<Value>) -> Self {
        self.payload = payload;
        self
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

    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn validate(&self) -> Result<(), CoordError> {
        validate_name("the work type", &self.work_type)?;
        validate_name("the agent id", &self.agent_id)?;
        validate_text(&self.description, self.payload.as_ref())?;
        validate_lease(self.lease)
    }
}

/// The most bytes a description may have, and a payload as JSON.
pub const MAX_TEXT: usize = 1024 * 1024;

/// A description and a payload within [`MAX_TEXT`] each.
fn validate_text(description: &str, payload: Option<&Value>) -> Result<(), CoordError> {
    if description.len() > MAX_TEXT {
        return Err(CoordError::invalid_input(format!(
            "the description is {} bytes; at most {MAX_TEXT} are kept (put more in a file \
             the work can read, and its path in the payload)",
            description.len()
        )));
    }
    let payload_len = payload.map_or(0, |p| p.to_string().len());
    if payload_len > MAX_TEXT {
        return Err(CoordError::invalid_input(format!(
            "the payload is {payload_len} bytes of JSON; at most {MAX_TEXT} are kept"
        )));
    }
    Ok(())
}

impl PostRequest {
    pub fn new(agent_id: impl Into<String>, work_type: impl Into<String>) -> Self {
        PostRequest {
            agent_id: agent_id.into(),
            work_type: work_type.into(),
            description: String::new(),
            priority: Priority::Medium,
            depends_on: Vec::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            payload: None,
            on_dependency_failure: None,
        }
    }

    #[must_use]
    pub fn on_dependency_failure(mut self, on: Option<OnDependencyFailure>) -> Self {
        self.on_dependency_failure = on;
        self
    }

    #[must_use]
    pub fn payload(mut self, payload: Option<Value>) -> Self {
        self.payload = payload;
        self
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

    #[must_use]
    pub fn after(mut self, ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.depends_on.extend(ids.into_iter().map(Into::into));
        self
    }

    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    pub fn validate(&self) -> Result<(), CoordError> {
        validate_name("the work type", &self.work_type)?;
        validate_name("the agent id", &self.agent_id)?;
        if self.max_attempts == 0 {
            return Err(CoordError::invalid_input("max attempts must be at least 1"));
        }
        validate_text(&self.description, self.payload.as_ref())
    }
}

impl NextRequest {
    pub fn new(agent_id: impl Into<String>) -> Self {
        NextRequest {
            agent_id: agent_id.into(),
            work_types: Vec::new(),
            lease: DEFAULT_LEASE,
        }
    }

    #[must_use]
    pub fn work_types(mut self, types: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.work_types = types.into_iter().map(Into::into).collect();
        self
    }

    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn validate(&self) -> Result<(), CoordError> {
        validate_name("the agent id", &self.agent_id)?;
        for t in &self.work_types {
            validate_name("the work type", t)?;
        }
        validate_lease(self.lease)
    }

    /// [`Self::validate`], for taking up to `max` items at once
    /// (`Store::next_many`): 1 to [`MAX_TAKE`].
    pub fn validate_many(&self, max: usize) -> Result<(), CoordError> {
        if !(1..=MAX_TAKE).contains(&max) {
            return Err(CoordError::invalid_input(format!(
                "the number of items to take must be 1 to {MAX_TAKE}, not {max}"
            )));
        }
        self.validate()
    }
}

/// The most items one `Store::next_many` takes.
pub const MAX_TAKE: usize = 1024;

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
            && self
                .owner
                .as_ref()
                .is_none_or(|a| head.agent_id.as_ref() == Some(a))
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
        for s in Status::NAMES {
            assert_eq!(s.parse::<Status>().unwrap().as_str(), s);
        }
        assert_eq!("active".parse::<Status>().unwrap(), Status::InProgress);
        let err = "urgent".parse::<Priority>().unwrap_err();
        assert!(err.contains("low, medium, high, critical"), "{err}");
        assert!(Priority::Low < Priority::Medium && Priority::High < Priority::Critical);
    }

    #[test]
    fn a_refused_name_is_quoted_only_in_part() {
        let long = "x".repeat(120_000);
        let err = ClaimRequest::new("a", long.as_str())
            .validate()
            .unwrap_err();
        let message = err.to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("120000 bytes in all"), "{message}");
        let err = ClaimRequest::new("a", "two\nlines").validate().unwrap_err();
        assert!(err.to_string().contains("\"two\\nlines\""), "{err}");
    }

    #[test]
    fn requests_with_bad_values_are_rejected() {
        assert!(ClaimRequest::new("a", "build").validate().is_ok());
        assert!(ClaimRequest::new("a", "  ").validate().is_err());
        assert!(ClaimRequest::new("", "build").validate().is_err());
        assert!(ClaimRequest::new("a", "two\nlines").validate().is_err());
        assert!(ClaimRequest::new("a", "x".repeat(300)).validate().is_err());
        assert!(
            ClaimRequest::new("a", "b")
                .lease(Duration::from_millis(5))
                .validate()
                .is_err()
        );
        assert!(
            PostRequest::new("a", "b")
                .max_attempts(0)
                .validate()
                .is_err()
        );
        assert!(NextRequest::new("a").work_types([""]).validate().is_err());
    }

    fn legacy(claimed_at: &str, estimate: Option<Value>) -> ClaimHead {
        ClaimHead {
            work_item_id: "w".into(),
            agent_id: Some("a".into()),
            work_type: "t".into(),
            priority: Priority::High,
            status: Status::InProgress,
            coordination_id: None,
            origin: None,
            fence: None,
            revision: None,
            lease_expires_at: None,
            claimed_at: Some(claimed_at.parse().unwrap()),
            estimated_duration: estimate,
            posted_at: None,
            depends_on: Vec::new(),
            retry_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            ..ClaimHead::unchecked()
        }
    }

    #[test]
    fn a_head_refuses_exactly_the_records_a_full_decode_refuses() {
        let base = r#"{"work_item_id":"w","work_type":"t","priority":"low","status":"pending""#;
        let fields = [
            r#""description":"d""#,
            r#""description":null"#,
            r#""description":7"#,
            r#""lease_ms":1000"#,
            r#""lease_ms":-1"#,
            r#""posted_by":null"#,
            r#""posted_by":["x"]"#,
            r#""attempt":2"#,
            r#""max_attempts":3.0"#,
            r#""progress":100"#,
            r#""progress":300"#,
            r#""last_update":"2026-01-01T00:00:00Z""#,
            r#""last_update":"yesterday""#,
            r#""result":"ok""#,
            r#""reason":{"why":1}"#,
            r#""team":{"any":"thing"}"#,
        ];
        for field in fields {
            let record = format!("{base},{field}}}");
            let full = serde_json::from_str::<Claim>(&record).is_ok();
            let head = serde_json::from_str::<ClaimHead>(&record).is_ok();
            assert_eq!(head, full, "{record}");
        }
        let ok = format!("{base},{}}}", fields[0]);
        assert!(serde_json::from_str::<ClaimHead>(&ok).is_ok());
        assert!(serde_json::from_str::<ClaimHead>(&format!("{base},{}}}", fields[8])).is_err());
    }

    #[test]
    fn records_of_the_older_tools_are_leased_for_their_estimated_duration() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let h = legacy("2025-01-01T00:00:00Z", None);
        assert_eq!(h.lease_deadline(), Some(at("2025-01-01T00:30:00Z")));
        assert!(h.is_live(at("2025-01-01T00:29:59Z")));
        assert!(h.is_lapsed(at("2025-01-01T00:30:00Z")));
        let h = legacy("2025-01-01T00:00:00Z", Some(Value::from("2h")));
        assert_eq!(h.lease_deadline(), Some(at("2025-01-01T02:00:00Z")));
        let h = legacy("2025-01-01T00:00:00Z", Some(Value::from(90)));
        assert_eq!(h.lease_deadline(), Some(at("2025-01-01T00:01:30Z")));
        let h = legacy("2025-01-01T00:00:00Z", Some(Value::from("whenever")));
        assert_eq!(h.lease_deadline(), Some(at("2025-01-01T00:30:00Z")));
    }
}
