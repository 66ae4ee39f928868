//! The changes a coordination directory makes, each a saga run under the
//! directory lock (see `FileStore::locked`), after any half-done cleanup was
//! settled:
//!
//! ```text
//! claim (the CoordinationReactor)     every other change
//!   ensure_coordination_directory       ensure_coordination_directory
//!   read_existing_claims                read_existing_claims
//!   settle_event_log                    settle_event_log
//!   check_coordination_conflicts        <the decision: create_work_item, take_next_item,
//!   create_updated_claims                apply_transition, expire_lapsed_leases>
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
//! The claim keeps the seed's five steps: `check_coordination_conflicts`
//! decides it (`coord_core::decide::claim`), `create_updated_claims` writes
//! the decision into the new claims file. `settle_event_log` and
//! `append_event_log` keep the event log exact (written ahead, settled by
//! the next writer). Every change decides through `coord_core::decide`,
//! which writes down the leases that lapsed since the last change.
//!
//! What undoes what: `append_event_log` cuts the log back,
//! `write_claims_atomically` puts the old claims file back (its
//! compensation does when only its directory sync failed), and cleanup's
//! fence high-water mark, intent and archive append each undo themselves.
//! The reads and decisions have nothing to undo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use coord_core::decide::{self, Sweep};
use coord_core::operate::{OperateRequest, Target};
use coord_core::transition::{Action, Actor, NewIds};
use coord_core::{
    Answer, Claim, ClaimHead, ClaimRequest, CoordError, Decision, Event, IdempotencyKey,
    KeyedChange, NextRequest, PostRequest, Remembered, Status, Timestamp,
};
use reactor::{Both, Saga};
use reactor_file::{AtomicWrite, FileSnapshot};

use crate::archive::{AppendToArchive, WriteIntent, remove_cleanup_intent};
use crate::claims_doc::{CLAIMS_FILE, ClaimsDoc, Detached, Draft};
use crate::errors::{FlowError, saga_error};
use crate::events::{AppendEvents, EVENT_LOG};
use crate::keys::{self, Keys};
use crate::memory::SharedMemory;
use crate::options::FileStoreOptions;
use crate::paused;
use crate::state::{self, RaiseFence};
use crate::telemetry::{SpanRecorder, TracingMiddleware};

/// What a change produced, for the caller.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    One(Box<Claim>),
    Many(Vec<Claim>),
    Archived(Vec<String>),
}

/// A change ready to write: its draft (the new file, rendered when first
/// asked for), its events and what to return.
pub(crate) struct Plan {
    draft: Box<Detached>,
    rendered: OnceLock<ClaimsDoc>,
    pub events: Vec<Event>,
    pub outcome: Outcome,
}

impl Plan {
    /// The claims file this change writes, already parsed. Rendered once,
    /// when first asked for: a change of a group commit that another
    /// follows is never rendered.
    pub(crate) fn doc(&self) -> &ClaimsDoc {
        self.rendered.get_or_init(|| self.draft.render())
    }

    /// The store revision the change commits as.
    pub(crate) fn revision(&self) -> u64 {
        self.draft.revision()
    }

    /// How many final items the new file holds (for automatic compaction).
    pub(crate) fn finished(&self) -> usize {
        self.doc().summary().finished
    }
}

fn plan(draft: Draft<'_>, events: Vec<Event>, outcome: Outcome) -> Plan {
    Plan {
        draft: Box::new(draft.detach()),
        rendered: OnceLock::new(),
        events,
        outcome,
    }
}

/// What a change needs to know besides its own input.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub dir: &'a Path,
    pub options: &'a FileStoreOptions,
    pub now: Timestamp,
    /// What the store remembers of its earlier changes.
    pub memory: &'a SharedMemory,
    /// The key a keyed change remembers its answer under (see [`once`]).
    pub keyed: Option<&'a Keyed<'a>>,
    /// Where the change's spans go, when telemetry is on.
    pub spans: Option<&'a SpanRecorder>,
}

/// A keyed change's key, and the keys file it adds its answer to.
pub(crate) struct Keyed<'a> {
    keys: Keys,
    key: &'a IdempotencyKey,
    change: KeyedChange<'a>,
}

/// What a change under [`FileStore::locked`](crate::FileStore) did.
pub(crate) enum Done {
    Changed(Plan),
    /// A keyed change made before: its item again, nothing written.
    Answered(Box<Claim>),
}

