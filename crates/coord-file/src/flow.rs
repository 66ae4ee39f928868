//! The workflows that change the claims file, each run under the lock:
//!
//! ```text
//! claim (the CoordinationReactor)        update (progress, complete, fail)
//!   ensure_coordination_directory          ensure_coordination_directory
//!   read_existing_claims                   read_existing_claims
//!   check_coordination_conflicts           apply_status_update
//!   create_updated_claims                  write_claims_atomically
//!   write_claims_atomically
//! ```

use std::fmt;
use std::path::Path;

use coord_core::{
    Claim, ClaimRequest, ConflictPolicy, CoordError, Slot, Timestamp, Update, find_conflict,
    transition, unique_id,
};
use reactor::{Failure, InputError, Inputs, Values, Workflow, WorkflowBuilder, from_fn};
use reactor_file::{AtomicWrite, AtomicWriter, EnsureDir, FileError, FileSnapshot, ReadFile};

use crate::claims_doc::{ClaimsDoc, Edit};
use crate::store::CLAIMS_FILE;
use crate::telemetry::TracingMiddleware;

/// The error type inside the workflows: coord's own errors, the file steps'
/// errors and wiring mistakes, turned into a [`CoordError`] at the end.
#[derive(Debug)]
pub(crate) enum FlowError {
    Coord(CoordError),
    File(FileError),
    Input(InputError),
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowError::Coord(e) => e.fmt(f),
            FlowError::File(e) => e.fmt(f),
            FlowError::Input(e) => e.fmt(f),
        }
    }
}

impl From<CoordError> for FlowError {
    fn from(e: CoordError) -> Self {
        FlowError::Coord(e)
    }
}
impl From<FileError> for FlowError {
    fn from(e: FileError) -> Self {
        FlowError::File(e)
    }
}
impl From<InputError> for FlowError {
    fn from(e: InputError) -> Self {
        FlowError::Input(e)
    }
}

impl From<FlowError> for CoordError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Coord(e) => e,
            FlowError::File(e) => file_error(e),
            FlowError::Input(e) => {
                CoordError::validation(format!("workflow validation failed: {e}"))
            }
        }
    }
}

pub(crate) fn file_error(e: FileError) -> CoordError {
    let path = e.path().to_owned();
    match e {
        FileError::Read { .. } | FileError::NotADirectory { .. } => CoordError::FileRead {
            path,
            source: Box::new(e),
        },
        _ => CoordError::AtomicWriteFailed {
            path,
            source: Box::new(e),
        },
    }
}

/// A run's failure as one error. An undo that failed leaves the file in
/// doubt, so it turns the whole failure into `atomic_write_failed` and
/// names every undo that failed.
pub(crate) fn into_coord_error(failure: Failure<FlowError>, claims_path: &Path) -> CoordError {
    if failure.undo_failures.is_empty() {
        return failure.error.into();
    }
    CoordError::AtomicWriteFailed {
        path: claims_path.to_owned(),
        source: failure.to_string().into(),
    }
}

/// The new file contents and the claim they hold.
pub(crate) struct UpdatedClaims {
    pub bytes: Vec<u8>,
    pub claim: Claim,
}

impl AsRef<[u8]> for UpdatedClaims {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

fn claims_of<'a>(inputs: &Inputs<'a>) -> Result<&'a ClaimsDoc, FlowError> {
    Ok(&inputs
        .get::<FileSnapshot<ClaimsDoc>>("read_existing_claims")?
        .value)
}

/// The two steps every change starts with, and the middleware.
fn begin<'a>(dir: &'a Path) -> WorkflowBuilder<'a, FlowError> {
    let claims_path = dir.join(CLAIMS_FILE);
    Workflow::builder()
        .step(
            "ensure_coordination_directory",
            &[],
            EnsureDir::new(dir).sweeping_temps_of(CLAIMS_FILE),
        )
        .step(
            "read_existing_claims",
            &["ensure_coordination_directory"],
            ReadFile::new(claims_path, |path: &Path, bytes: Option<&[u8]>| {
                ClaimsDoc::parse(path, bytes).map_err(FlowError::from)
            }),
        )
        .middleware(TracingMiddleware)
}

