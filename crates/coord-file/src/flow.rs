//! The workflows that change the claims file. Each runs under the directory
//! lock, after any half-done cleanup was settled:
//!
//! ```text
//! claim (the CoordinationReactor)     every other change
//!   ensure_coordination_directory       ensure_coordination_directory
//!   read_existing_claims                read_existing_claims
//!   settle_event_log                    settle_event_log
//!   check_coordination_conflicts        <the change: take_next_item, apply_transition,
//!   create_updated_claims                create_work_item, expire_lapsed_leases>
//!   append_event_log                    append_event_log
//!   write_claims_atomically             write_claims_atomically
//!
//! cleanup
//!   ensure_coordination_directory, read_existing_claims, settle_event_log,
//!   select_finished_items, raise_fence_high_water, write_cleanup_intent,
//!   append_to_archive, append_event_log, write_claims_atomically,
//!   raise_revision_high_water, remove_cleanup_intent
//! ```
//!
//! The claim workflow keeps the seed's five steps; `settle_event_log` and
//! `append_event_log` keep the event log exact (write-ahead, settled by the
//! next writer). Every change also writes down the leases that lapsed since
//! the last one.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use coord_core::decide::{self, Sweep};
use coord_core::transition::{Action, Actor, NewIds};
use coord_core::{
    Claim, ClaimHead, ClaimRequest, CoordError, Decision, Event, NextRequest, PostRequest,
    Timestamp,
};
use reactor::{Failure, InputError, Inputs, Values, Workflow, WorkflowBuilder, from_fn};
use reactor_file::{AtomicWrite, EnsureDir, FileError, FileSnapshot, read_optional};

use crate::archive::{AppendToArchive, RemoveIntent, WriteIntent};
use crate::claims_doc::{ClaimsDoc, Draft};
use crate::events::{AppendEvents, EVENT_LOG};
use crate::memory::SharedMemory;
use crate::state;
use crate::store::{CLAIMS_FILE, FileStoreOptions};
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

/// A file step's error as coord's: reading is `file_read_error`, making
/// or writing anything `atomic_write_failed`. The message names the path
/// once (the step's own error names it too).
pub(crate) fn file_error(e: FileError) -> CoordError {
    let path = e.path().to_owned();
    let cause =
        |what: String, source: std::io::Error| -> Box<dyn std::error::Error + Send + Sync> {
            Box::new(std::io::Error::new(
                source.kind(),
                format!("{what}{source}"),
            ))
        };
    match e {
        FileError::Read { source, .. } => CoordError::FileRead {
            path,
            source: Box::new(source),
        },
        FileError::NotADirectory { .. } => CoordError::FileRead {
            path,
            source: "it exists but is not a directory".into(),
        },
        FileError::CreateDir { source, .. } => CoordError::AtomicWriteFailed {
            path,
            source: cause("cannot create the directory: ".to_owned(), source),
        },
        FileError::Write { stage, source, .. } => CoordError::AtomicWriteFailed {
            path,
            source: cause(format!("{stage}: "), source),
        },
        FileError::Restore { source, .. } => CoordError::AtomicWriteFailed {
            path,
            source: cause("cannot put back its previous contents: ".to_owned(), source),
        },
        other => CoordError::AtomicWriteFailed {
            path,
            source: Box::new(other),
        },
    }
}

/// A run's failure as one error. An undo that failed leaves the files in
/// doubt, so it turns the whole failure into `atomic_write_failed` and
/// names every undo that failed.
fn into_coord_error(failure: Failure<FlowError>, claims_path: &Path) -> CoordError {
    if failure.undo_failures.is_empty() {
        return failure.error.into();
    }
    CoordError::AtomicWriteFailed {
        path: claims_path.to_owned(),
        source: failure.to_string().into(),
    }
}

/// What a change produced, for the caller.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    One(Box<Claim>),
    Many(Vec<Claim>),
    Archived(Vec<String>),
}

