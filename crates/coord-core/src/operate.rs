//! What the people who run the queue do to items that are not theirs:
//! cancel them ([`Operation::Cancel`]) or send them back to the queue
//! ([`Operation::Retry`]), one item by id or every item a [`Match`]
//! selects, in one change ([`OperateRequest`]); and stop `next` handing
//! out a work type for a while ([`Paused`], `Store::pause`). The
//! transitions themselves are [`crate::transition::cancel`] and
//! [`crate::transition::retry`]; [`crate::decide::operate`] applies them
//! within a change.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CoordError;
use crate::model::{Claim, Status, validate_name};
use crate::time::Timestamp;
use crate::transition::{self, Change};

/// What to do to the items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// End them as `cancelled`: pending items, and with `force` items in
    /// progress too.
    Cancel { reason: Option<String>, force: bool },
    /// Send failed, expired or cancelled queue items back to `pending`:
    /// one more attempt, or with `reset_attempts` all of them again.
    Retry { reset_attempts: bool },
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Cancel { .. } => "cancel",
            Operation::Retry { .. } => "retry",
        }
    }

    /// The statuses an item may have for this operation to change it.
    pub fn acts_on(&self) -> &'static [Status] {
        match self {
            Operation::Cancel { force: false, .. } => &[Status::Pending],
            Operation::Cancel { force: true, .. } => &[Status::Pending, Status::InProgress],
            Operation::Retry { .. } => &[Status::Failed, Status::Expired, Status::Cancelled],
        }
    }

    /// The change this operation by `by` makes to `claim`, or why it cannot.
    pub fn apply(&self, claim: &Claim, by: &str, now: Timestamp) -> Result<Change, CoordError> {
        match self {
            Operation::Cancel { reason, force } => {
                transition::cancel(claim, by, reason.as_deref(), *force, now)
            }
            Operation::Retry { reset_attempts } => {
                transition::retry(claim, by, *reset_attempts, now)
            }
        }
    }
}

/// Which items a bulk operation selects: every item that passes each
/// filter given (and that the operation can act on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    pub work_type: Option<String>,
    pub status: Option<Status>,
    /// The agent that holds the item (or held it last).
    pub owner: Option<String>,
    /// Last changed longer ago than this.
    pub older_than: Option<Duration>,
}

impl Match {
    pub fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    /// Whether `claim` passes every filter, at `now`.
    pub fn matches(&self, claim: &Claim, now: Timestamp) -> bool {
        let changed = claim
            .last_update
            .or(claim.posted_at)
            .or(claim.claimed_at)
            .unwrap_or(now);
        self.work_type
            .as_ref()
            .is_none_or(|t| *t == claim.work_type)
            && self.status.is_none_or(|s| s == claim.status)
            && self
                .owner
                .as_ref()
                .is_none_or(|o| claim.agent_id.as_ref() == Some(o))
            && self
                .older_than
                .is_none_or(|age| now.saturating_duration_since(changed) > age)
    }
}

/// The items an operation is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This one; an item the operation cannot act on is an error.
    Item(String),
    /// Every item that matches and that the operation can act on; the
    /// others are passed over.
    Matching(Match),
}

/// An operation by `agent_id` on its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperateRequest {
    pub agent_id: String,
    pub operation: Operation,
    pub target: Target,
}

impl OperateRequest {
    /// Refuses what would act on nothing or by accident on everything: an
    /// empty id, a filter-less bulk operation, a `status` filter the
    /// operation never acts on.
    pub fn validate(&self) -> Result<(), CoordError> {
        validate_name("agent id", &self.agent_id)?;
        let op = self.operation.name();
        match &self.target {
            Target::Item(id) => validate_name("work item id", id),
            Target::Matching(m) if m.is_empty() => Err(CoordError::invalid_input(format!(
                "{op} needs a work item id or at least one filter (--work-type, --status, --owner, --older-than)"
            ))),
            Target::Matching(m) => {
                if let Some(status) = m.status
                    && !self.operation.acts_on().contains(&status)
                {
                    let acts_on: Vec<&str> = self
                        .operation
                        .acts_on()
                        .iter()
                        .map(|s| s.as_str())
                        .collect();
                    return Err(CoordError::invalid_input(format!(
                        "{op} acts on {} items, not {status}{}",
                        acts_on.join(", "),
                        if status == Status::InProgress {
                            " (without --force)"
                        } else {
                            ""
                        }
                    )));
                }
                if let Some(t) = &m.work_type {
                    validate_name("work type", t)?;
                }
                if let Some(o) = &m.owner {
                    validate_name("owner", o)?;
                }
                Ok(())
            }
        }
    }

    /// Whether the operation, by id or by filter, is for `claim` at `now`
    /// (before it is asked whether it can act on it).
    pub fn selects(&self, claim: &Claim, now: Timestamp) -> bool {
        match &self.target {
            Target::Item(id) => *id == claim.work_item_id,
            Target::Matching(m) => {
                m.matches(claim, now) && self.operation.acts_on().contains(&claim.status)
            }
        }
    }
}

/// A work type `next` does not hand out (`coord pause`): claims of it
/// already held go on, `post` still queues it, `claim` still claims it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub work_type: String,
    pub paused_by: String,
    pub paused_at: Timestamp,
}

impl Paused {
    /// Refuses a pause or resume by `agent_id` of `work_type` that names
    /// nothing a store could hold.
    pub fn validate(agent_id: &str, work_type: &str) -> Result<(), CoordError> {
        validate_name("agent id", agent_id)?;
        validate_name("work type", work_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PostRequest, Priority};
    use crate::transition::NewIds;

    fn posted(work_type: &str, now: Timestamp) -> Claim {
        let ids = NewIds {
            work_item_id: format!("work_{work_type}"),
            coordination_id: format!("coord_{work_type}"),
        };
        transition::post(&PostRequest::new("poster", work_type), ids, now).claim
    }

    #[test]
    fn a_bulk_operation_needs_a_filter_and_a_status_it_can_act_on() {
        let request = |target| OperateRequest {
            agent_id: "ops".into(),
            operation: Operation::Cancel {
                reason: None,
                force: false,
            },
            target,
        };
        let err = request(Target::Matching(Match::default()))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("at least one filter"), "{err}");
        let completed = Match {
            status: Some(Status::Completed),
            ..Match::default()
        };
        let err = request(Target::Matching(completed)).validate().unwrap_err();
        assert!(err.to_string().contains("not completed"), "{err}");
        let in_progress = Match {
            status: Some(Status::InProgress),
            ..Match::default()
        };
        let err = request(Target::Matching(in_progress))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("without --force"), "{err}");
        request(Target::Item("work_1".into())).validate().unwrap();
    }

    #[test]
    fn a_match_selects_by_every_filter_given() {
        let now = Timestamp::now();
        let item = posted("build", now);
        let later = now.saturating_add(Duration::from_secs(120));
        let by = |m: Match, at| m.matches(&item, at);
        assert!(by(Match::default(), now));
        let build = Match {
            work_type: Some("build".into()),
            ..Match::default()
        };
        assert!(by(build.clone(), now));
        let old = Match {
            older_than: Some(Duration::from_secs(60)),
            ..build
        };
        assert!(!by(old.clone(), now), "posted just now");
        assert!(by(old.clone(), later));
        let owned = Match {
            owner: Some("alice".into()),
            ..old
        };
        assert!(!by(owned, later), "nobody holds it");
        let tests = Match {
            work_type: Some("tests".into()),
            ..Match::default()
        };
        assert!(!by(tests, now));
        assert_eq!(item.priority, Priority::Medium);
    }
}
