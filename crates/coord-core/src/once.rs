//! Idempotency keys: a change made once however often a caller retries it.
//!
//! A caller unsure whether its change committed (the connection broke
//! during the commit, the process was killed) sends it again with the same
//! [`IdempotencyKey`]. A store keeps, per agent and key, the call's
//! [`fingerprint`](KeyedChange::fingerprint) and its [`Answer`] for
//! [`KEY_TTL`]: a repeat gets the first answer back instead of acting again
//! ([`Remembered::replay`]); the same key for a different call is refused.
//!
//! What is remembered is a final answer the store gave: the item, or a
//! refusal that stays a refusal (not found, not the owner, a lost lease, a
//! forbidden transition). A refusal that says "not now" (a conflict,
//! nothing to take) and a failure that is no answer (a lock timeout, a
//! database error) are not: nothing changed, and a retry with the key should
//! try again, which is what `--retry`, `coord work` and a caller's own
//! retry loop need of it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{CoordError, Invalid};
use crate::model::{Claim, ClaimRequest, NextRequest, PostRequest, validate_name};
use crate::transition::{Action, Actor};

/// How long a store remembers a key's answer.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A caller's name for one logical change, unique per agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// A key: as a name is (1 to 256 bytes, no control characters, not
    /// only spaces).
    pub fn new(key: impl Into<String>) -> Result<Self, CoordError> {
        let key = key.into();
        validate_name("the idempotency key", &key)?;
        Ok(IdempotencyKey(key))
    }

    /// A key no other call will have: `prefix`, the time and a random
    /// number (for a caller's own retries, as `coord run` and `coord work`
    /// make).
    pub fn fresh(prefix: &str) -> IdempotencyKey {
        let nanos = crate::time::Timestamp::now().as_unix_nanos();
        IdempotencyKey(format!("{prefix}-{nanos}-{:016x}", fastrand::u64(..)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A change that may be made under a key: every change that acts for one
/// agent and answers with one item.
#[derive(Debug, Clone, Copy)]
pub enum KeyedChange<'a> {
    Claim(&'a ClaimRequest),
    Post(&'a PostRequest),
    Next(&'a NextRequest),
    Act {
        work_item_id: &'a str,
        action: &'a Action,
        actor: Actor<'a>,
    },
}

impl KeyedChange<'_> {
    /// The agent the key belongs to.
    pub fn agent_id(&self) -> &str {
        match self {
            KeyedChange::Claim(r) => &r.agent_id,
            KeyedChange::Post(r) => &r.agent_id,
            KeyedChange::Next(r) => &r.agent_id,
            KeyedChange::Act { actor, .. } => actor.agent_id,
        }
    }

    /// The change's name, as the CLI calls it.
    pub fn name(&self) -> &'static str {
        match self {
            KeyedChange::Claim(_) => "claim",
            KeyedChange::Post(_) => "post",
            KeyedChange::Next(_) => "next",
            KeyedChange::Act { action, .. } => action.name(),
        }
    }

    /// Every argument of the call, as one line of JSON: two calls are the
    /// same call when their fingerprints are equal. Stored, so its form
    /// stays stable (durations in milliseconds).
    pub fn fingerprint(&self) -> String {
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let value = match self {
            KeyedChange::Claim(r) => json!({
                "change": "claim", "work_type": r.work_type, "description": r.description,
                "priority": r.priority, "lease_ms": ms(&r.lease), "payload": r.payload,
            }),
            KeyedChange::Post(r) => {
                let mut value = json!({
                    "change": "post", "work_type": r.work_type, "description": r.description,
                    "priority": r.priority, "depends_on": r.depends_on,
                    "max_attempts": r.max_attempts, "payload": r.payload,
                });
                // Only when given, so keys remembered before it existed still match.
                if let Some(on) = r.on_dependency_failure {
                    value["on_dependency_failure"] = json!(on);
                }
                value
            }
            KeyedChange::Next(r) => json!({
                "change": "next", "work_types": r.work_types, "lease_ms": ms(&r.lease),
            }),
            KeyedChange::Act {
                work_item_id,
                action,
                actor,
            } => {
                let action = match action {
                    Action::Heartbeat { lease } => json!({"lease_ms": lease.as_ref().map(ms)}),
                    Action::Progress { percent } => json!({"percent": percent}),
                    Action::Complete { result } => json!({"result": result}),
                    Action::Fail {
                        reason,
                        requeue,
                        retry_after,
                    } => json!({
                        "reason": reason, "requeue": requeue,
                        "retry_after_ms": retry_after.as_ref().map(ms),
                    }),
                    Action::Release => json!({}),
                };
                json!({
                    "change": self.name(), "work_item_id": work_item_id, "action": action,
                    "fence": actor.fence, "force": actor.force,
                })
            }
        };
        value.to_string()
    }

    /// Checks the arguments as the change itself would, before any key is
    /// looked up: a bad call is refused, not remembered.
    pub fn validate(&self) -> Result<(), CoordError> {
        match self {
            KeyedChange::Claim(r) => r.validate(),
            KeyedChange::Post(r) => r.validate(),
            KeyedChange::Next(r) => r.validate(),
            KeyedChange::Act { actor, .. } => validate_name("the agent id", actor.agent_id),
        }
    }
}

/// What a keyed change answered, as a store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The item the change returned.
    Item(Box<Claim>),
    /// The refusal it returned.
    Refused(Refusal),
}

/// A final refusal the rules made, which a repeat of the call gets again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum Refusal {
    NotFound {
        work_item_id: String,
    },
    LeaseExpired {
        work_item_id: String,
        message: String,
    },
    NotOwner {
        work_item_id: String,
        owner: Option<String>,
        agent: String,
    },
    /// A change the state machine does not allow, or invalid input.
    Invalid {
        reason: String,
        message: String,
    },
}

impl Answer {
    /// The answer to remember for a change's result; `None` for a refusal
    /// that says "not now" (a conflict, nothing to take) or a failure that
    /// is no answer (a lock timeout, a database or file error, a bug), after
    /// which a retry should try again.
    pub fn of(result: &Result<Claim, CoordError>) -> Option<Answer> {
        let refusal = match result {
            Ok(claim) => return Some(Answer::Item(Box::new(claim.clone()))),
            Err(CoordError::NotFound { work_item_id }) => Refusal::NotFound {
                work_item_id: work_item_id.clone(),
            },
            Err(CoordError::LeaseExpired {
                work_item_id,
                message,
            }) => Refusal::LeaseExpired {
                work_item_id: work_item_id.clone(),
                message: message.clone(),
            },
            Err(CoordError::NotOwner {
                work_item_id,
                owner,
                agent,
            }) => Refusal::NotOwner {
                work_item_id: work_item_id.clone(),
                owner: owner.clone(),
                agent: agent.clone(),
            },
            Err(CoordError::ValidationFailed {
                reason: reason @ (Invalid::Transition | Invalid::Input),
                message,
            }) => Refusal::Invalid {
                reason: reason.as_str().to_owned(),
                message: message.clone(),
            },
            Err(_) => return None,
        };
        Some(Answer::Refused(refusal))
    }

    /// The answer as the call's result again.
    pub fn into_result(self) -> Result<Claim, CoordError> {
        let refusal = match self {
            Answer::Item(claim) => return Ok(*claim),
            Answer::Refused(r) => r,
        };
        Err(match refusal {
            Refusal::NotFound { work_item_id } => CoordError::NotFound { work_item_id },
            Refusal::LeaseExpired {
                work_item_id,
                message,
            } => CoordError::LeaseExpired {
                work_item_id,
                message,
            },
            Refusal::NotOwner {
                work_item_id,
                owner,
                agent,
            } => CoordError::NotOwner {
                work_item_id,
                owner,
                agent,
            },
            Refusal::Invalid { reason, message } if reason == Invalid::Input.as_str() => {
                CoordError::invalid_input(message)
            }
            Refusal::Invalid { message, .. } => CoordError::forbidden(message),
        })
    }
}

/// What a store remembers of a keyed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// The call's [`KeyedChange::fingerprint`].
    pub fingerprint: String,
    pub answer: Answer,
}