/// A change ready to write: the new file, its events, what to return, and
/// how many final items the new file holds (for automatic compaction).
pub(crate) struct Plan {
    /// The claims file this change writes, already parsed.
    pub doc: ClaimsDoc,
    /// The store revision the change commits as.
    pub revision: u64,
    pub events: Vec<Event>,
    pub outcome: Outcome,
    pub finished: usize,
}

impl AsRef<[u8]> for Plan {
    fn as_ref(&self) -> &[u8] {
        self.doc.as_bytes()
    }
}

fn plan(draft: &Draft<'_>, events: Vec<Event>, outcome: Outcome) -> Plan {
    let doc = draft.render();
    Plan {
        revision: draft.revision(),
        events,
        outcome,
        finished: doc.summary().finished,
        doc,
    }
}

/// What a change needs to know besides its own input.
pub(crate) struct Ctx<'a> {
    pub dir: &'a Path,
    pub options: &'a FileStoreOptions,
    pub now: Timestamp,
    /// What the store remembers of its earlier changes.
    pub memory: &'a SharedMemory,
}

impl Ctx<'_> {
    fn claims_path(&self) -> std::path::PathBuf {
        self.dir.join(CLAIMS_FILE)
    }
}

fn doc<'a>(inputs: &Inputs<'a>) -> Result<&'a FileSnapshot<ClaimsDoc>, FlowError> {
    Ok(inputs.get::<FileSnapshot<ClaimsDoc>>("read_existing_claims")?)
}

/// What every earlier change committed: the store revision, and the fence
/// high-water mark the state file keeps for records cleanup removed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    pub revision: u64,
    pub fence_floor: u64,
}

/// A draft over the claims as read, for the next revision. The step must
/// declare `read_existing_claims` and `settle_event_log`.
fn open_draft<'a>(inputs: &Inputs<'a>) -> Result<Draft<'a>, FlowError> {
    let snapshot = doc(inputs)?;
    let committed = *inputs.get::<Committed>("settle_event_log")?;
    Ok(snapshot.value.draft(
        &snapshot.path,
        CoordError::next_of("revision", committed.revision)?,
        committed.fence_floor,
    ))
}

/// What every change step reads.
const READ: [&str; 2] = ["read_existing_claims", "settle_event_log"];

/// Where each item a change read is in its draft: the decision names items
/// by id, the draft by position.
type Positions = HashMap<String, usize>;

/// The lapsed leases in `draft` (but the item at `except`), decoded, for
/// [`Decision::begin`]; notes where each is.
fn lapsed(
    draft: &Draft<'_>,
    now: Timestamp,
    except: Option<usize>,
    positions: &mut Positions,
) -> Result<Vec<Claim>, CoordError> {
    let mut claims = Vec::new();
    for pos in draft.lapsed(now).into_iter().filter(|p| Some(*p) != except) {
        let claim = draft.claim(pos)?;
        positions.insert(claim.work_item_id.clone(), pos);
        claims.push(claim);
    }
    Ok(claims)
}

/// Begins the decision of a change over `draft`: its revision, and every
/// lapsed lease written down (but the item at `except`'s).
fn begin(
    draft: &Draft<'_>,
    now: Timestamp,
    except: Option<usize>,
    positions: &mut Positions,
) -> Result<Decision, CoordError> {
    let except_id = except.map(|p| draft.head(p).work_item_id.clone());
    let lapsed = lapsed(draft, now, except, positions)?;
    Ok(Decision::begin(
        draft.revision(),
        now,
        lapsed,
        except_id.as_deref(),
    ))
}

