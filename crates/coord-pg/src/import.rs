//! `coord import`: a coordination directory's contents copied into the
//! database in one transaction (all or nothing): every item as it is
//! (unknown fields too), the archive, the event log, the agent registry and
//! the paused work types. Nothing already there is imported again: an item
//! or archived item whose id the database has, an event it holds the same,
//! an agent it knows, a work type it has paused. The
//! fence and revision sequences go on above the highest imported number, so
//! an imported holder's fence stays below every later one.

use coord_core::operate::Paused;
use coord_core::{AgentRecord, Claim, CoordError, Event, Store};
use postgres::Transaction;
use postgres::types::Json;
use postgres::types::ToSql;
use serde::Serialize;
use serde_json::Value;

use crate::rows::row_of;
use crate::sql::CLAIM_ROW;
use crate::store::PgStore;

/// What to import: what a directory store reads (`list`, `archived`,
/// `events`, `agents`).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ImportSource {
    pub items: Vec<Claim>,
    pub archived: Vec<Value>,
    pub events: Vec<Event>,
    pub agents: Vec<AgentRecord>,
    pub paused: Vec<Paused>,
}

impl ImportSource {
    pub fn new(
        items: Vec<Claim>,
        archived: Vec<Value>,
        events: Vec<Event>,
        agents: Vec<AgentRecord>,
    ) -> Self {
        ImportSource {
            items,
            archived,
            events,
            agents,
            paused: Vec::new(),
        }
    }

    /// The work types the source has paused, to pause in the database too.
    #[must_use]
    pub fn paused(mut self, paused: Vec<Paused>) -> Self {
        self.paused = paused;
        self
    }

    /// The highest fence and revision anywhere in the source.
    fn highest(&self) -> (i64, i64) {
        let of_value = |v: &Value, key: &str| v[key].as_u64();
        let fences = self
            .items
            .iter()
            .filter_map(|c| c.fence)
            .chain(self.archived.iter().filter_map(|v| of_value(v, "fence")))
            .chain(self.events.iter().filter_map(|e| e.fence));
        let revisions = self
            .items
            .iter()
            .filter_map(|c| c.revision)
            .chain(self.archived.iter().filter_map(|v| of_value(v, "revision")))
            .chain(self.events.iter().filter_map(|e| e.revision));
        let top = |n: Option<u64>| i64::try_from(n.unwrap_or(0)).unwrap_or(i64::MAX);
        (top(fences.max()), top(revisions.max()))
    }
}

/// How many of each were new to the database (`coord import`'s output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    pub items: u64,
    pub archived: u64,
    pub events: u64,
    pub agents: u64,
    pub paused: u64,
}

/// Inserts items not yet in the table nor archived, in the source's order.
fn items_sql() -> String {
    format!(
        "WITH added AS ( \
           INSERT INTO coord_claims (work_item_id, work_type, priority, status, agent_id, \
               lease_deadline, posted_at, retry_at, finished_at, depends_on, doc) \
           SELECT v.id, v.work_type, v.priority, v.status, v.agent_id, v.lease_deadline, \
               v.posted_at, v.retry_at, v.finished_at, \
               ARRAY(SELECT jsonb_array_elements_text(coalesce(v.doc->'depends_on', '[]'))), \
               v.doc \
           FROM ROWS FROM (jsonb_to_recordset($1) AS ({CLAIM_ROW})) WITH ORDINALITY AS v \
           WHERE NOT EXISTS (SELECT 1 FROM coord_archive a WHERE a.work_item_id = v.id) \
           ORDER BY v.ordinality \
           ON CONFLICT (work_item_id) DO NOTHING RETURNING 1) \
         SELECT count(*) FROM added"
    )
}

const ARCHIVED_SQL: &str = "WITH added AS ( \
       INSERT INTO coord_archive (work_item_id, archived_at, doc) \
       SELECT e.doc->>'work_item_id', $2, e.doc \
       FROM jsonb_array_elements($1) WITH ORDINALITY AS e(doc, n) \
       WHERE NOT EXISTS (SELECT 1 FROM coord_claims c WHERE c.work_item_id = e.doc->>'work_item_id') \
       ORDER BY e.n \
       ON CONFLICT (work_item_id) DO NOTHING RETURNING 1) \
     SELECT count(*) FROM added";

/// Events the log does not hold already, in the source's order; their
/// cursor (`seq`) is given after commit, as every writer's are.
const EVENTS_SQL: &str = "WITH added AS ( \
       INSERT INTO coord_events (doc) \
       SELECT e.doc FROM jsonb_array_elements($1) WITH ORDINALITY AS e(doc, n) \
       WHERE NOT EXISTS (SELECT 1 FROM coord_events x WHERE x.doc = e.doc) \
       ORDER BY e.n RETURNING 1) \
     SELECT count(*) FROM added";

const AGENTS_SQL: &str = "WITH added AS ( \
       INSERT INTO coord_agents (agent_id, doc) \
       SELECT e.doc->>'agent_id', e.doc FROM jsonb_array_elements($1) AS e(doc) \
       ON CONFLICT (agent_id) DO NOTHING RETURNING 1) \
     SELECT count(*) FROM added";

const PAUSED_SQL: &str = "WITH added AS ( \
       INSERT INTO coord_paused (work_type, doc) \
       SELECT e.doc->>'work_type', e.doc FROM jsonb_array_elements($1) AS e(doc) \
       ON CONFLICT (work_type) DO NOTHING RETURNING 1) \
     SELECT count(*) FROM added";

/// The one count a statement above returns.
fn count(
    tx: &mut Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, postgres::Error> {
    let n: i64 = tx.query_one(sql, params)?.get(0);
    Ok(n.unsigned_abs())
}

/// Moves a sequence up to `$1` if it is below (never down).
fn raise_sql(sequence: &str) -> String {
    format!(
        "SELECT setval('{sequence}', $1) WHERE $1 > \
           (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {sequence})"
    )
}

impl PgStore {
    /// Copies `source` into the database in one transaction; returns what
    /// was new. Items, events and agents already there are left as they
    /// are. An imported live claim that conflicts with one the database
    /// holds makes the whole import fail (the schema's exclusivity).
    pub fn import(&self, source: &ImportSource) -> Result<Imported, CoordError> {
        let rows: Vec<_> = source.items.iter().map(row_of).collect();
        let (fence, revision) = source.highest();
        let archived_at = self.now().as_unix_micros();
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            let imported = Imported {
                items: count(&mut tx, &items_sql(), &[&Json(&rows)])?,
                archived: count(
                    &mut tx,
                    ARCHIVED_SQL,
                    &[&Json(&source.archived), &archived_at],
                )?,
                events: count(&mut tx, EVENTS_SQL, &[&Json(&source.events)])?,
                agents: count(&mut tx, AGENTS_SQL, &[&Json(&source.agents)])?,
                paused: count(&mut tx, PAUSED_SQL, &[&Json(&source.paused)])?,
            };
            tx.query(&raise_sql("coord_fence"), &[&fence])?;
            tx.query(&raise_sql("coord_revision"), &[&revision])?;
            tx.commit()?;
            Ok(imported)
        })
    }
}
