//! `agent_status.json`: the agent registry, a JSON array of agents with
//! their `last_seen`. Advisory, so it is replaced atomically but not
//! fsynced; a file coord cannot parse is reported and never overwritten.
//!
//! The older shell tools write entries too, with fields of their own and
//! without some of coord's: every entry keeps its bytes unless coord
//! changes it, and then only the fields that change are written over it
//! (see `fields`).

use std::path::Path;

use coord_core::{AgentRecord, AgentRegistration, CoordError, Timestamp};
use reactor_file::{AtomicWriter, read_optional};
use serde_json::value::RawValue;

pub const AGENT_FILE: &str = "agent_status.json";

/// The registry as read: each entry's bytes and what they say.
type Entries = Vec<(String, AgentRecord)>;

fn parse(path: &Path, bytes: &[u8]) -> Result<Entries, CoordError> {
    let invalid = |what: String| {
        CoordError::damaged(format!(
            "{} is not a valid agent registry (a JSON array of agents): {what}",
            path.display()
        ))
    };
    let raws: Vec<&RawValue> = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let record =
                serde_json::from_str(raw.get()).map_err(|e| invalid(format!("entry {i}: {e}")))?;
            Ok((raw.get().to_owned(), record))
        })
        .collect()
}

fn read_entries(dir: &Path) -> Result<Entries, CoordError> {
    let path = dir.join(AGENT_FILE);
    match read_optional(&path).map_err(crate::errors::file_error)? {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => parse(&path, &bytes),
        _ => Ok(Vec::new()),
    }
}

pub(crate) fn read(dir: &Path) -> Result<Vec<AgentRecord>, CoordError> {
    Ok(read_entries(dir)?
        .into_iter()
        .map(|(_, record)| record)
        .collect())
}

/// Marks `agent`'s entry stopped at `now` (nothing for an agent it does
/// not hold). Call it under the directory lock.
pub(crate) fn mark_stopped(dir: &Path, agent: &str, now: Timestamp) -> Result<(), CoordError> {
    let mut entries = read_entries(dir)?;
    let Some(i) = entries.iter().position(|(_, a)| a.agent_id == agent) else {
        return Ok(());
    };
    let (raw, old) = &entries[i];
    let mut record = old.clone();
    record
        .extra
        .insert(coord_core::STOPPED_AT.into(), serde_json::json!(now));
    let raw = crate::fields::write_over(raw.as_bytes(), old, &record);
    entries[i] = (raw, record);
    write_entries(dir, &entries)
}

/// Records that `registration.agent_id` was seen at `now`, with its team and
/// capacity when given. Call it under the directory lock.
pub(crate) fn touch(
    dir: &Path,
    registration: &AgentRegistration,
    now: Timestamp,
) -> Result<AgentRecord, CoordError> {
    let mut entries = read_entries(dir)?;
    let known = entries
        .iter()
        .position(|(_, a)| a.agent_id == registration.agent_id);
    let Some(record) = AgentRecord::seen(known.map(|i| &entries[i].1), registration, now) else {
        return Ok(entries
            .swap_remove(known.expect("only a known agent is up to date"))
            .1);
    };
    match known {
        Some(i) => {
            let (raw, old) = &entries[i];
            let raw = crate::fields::write_over(raw.as_bytes(), old, &record);
            entries[i] = (raw, record.clone());
        }
        None => entries.push((
            serde_json::to_string(&record).expect("an agent always serialises"),
            record.clone(),
        )),
    }
    write_entries(dir, &entries)?;
    Ok(record)
}

/// Writes the registry: every entry's bytes, one per line.
fn write_entries(dir: &Path, entries: &[(String, AgentRecord)]) -> Result<(), CoordError> {
    let mut bytes = b"[".to_vec();
    for (n, (raw, _)) in entries.iter().enumerate() {
        bytes.extend_from_slice(if n == 0 { b"\n  " } else { b",\n  " });
        bytes.extend_from_slice(raw.as_bytes());
    }
    bytes.extend_from_slice(b"\n]\n");
    let path = dir.join(AGENT_FILE);
    AtomicWriter::new()
        .without_sync()
        .write(&path, &bytes)
        .map_err(|f| CoordError::AtomicWriteFailed {
            path,
            source: Box::new(f.source),
        })
}
