//! [`FileStore`]: the coordination directory as a [`Store`]. A change
//! takes the directory lock (`FileStore::locked`), settles what a killed
//! writer left, runs its saga (`changes`), compacts, and records the agent
//! as seen; the reads (`get`, `list`, `agents`, `events`) take no lock: the
//! atomic rename shows them a whole file, old or new.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_core::decide::Sweep;
use coord_core::operate::{OperateRequest, Paused};
use coord_core::transition::{Action, Actor};
use coord_core::{
    AgentRecord, AgentRegistration, Claim, ClaimRequest, CoordError, Event, EventKind, EventPage,
    Filter, IdempotencyKey, KeyedChange, NextRequest, PostRequest, Sightings, Store, Timestamp,
    validate_name,
};
use reactor_file::ensure_dir;

use crate::archive::{self, Recovery};
use crate::changes::{self, Ctx, Done, Job, Outcome, Plan};
use crate::claims_doc::CLAIMS_FILE;
use crate::claims_doc::ClaimsDoc;
use crate::errors::file_error;
use crate::group::{Answered, GroupCommit, Waiting};
use crate::lock::{DirLock, ShellLock};
use crate::memory::{Pinned, SharedMemory};
use crate::options::{FileStoreOptions, Warning};
use coord_core::trace::{RunSpans, item_attributes, outcome_attributes};

use crate::telemetry::{self, SpanRecorder};
use crate::{agents, events, fs_check, paused};