impl Ctx<'_> {
    fn claims_path(&self) -> PathBuf {
        self.dir.join(CLAIMS_FILE)
    }
}

/// What every earlier change committed: the store revision, and the fence
/// high-water mark the state file keeps for records cleanup removed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    pub revision: u64,
    pub fence_floor: u64,
}

/// What every change starts from: the claims file as read, and what
/// committed before; in a batch, also the changes made before it.
struct Start {
    claims: FileSnapshot<ClaimsDoc>,
    committed: Committed,
    /// The draft of the batch's change before this one, which this one
    /// continues.
    before: Option<Detached>,
}

impl Start {
    /// Where the change after `plan` starts, in a batch: `plan`'s draft,
    /// and `plan`'s revision as committed.
    fn after(&self, plan: &Plan) -> Start {
        Start {
            claims: FileSnapshot {
                path: self.claims.path.clone(),
                bytes: None,
                value: self.claims.value.clone(),
            },
            committed: Committed {
                revision: plan.revision(),
                fence_floor: self.committed.fence_floor,
            },
            before: Some(Detached::clone(&plan.draft)),
        }
    }

    /// A draft over the claims as read (and changed before, in a batch),
    /// for the next revision.
    fn draft(&self) -> Result<Draft<'_>, CoordError> {
        let revision = CoordError::next_of("revision", self.committed.revision)?;
        Ok(match &self.before {
            Some(before) => before.continued(revision),
            None => {
                self.claims
                    .value
                    .draft(&self.claims.path, revision, self.committed.fence_floor)
            }
        })
    }
}

/// Runs the change `name`'s saga; its failure, undos run, as one error.
fn run<T>(
    ctx: &Ctx<'_>,
    name: &'static str,
    body: impl FnOnce(&mut Saga<'_, FlowError>) -> Result<T, FlowError>,
) -> Result<T, CoordError> {
    let result = match ctx.spans {
        Some(spans) => reactor::named_saga(name, &Both(TracingMiddleware, spans), body),
        None => reactor::named_saga(name, &TracingMiddleware, body),
    };
    result.map_err(|f| saga_error(f, &ctx.claims_path()))
}

/// The three steps every change starts with.
fn start(saga: &mut Saga<'_, FlowError>, ctx: &Ctx<'_>) -> Result<Start, FlowError> {
    saga.run("ensure_coordination_directory", || {
        // The directory exists (the lock file is in it); under the lock,
        // the temp files killed writers left can go.
        if ctx.memory.lock().sweep_due() {
            reactor_file::remove_stale_temps(ctx.dir, &crate::SWEPT).map_err(|source| {
                reactor_file::FileError::Read {
                    path: ctx.dir.to_owned(),
                    source,
                }
            })?;
        }
        Ok(())
    })?;
    let claims = saga.run("read_existing_claims", || {
        current_claims(ctx.memory, &ctx.claims_path()).map_err(FlowError::from)
    })?;
    let committed = saga.run("settle_event_log", || settle_event_log(ctx, &claims.value))?;
    Ok(Start {
        claims,
        committed,
        before: None,
    })
}

/// What committed: the newest record, or what cleanup remembered of
/// records it removed. Log lines past it are a dead writer's write-ahead
/// and go.
fn settle_event_log(ctx: &Ctx<'_>, claims: &ClaimsDoc) -> Result<Committed, FlowError> {
    let state = state::read(ctx.dir)?;
    let committed = claims.summary().max_revision.max(state.revision);
    let log = ctx.dir.join(EVENT_LOG);
    let result = Committed {
        revision: committed,
        fence_floor: state.fence,
    };
    // A log this store left after its own committed change is settled.
    let mut memory = ctx.memory.lock();
    if let Some(open) = memory.settled_log(&log, committed) {
        memory.put_log(open);
        return Ok(result);
    }
    drop(memory);
    let (dropped, open) = crate::events::settle_keeping(&log, committed)?;
    // Handed to this change's append, which saves opening it again.
    if let Some(open) = open {
        ctx.memory.lock().put_log(open);
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            committed,
            "dropped events of a change that never committed"
        );
        // That change may have written its key ahead too.
        keys::settle(ctx.dir, committed, &ctx.options.writer)?;
    }
    Ok(result)
}

