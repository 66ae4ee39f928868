//! Rows and documents: reading a row's `doc` as a claim (the one decoder
//! for every way a row comes back), and a claim as its row's columns.

use std::collections::HashMap;

use coord_core::{Claim, CoordError, Status};
use postgres::SimpleQueryRow;
use serde::Serialize;

use crate::fail::Fail;
use crate::sql::{json_lit, lit, micros, rank};

/// The text of column `i`, which the statement guarantees is not NULL.
fn text(row: &SimpleQueryRow, i: usize) -> Result<&str, Fail> {
    row.try_get(i)?
        .ok_or_else(|| Fail::Coord(CoordError::internal("a NOT NULL column came back NULL")))
}

pub(crate) fn number(row: &SimpleQueryRow, i: usize) -> Result<u64, Fail> {
    parse_number(text(row, i)?)
}

/// Column `i` as a number, or `None` when it is NULL.
pub(crate) fn optional_number(row: &SimpleQueryRow, i: usize) -> Result<Option<u64>, Fail> {
    row.try_get(i)?.map(parse_number).transpose()
}

fn parse_number(t: &str) -> Result<u64, Fail> {
    t.parse().map_err(|_| {
        Fail::Coord(CoordError::internal(format!(
            "expected a number from the database, got {t:?}"
        )))
    })
}

/// A claim from the first column of a row, `doc::text`.
pub(crate) fn claim_from(row: &SimpleQueryRow) -> Result<Claim, Fail> {
    claim_from_doc(text(row, 0)?)
}

/// A claim from the text of a row's `doc`.
pub(crate) fn claim_from_doc(doc: &str) -> Result<Claim, Fail> {
    serde_json::from_str(doc).map_err(|e| {
        Fail::Coord(CoordError::damaged(format!(
            "a row of coord_claims is not a claim coord can read: {e}"
        )))
    })
}

/// A claim as the columns of its row.
#[derive(Debug, Serialize)]
pub(crate) struct ClaimRow<'a> {
    pub id: &'a str,
    pub work_type: &'a str,
    pub priority: i16,
    pub status: &'static str,
    pub agent_id: Option<&'a str>,
    pub lease_deadline: Option<i64>,
    pub posted_at: Option<i64>,
    pub retry_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub doc: &'a Claim,
}

impl ClaimRow<'_> {
    /// The row as a statement's arguments: its columns in the order of
    /// `coord_claims`, then the document.
    pub fn arguments(&self) -> String {
        let text = |v: Option<&str>| v.map_or_else(|| "NULL".to_owned(), lit);
        let number = |v: Option<i64>| v.map_or_else(|| "NULL".to_owned(), |n| n.to_string());
        format!(
            "{}, {}, {}, {}, {}, {}, {}, {}, {}, {}",
            lit(self.id),
            lit(self.work_type),
            self.priority,
            lit(self.status),
            text(self.agent_id),
            number(self.lease_deadline),
            number(self.posted_at),
            number(self.retry_at),
            number(self.finished_at),
            json_lit(self.doc)
        )
    }

    /// The row's columns but the document, by name.
    pub fn columns(&self) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(map) = serde_json::json!({
            "id": self.id,
            "work_type": self.work_type,
            "priority": self.priority,
            "status": self.status,
            "agent_id": self.agent_id,
            "lease_deadline": self.lease_deadline,
            "posted_at": self.posted_at,
            "retry_at": self.retry_at,
            "finished_at": self.finished_at,
        }) else {
            unreachable!("json! of braces is an object")
        };
        map
    }
}

pub(crate) fn row_of(c: &Claim) -> ClaimRow<'_> {
    let head = c.head();
    ClaimRow {
        id: &c.work_item_id,
        work_type: &c.work_type,
        priority: rank(c.priority),
        status: c.status.as_str(),
        agent_id: c.agent_id.as_deref(),
        lease_deadline: if c.status == Status::InProgress {
            micros(head.lease_deadline())
        } else {
            None
        },
        posted_at: micros(c.posted_at),
        retry_at: micros(c.retry_at),
        // A final item without its time counts as finished long ago.
        finished_at: c
            .status
            .is_final()
            .then(|| micros(head.finished_at()).unwrap_or(0)),
        doc: c,
    }
}

/// The ids of `rows` of a `SELECT work_item_id` statement.
/// The ids and statuses of rows of `(work_item_id, status)`.
pub(crate) fn statuses_of(rows: &[SimpleQueryRow]) -> Result<HashMap<String, Status>, Fail> {
    rows.iter()
        .map(|r| {
            let status = text(r, 1)?;
            let status = serde_json::from_value(serde_json::Value::from(status)).map_err(|_| {
                CoordError::damaged(format!("a row has the unknown status {status:?}"))
            })?;
            Ok((text(r, 0)?.to_owned(), status))
        })
        .collect()
}