/// Writes `decision`'s items into `draft`: an item the change read goes
/// where it was (only its changed fields written over it), a new one at
/// the end. Returns the archived items' lines, removed from the draft.
fn apply(draft: &mut Draft<'_>, decision: &Decision, positions: &Positions) -> Vec<String> {
    for written in decision.written() {
        match &written.before {
            Some(before) => {
                let pos = positions[&written.claim.work_item_id];
                draft.replace(pos, before, &written.claim);
            }
            None => {
                draft.append(&written.claim);
            }
        }
    }
    decision
        .archived()
        .iter()
        .map(|id| draft.remove(positions[id]))
        .collect()
}

/// Ids for a new item, unique in the file even within one nanosecond.
fn new_ids(draft: &Draft<'_>, decision: &Decision) -> NewIds {
    NewIds::fresh(|id| draft.id_in_use(id) || decision.writes(id))
}

/// Parses the claims file, reusing what `memory` already decoded, and
/// remembers the result for the next read.
pub(crate) fn read_claims(
    memory: &SharedMemory,
    path: &Path,
    bytes: Option<&reactor_file::Contents>,
) -> Result<ClaimsDoc, CoordError> {
    let prior = memory.lock().last_doc();
    let doc = ClaimsDoc::parse(path, bytes, prior.as_ref())?;
    memory.lock().remember_read(&doc);
    Ok(doc)
}

/// The claims file's bytes (`None`: no file). A symbolic link there is
/// refused, for readers and writers alike: a change replaces the file by
/// rename, which would turn the link into a copy and leave its target
/// stale, and a reader should not show what no change can act on.
fn read_claims_file(path: &Path) -> Result<Option<Vec<u8>>, CoordError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(CoordError::validation(format!(
                "{} is a symbolic link; coord replaces the claims file by rename, which would \
                 turn the link into a copy: put the file itself there (or point --dir at the \
                 directory the link leads to)",
                path.display()
            )));
        }
        Err(e) => {
            return Err(CoordError::FileRead {
                path: path.to_owned(),
                source: e.into(),
            });
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| CoordError::FileRead {
            path: path.to_owned(),
            source: e.into(),
        })?;
    Ok(Some(bytes))
}

/// The claims file as it stands: what this store wrote last if the file is
/// still that one (no read at all), else read and parsed.
pub(crate) fn current_claims(
    memory: &SharedMemory,
    path: &Path,
) -> Result<FileSnapshot<ClaimsDoc>, CoordError> {
    if let Some(doc) = memory.lock().unchanged_claims(path) {
        return Ok(FileSnapshot {
            path: path.to_owned(),
            bytes: Some(doc.contents()),
            value: doc,
        });
    }
    let bytes = read_claims_file(path)?.map(reactor_file::Contents::new);
    let value = read_claims(memory, path, bytes.as_ref())?;
    Ok(FileSnapshot {
        path: path.to_owned(),
        bytes,
        value,
    })
}

/// The steps every change starts with, and the middleware.
fn begin_workflow<'a>(ctx: &Ctx<'_>) -> WorkflowBuilder<'a, FlowError> {
    let dir = ctx.dir.to_owned();
    let sweep: &[&str] = if ctx.memory.lock().sweep_due() {
        &crate::SWEPT
    } else {
        &[]
    };
    let (read_memory, log_memory) = (ctx.memory.clone(), ctx.memory.clone());
    let claims_path = ctx.claims_path();
    Workflow::builder()
        .step(
            "ensure_coordination_directory",
            &[],
            sweep.iter().fold(EnsureDir::new(ctx.dir), |step, name| {
                step.sweeping_temps_of(*name)
            }),
        )
        .step(
            "read_existing_claims",
            &["ensure_coordination_directory"],
            from_fn(move |_: &Inputs<'_>| {
                current_claims(&read_memory, &claims_path).map_err(FlowError::from)
            }),
        )
        .step(
            "settle_event_log",
            &["read_existing_claims"],
            from_fn(move |inputs: &Inputs<'_>| {
                // What committed: the newest record, or what cleanup
                // remembered of records it removed. Log lines past it are a
                // dead writer's write-ahead and go.
                let state = state::read(&dir)?;
                let committed = doc(inputs)?
                    .value
                    .summary()
                    .max_revision
                    .max(state.revision);
                let log = dir.join(EVENT_LOG);
                // A log this store left after its own committed change is settled.
                let mut memory = log_memory.lock();
                if let Some(open) = memory.settled_log(&log, committed) {
                    memory.put_log(open);
                    return Ok(Committed {
                        revision: committed,
                        fence_floor: state.fence,
                    });
                }
                drop(memory);
                let (dropped, open) = crate::events::settle_keeping(&log, committed)?;
                // Handed to this change's append, which saves opening it again.
                if let Some(open) = open {
                    log_memory.lock().put_log(open);
                }
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        committed,
                        "dropped events of a change that never committed"
                    );
                }
                Ok::<_, FlowError>(Committed {
                    revision: committed,
                    fence_floor: state.fence,
                })
            }),
        )
        .middleware(TracingMiddleware)
}

