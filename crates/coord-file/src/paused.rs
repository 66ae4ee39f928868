//! `paused_work_types.json`: the work types `next` does not hand out
//! (`coord pause`), by name, each with who paused it and when. Written
//! under the directory lock by atomic replacement; read by `next` under
//! the lock (a missing file: nothing paused) and by readers without it.

use std::collections::BTreeMap;
use std::path::Path;

use coord_core::CoordError;
use coord_core::operate::Paused;
use reactor_file::{AtomicWriter, read_optional};

use crate::errors::{file_error, write_error};

pub const PAUSED_FILE: &str = "paused_work_types.json";

/// The paused work types, by name.
pub(crate) fn read(dir: &Path) -> Result<BTreeMap<String, Paused>, CoordError> {
    let path = dir.join(PAUSED_FILE);
    let Some(bytes) = read_optional(&path).map_err(file_error)? else {
        return Ok(BTreeMap::new());
    };
    let list: Vec<Paused> = serde_json::from_slice(&bytes).map_err(|e| {
        CoordError::damaged(format!(
            "{} is not a list of paused work types: {e}",
            path.display()
        ))
    })?;
    Ok(list.into_iter().map(|p| (p.work_type.clone(), p)).collect())
}

/// Replaces the file with `paused` (a JSON array, by name).
pub(crate) fn write(
    dir: &Path,
    paused: &BTreeMap<String, Paused>,
    writer: &AtomicWriter,
) -> Result<(), CoordError> {
    let path = dir.join(PAUSED_FILE);
    let list: Vec<&Paused> = paused.values().collect();
    let mut bytes = serde_json::to_vec_pretty(&list).expect("paused types always serialise");
    bytes.push(b'\n');
    writer
        .write(&path, &bytes)
        .map_err(|f| write_error(&path, f.source))
}