fn write_step(
    dir: &Path,
    from: &str,
    writer: AtomicWriter,
) -> AtomicWrite<UpdatedClaims, ClaimsDoc> {
    AtomicWrite::new(dir.join(CLAIMS_FILE), from, "read_existing_claims").with_writer(writer)
}

/// The CoordinationReactor: claims `request` in `dir`. The caller holds the
/// directory lock for the whole run.
pub(crate) fn claim(
    dir: &Path,
    request: &ClaimRequest,
    policy: &dyn ConflictPolicy,
    writer: AtomicWriter,
    now: Timestamp,
) -> Result<Claim, CoordError> {
    let workflow = begin(dir)
        .input("work_claim")
        .step(
            "check_coordination_conflicts",
            &["work_claim", "read_existing_claims"],
            from_fn(|inputs: &Inputs<'_>| {
                let request = inputs.get::<ClaimRequest>("work_claim")?;
                let slot = Slot {
                    work_type: &request.work_type,
                    priority: request.priority,
                };
                match find_conflict(policy, slot, claims_of(inputs)?.heads()) {
                    Some(live) => Err(FlowError::Coord(CoordError::Conflict {
                        work_type: request.work_type.clone(),
                        conflicting_work_item_id: live.work_item_id.clone(),
                    })),
                    None => Ok(()),
                }
            }),
        )
        .step(
            "create_updated_claims",
            &[
                "work_claim",
                "read_existing_claims",
                "check_coordination_conflicts",
            ],
            from_fn(|inputs: &Inputs<'_>| {
                let request = inputs.get::<ClaimRequest>("work_claim")?;
                let doc = claims_of(inputs)?;
                let taken = doc.ids();
                // Ids carry the clock's full nanoseconds; timestamps keep micros.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(now.as_unix_nanos(), |d| d.as_nanos() as i128);
                let work_item_id = unique_id("work", nanos, |id| taken.contains(id));
                let coordination_id = unique_id("coord", nanos, |id| taken.contains(id));
                let claim = Claim::new(request, work_item_id, coordination_id, now);
                let bytes = doc.render(Edit::Append(&ClaimsDoc::encode(&claim)));
                Ok::<_, FlowError>(UpdatedClaims { bytes, claim })
            }),
        )
        .step(
            "write_claims_atomically",
            &["create_updated_claims", "read_existing_claims"],
            write_step(dir, "create_updated_claims", writer),
        )
        .returns("create_updated_claims")
        .build()
        .expect("the claim workflow is well formed");
    workflow
        .run::<UpdatedClaims>(Values::new().with("work_claim", request.clone()))
        .map(|u| u.claim)
        .map_err(|f| into_coord_error(f, &dir.join(CLAIMS_FILE)))
}

/// Applies `update` to `work_item_id` in `dir`, under the caller's lock.
pub(crate) fn update(
    dir: &Path,
    work_item_id: &str,
    update: &Update,
    writer: AtomicWriter,
    now: Timestamp,
) -> Result<Claim, CoordError> {
    let workflow = begin(dir)
        .step(
            "apply_status_update",
            &["read_existing_claims"],
            from_fn(|inputs: &Inputs<'_>| {
                let doc = claims_of(inputs)?;
                let path = &inputs
                    .get::<FileSnapshot<ClaimsDoc>>("read_existing_claims")?
                    .path;
                let index = doc
                    .position(work_item_id)
                    .ok_or_else(|| CoordError::NotFound {
                        work_item_id: work_item_id.to_owned(),
                    })?;
                let old = doc.claim(path, index)?;
                let claim = transition::apply(&old, update, now)?;
                let bytes = doc.render(Edit::Replace(index, &doc.merge(index, &old, &claim)));
                Ok::<_, FlowError>(UpdatedClaims { bytes, claim })
            }),
        )
        .step(
            "write_claims_atomically",
            &["apply_status_update", "read_existing_claims"],
            write_step(dir, "apply_status_update", writer),
        )
        .returns("apply_status_update")
        .build()
        .expect("the update workflow is well formed");
    workflow
        .run::<UpdatedClaims>(Values::new())
        .map(|u| u.claim)
        .map_err(|f| into_coord_error(f, &dir.join(CLAIMS_FILE)))
}