/// A step output that carries a [`Plan`].
pub(crate) trait Planned: AsRef<[u8]> + 'static {
    fn plan(&self) -> &Plan;
}

impl Planned for Plan {
    fn plan(&self) -> &Plan {
        self
    }
}

/// The two steps every change ends with: its events, written ahead, then
/// the commit. `after` names steps that must complete before them.
fn finish<'a, P: Planned>(
    builder: WorkflowBuilder<'a, FlowError>,
    ctx: &Ctx<'_>,
    plan_step: &'static str,
    after: &[&str],
) -> WorkflowBuilder<'a, FlowError> {
    let mut log_deps = vec![plan_step];
    log_deps.extend_from_slice(after);
    builder
        .step(
            "append_event_log",
            &log_deps,
            AppendEvents::<P>::new(
                ctx.dir.join(EVENT_LOG),
                plan_step,
                ctx.options.log(),
                ctx.options.writer.clone(),
                ctx.memory.clone(),
            ),
        )
        .step(
            "write_claims_atomically",
            &[plan_step, "read_existing_claims", "append_event_log"],
            AtomicWrite::<P, ClaimsDoc>::new(ctx.claims_path(), plan_step, "read_existing_claims")
                .with_writer(ctx.options.writer.clone()),
        )
}

fn run(
    builder: WorkflowBuilder<'_, FlowError>,
    plan_step: &'static str,
    inputs: Values,
    ctx: &Ctx<'_>,
) -> Result<Plan, CoordError> {
    finish::<Plan>(builder, ctx, plan_step, &[])
        .returns(plan_step)
        .build()
        .expect("coord's workflows are well formed")
        .run::<Plan>(inputs)
        .map_err(|f| into_coord_error(f, &ctx.claims_path()))
}

/// The claim as `check_coordination_conflicts` decided it, for
/// `create_updated_claims` to write.
struct Decided {
    decision: Decision,
    positions: Positions,
    claim: Claim,
}

