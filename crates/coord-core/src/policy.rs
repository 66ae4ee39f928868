//! Which claims exclude each other: the [`ConflictPolicy`] trait, the seed's
//! rule ([`SeedPolicy`], the default) and [`ExclusivePerWorkType`], and the
//! checks stores make with a policy ([`find_conflict`], [`needs_exclusion`]).

use std::fmt;

use crate::model::{ClaimHead, Priority};
use crate::time::Timestamp;

/// The part of a claim a conflict policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
/// library user can replace with a type of their own.
pub trait ConflictPolicy: Send + Sync + fmt::Debug {
    /// Whether a new claim `new` conflicts with the live claim `live`.
    fn conflicts(&self, new: Slot<'_>, live: Slot<'_>) -> bool;

    /// Whether a claim of `priority` conflicts with no claim at all, of any
    /// work type, either way round. A store may then take such work without
    /// looking at other claims (PostgreSQL's `next` in one statement). The
    /// default, `false`, is always safe.
    fn never_conflicts(&self, priority: Priority) -> bool {
        let _ = priority;
        false
    }
}

/// The seed's rule, and the default: `high` and `critical` work is exclusive
/// per work type; `low` and `medium` work never conflicts.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedPolicy;

impl ConflictPolicy for SeedPolicy {
    fn conflicts(&self, new: Slot<'_>, live: Slot<'_>) -> bool {
        new.work_type == live.work_type && exclusive(new.priority) && exclusive(live.priority)
    }

    fn never_conflicts(&self, priority: Priority) -> bool {
        !exclusive(priority)
    }
}

fn exclusive(priority: Priority) -> bool {
    priority >= Priority::High
}

/// One live claim per work type, whatever the priority.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExclusivePerWorkType;

impl ConflictPolicy for ExclusivePerWorkType {
    fn conflicts(&self, new: Slot<'_>, live: Slot<'_>) -> bool {
        new.work_type == live.work_type
    }
}

/// The first claim live at `now` that `new` conflicts with, if any. A claim
/// whose lease has passed blocks nobody, written down as expired or not.
pub fn find_conflict<'h>(
    policy: &dyn ConflictPolicy,
    new: Slot<'_>,
    claims: impl IntoIterator<Item = &'h ClaimHead>,
    now: Timestamp,
) -> Option<&'h ClaimHead> {
    claims
        .into_iter()
        .find(|h| h.is_live(now) && policy.conflicts(new, Slot::from(*h)))
}

/// Whether a claim in `slot` could conflict, either way round, with any
/// claim of its own work type. A store that coordinates through locks per
/// work type (PostgreSQL) takes none for a claim that could not conflict;
/// it assumes, as both built-in policies do, that conflicts stay within one
/// work type.
pub fn needs_exclusion(policy: &dyn ConflictPolicy, slot: Slot<'_>) -> bool {
    Priority::ALL.iter().any(|&priority| {
        let other = Slot {
            work_type: slot.work_type,
            priority,
        };
        policy.conflicts(slot, other) || policy.conflicts(other, slot)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn head(work_type: &str, priority: Priority, status: Status, lease_until: i64) -> ClaimHead {
        let mut c = crate::transition::claim(
            &crate::ClaimRequest::new("a", work_type).priority(priority),
            crate::transition::NewIds {
                work_item_id: format!("work_{work_type}_{priority}"),
                coordination_id: "c".into(),
            },
            1,
            at(0),
        )
        .claim;
        c.status = status;
        c.lease_expires_at = Some(at(lease_until));
        c.head()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_nanos(i128::from(secs) * 1_000_000_000).unwrap()
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

    /// A policy that says a priority never conflicts must mean it: stores
    /// skip every check for such claims.
    #[test]
    fn never_conflicting_priorities_need_no_exclusion() {
        let policies: [&dyn ConflictPolicy; 2] = [&SeedPolicy, &ExclusivePerWorkType];
        for policy in policies {
            for priority in Priority::ALL {
                let exclusive = ["deploy", "t", "x_y"].iter().any(|work_type| {
                    needs_exclusion(
                        policy,
                        Slot {
                            work_type,
                            priority,
                        },
                    )
                });
                if policy.never_conflicts(priority) {
                    assert!(!exclusive, "{policy:?} {priority}");
                }
            }
        }
        assert!(SeedPolicy.never_conflicts(Priority::Medium));
        assert!(!SeedPolicy.never_conflicts(Priority::High));
        assert!(!ExclusivePerWorkType.never_conflicts(Priority::Low));
    }

    #[test]
    fn only_live_claims_conflict() {
        let claims = [
            head("deploy", Priority::High, Status::Completed, 100),
            head("deploy", Priority::High, Status::Failed, 100),
            head("deploy", Priority::High, Status::InProgress, 10),
            head("deploy", Priority::Critical, Status::InProgress, 100),
        ];
        let slot = |priority| Slot {
            work_type: "deploy",
            priority,
        };
        let new = slot(Priority::High);
        let hit = find_conflict(&SeedPolicy, new, &claims, at(50)).unwrap();
        assert_eq!(hit.priority, Priority::Critical);
        let older = &claims[..3];
        assert!(
            find_conflict(&SeedPolicy, new, older, at(50)).is_none(),
            "a lapsed lease blocks nobody"
        );
        assert!(find_conflict(&SeedPolicy, new, older, at(5)).is_some());
        let medium = slot(Priority::Medium);
        assert!(find_conflict(&SeedPolicy, medium, &claims, at(50)).is_none());
        assert!(find_conflict(&ExclusivePerWorkType, medium, &claims, at(50)).is_some());
    }
}