/// The two steps every change ends with: its events, written ahead, then
/// the commit, the new claims file replacing the one read. A keyed change
/// writes its key between them (see `keys.rs`), or after the commit when
/// it has no events (a heartbeat, which may safely be made twice).
fn commit(
    saga: &mut Saga<'_, FlowError>,
    ctx: &Ctx<'_>,
    start: &Start,
    plan: &Plan,
) -> Result<(), FlowError> {
    let key_write = match (ctx.keyed, &plan.outcome) {
        (Some(keyed), Outcome::One(item)) => {
            let remembered = Remembered {
                fingerprint: keyed.change.fingerprint(),
                answer: Answer::Item(item.clone()),
            };
            let bytes = keyed.keys.with(
                keyed.key,
                &keyed.change,
                remembered,
                ctx.now,
                start.committed.revision,
                plan.revision(),
            );
            Some(
                AtomicWrite::new(keyed.keys.path(), bytes, keyed.keys.previous())
                    .with_writer(ctx.options.writer.clone()),
            )
        }
        _ => None,
    };
    let (ahead, after) = match key_write {
        Some(write) if plan.events.is_empty() => (None, Some(write)),
        write => (write, None),
    };
    saga.step(
        "append_event_log",
        AppendEvents::new(
            ctx.dir.join(EVENT_LOG),
            plan.events.clone(),
            plan.revision(),
            ctx.options.log(),
            ctx.options.writer.clone(),
            ctx.memory.clone(),
        ),
    )?;
    if let Some(write) = ahead {
        saga.step("record_idempotency_key", write)?;
    }
    saga.step(
        "write_claims_atomically",
        AtomicWrite::new(
            ctx.claims_path(),
            plan.doc().clone(),
            start.claims.bytes.clone(),
        )
        .with_writer(ctx.options.writer.clone()),
    )?;
    if let Some(write) = after {
        saga.step("record_idempotency_key", write)?;
    }
    Ok(())
}

/// A change handed over to be written together with others (group
/// commit): its request, owned, since another thread may decide it.
pub(crate) enum Job {
    Claim(ClaimRequest),
    Post(PostRequest),
    /// `many`: `next_many`'s most; `None`: `next`.
    Next {
        request: NextRequest,
        many: Option<usize>,
    },
    Act {
        work_item_id: String,
        action: Action,
        agent: String,
        fence: Option<u64>,
        force: bool,
    },
}

impl From<&KeyedChange<'_>> for Job {
    fn from(change: &KeyedChange<'_>) -> Job {
        match *change {
            KeyedChange::Claim(request) => Job::Claim(request.clone()),
            KeyedChange::Post(request) => Job::Post(request.clone()),
            KeyedChange::Next(request) => Job::Next {
                request: request.clone(),
                many: None,
            },
            KeyedChange::Act {
                work_item_id,
                action,
                ref actor,
            } => Job::Act {
                work_item_id: work_item_id.to_owned(),
                action: action.clone(),
                agent: actor.agent_id.to_owned(),
                fence: actor.fence,
                force: actor.force,
            },
        }
    }
}

impl Job {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Job::Claim(_) => "claim",
            Job::Post(_) => "post",
            Job::Next { .. } => "next",
            Job::Act { action, .. } => action.name(),
        }
    }

    pub(crate) fn agent(&self) -> &str {
        match self {
            Job::Claim(r) => &r.agent_id,
            Job::Post(r) => &r.agent_id,
            Job::Next { request, .. } => &request.agent_id,
            Job::Act { agent, .. } => agent,
        }
    }

    /// The change made alone, with a saga of its own.
    pub(crate) fn single(&self, ctx: &Ctx<'_>) -> Result<Plan, CoordError> {
        single(ctx, self.name(), |saga, start| {
            self.decide_on(saga, ctx, start)
        })
    }

    fn decide_on(
        &self,
        saga: &mut Saga<'_, FlowError>,
        ctx: &Ctx<'_>,
        start: &Start,
    ) -> Result<Plan, FlowError> {
        match self {
            Job::Claim(request) => claim_on(saga, ctx, start, request),
            Job::Post(request) => post_on(saga, ctx, start, request),
            Job::Next { request, many } => take_next_on(saga, ctx, start, request, *many),
            Job::Act {
                work_item_id,
                action,
                agent,
                fence,
                force,
            } => {
                let actor = Actor::new(agent).fence(*fence).force(*force);
                act_on(saga, ctx, start, work_item_id, action, &actor)
            }
        }
    }
}