/// The CoordinationReactor: claims `request` on the spot.
/// `check_coordination_conflicts` decides the claim (`decide::claim`: the
/// live claims checked for a conflict, lapsed leases written down, the
/// fence and ids drawn), and `create_updated_claims` writes the decision
/// into the new claims file.
pub(crate) fn claim(ctx: &Ctx<'_>, request: &ClaimRequest) -> Result<Plan, CoordError> {
    let now = ctx.now;
    let policy = ctx.options.policy.as_ref();
    let builder = begin_workflow(ctx)
        .input("work_claim")
        .step(
            "check_coordination_conflicts",
            &["work_claim", "read_existing_claims", "settle_event_log"],
            from_fn(move |inputs: &Inputs<'_>| {
                let request = inputs.get::<ClaimRequest>("work_claim")?;
                let draft = open_draft(inputs)?;
                let mut positions = Positions::new();
                let mut decision = begin(&draft, now, None, &mut positions)?;
                let fence = draft.next_fence()?;
                let ids = new_ids(&draft, &decision);
                let claim = decide::claim(
                    &mut decision,
                    request,
                    draft.heads().map(|(_, h)| h),
                    policy,
                    ids,
                    fence,
                )?;
                Ok::<_, FlowError>(Decided {
                    decision,
                    positions,
                    claim,
                })
            }),
        )
        .step(
            "create_updated_claims",
            &[
                "read_existing_claims",
                "settle_event_log",
                "check_coordination_conflicts",
            ],
            from_fn(move |inputs: &Inputs<'_>| {
                let decided = inputs.get::<Decided>("check_coordination_conflicts")?;
                let mut draft = open_draft(inputs)?;
                apply(&mut draft, &decided.decision, &decided.positions);
                let events = decided.decision.events().to_vec();
                let outcome = Outcome::One(Box::new(decided.claim.clone()));
                Ok::<_, FlowError>(plan(&draft, events, outcome))
            }),
        );
    run(
        builder,
        "create_updated_claims",
        Values::new().with("work_claim", request.clone()),
        ctx,
    )
}

/// Adds a pending item to the queue.
pub(crate) fn post(ctx: &Ctx<'_>, request: &PostRequest) -> Result<Plan, CoordError> {
    let now = ctx.now;
    let request = request.clone();
    let builder = begin_workflow(ctx).step(
        "create_work_item",
        &READ,
        from_fn(move |inputs: &Inputs<'_>| {
            let mut draft = open_draft(inputs)?;
            let mut positions = Positions::new();
            let mut decision = begin(&draft, now, None, &mut positions)?;
            let ids = new_ids(&draft, &decision);
            let posted = decide::post(
                &mut decision,
                &request,
                |d| draft.position(d).is_some(),
                ids,
            )?;
            apply(&mut draft, &decision, &positions);
            let events = decision.events().to_vec();
            Ok::<_, FlowError>(plan(&draft, events, Outcome::One(Box::new(posted))))
        }),
    );
    run(builder, "create_work_item", Values::new(), ctx)
}

/// Takes the best ready pending item.
pub(crate) fn next(ctx: &Ctx<'_>, request: &NextRequest) -> Result<Plan, CoordError> {
    let now = ctx.now;
    let policy = ctx.options.policy.as_ref();
    let request = request.clone();
    let builder = begin_workflow(ctx).step(
        "take_next_item",
        &READ,
        from_fn(move |inputs: &Inputs<'_>| {
            let mut draft = open_draft(inputs)?;
            let mut positions = Positions::new();
            let mut decision = begin(&draft, now, None, &mut positions)?;
            let (chosen, item) = {
                let candidates: Vec<(usize, &ClaimHead)> = draft.heads().collect();
                let heads: Vec<&ClaimHead> = candidates.iter().map(|(_, h)| *h).collect();
                let chosen = decide::choose_next(&decision, &heads, [], &request, policy)
                    .map(|i| candidates[i].0)
                    .ok_or_else(|| CoordError::NothingToTake {
                        work_types: request.work_types.clone(),
                    })?;
                (chosen, draft.claim(chosen)?)
            };
            positions.insert(item.work_item_id.clone(), chosen);
            let fence = draft.next_fence()?;
            let taken = decide::take(&mut decision, &item, &request, fence)?;
            apply(&mut draft, &decision, &positions);
            let events = decision.events().to_vec();
            Ok::<_, FlowError>(plan(&draft, events, Outcome::One(Box::new(taken))))
        }),
    );
    run(builder, "take_next_item", Values::new(), ctx)
}

