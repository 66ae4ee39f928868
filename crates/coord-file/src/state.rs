//! `coord_state.json`: what the store must remember beyond its items: the
//! fence and revision high-water marks, raised around cleanup (which removes
//! records), so neither ever goes back.

use std::path::Path;

use coord_core::CoordError;
use reactor_file::{AtomicWriter, read_optional};
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "coord_state.json";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct State {
    /// No fence at or below this was or will be handed out again.
    pub fence: u64,
    /// Every revision at or below this has committed.
    #[serde(default)]
    pub revision: u64,
}

pub(crate) fn read(dir: &Path) -> Result<State, CoordError> {
    let path = dir.join(STATE_FILE);
    let bytes = read_optional(&path).map_err(crate::flow::file_error)?;
    match bytes {
        None => Ok(State::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            CoordError::validation(format!("{} is not a valid state file: {e}", path.display()))
        }),
    }
}

pub(crate) fn write(dir: &Path, state: State, writer: &AtomicWriter) -> Result<(), CoordError> {
    let path = dir.join(STATE_FILE);
    let mut bytes = serde_json::to_vec(&state).expect("the state always serialises");
    bytes.push(b'\n');
    writer
        .write(&path, &bytes)
        .map_err(|f| CoordError::AtomicWriteFailed {
            path,
            source: Box::new(f.source),
        })
}

/// Records that `revision` committed, unless the state already says so.
pub(crate) fn raise_revision(
    dir: &Path,
    revision: u64,
    writer: &AtomicWriter,
) -> Result<(), CoordError> {
    let current = read(dir)?;
    if revision > current.revision {
        write(
            dir,
            State {
                revision,
                ..current
            },
            writer,
        )?;
    }
    Ok(())
}