/// What a batch did: each job's plan or refusal, in the order given, and
/// whether the one write of the plans went through.
pub(crate) struct Batched {
    pub results: Vec<Result<Plan, CoordError>>,
    pub written: Result<(), CoordError>,
}

/// Group commit: `jobs` decided one after another in one saga, each over
/// the claims the ones before it left (so fences and ids stay distinct
/// and conflicts between them are caught), then the events of all that
/// were not refused appended and the claims file replaced once. A refused
/// job changes nothing and is answered alone; each plan keeps its own
/// revision. If the saga fails before or at the write, nothing was
/// written and `written` says why.
pub(crate) fn batch(ctx: &Ctx<'_>, jobs: &[&Job]) -> Batched {
    let mut results: Vec<Result<Plan, CoordError>> = Vec::with_capacity(jobs.len());
    let written = run(ctx, "batch", |saga| {
        let first = start(saga, ctx)?;
        let mut last: Option<Start> = None;
        for job in jobs {
            let base = last.as_ref().unwrap_or(&first);
            match job.decide_on(saga, ctx, base) {
                Ok(plan) => {
                    last = Some(base.after(&plan));
                    results.push(Ok(plan));
                }
                Err(refused) => results.push(Err(refused.into())),
            }
        }
        let plans: Vec<&Plan> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        if let Some(last) = plans.last() {
            saga.step(
                "append_event_log",
                AppendEvents::new(
                    ctx.dir.join(EVENT_LOG),
                    plans
                        .iter()
                        .flat_map(|p| p.events.iter().cloned())
                        .collect(),
                    last.revision(),
                    ctx.options.log(),
                    ctx.options.writer.clone(),
                    ctx.memory.clone(),
                ),
            )?;
            saga.step(
                "write_claims_atomically",
                AtomicWrite::new(
                    ctx.claims_path(),
                    last.doc().clone(),
                    first.claims.bytes.clone(),
                )
                .with_writer(ctx.options.writer.clone()),
            )?;
        }
        Ok(())
    });
    Batched { results, written }
}

/// The store revision every earlier change committed at.
fn committed_revision(ctx: &Ctx<'_>) -> Result<u64, CoordError> {
    let claims = current_claims(ctx.memory, &ctx.claims_path())?;
    let state = state::read(ctx.dir)?;
    Ok(claims.value.summary().max_revision.max(state.revision))
}