/// Applies `action` by `actor` to one item.
pub(crate) fn act(
    ctx: &Ctx<'_>,
    work_item_id: &str,
    action: &Action,
    actor: &Actor<'_>,
) -> Result<Plan, CoordError> {
    let now = ctx.now;
    let builder = begin_workflow(ctx).step(
        "apply_transition",
        &READ,
        from_fn(move |inputs: &Inputs<'_>| {
            let mut draft = open_draft(inputs)?;
            let pos = draft
                .position(work_item_id)
                .ok_or_else(|| CoordError::NotFound {
                    work_item_id: work_item_id.to_owned(),
                })?;
            let item = draft.claim(pos)?;
            let mut positions = Positions::from([(item.work_item_id.clone(), pos)]);
            // The item as it stands: a forced change to a lapsed claim acts
            // on it before its expiry would be written down.
            let mut decision = begin(&draft, now, Some(pos), &mut positions)?;
            let changed = decide::act(&mut decision, &item, action, actor)?;
            apply(&mut draft, &decision, &positions);
            let events = decision.events().to_vec();
            Ok::<_, FlowError>(plan(&draft, events, Outcome::One(Box::new(changed))))
        }),
    );
    run(builder, "apply_transition", Values::new(), ctx)
}

/// Writes down every lapsed lease.
pub(crate) fn reap(ctx: &Ctx<'_>) -> Result<Plan, CoordError> {
    let now = ctx.now;
    let builder = begin_workflow(ctx).step(
        "expire_lapsed_leases",
        &READ,
        from_fn(move |inputs: &Inputs<'_>| {
            let mut draft = open_draft(inputs)?;
            let mut positions = Positions::new();
            let decision = begin(&draft, now, None, &mut positions)?;
            let expired = decide::reap(&decision);
            apply(&mut draft, &decision, &positions);
            let events = decision.events().to_vec();
            Ok::<_, FlowError>(plan(&draft, events, Outcome::Many(expired)))
        }),
    );
    run(builder, "expire_lapsed_leases", Values::new(), ctx)
}

/// The items a cleanup moves: their archive lines and ids, and the plan
/// for the claims file without them.
pub(crate) struct Selection {
    pub plan: Plan,
    pub lines: Vec<String>,
    pub ids: Vec<String>,
    pub max_fence: u64,
    /// The revision this cleanup commits as.
    pub revision: u64,
}

impl AsRef<[u8]> for Selection {
    fn as_ref(&self) -> &[u8] {
        self.plan.doc.as_bytes()
    }
}

impl Planned for Selection {
    fn plan(&self) -> &Plan {
        &self.plan
    }
}

/// Moves final items to the archive (see `archive` for the crash story).
/// Items that an unfinished item depends on stay, so `next` can still see
/// whether they completed.
pub(crate) fn cleanup(ctx: &Ctx<'_>, sweep: Sweep) -> Result<Plan, CoordError> {
    let now = ctx.now;
    let builder = begin_workflow(ctx)
        .step(
            "select_finished_items",
            &READ,
            from_fn(move |inputs: &Inputs<'_>| {
                let mut draft = open_draft(inputs)?;
                let mut positions = Positions::new();
                let mut decision = begin(&draft, now, None, &mut positions)?;
                let max_fence = draft.max_fence();
                let ids = {
                    let heads: Vec<(usize, &ClaimHead)> = draft.heads().collect();
                    let needed = decide::needed_by_unfinished(heads.iter().map(|(_, h)| *h));
                    let ids = decide::cleanup(
                        &mut decision,
                        heads.iter().map(|(_, h)| *h),
                        &needed,
                        sweep,
                    );
                    for (pos, head) in &heads {
                        if ids.contains(&head.work_item_id) {
                            positions.insert(head.work_item_id.clone(), *pos);
                        }
                    }
                    ids
                };
                let lines = apply(&mut draft, &decision, &positions);
                let events = decision.events().to_vec();
                let plan = plan(&draft, events, Outcome::Archived(ids.clone()));
                Ok::<_, FlowError>(Selection {
                    plan,
                    lines,
                    ids,
                    max_fence,
                    revision: draft.revision(),
                })
            }),
        )
        .step(
            "raise_fence_high_water",
            &["select_finished_items"],
            RaiseFence {
                dir: ctx.dir.to_owned(),
                writer: ctx.options.writer.clone(),
            },
        )
        .step(
            "write_cleanup_intent",
            &["select_finished_items", "raise_fence_high_water"],
            WriteIntent {
                dir: ctx.dir.to_owned(),
                rotate_at: ctx.options.rotate_at,
                writer: ctx.options.writer.clone(),
            },
        )
        .step(
            "append_to_archive",
            &["select_finished_items", "write_cleanup_intent"],
            AppendToArchive {
                dir: ctx.dir.to_owned(),
                writer: ctx.options.writer.clone(),
            },
        );
    let builder = finish::<Selection>(
        builder,
        ctx,
        "select_finished_items",
        &["append_to_archive"],
    )
    .step(
        "raise_revision_high_water",
        &["select_finished_items", "write_claims_atomically"],
        RaiseRevision {
            dir: ctx.dir.to_owned(),
            writer: ctx.options.writer.clone(),
        },
    )
    .step(
        "remove_cleanup_intent",
        &["write_cleanup_intent", "raise_revision_high_water"],
        RemoveIntent {
            dir: ctx.dir.to_owned(),
        },
    );
    builder
        .returns("select_finished_items")
        .build()
        .expect("coord's workflows are well formed")
        .run::<Selection>(Values::new())
        .map(|s| s.plan)
        .map_err(|f| into_coord_error(f, &ctx.claims_path()))
}

