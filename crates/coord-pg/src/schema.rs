//! The tables coord keeps in PostgreSQL, and how they come to exist.
//!
//! Every table lives in one schema (`coord` by default), so several
//! independent stores can share a database. The full record of each item is
//! a `jsonb` document, the same JSON the claims file holds; the columns
//! beside it are copies of the fields that queries select and order by.

use coord_core::{ConflictPolicy, Priority, Slot};
use postgres::Transaction;

/// Bumped when the tables change; a store refuses a database whose schema
/// is newer than the one it knows.
pub const SCHEMA_VERSION: i64 = 1;

/// Revisions of the indexes within a schema version: a store brings an
/// older layout up to this one, and a coord that knows only an older one
/// works on this one unchanged (it never reads this key).
///
/// - 2: `coord_claims_deadline`, on the deadline of every row that has one
///   (only in-progress rows do), replaces `coord_claims_lease`, which was
///   on in-progress rows. The probe for a lapsed lease then names no
///   status, so no index but this one can answer it: on in-progress rows,
///   statistics taken while none were in progress let PostgreSQL read them
///   all through the live-by-type index instead.
///
/// - 3: `coord_claims_exclusive`, an exclusion constraint on the work type
///   of live high and critical claims: the database itself refuses a second
///   one of a work type at commit, whoever writes the row.
///
/// - 4: `coord_wait_for_change`, the function waiters sleep in (see
///   `wait_function`).
///
/// - 5: `coord_idempotency_keys`, the answers of keyed changes (see
///   `keys.rs`).
///
/// - 6: `coord_paused`, the work types `next` does not hand out (`coord
///   pause`). A coord of an older layout does not read it: it hands them
///   out still.
pub const LAYOUT: i64 = 6;

/// The function a waiter (`wakeup.rs`) calls: it returns the log's newest
/// `seq` as soon as that passes `mark` (numbering committed events itself,
/// so a change is seen whoever reads the log), or NULL after `wait_ms`.
/// It looks every `every_ms` inside one statement: no transaction while
/// nothing happens, and no cost to writers (a NOTIFY would serialise every
/// durable commit; see docs/benchmarks.md).
fn wait_function(schema: &str) -> String {
    let lock = crate::sql::sequencer_lock(schema).replacen("SELECT", "PERFORM", 1);
    format!(
        "CREATE OR REPLACE FUNCTION coord_wait_for_change(mark bigint, wait_ms integer, \
             every_ms integer) RETURNS bigint LANGUAGE plpgsql \
             SET search_path FROM CURRENT AS $fn$ \
         DECLARE \
             deadline timestamptz := clock_timestamp() + wait_ms * interval '1 millisecond'; \
             newest bigint; \
         BEGIN \
             LOOP \
                 IF EXISTS (SELECT 1 FROM coord_events WHERE seq IS NULL) THEN \
                     {lock}; \
                     {}; \
                 END IF; \
                 SELECT max(seq) INTO newest FROM coord_events; \
                 IF coalesce(newest, 0) > mark THEN \
                     RETURN newest; \
                 END IF; \
                 EXIT WHEN clock_timestamp() >= deadline; \
                 PERFORM pg_sleep(every_ms / 1000.0); \
             END LOOP; \
             RETURN NULL; \
         END $fn$",
        crate::sql::SEQUENCE_EVENTS
    )
}