/// A keyed change: the answer its agent's `key` got before, if any;
/// else the change made by `make` with its answer remembered (an item in
/// the change's own commit, a refusal on its own: it changes nothing else).
pub(crate) fn once(
    ctx: &Ctx<'_>,
    key: &IdempotencyKey,
    change: &KeyedChange<'_>,
    make: impl FnOnce(&Ctx<'_>) -> Result<Plan, CoordError>,
) -> Result<Done, CoordError> {
    let keys = Keys::read(ctx.dir)?;
    let committed = committed_revision(ctx)?;
    if let Some(remembered) = keys.lookup(change.agent_id(), key, ctx.now, committed) {
        return remembered
            .replay(key, change)
            .map(|c| Done::Answered(Box::new(c)));
    }
    let keyed = Keyed {
        keys,
        key,
        change: *change,
    };
    let keyed_ctx = Ctx {
        keyed: Some(&keyed),
        ..*ctx
    };
    let refused = match make(&keyed_ctx) {
        Ok(plan) => return Ok(Done::Changed(plan)),
        Err(e) => Err(e),
    };
    if let Some(answer @ Answer::Refused(_)) = Answer::of(&refused) {
        let remembered = Remembered {
            fingerprint: change.fingerprint(),
            answer,
        };
        let bytes = keyed
            .keys
            .with(key, change, remembered, ctx.now, committed, committed);
        // Not remembered, a retry is refused again or acts: nothing changed.
        if let Err(e) = keys::write(&keyed.keys, &bytes, &ctx.options.writer) {
            tracing::warn!(error = %e, "could not remember the idempotency key of a refusal");
        }
    }
    refused.map(|c| Done::Answered(Box::new(c)))
}

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

/// Ends `decision` as every change ends: [`decide::cascade`], over the
/// draft's pending items that depend on what it ended.
fn cascade(
    draft: &Draft<'_>,
    decision: &mut Decision,
    positions: &mut Positions,
) -> Result<(), CoordError> {
    decide::cascade(decision, |ended: &[String]| {
        let mut dependents = Vec::new();
        for (pos, head) in draft.heads() {
            if head.status == Status::Pending && head.depends_on.iter().any(|d| ended.contains(d)) {
                let claim = draft.claim(pos)?;
                positions.insert(claim.work_item_id.clone(), pos);
                dependents.push(claim);
            }
        }
        Ok::<_, CoordError>(dependents)
    })
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
            return Err(CoordError::damaged(format!(
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

/// The claim as `check_coordination_conflicts` decided it.
struct Decided {
    decision: Decision,
    positions: Positions,
    claim: Claim,
}

/// The CoordinationReactor: claims `request` on the spot (the decision
/// over `start`: its plan, not yet written).
fn claim_on(
    saga: &mut Saga<'_, FlowError>,
    ctx: &Ctx<'_>,
    start: &Start,
    request: &ClaimRequest,
) -> Result<Plan, FlowError> {
    let policy = ctx.options.policy.as_ref();
    // The live claims checked for a conflict, lapsed leases written
    // down, the fence and ids drawn: the decision layer's claim.
    let decided = saga.run("check_coordination_conflicts", || {
        let draft = start.draft()?;
        let mut positions = Positions::new();
        let mut decision = begin(&draft, ctx.now, None, &mut positions)?;
        let fence = draft.next_fence()?;
        let ids = new_ids(&draft, &decision);
        let heads = draft.heads().map(|(_, h)| h);
        let claim = decide::claim(&mut decision, request, heads, policy, ids, fence)?;
        cascade(&draft, &mut decision, &mut positions)?;
        Ok::<_, FlowError>(Decided {
            decision,
            positions,
            claim,
        })
    })?;
    saga.run("create_updated_claims", || {
        let mut draft = start.draft()?;
        apply(&mut draft, &decided.decision, &decided.positions);
        let events = decided.decision.events().to_vec();
        Ok(plan(draft, events, Outcome::One(Box::new(decided.claim))))
    })
}

/// A change `decide_on` decides over the claims as read, written with its
/// own saga: the steps every change starts with, the decision, the commit.
fn single(
    ctx: &Ctx<'_>,
    name: &'static str,
    decide_on: impl FnOnce(&mut Saga<'_, FlowError>, &Start) -> Result<Plan, FlowError>,
) -> Result<Plan, CoordError> {
    run(ctx, name, |saga| {
        let start = start(saga, ctx)?;
        let plan = decide_on(saga, &start)?;
        commit(saga, ctx, &start, &plan)?;
        Ok(plan)
    })
}

/// A change decided in one step named `step` by `decide`, which gets the
/// draft over the claims as read and the decision begun on it (every
/// lapsed lease written down, but the one at `except`'s); its outcome and
/// the decision go into the new claims file.
fn decided_change(
    ctx: &Ctx<'_>,
    name: &'static str,
    step: &'static str,
    except: impl FnOnce(&Draft<'_>) -> Result<Option<usize>, CoordError>,
    decide: impl FnOnce(&Draft<'_>, &mut Decision, &mut Positions) -> Result<Outcome, CoordError>,
) -> Result<Plan, CoordError> {
    single(ctx, name, |saga, start| {
        decided_on(saga, ctx, start, step, except, decide)
    })
}

/// [`decided_change`]'s decision over `start`: its plan, not yet written.
fn decided_on(
    saga: &mut Saga<'_, FlowError>,
    ctx: &Ctx<'_>,
    start: &Start,
    step: &'static str,
    except: impl FnOnce(&Draft<'_>) -> Result<Option<usize>, CoordError>,
    decide: impl FnOnce(&Draft<'_>, &mut Decision, &mut Positions) -> Result<Outcome, CoordError>,
) -> Result<Plan, FlowError> {
    saga.run(step, || {
        let mut draft = start.draft()?;
        let except = except(&draft)?;
        let mut positions = Positions::new();
        if let Some(pos) = except {
            positions.insert(draft.head(pos).work_item_id.clone(), pos);
        }
        let mut decision = begin(&draft, ctx.now, except, &mut positions)?;
        let outcome = decide(&draft, &mut decision, &mut positions)?;
        cascade(&draft, &mut decision, &mut positions)?;
        apply(&mut draft, &decision, &positions);
        Ok::<_, FlowError>(plan(draft, decision.events().to_vec(), outcome))
    })
}

/// Adds a pending item to the queue.
fn post_on(
    saga: &mut Saga<'_, FlowError>,
    ctx: &Ctx<'_>,
    start: &Start,
    request: &PostRequest,
) -> Result<Plan, FlowError> {
    decided_on(
        saga,
        ctx,
        start,
        "create_work_item",
        |_| Ok(None),
        |draft, decision, _| {
            let ids = new_ids(draft, decision);
            let status_of = |d: &str| draft.position(d).map(|p| draft.head(p).status);
            let posted = decide::post(decision, request, status_of, ids)?;
            Ok(Outcome::One(Box::new(posted)))
        },
    )
}

/// Takes up to `max` items, one choice after another in one decision (each
/// choice sees the items taken before it as in progress), with fences one
/// above the other; [`CoordError::NothingToTake`] if none.
/// `many`: up to that many, answered as a list; `None`: one, answered
/// alone.
fn take_next_on(
    saga: &mut Saga<'_, FlowError>,
    ctx: &Ctx<'_>,
    start: &Start,
    request: &NextRequest,
    many: Option<usize>,
) -> Result<Plan, FlowError> {
    let policy = ctx.options.policy.as_ref();
    let max = many.unwrap_or(1);
    decided_on(
        saga,
        ctx,
        start,
        "take_next_item",
        |_| Ok(None),
        |draft, decision, positions| {
            // Items of a paused work type are not candidates, but still
            // count for what they block and what depends on them.
            let paused = paused::read(ctx.dir)?;
            let (candidates, others): (Vec<_>, Vec<_>) = draft
                .heads()
                .partition(|(_, h)| !paused.contains_key(&h.work_type));
            let heads: Vec<&ClaimHead> = candidates.iter().map(|(_, h)| *h).collect();
            let context: Vec<&ClaimHead> = others.iter().map(|(_, h)| *h).collect();
            let mut taken: Vec<Claim> = Vec::new();
            while taken.len() < max {
                let Some(chosen) =
                    decide::choose_next(decision, &heads, context.iter().copied(), request, policy)
                        .map(|i| candidates[i].0)
                else {
                    break;
                };
                let item = draft.claim(chosen)?;
                positions.insert(item.work_item_id.clone(), chosen);
                let fence = match taken.last() {
                    None => draft.next_fence()?,
                    Some(last) => CoordError::next_of("fence", last.fence.unwrap_or_default())?,
                };
                taken.push(decide::take(decision, &item, request, fence)?);
            }
            if taken.is_empty() {
                return Err(CoordError::NothingToTake {
                    work_types: request.work_types.clone(),
                });
            }
            Ok(match many {
                Some(_) => Outcome::Many(taken),
                None => Outcome::One(Box::new(taken.pop().expect("one taken"))),
            })
        },
    )
}

/// Applies `action` by `actor` to one item.
fn act_on(
    saga: &mut Saga<'_, FlowError>,
    ctx: &Ctx<'_>,
    start: &Start,
    work_item_id: &str,
    action: &Action,
    actor: &Actor<'_>,
) -> Result<Plan, FlowError> {
    // The item as it stands: a forced change to a lapsed claim acts on it
    // before its expiry would be written down.
    let target = |draft: &Draft<'_>| {
        draft
            .position(work_item_id)
            .map(Some)
            .ok_or_else(|| CoordError::NotFound {
                work_item_id: work_item_id.to_owned(),
            })
    };
    decided_on(
        saga,
        ctx,
        start,
        "apply_transition",
        target,
        |draft, decision, positions| {
            let item = draft.claim(positions[work_item_id])?;
            let changed = decide::act(decision, &item, action, actor)?;
            Ok(Outcome::One(Box::new(changed)))
        },
    )
}

/// Cancels or retries the item or items `request` names.
pub(crate) fn operate(ctx: &Ctx<'_>, request: &OperateRequest) -> Result<Plan, CoordError> {
    decided_change(
        ctx,
        request.operation.name(),
        "apply_operation",
        |_| Ok(None),
        |draft, decision, positions| {
            let acts_on = request.operation.acts_on();
            let mut items = Vec::new();
            for (pos, head) in draft.heads() {
                let wanted = match &request.target {
                    Target::Item(id) => head.work_item_id == *id,
                    // What the head already rules out is not decoded (a
                    // lapse this change wrote down counts as written).
                    Target::Matching(m) => {
                        m.work_type.as_ref().is_none_or(|t| *t == head.work_type)
                            && (acts_on.contains(&head.status)
                                || decision.writes(&head.work_item_id))
                    }
                };
                if wanted {
                    let claim = draft.claim(pos)?;
                    positions.insert(claim.work_item_id.clone(), pos);
                    items.push(claim);
                }
            }
            Ok(Outcome::Many(decide::operate(decision, &items, request)?))
        },
    )
}

/// Writes down every lapsed lease.
pub(crate) fn reap(ctx: &Ctx<'_>) -> Result<Plan, CoordError> {
    decided_change(
        ctx,
        "reap",
        "expire_lapsed_leases",
        |_| Ok(None),
        |_, decision, _| Ok(Outcome::Many(decide::reap(decision))),
    )
}

/// What cleanup's `select_finished_items` chose: the new claims file
/// without them, their archive lines and ids, and the largest fence before.
struct Selection {
    plan: Plan,
    lines: Vec<String>,
    ids: Vec<String>,
    max_fence: u64,
}

/// Moves finished items to the archive (see `archive` for the crash story).
/// Items that an unfinished item depends on stay, so `next` can still see
/// whether they completed.
pub(crate) fn cleanup(ctx: &Ctx<'_>, sweep: Sweep) -> Result<Plan, CoordError> {
    let writer = &ctx.options.writer;
    run(ctx, "cleanup", |saga| {
        let start = start(saga, ctx)?;
        let selection = saga.run("select_finished_items", || {
            let mut draft = start.draft()?;
            let mut positions = Positions::new();
            let mut decision = begin(&draft, ctx.now, None, &mut positions)?;
            let max_fence = draft.max_fence();
            let heads: Vec<(usize, &ClaimHead)> = draft.heads().collect();
            let needed = decide::needed_by_unfinished(heads.iter().map(|(_, h)| *h));
            let ids = decide::cleanup(&mut decision, heads.iter().map(|(_, h)| *h), &needed, sweep);
            for (pos, head) in &heads {
                if ids.contains(&head.work_item_id) {
                    positions.insert(head.work_item_id.clone(), *pos);
                }
            }
            cascade(&draft, &mut decision, &mut positions)?;
            let lines = apply(&mut draft, &decision, &positions);
            let events = decision.events().to_vec();
            let plan = plan(draft, events, Outcome::Archived(ids.clone()));
            Ok::<_, FlowError>(Selection {
                plan,
                lines,
                ids,
                max_fence,
            })
        })?;
        if selection.ids.is_empty() {
            // Nothing moves: a change like any other (lapses written down).
            commit(saga, ctx, &start, &selection.plan)?;
            return Ok(selection.plan);
        }
        saga.step(
            "raise_fence_high_water",
            RaiseFence {
                dir: ctx.dir.to_owned(),
                max_fence: selection.max_fence,
                writer: writer.clone(),
                previous: None,
            },
        )?;
        let intent = saga.step(
            "write_cleanup_intent",
            WriteIntent {
                dir: ctx.dir.to_owned(),
                rotate_at: ctx.options.rotate_at,
                writer: writer.clone(),
                work_item_ids: selection.ids.clone(),
                revision: selection.plan.revision(),
                written: None,
            },
        )?;
        saga.step(
            "append_to_archive",
            AppendToArchive {
                dir: ctx.dir.to_owned(),
                writer: writer.clone(),
                lines: selection.lines.clone(),
                archive_len: intent.archive_len,
            },
        )?;
        commit(saga, ctx, &start, &selection.plan)?;
        // Once the cleanup committed, the state file remembers its revision,
        // which the records it removed may have been the only ones to carry.
        // (Its intent covers a crash before.)
        saga.run("raise_revision_high_water", || {
            crate::crash::point("cleanup:claims-written");
            state::raise_revision(ctx.dir, selection.plan.revision(), writer)
                .map_err(FlowError::from)
        })?;
        saga.run("remove_cleanup_intent", || {
            remove_cleanup_intent(ctx.dir).map_err(FlowError::from)
        })?;
        Ok(selection.plan)
    })
}
