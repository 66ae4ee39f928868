//! The state machine: which changes a claim may undergo, decided once for
//! every store.
//!
//! ```text
//!                 progress (0-100)
//!                   ┌──────┐
//!                   ▼      │
//!   claim ──▶  in_progress ─┴──▶ completed
//!                   │
//!                   └──────────▶ failed
//! ```
//!
//! Only an in-progress claim changes; `completed` and `failed` are final.

use crate::error::CoordError;
use crate::model::{Claim, Status};
use crate::time::Timestamp;

/// A change an agent asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Report progress, in percent (0-100).
    Progress {
        percent: i64,
    },
    Complete {
        result: Option<String>,
    },
    Fail {
        reason: Option<String>,
    },
}

impl Update {
    pub fn name(&self) -> &'static str {
        match self {
            Update::Progress { .. } => "progress",
            Update::Complete { .. } => "complete",
            Update::Fail { .. } => "fail",
        }
    }
}

/// `claim` after `update` at `now`, or why the update is not allowed.
pub fn apply(claim: &Claim, update: &Update, now: Timestamp) -> Result<Claim, CoordError> {
    if !claim.status.is_live() {
        return Err(CoordError::validation(format!(
            "cannot {} work item {}: it is {}, and only an in-progress claim can change",
            update.name(),
            claim.work_item_id,
            claim.status
        )));
    }
    let mut next = claim.clone();
    next.last_update = Some(now);
    match update {
        Update::Progress { percent } => {
            let percent = u8::try_from(*percent)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| {
                    CoordError::validation(format!(
                        "progress must be between 0 and 100, got {percent}"
                    ))
                })?;
            next.progress = Some(percent);
        }
        Update::Complete { result } => {
            next.status = Status::Completed;
            next.completed_at = Some(now);
            next.progress = Some(100);
            if result.is_some() {
                next.result.clone_from(result);
            }
        }
        Update::Fail { reason } => {
            next.status = Status::Failed;
            next.failed_at = Some(now);
            if reason.is_some() {
                next.reason.clone_from(reason);
            }
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClaimRequest, Priority};

    fn claim() -> Claim {
        let req = ClaimRequest::new("agent_1", "build").priority(Priority::High);
        Claim::new(&req, "work_1".into(), "coord_1".into(), Timestamp::now())
    }

    #[test]
    fn progress_stays_in_progress_and_checks_the_range() {
        let now = Timestamp::now();
        let c = apply(&claim(), &Update::Progress { percent: 40 }, now).unwrap();
        assert_eq!(
            (c.status, c.progress, c.last_update),
            (Status::InProgress, Some(40), Some(now))
        );
        for bad in [-1, 101, 1000] {
            let err = apply(&claim(), &Update::Progress { percent: bad }, now).unwrap_err();
            assert!(err.to_string().contains("between 0 and 100"), "{err}");
        }
    }

    #[test]
    fn complete_and_fail_are_final() {
        let now = Timestamp::now();
        let done = apply(
            &claim(),
            &Update::Complete {
                result: Some("ok".into()),
            },
            now,
        )
        .unwrap();
        assert_eq!(
            (done.status, done.completed_at, done.result.as_deref()),
            (Status::Completed, Some(now), Some("ok"))
        );
        let failed = apply(&claim(), &Update::Fail { reason: None }, now).unwrap();
        assert_eq!(
            (failed.status, failed.failed_at),
            (Status::Failed, Some(now))
        );
        for finished in [done, failed] {
            for update in [
                Update::Progress { percent: 1 },
                Update::Complete { result: None },
                Update::Fail { reason: None },
            ] {
                let err = apply(&finished, &update, now).unwrap_err();
                assert_eq!(err.kind(), crate::ErrorKind::ValidationFailed);
            }
        }
    }
}
