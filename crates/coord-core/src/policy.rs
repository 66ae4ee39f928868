use std::fmt;

use crate::model::{ClaimHead, Priority};

/// The part of a claim a conflict policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot<'a> {
    pub work_type: &'a str,
    pub priority: Priority,
}

impl<'a> From<&'a ClaimHead> for Slot<'a> {
    fn from(h: &'a ClaimHead) -> Self {
        Slot {
            work_type: &h.work_type,
            priority: h.priority,
        }
    }
}

/// Decides whether a new claim may run beside a live one. A value the
/// library user can replace; closures `Fn(Slot, Slot) -> bool` qualify.
pub trait ConflictPolicy: Send + Sync + fmt::Debug {
    /// Whether a new claim `new` conflicts with the live claim `live`.
    fn conflicts(&self, new: Slot<'_>, live: Slot<'_>) -> bool;
}

/// The seed's rule, and the default: `high` and `critical` work is exclusive
/// per work type; `low` and `medium` work never conflicts.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedPolicy;

impl ConflictPolicy for SeedPolicy {
    fn conflicts(&self, new: Slot<'_>, live: Slot<'_>) -> bool {
        let exclusive = |p: Priority| p >= Priority::High;
        new.work_type == live.work_type && exclusive(new.priority) && exclusive(live.priority)
    }
}

/// One live claim per work type, whatever the priority.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExclusivePerWorkType;

impl ConflictPolicy for ExclusivePerWorkType {
    fn conflicts(&self, new: Slot<'_>, live: Slot<'_>) -> bool {
        new.work_type == live.work_type
    }
}

/// The first live claim that `new` conflicts with, if any.
pub fn find_conflict<'h>(
    policy: &dyn ConflictPolicy,
    new: Slot<'_>,
    claims: impl IntoIterator<Item = &'h ClaimHead>,
) -> Option<&'h ClaimHead> {
    claims
        .into_iter()
        .find(|h| h.status.is_live() && policy.conflicts(new, Slot::from(*h)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn head(work_type: &str, priority: Priority, status: Status) -> ClaimHead {
        ClaimHead {
            work_item_id: format!("work_{work_type}_{priority}"),
            agent_id: "a".into(),
            work_type: work_type.into(),
            priority,
            status,
            coordination_id: None,
        }
    }

    #[test]
    fn seed_policy_truth_table() {
        for new in Priority::ALL {
            for live in Priority::ALL {
                let expected = new >= Priority::High && live >= Priority::High;
                let got = SeedPolicy.conflicts(
                    Slot {
                        work_type: "t",
                        priority: new,
                    },
                    Slot {
                        work_type: "t",
                        priority: live,
                    },
                );
                assert_eq!(got, expected, "new {new} vs live {live}");
                assert!(!SeedPolicy.conflicts(
                    Slot {
                        work_type: "t",
                        priority: new
                    },
                    Slot {
                        work_type: "u",
                        priority: live
                    },
                ));
            }
        }
    }

    #[test]
    fn only_live_claims_conflict() {
        let claims = [
            head("deploy", Priority::High, Status::Completed),
            head("deploy", Priority::High, Status::Failed),
            head("deploy", Priority::Critical, Status::InProgress),
        ];
        let new = Slot {
            work_type: "deploy",
            priority: Priority::High,
        };
        let hit = find_conflict(&SeedPolicy, new, &claims).unwrap();
        assert_eq!(hit.priority, Priority::Critical);
        assert!(find_conflict(&SeedPolicy, new, &claims[..2]).is_none());
        let medium = Slot {
            work_type: "deploy",
            priority: Priority::Medium,
        };
        assert!(find_conflict(&SeedPolicy, medium, &claims).is_none());
        assert!(find_conflict(&ExclusivePerWorkType, medium, &claims).is_some());
    }
}