impl Remembered {
    /// The first call's answer again for `change`, or the refusal of a key
    /// used for a different call.
    pub fn replay(
        self,
        key: &IdempotencyKey,
        change: &KeyedChange<'_>,
    ) -> Result<Claim, CoordError> {
        let fingerprint = change.fingerprint();
        if self.fingerprint != fingerprint {
            return Err(CoordError::invalid_input(format!(
                "the idempotency key {key:?} of agent {:?} was used within {} hours for a \
                 different call ({}); now given for {fingerprint}: use a new key for a new change",
                change.agent_id(),
                KEY_TTL.as_secs() / 3600,
                self.fingerprint,
            )));
        }
        self.answer.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    fn claim_request(work_type: &str) -> ClaimRequest {
        ClaimRequest::new("agent-1", work_type)
            .description("tests")
            .priority(Priority::High)
    }

    #[test]
    fn a_key_must_be_short_printable_and_not_blank() {
        assert!(IdempotencyKey::new("run-42/attempt").is_ok());
        for bad in ["", "  ", "a\nb", &"k".repeat(257)] {
            let e = IdempotencyKey::new(bad).unwrap_err();
            assert_eq!(e.invalid_reason(), Some(Invalid::Input), "{bad:?}");
        }
    }

    #[test]
    fn the_fingerprint_tells_every_argument_apart() {
        let a = claim_request("tests");
        let b = claim_request("deploy");
        let c = claim_request("tests").lease(Duration::from_secs(61));
        let prints: Vec<String> = [&a, &b, &c]
            .iter()
            .map(|r| KeyedChange::Claim(r).fingerprint())
            .collect();
        assert_ne!(prints[0], prints[1]);
        assert_ne!(prints[0], prints[2]);
        assert_eq!(prints[0], KeyedChange::Claim(&a.clone()).fingerprint());
        let complete = |fence| KeyedChange::Act {
            work_item_id: "w",
            action: &Action::Complete { result: None },
            actor: Actor::new("agent-1").fence(fence),
        };
        assert_ne!(
            complete(Some(1)).fingerprint(),
            complete(Some(2)).fingerprint()
        );
    }

    #[test]
    fn every_refusal_is_replayed_as_the_error_it_was() {
        let errors = [
            CoordError::NotFound {
                work_item_id: "w".into(),
            },
            CoordError::LeaseExpired {
                work_item_id: "w".into(),
                message: "m".into(),
            },
            CoordError::NotOwner {
                work_item_id: "w".into(),
                owner: Some("o".into()),
                agent: "a".into(),
            },
            CoordError::forbidden("twice"),
            CoordError::invalid_input("bad"),
        ];
        for error in errors {
            let answer = Answer::of(&Err(error)).expect("a refusal is an answer");
            let text = serde_json::to_string(&answer).unwrap();
            let back: Answer = serde_json::from_str(&text).unwrap();
            assert_eq!(back, answer);
        }
        let again = Answer::of(&Err(CoordError::forbidden("twice")))
            .unwrap()
            .into_result()
            .unwrap_err();
        assert_eq!(again.invalid_reason(), Some(Invalid::Transition));
        assert_eq!(again.to_string(), "twice");
    }

    #[test]
    fn refusals_that_say_not_now_and_failures_that_are_no_answer_are_not_remembered() {
        let db = CoordError::Database {
            message: "connection lost".into(),
            source: None,
        };
        assert!(Answer::of(&Err(db)).is_none());
        assert!(Answer::of(&Err(CoordError::damaged("bad row"))).is_none());
        let conflict = CoordError::Conflict {
            work_type: "t".into(),
            conflicting_work_item_id: "w".into(),
        };
        assert!(Answer::of(&Err(conflict)).is_none());
        let empty = CoordError::NothingToTake { work_types: vec![] };
        assert!(Answer::of(&Err(empty)).is_none());
    }

    #[test]
    fn a_key_given_for_another_call_is_refused_naming_both() {
        let first = claim_request("tests");
        let other = claim_request("deploy");
        let key = IdempotencyKey::new("k1").unwrap();
        let remembered = Remembered {
            fingerprint: KeyedChange::Claim(&first).fingerprint(),
            answer: Answer::Refused(Refusal::NotFound {
                work_item_id: "w".into(),
            }),
        };
        let e = remembered
            .replay(&key, &KeyedChange::Claim(&other))
            .unwrap_err();
        assert_eq!(e.invalid_reason(), Some(Invalid::Input));
        let message = e.to_string();
        assert!(
            message.contains("\"k1\"") && message.contains("deploy") && message.contains("tests"),
            "{message}"
        );
    }
}
