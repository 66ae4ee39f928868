//! `coord_state.json`: what the store must remember beyond its items: the
//! fence and revision high-water marks, raised around cleanup (which removes
//! records), so neither ever goes back.

use std::path::Path;

use std::path::PathBuf;

use coord_core::CoordError;
use reactor::Step;
use reactor_file::{AtomicWriter, FileError, read_optional};
use serde::{Deserialize, Serialize};

use crate::errors::{FlowError, file_error, write_error};

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
    let bytes = read_optional(&path).map_err(file_error)?;
    match bytes {
        None => Ok(State::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            CoordError::damaged(format!("{} is not a valid state file: {e}", path.display()))
        }),
    }
}

pub(crate) fn write(dir: &Path, state: State, writer: &AtomicWriter) -> Result<(), CoordError> {
    let path = dir.join(STATE_FILE);
    let mut bytes = serde_json::to_vec(&state).expect("the state always serialises");
    bytes.push(b'\n');
    writer
        .write(&path, &bytes)
        .map_err(|f| write_error(&path, f.source))
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

/// The `raise_fence_high_water` step: before any record leaves the claims
/// file, the state file remembers the largest fence, so it is never reused.
/// Undo puts the state file back as it was (a failed cleanup changes no
/// file).
pub(crate) struct RaiseFence {
    pub dir: PathBuf,
    pub max_fence: u64,
    pub writer: AtomicWriter,
    /// The state file's bytes before the step raised it (`None` inside: no
    /// file), if it did.
    pub previous: Option<Option<Vec<u8>>>,
}

impl Step<FlowError> for RaiseFence {
    type Output = ();

    fn run(&mut self) -> Result<(), FlowError> {
        let path = self.dir.join(STATE_FILE);
        let previous = read_optional(&path)?;
        let current = read(&self.dir)?;
        if self.max_fence <= current.fence {
            return Ok(());
        }
        let raised = State {
            fence: self.max_fence,
            ..current
        };
        write(&self.dir, raised, &self.writer)?;
        self.previous = Some(previous);
        Ok(())
    }

    fn undo(&mut self) -> Result<(), FlowError> {
        let Some(previous) = &self.previous else {
            return Ok(());
        };
        let path = self.dir.join(STATE_FILE);
        self.writer
            .restore(&path, previous.as_deref())
            .map_err(|source| FlowError::File(FileError::Restore { path, source }))
    }
}
