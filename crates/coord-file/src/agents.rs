//! `agent_status.json`: the agent registry, a JSON array of agents with
//! their `last_seen`. Advisory, so it is replaced atomically but not
//! fsynced; a file coord cannot parse is reported and never overwritten.

use std::path::Path;

use coord_core::{AgentRecord, AgentRegistration, CoordError, Timestamp};
use reactor_file::{AtomicWriter, read_optional};

pub const AGENT_FILE: &str = "agent_status.json";

pub(crate) use coord_core::SEEN_PRECISION;

pub(crate) fn read(dir: &Path) -> Result<Vec<AgentRecord>, CoordError> {
    let path = dir.join(AGENT_FILE);
    match read_optional(&path).map_err(crate::flow::file_error)? {
        Some(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => serde_json::from_slice(&bytes)
            .map_err(|e| {
                CoordError::validation(format!(
                    "{} is not a valid agent registry (a JSON array of agents): {e}",
                    path.display()
                ))
            }),
        _ => Ok(Vec::new()),
    }
}

/// Records that `registration.agent_id` was seen at `now`, with its team and
/// capacity when given. Call it under the directory lock.
pub(crate) fn touch(
    dir: &Path,
    registration: &AgentRegistration,
    now: Timestamp,
) -> Result<AgentRecord, CoordError> {
    let mut agents = read(dir)?;
    let known = agents
        .iter()
        .position(|a| a.agent_id == registration.agent_id);
    let Some(record) = AgentRecord::seen(known.map(|i| &agents[i]), registration, now) else {
        return Ok(agents.swap_remove(known.expect("only a known agent is up to date")));
    };
    match known {
        Some(i) => agents[i] = record.clone(),
        None => agents.push(record.clone()),
    }
    let mut bytes = b"[".to_vec();
    for (n, a) in agents.iter().enumerate() {
        bytes.extend_from_slice(if n == 0 { b"\n  " } else { b",\n  " });
        serde_json::to_writer(&mut bytes, a).expect("an agent always serialises");
    }
    bytes.extend_from_slice(b"\n]\n");
    let path = dir.join(AGENT_FILE);
    AtomicWriter::new()
        .without_sync()
        .write(&path, &bytes)
        .map_err(|f| CoordError::AtomicWriteFailed {
            path,
            source: Box::new(f.source),
        })?;
    Ok(record)
}
