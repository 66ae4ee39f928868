//! Idempotency keys on PostgreSQL: the table `coord_idempotency_keys`
//! keeps each agent's key with the call's fingerprint and answer (see
//! `coord_core::IdempotencyKey`), written in the same transaction as the
//! change it answers, so the key is there exactly when the change is.
//!
//! A keyed call first looks its key up (one statement, outside any
//! transaction). Not found, the change runs on its reading path (the
//! one-statement paths write no key) and its commit inserts the key. Two
//! calls with one key at once: the second's insert waits for the first's
//! commit, fails on the primary key, and the whole call runs again
//! (`fail::retryable`), now finding the first's answer. A refusal changes
//! nothing, so its key is inserted on its own. Keys older than `KEY_TTL`
//! are replaced when used again and deleted by `cleanup`.

use coord_core::{Answer, IdempotencyKey, KEY_TTL, KeyedChange, Remembered, Timestamp};
use postgres::Client;

use crate::fail::Fail;
use crate::sql::{json_lit, lit};

/// The key a change in progress remembers its answer under.
#[derive(Debug, Clone)]
pub(crate) struct KeyedCall {
    pub agent_id: String,
    pub key: String,
    pub fingerprint: String,
}

impl KeyedCall {
    pub fn new(key: &IdempotencyKey, change: &KeyedChange<'_>) -> Self {
        KeyedCall {
            agent_id: change.agent_id().to_owned(),
            key: key.as_str().to_owned(),
            fingerprint: change.fingerprint(),
        }
    }

    /// The statements that remember `answer` at `now` (the server's time):
    /// an expired row of the same key goes first, so a live one makes the
    /// insert fail on the primary key.
    pub fn remember_sql(&self, answer: &Answer, now: Timestamp) -> String {
        format!(
            "DELETE FROM coord_idempotency_keys WHERE agent_id = {agent} AND key = {key} \
               AND used_at <= {expired}; \
             INSERT INTO coord_idempotency_keys (agent_id, key, used_at, fingerprint, answer) \
               VALUES ({agent}, {key}, {now}, {fingerprint}, {answer}::jsonb);",
            agent = lit(&self.agent_id),
            key = lit(&self.key),
            expired = expired_before(now),
            now = now.as_unix_micros(),
            fingerprint = lit(&self.fingerprint),
            answer = json_lit(answer),
        )
    }
}

/// The time at or before which a key has expired, in microseconds.
pub(crate) fn expired_before(now: Timestamp) -> i64 {
    now.saturating_sub(KEY_TTL).as_unix_micros()
}

/// What `call`'s key answered within `KEY_TTL` of `now`, if anything.
pub(crate) fn lookup(
    client: &mut Client,
    call: &KeyedCall,
    now: Timestamp,
) -> Result<Option<Remembered>, Fail> {
    let row = client.query_opt(
        "SELECT fingerprint, answer FROM coord_idempotency_keys \
         WHERE agent_id = $1 AND key = $2 AND used_at > $3",
        &[&call.agent_id, &call.key, &expired_before(now)],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let fingerprint: String = row.try_get(0)?;
    let answer: serde_json::Value = row.try_get(1)?;
    let answer: Answer = serde_json::from_value(answer).map_err(|e| {
        coord_core::CoordError::damaged(format!(
            "the answer kept for idempotency key {:?} of agent {:?} is not one coord wrote: {e}",
            call.key, call.agent_id
        ))
    })?;
    Ok(Some(Remembered {
        fingerprint,
        answer,
    }))
}