const TABLES: &str = r"
CREATE TABLE IF NOT EXISTS coord_meta (
    key   text PRIMARY KEY,
    value bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS coord_claims (
    work_item_id   text PRIMARY KEY,
    -- Insertion order: `list` shows items oldest first, like the claims file.
    seq            bigserial NOT NULL,
    work_type      text NOT NULL,
    priority       smallint NOT NULL,
    status         text NOT NULL,
    agent_id       text,
    -- Times in microseconds since the Unix epoch.
    lease_deadline bigint,
    posted_at      bigint,
    retry_at       bigint,
    finished_at    bigint,
    depends_on     text[] NOT NULL DEFAULT '{}',
    doc            jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS coord_claims_live
    ON coord_claims (work_type) WHERE status = 'in_progress';
-- Only in-progress rows have a deadline (see `tx::row_of`).
CREATE INDEX IF NOT EXISTS coord_claims_deadline
    ON coord_claims (lease_deadline) WHERE lease_deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS coord_claims_pending
    ON coord_claims (priority DESC, posted_at NULLS FIRST, seq) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS coord_claims_finished
    ON coord_claims (finished_at) WHERE finished_at IS NOT NULL;

-- The event log. `id` is drawn while the writer holds the locks of what it
-- changed; `seq`, the readers' cursor, is given after commit in `id` order
-- (see `PgStore::events`), so a follower never skips a late commit.
CREATE TABLE IF NOT EXISTS coord_events (
    id  bigserial PRIMARY KEY,
    seq bigint,
    doc jsonb NOT NULL
);
-- Partial, so a writer's insert (seq still NULL) adds no entry to it.
CREATE UNIQUE INDEX IF NOT EXISTS coord_events_seq ON coord_events (seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS coord_events_unsequenced ON coord_events (id) WHERE seq IS NULL;

CREATE TABLE IF NOT EXISTS coord_archive (
    work_item_id text PRIMARY KEY,
    seq          bigserial NOT NULL,
    archived_at  bigint NOT NULL,
    doc          jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS coord_agents (
    agent_id text PRIMARY KEY,
    doc      jsonb NOT NULL
);
-- The answers of keyed changes (idempotency keys), kept 24 hours.
CREATE TABLE IF NOT EXISTS coord_idempotency_keys (
    agent_id    text NOT NULL,
    key         text NOT NULL,
    -- The database's time of the call, in microseconds since the Unix epoch.
    used_at     bigint NOT NULL,
    fingerprint text NOT NULL,
    answer      jsonb NOT NULL,
    PRIMARY KEY (agent_id, key)
);
CREATE INDEX IF NOT EXISTS coord_idempotency_keys_used ON coord_idempotency_keys (used_at);
-- The work types `next` does not hand out (`coord pause`).
CREATE TABLE IF NOT EXISTS coord_paused (
    work_type text PRIMARY KEY,
    doc       jsonb NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS coord_fence;
CREATE SEQUENCE IF NOT EXISTS coord_revision;
";

/// Why `name` may not be coord's schema, if it may not: PostgreSQL's own
/// schemas (`pg_*` names are reserved, and `information_schema`) hold the
/// catalog, not coord's tables.
pub fn schema_name_problem(name: &str) -> Option<&'static str> {
    if !valid_schema_name(name) {
        Some("is not a plain lower-case SQL name")
    } else if name.starts_with("pg_") || name == "information_schema" {
        Some("is one of PostgreSQL's own schemas; choose another name")
    } else {
        None
    }
}

/// Whether `name` is a plain lower-case SQL identifier, so it never needs
/// quoting rules beyond double quotes.
fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

/// At most one live exclusive claim of a work type, in the schema: no two
/// in-progress rows of priority high or critical (`rows::rank`: 2 and 3)
/// share a work type. The priorities are the default policy's exclusive
/// ones; a store's policy may be stricter, never more permissive
/// (`policy_fits_schema`). An exclusion constraint rather than a unique
/// index so it can be checked at commit: a change that writes down a lapsed
/// exclusive claim and inserts its successor passes in any statement order,
/// so a coord of an older layout keeps working beside this one.
const EXCLUSIVE_CONSTRAINT: &str = "ALTER TABLE coord_claims ADD CONSTRAINT coord_claims_exclusive \
     EXCLUDE USING btree (work_type WITH =) WHERE (status = 'in_progress' AND priority >= 2) \
     DEFERRABLE INITIALLY DEFERRED";

/// Whether `policy` makes every two high or critical claims of one work type
/// conflict, as `EXCLUSIVE_CONSTRAINT` does: a store refuses a policy that would
/// let the database turn down claims the policy allows.
pub fn policy_fits_schema(policy: &dyn ConflictPolicy) -> bool {
    let exclusive = [Priority::High, Priority::Critical];
    exclusive.iter().all(|&new| {
        exclusive.iter().all(|&live| {
            let slot = |priority| Slot {
                work_type: "any",
                priority,
            };
            policy.conflicts(slot(new), slot(live))
        })
    })
}

/// The work types that hold more than one live exclusive claim, and their
/// ids: what keeps `EXCLUSIVE_CONSTRAINT` from being added.
const EXCLUSIVE_DUPLICATES: &str = "SELECT work_type, string_agg(work_item_id, ', ' ORDER BY seq) \
     FROM coord_claims WHERE status = 'in_progress' AND priority >= 2 \
     GROUP BY work_type HAVING count(*) > 1 ORDER BY work_type";

/// What `migrate` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migrated {
    Current,
    /// The database was made by a newer coord, with this schema version.
    Newer(i64),
    /// Work types with more than one live exclusive claim, and their ids:
    /// the upgrade to layout 3 cannot refuse them for the future until they
    /// are down to one. Nothing was changed.
    DuplicateExclusive(Vec<(String, String)>),
}

/// Creates the schema and tables if missing. Runs under an advisory lock,
/// because concurrent `CREATE ... IF NOT EXISTS` can still collide.
pub fn migrate(tx: &mut Transaction<'_>, schema: &str) -> Result<Migrated, postgres::Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&crate::sql::LOCK_CLASS, &format!("{schema}#migrate")],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET LOCAL search_path TO \"{schema}\";"
    ))?;
    tx.batch_execute(TABLES)?;
    let found: Option<i64> = tx
        .query_opt(
            "SELECT value FROM coord_meta WHERE key = 'schema_version'",
            &[],
        )?
        .map(|row| row.get(0));
    match found {
        Some(v) if v > SCHEMA_VERSION => return Ok(Migrated::Newer(v)),
        Some(_) => {}
        None => {
            tx.execute(
                "INSERT INTO coord_meta (key, value) VALUES ('schema_version', $1)",
                &[&SCHEMA_VERSION],
            )?;
        }
    }
    // Exclusivity in the schema (layout 3), unless a table already breaks
    // it: then nothing changes, and the caller names the duplicates.
    let duplicates: Vec<(String, String)> = tx
        .query(EXCLUSIVE_DUPLICATES, &[])?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    if !duplicates.is_empty() {
        return Ok(Migrated::DuplicateExclusive(duplicates));
    }
    let constrained = tx
        .query_opt(
            "SELECT 1 FROM pg_constraint \
             WHERE conname = 'coord_claims_exclusive' AND conrelid = 'coord_claims'::regclass",
            &[],
        )?
        .is_some();
    if !constrained {
        tx.batch_execute(EXCLUSIVE_CONSTRAINT)?;
    }
    tx.batch_execute(&wait_function(schema))?;
    // `TABLES` made this layout's indexes; what layout 1 had and 2 replaced
    // goes. A newer layout is left as it is.
    tx.batch_execute("DROP INDEX IF EXISTS coord_claims_lease")?;
    tx.execute(
        "INSERT INTO coord_meta (key, value) VALUES ('layout', $1) \
         ON CONFLICT (key) DO UPDATE SET value = greatest(coord_meta.value, excluded.value)",
        &[&LAYOUT],
    )?;
    Ok(Migrated::Current)
}

/// The statement a store runs on connecting: one row when the schema is
/// at this version and its layout at least this one.
pub fn current_sql() -> String {
    format!(
        "SELECT 1 FROM coord_meta m JOIN coord_meta l ON l.key = 'layout' \
         WHERE m.key = 'schema_version' AND m.value = {SCHEMA_VERSION} AND l.value >= {LAYOUT}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["coord", "_x", "team_2"] {
            assert!(valid_schema_name(ok), "{ok}");
        }
        for bad in ["", "2x", "Coord", "a-b", "a\"b", "a b", &"x".repeat(64)] {
            assert!(!valid_schema_name(bad), "{bad}");
            assert!(schema_name_problem(bad).is_some(), "{bad}");
        }
        for system in ["pg_catalog", "pg_toast", "pg_temp_1", "information_schema"] {
            assert!(schema_name_problem(system).is_some_and(|p| p.contains("PostgreSQL's own")));
        }
        assert_eq!(schema_name_problem("pgx"), None);
    }
}