/// Work items kept in a coordination directory on this machine.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    options: FileStoreOptions,
    /// When this store last recorded each agent: a long-lived process need
    /// not read the registry to learn that it is up to date.
    sightings: Arc<Sightings>,
    /// What this store remembers of its earlier changes (the claims file it
    /// wrote, the event log it left, ...): a long-lived process does not
    /// redo that work per change (see `memory`).
    memory: SharedMemory,
    /// Changes of threads sharing this store, written together.
    group: Arc<GroupCommit>,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_options(dir, FileStoreOptions::default())
    }

    pub fn with_options(dir: impl Into<PathBuf>, options: FileStoreOptions) -> Self {
        FileStore {
            dir: dir.into(),
            options,
            sightings: Arc::default(),
            memory: SharedMemory::default(),
            group: Arc::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn claims_path(&self) -> PathBuf {
        self.dir.join(CLAIMS_FILE)
    }

    /// How many durable replacements of the claims file this store (and
    /// its clones) made: with group commit, fewer than its changes when
    /// threads change it at once.
    pub fn claims_writes(&self) -> u64 {
        self.group.writes()
    }

    /// Makes `job`, with whatever changes other threads sharing this store
    /// make at the same time (group commit), or alone.
    fn submit(&self, job: Job) -> Result<Outcome, CoordError> {
        if !self.options.group_commit {
            return self.locked(job.name(), Some(job.agent()), |ctx| job.single(ctx));
        }
        let answered = self.group.submit(job, |jobs| match jobs {
            [alone] => {
                let job = &alone.job;
                let result = self.locked(job.name(), Some(job.agent()), |ctx| job.single(ctx));
                alone.answer(Answered {
                    result,
                    spans: Vec::new(),
                });
            }
            jobs => self.make_together(jobs),
        });
        if !answered.spans.is_empty() {
            coord_core::trace::remember_run(&answered.spans);
        }
        answered.result
    }

    /// Makes `jobs` under one lock with one write, and answers each (see
    /// `changes::batch`). Each gets a run span of its own, without step
    /// spans (the steps were the batch's), with `coord.batch_size`.
    fn make_together(&self, jobs: &[Arc<Waiting>]) {
        let recording = self.options.telemetry || self.options.span_sink.is_some();
        let runs: Vec<Option<RunSpans>> = jobs
            .iter()
            .map(|w| {
                recording.then(|| {
                    RunSpans::start(
                        w.job.name(),
                        self.options.trace_parent,
                        self.options.clock.clone(),
                    )
                })
            })
            .collect();
        let waiting = Instant::now();
        let (results, lock_wait) = match self.batch_locked(jobs, waiting) {
            Ok(done) => done,
            Err(e) => {
                let failed = jobs.iter().map(|_| Err(e.duplicate())).collect();
                (failed, waiting.elapsed())
            }
        };
        let mut all_spans = Vec::new();
        for ((waiting_job, run), result) in jobs.iter().zip(runs).zip(results) {
            let spans = match run {
                Some(run) => {
                    let mut attributes = outcome_attributes(
                        Some(waiting_job.job.agent()),
                        "directory",
                        &result,
                        describe,
                    );
                    attributes.insert("coord.lock_wait_us".into(), micros(lock_wait).into());
                    attributes.insert("coord.batch_size".into(), jobs.len().into());
                    if let Ok((_, events)) = &result {
                        coord_core::trace::expired_attribute(events, &mut attributes);
                    }
                    run.finish(result.is_ok(), attributes)
                }
                None => Vec::new(),
            };
            if let Some(sink) = &self.options.span_sink {
                sink(&spans);
            }
            all_spans.extend(spans.iter().cloned());
            waiting_job.answer(Answered {
                result: result.map(|(outcome, _)| outcome),
                spans,
            });
        }
        self.append_span_file(&all_spans);
    }

    /// [`Self::make_together`]'s work under the directory lock: each job's
    /// outcome and events, or refusal, and how long the lock took.
    fn batch_locked(
        &self,
        jobs: &[Arc<Waiting>],
        waiting: Instant,
    ) -> Result<(Vec<Made>, Duration), CoordError> {
        let (lock, _) = self.wait_for_lock()?;
        let lock_wait = waiting.elapsed();
        let lock = lock?;
        let now = (self.options.clock)();
        let first_agent = jobs.first().map(|w| w.job.agent());
        self.settle_after_lock(&lock, first_agent, now)?;
        let ctx = Ctx {
            dir: &self.dir,
            options: &self.options,
            now,
            memory: &self.memory,
            keyed: None,
            spans: None,
        };
        let each: Vec<&Job> = jobs.iter().map(|w| &w.job).collect();
        let batched = changes::batch(&ctx, &each);
        let mut replaced = Vec::new();
        if batched.written.is_ok()
            && let Some(last) = batched.results.iter().rev().find_map(|r| r.as_ref().ok())
        {
            replaced = self.after_commit(&ctx, last);
        }
        // As alone: an agent is seen when its change was made.
        if self.options.track_agents && batched.written.is_ok() {
            for (job, result) in each.iter().zip(&batched.results) {
                if result.is_ok() {
                    self.touch_agent(job.agent(), now);
                }
            }
        }
        drop(lock);
        drop(replaced);
        let mut made = batched.results.into_iter();
        let results = (0..each.len())
            .map(|_| match (made.next(), &batched.written) {
                (Some(Ok(plan)), Ok(())) => Ok((plan.outcome, plan.events)),
                (Some(Err(refused)), _) => Err(refused),
                (_, Err(e)) => Err(e.duplicate()),
                (None, Ok(())) => Err(CoordError::internal("a change of a batch was not made")),
            })
            .collect();
        Ok((results, lock_wait))
    }

    /// Whether the shell tools' lock is taken too, as the options say.
    fn shell_lock(&self) -> ShellLock {
        if self.options.shell_lock {
            ShellLock::Take
        } else {
            ShellLock::Skip
        }
    }

    fn warn(&self, kind: &'static str, message: String) {
        (self.options.on_warning)(&Warning { kind, message });
    }

    /// Runs `change` under the directory lock and returns its plan's outcome.
    ///
    /// Around it: the directory is made (it must exist to hold the lock
    /// file) and checked to be local; a stale shell-tool lock that was broken
    /// is reported; a cleanup a killed writer left half-done is settled.
    /// After it: automatic compaction, and the agent's `last_seen`.
    fn locked(
        &self,
        name: &'static str,
        agent: Option<&str>,
        change: impl FnOnce(&Ctx<'_>) -> Result<Plan, CoordError>,
    ) -> Result<Outcome, CoordError> {
        match self.locked_done(name, agent, |ctx| change(ctx).map(Done::Changed))? {
            Done::Changed(plan) => Ok(plan.outcome),
            Done::Answered(claim) => Ok(Outcome::One(claim)),
        }
    }

    /// [`Self::locked`] for a change that may answer without changing
    /// anything (a keyed change made before).
    fn locked_done(
        &self,
        name: &'static str,
        agent: Option<&str>,
        change: impl FnOnce(&Ctx<'_>) -> Result<Done, CoordError>,
    ) -> Result<Done, CoordError> {
        let recording = self.options.telemetry || self.options.span_sink.is_some();
        let (lock, lock_wait) = self.wait_for_lock()?;
        let lock = match lock {
            Ok(lock) => lock,
            Err(e) => {
                // The change never began: its span is the wait alone.
                if recording {
                    let run = RunSpans::start(
                        name,
                        self.options.trace_parent,
                        self.options.clock.clone(),
                    );
                    let mut attributes = outcome_attributes(agent, "directory", &Ok(()), |_, _| {});
                    attributes.insert("coord.error".into(), e.kind().as_str().into());
                    attributes.insert("coord.lock_wait_us".into(), micros(lock_wait).into());
                    self.emit_spans(&run.finish(false, attributes));
                }
                return Err(e);
            }
        };
        let now = (self.options.clock)();
        self.settle_after_lock(&lock, agent, now)?;
        let recorder = recording
            .then(|| SpanRecorder::new(self.options.trace_parent, self.options.clock.clone()));
        let ctx = Ctx {
            dir: &self.dir,
            options: &self.options,
            now,
            memory: &self.memory,
            keyed: None,
            spans: recorder.as_ref(),
        };
        let done = change(&ctx);
        if let Some(recorder) = &recorder {
            self.write_spans(recorder, agent, lock_wait, &done);
        }
        // Compaction is a change of its own, without the caller's span.
        let ctx = Ctx { spans: None, ..ctx };
        let plan = match done? {
            Done::Changed(plan) => plan,
            answered => {
                if let Some(agent) = agent.filter(|_| self.options.track_agents) {
                    self.touch_agent(agent, now);
                }
                return Ok(answered);
            }
        };
        // Files this store had pinned and the change replaced: freed after
        // the lock is released, not while other writers wait for it.
        let replaced = self.after_commit(&ctx, &plan);
        if let Some(agent) = agent.filter(|_| self.options.track_agents) {
            self.touch_agent(agent, now);
        }
        drop(lock);
        drop(replaced);
        Ok(Done::Changed(plan))
    }

    /// The directory made (it holds the lock file) and checked to be
    /// local, then its lock waited for; the lock or why not, and how long
    /// the wait took. The staging file is taken out of memory while the
    /// change waits, so readers sharing this store's memory are not held
    /// up by the lock.
    fn wait_for_lock(&self) -> Result<(Result<DirLock, CoordError>, Duration), CoordError> {
        ensure_dir(&self.dir).map_err(file_error)?;
        if !self.options.allow_unsafe_filesystem && self.memory.lock().fs_unchecked() {
            fs_check::check(&self.dir)?;
            self.memory.lock().fs_checked();
        }
        let mut staging = self.memory.lock().staging.take();
        let waiting = Instant::now();
        let lock = DirLock::acquire_staged(
            &self.dir,
            self.options.lock_timeout,
            self.options.shell_lock.then_some(&mut staging),
        );
        let lock_wait = waiting.elapsed();
        self.memory.lock().staging = staging;
        Ok((lock, lock_wait))
    }

    /// What follows a commit of `plan`, still under the lock: the write
    /// counted, the new claims file remembered, and automatic compaction
    /// (a change of its own, without the caller's span) when the file holds
    /// too many finished items. Returns the files the store had pinned and
    /// the commit replaced, to free after the lock is released (not while
    /// other writers wait for it).
    fn after_commit(&self, ctx: &Ctx<'_>, plan: &Plan) -> Vec<Option<Pinned>> {
        let claims_path = self.claims_path();
        self.group.wrote();
        let mut replaced = vec![self.memory.lock().committed(&claims_path, plan.doc())];
        if plan.finished() > self.options.compact_at {
            let ctx = Ctx {
                spans: None,
                ..*ctx
            };
            match changes::cleanup(&ctx, Sweep::AllBut(self.options.compact_keep)) {
                Ok(compacted) => {
                    self.group.wrote();
                    replaced.push(self.memory.lock().committed(&claims_path, compacted.doc()));
                }
                Err(e) => self.warn(
                    "compaction_failed",
                    format!("automatic compaction failed: {e}"),
                ),
            }
        }
        replaced
    }

    /// Appends the change's spans, with what it did as the run's
    /// attributes. Telemetry never fails a change nor changes its output: a
    /// write that fails is logged (`COORD_LOG`), nothing more.
    fn write_spans(
        &self,
        recorder: &SpanRecorder,
        agent: Option<&str>,
        lock_wait: Duration,
        done: &Result<Done, CoordError>,
    ) {
        let mut attributes =
            outcome_attributes(agent, "directory", done, |done, attributes| match done {
                Done::Changed(plan) => describe_outcome(&plan.outcome, attributes),
                Done::Answered(claim) => item_attributes(claim, attributes),
            });
        attributes.insert("coord.lock_wait_us".into(), micros(lock_wait).into());
        if let Ok(Done::Changed(plan)) = done {
            coord_core::trace::expired_attribute(&plan.events, &mut attributes);
        }
        self.emit_spans(&recorder.finish(attributes));
    }

    /// Hands a change's spans to the sink and appends them to the span
    /// file, as the options say.
    fn emit_spans(&self, spans: &[coord_core::trace::SpanRecord]) {
        coord_core::trace::remember_run(spans);
        if let Some(sink) = &self.options.span_sink {
            sink(spans);
        }
        self.append_span_file(spans);
    }

    /// Appends `spans` to the span file, when telemetry is on.
    fn append_span_file(&self, spans: &[coord_core::trace::SpanRecord]) {
        if !self.options.telemetry || spans.is_empty() {
            return;
        }
        let path = match &self.options.telemetry_file {
            Some(path) => path.clone(),
            None => self.dir.join(telemetry::SPANS_FILE),
        };
        if let Err(e) = telemetry::append_spans(&path, spans, &self.options.writer) {
            tracing::warn!(error = %e, file = %path.display(), "spans not written");
        }
    }

    /// What every holder of the lock does first: settle a cleanup a killed
    /// writer left half-done, then report the lock files it broke. In that
    /// order: until the cleanup is settled, the files may not yet say that
    /// its revision committed, and reporting settles the event log against
    /// that revision.
    fn settle_after_lock(
        &self,
        lock: &DirLock,
        agent: Option<&str>,
        now: Timestamp,
    ) -> Result<(), CoordError> {
        if let Some(recovery) = archive::recover(&self.dir, &self.options.writer)? {
            let how = match recovery {
                Recovery::RolledBack => "rolled back (the items stay in the claims file)",
                Recovery::RolledForward => "completed (the items are in the archive)",
            };
            self.warn(
                "cleanup_recovered",
                format!("an interrupted cleanup was {how}"),
            );
        }
        self.report_broken_locks(lock, agent, now)
    }

    /// Reports the shell tools' lock files `lock` broke: a warning, and a
    /// `lock_broken` event. A broken lock is no change of its own: its event
    /// carries the revision committed when it was broken, so the log stays
    /// in revision order.
    fn report_broken_locks(
        &self,
        lock: &DirLock,
        agent: Option<&str>,
        now: Timestamp,
    ) -> Result<(), CoordError> {
        if lock.broken().is_empty() {
            return Ok(());
        }
        let claims = changes::current_claims(&self.memory, &self.claims_path())?;
        let committed = claims
            .value
            .summary()
            .max_revision
            .max(crate::state::read(&self.dir)?.revision);
        // The dead writer may have written ahead of a commit it never made:
        // those lines go first, or this committed one would hide them from
        // the settle that walks back from the log's end.
        let log = self.dir.join(events::EVENT_LOG);
        events::settle_keeping(&log, committed)?;
        for broken in lock.broken() {
            let message = format!(
                "removed a stale {} ({}): the writer that held it, a shell tool or a coord \
                 killed while writing, is no longer running",
                broken.path.display(),
                broken.holder
            );
            let event = Event {
                time: now,
                agent: agent.map(str::to_owned),
                work_item_id: None,
                from: None,
                to: None,
                fence: None,
                event: EventKind::LockBroken,
                revision: Some(committed),
                work_type: None,
                priority: None,
                reason: Some(message.clone()),
                forced: false,
            };
            events::append(
                &log,
                &[event],
                self.options.unsettled_log(),
                &self.options.writer,
            )?;
            self.warn("lock_broken", message);
        }
        Ok(())
    }

    fn touch_agent(&self, agent: &str, now: Timestamp) {
        if !self.sightings.due(agent, now) {
            return;
        }
        self.sightings.record(agent, now);
        if let Err(e) = agents::touch(&self.dir, &AgentRegistration::sighting(agent), now) {
            self.warn("agent_registry_not_updated", format!("{e}"));
        }
    }

    /// Reads the claims file without the lock: the atomic rename means it is
    /// always a whole file, the one before or after any change.
    fn snapshot(&self) -> Result<ClaimsDoc, CoordError> {
        changes::current_claims(&self.memory, &self.claims_path()).map(|s| s.value)
    }

    /// Every archived item as it stood when it was archived (the current
    /// archive file only, not rotated ones).
    pub fn archived(&self) -> Result<Vec<serde_json::Value>, CoordError> {
        archive::read_all(&self.dir)
    }
}

/// A batched change as made: its outcome and its events, or why not.
type Made = Result<(Outcome, Vec<Event>), CoordError>;

/// What a change's span says of its outcome: the item, or how many.
fn describe_outcome(
    outcome: &Outcome,
    attributes: &mut serde_json::Map<String, serde_json::Value>,
) {
    match outcome {
        Outcome::One(claim) => item_attributes(claim, attributes),
        Outcome::Many(items) => {
            attributes.insert("coord.items".into(), items.len().into());
        }
        Outcome::Archived(ids) => {
            attributes.insert("coord.items".into(), ids.len().into());
        }
    }
}

/// [`describe_outcome`] for a batched change's outcome and events.
fn describe(
    (outcome, _): &(Outcome, Vec<Event>),
    attributes: &mut serde_json::Map<String, serde_json::Value>,
) {
    describe_outcome(outcome, attributes);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn one(outcome: Outcome) -> Claim {
    match outcome {
        Outcome::One(c) => *c,
        other => unreachable!("a single-item change returned {other:?}"),
    }
}

impl Store for FileStore {
    /// This machine's clock (the store's clock option): the directory is on
    /// one machine.
    fn now(&self) -> Timestamp {
        (self.options.clock)()
    }

    fn archived_item(&self, work_item_id: &str) -> Result<Option<serde_json::Value>, CoordError> {
        Ok(archive::read_all(&self.dir)?
            .into_iter()
            .rev()
            .find(|v| v["work_item_id"] == work_item_id))
    }

    /// The last run span this thread's changes recorded.
    fn trace_parent(&self) -> Option<String> {
        if self.options.telemetry || self.options.span_sink.is_some() {
            coord_core::trace::last_run()
        } else {
            None
        }
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.submit(Job::Claim(request.clone())).map(one)
    }

    fn post(&self, request: &PostRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.submit(Job::Post(request.clone())).map(one)
    }

    fn next(&self, request: &NextRequest) -> Result<Claim, CoordError> {
        request.validate()?;
        self.submit(Job::Next {
            request: request.clone(),
            many: None,
        })
        .map(one)
    }

    fn next_many(&self, request: &NextRequest, max: usize) -> Result<Vec<Claim>, CoordError> {
        request.validate_many(max)?;
        match self.submit(Job::Next {
            request: request.clone(),
            many: Some(max),
        })? {
            Outcome::Many(taken) => Ok(taken),
            other => unreachable!("next_many returned {other:?}"),
        }
    }

    fn act(
        &self,
        work_item_id: &str,
        action: &Action,
        actor: &Actor<'_>,
    ) -> Result<Claim, CoordError> {
        validate_name("the agent id", actor.agent_id)?;
        let change = KeyedChange::Act {
            work_item_id,
            action,
            actor: *actor,
        };
        self.submit(Job::from(&change)).map(one)
    }

    fn apply_once(
        &self,
        key: &IdempotencyKey,
        change: &KeyedChange<'_>,
    ) -> Result<Claim, CoordError> {
        change.validate()?;
        let job = Job::from(change);
        let make = |ctx: &Ctx<'_>| job.single(ctx);
        let done = self.locked_done(change.name(), Some(change.agent_id()), |ctx| {
            changes::once(ctx, key, change, make)
        })?;
        match done {
            Done::Changed(plan) => Ok(one(plan.outcome)),
            Done::Answered(claim) => Ok(*claim),
        }
    }

    fn reap(&self, agent_id: &str) -> Result<Vec<Claim>, CoordError> {
        match self.locked("reap", Some(agent_id), changes::reap)? {
            Outcome::Many(expired) => Ok(expired),
            other => unreachable!("reap returned {other:?}"),
        }
    }

    fn operate(&self, request: &OperateRequest) -> Result<Vec<Claim>, CoordError> {
        request.validate()?;
        match self.locked(request.operation.name(), Some(&request.agent_id), |ctx| {
            changes::operate(ctx, request)
        })? {
            Outcome::Many(changed) => Ok(changed),
            other => unreachable!("operate returned {other:?}"),
        }
    }

    fn cleanup(&self, agent_id: &str, older_than: Duration) -> Result<Vec<String>, CoordError> {
        match self.locked("cleanup", Some(agent_id), |ctx| {
            changes::cleanup(ctx, Sweep::OlderThan(older_than))
        })? {
            Outcome::Archived(ids) => Ok(ids),
            other => unreachable!("cleanup returned {other:?}"),
        }
    }

    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError> {
        let doc = self.snapshot()?;
        let index = doc
            .position(work_item_id)
            .ok_or_else(|| CoordError::NotFound {
                work_item_id: work_item_id.to_owned(),
            })?;
        doc.claim(&self.claims_path(), index)
    }

    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError> {
        let doc = self.snapshot()?;
        let path = self.claims_path();
        doc.heads()
            .enumerate()
            .filter(|(_, head)| filter.matches(head))
            .map(|(i, _)| doc.claim(&path, i))
            .collect()
    }

    fn register_agent(&self, registration: &AgentRegistration) -> Result<AgentRecord, CoordError> {
        registration.validate()?;
        ensure_dir(&self.dir).map_err(file_error)?;
        if !self.options.allow_unsafe_filesystem {
            fs_check::check(&self.dir)?;
        }
        let lock = DirLock::acquire(&self.dir, self.options.lock_timeout, self.shell_lock())?;
        let now = (self.options.clock)();
        self.settle_after_lock(&lock, Some(&registration.agent_id), now)?;
        agents::touch(&self.dir, registration, now)
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, CoordError> {
        agents::read(&self.dir)
    }

    fn pause(
        &self,
        agent_id: &str,
        work_type: &str,
        pause: bool,
    ) -> Result<Vec<Paused>, CoordError> {
        Paused::validate(agent_id, work_type)?;
        ensure_dir(&self.dir).map_err(file_error)?;
        if !self.options.allow_unsafe_filesystem {
            fs_check::check(&self.dir)?;
        }
        let lock = DirLock::acquire(&self.dir, self.options.lock_timeout, self.shell_lock())?;
        let now = (self.options.clock)();
        self.settle_after_lock(&lock, Some(agent_id), now)?;
        let mut types = paused::read(&self.dir)?;
        let changed = if pause {
            !types.contains_key(work_type)
                && types
                    .insert(
                        work_type.to_owned(),
                        Paused {
                            work_type: work_type.to_owned(),
                            paused_by: agent_id.to_owned(),
                            paused_at: now,
                        },
                    )
                    .is_none()
        } else {
            types.remove(work_type).is_some()
        };
        if changed {
            paused::write(&self.dir, &types, &self.options.writer)?;
        }
        Ok(types.into_values().collect())
    }

    fn paused(&self) -> Result<Vec<Paused>, CoordError> {
        Ok(paused::read(&self.dir)?.into_values().collect())
    }

    fn agent_stopped(&self, agent_id: &str) -> Result<(), CoordError> {
        if !self.options.track_agents || !self.dir.is_dir() {
            return Ok(());
        }
        let lock = DirLock::acquire(&self.dir, self.options.lock_timeout, self.shell_lock())?;
        let now = (self.options.clock)();
        self.settle_after_lock(&lock, None, now)?;
        agents::mark_stopped(&self.dir, agent_id, now)
    }

    fn events(&self, cursor: u64) -> Result<EventPage, CoordError> {
        // Only what committed: the claims file and the state file say how far.
        let committed = self
            .snapshot()?
            .summary()
            .max_revision
            .max(crate::state::read(&self.dir)?.revision);
        events::read(&self.dir.join(events::EVENT_LOG), cursor, committed)
    }
}