/// The `raise_fence_high_water` step: before any record leaves the claims
/// file, the state file remembers the largest fence, so it is never reused.
/// Undo puts the state file back as it was (a failed cleanup changes no
/// file).
struct RaiseFence {
    dir: std::path::PathBuf,
    writer: reactor_file::AtomicWriter,
}

/// The state file's bytes before the step raised it (`None`: no file), if
/// it did.
struct Raised(Option<Option<Vec<u8>>>);

impl reactor::Step<FlowError> for RaiseFence {
    type Output = Raised;

    fn run(&mut self, inputs: &Inputs<'_>) -> Result<Raised, FlowError> {
        let selection = inputs.get::<Selection>("select_finished_items")?;
        if selection.ids.is_empty() {
            return Ok(Raised(None));
        }
        let path = self.dir.join(state::STATE_FILE);
        let previous = read_optional(&path)?;
        let current = state::read(&self.dir)?;
        if selection.max_fence <= current.fence {
            return Ok(Raised(None));
        }
        let raised = state::State {
            fence: selection.max_fence,
            ..current
        };
        state::write(&self.dir, raised, &self.writer)?;
        Ok(Raised(Some(previous)))
    }

    fn undo(&mut self, output: &Raised, _inputs: &Inputs<'_>) -> Result<(), FlowError> {
        let Raised(Some(previous)) = output else {
            return Ok(());
        };
        let path = self.dir.join(state::STATE_FILE);
        self.writer
            .restore(&path, previous.as_deref())
            .map_err(|source| {
                FlowError::File(FileError::Restore {
                    path: path.clone(),
                    source,
                })
            })
    }
}

/// The `raise_revision_high_water` step: once a cleanup committed, the
/// state file remembers its revision, which the records it removed may
/// have been the only ones to carry. (Its intent covers a crash before.)
struct RaiseRevision {
    dir: std::path::PathBuf,
    writer: reactor_file::AtomicWriter,
}

impl reactor::Step<FlowError> for RaiseRevision {
    type Output = ();

    fn run(&mut self, inputs: &Inputs<'_>) -> Result<(), FlowError> {
        let selection = inputs.get::<Selection>("select_finished_items")?;
        if selection.ids.is_empty() {
            return Ok(());
        }
        crate::crash::point("cleanup:claims-written");
        state::raise_revision(&self.dir, selection.revision, &self.writer)?;
        Ok(())
    }
}
