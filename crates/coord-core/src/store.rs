//! The [`Store`] trait every backend implements, and [`EventPage`].

use std::time::Duration;

use crate::agents::{AgentRecord, AgentRegistration};
use crate::error::CoordError;
use crate::event::Event;
use crate::model::{Claim, ClaimRequest, Filter, NextRequest, PostRequest};
use crate::once::{IdempotencyKey, KeyedChange};
use crate::operate::{OperateRequest, Paused};
use crate::retry::RetryPolicy;
use crate::stats::Stats;
use crate::time::Timestamp;
use crate::transition::{Action, Actor};

/// Events read from a store's log, and where to read on from.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass back to [`Store::events`] to read only newer events.
    pub cursor: u64,
}

/// How long a waiter on a [`Wakeup`] waits before it reads anyway: a
/// safety net for a wake-up lost with its connection.
pub const SAFETY_POLL: Duration = Duration::from_secs(30);

/// Waits for a store's next change (see [`Store::wakeup`]). Made before
/// the caller reads, so a change that commits between the read and the
/// wait still wakes it.
pub trait Wakeup: Send {
    /// Blocks until a change may have committed since this waker was made
    /// or last woke (`Ok(true)`: read again), or `timeout` passed
    /// (`Ok(false)`). A waker that lost its connection says `true`, since it
    /// may have missed a change, and waits on a new connection next time.
    fn wait(&mut self, timeout: Duration) -> Result<bool, CoordError>;

    /// Something another thread may call to end a `wait` early (say, on
    /// shutdown); the interrupted wait returns `Ok(false)`. `None`: a wait
    /// cannot be cut short, so callers wait in short slices.
    fn interrupter(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        None
    }
}

/// A place where work items live. Every backend (the coordination
/// directory, PostgreSQL) implements this, and one conformance suite tests
/// them all.
///
/// Implementations decide legality with [`crate::transition`] and
/// [`crate::find_conflict`] and only make the outcome atomic. Every mutation
/// also writes down the leases that lapsed since the last one.
pub trait Store {
    /// Claims work on the spot, or fails with [`CoordError::Conflict`]
    /// naming the claim in the way.
    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError>;

    /// Adds a pending item to the queue.
    fn post(&self, request: &PostRequest) -> Result<Claim, CoordError>;

    /// Takes the best ready pending item, or [`CoordError::NothingToTake`].
    fn next(&self, request: &NextRequest) -> Result<Claim, CoordError>;

    /// Takes up to `max` (at least 1) of the best ready pending items in
    /// one change, each with its own lease and fence, best first: what
    /// `next` called that many times would take. A store may take fewer
    /// than are ready (PostgreSQL takes one when it must read first);
    /// [`CoordError::NothingToTake`] when it takes none.
    fn next_many(&self, request: &NextRequest, max: usize) -> Result<Vec<Claim>, CoordError>;

    /// Applies `action` by `actor` to `work_item_id` and returns the item.
    fn act(
        &self,
        work_item_id: &str,
        action: &Action,
        actor: &Actor<'_>,
    ) -> Result<Claim, CoordError>;

    /// Makes `change` once for its agent and `key`: a call repeated with
    /// the same key within [`crate::KEY_TTL`] gets the first call's item or
    /// refusal back and changes nothing; the same key with other arguments
    /// is refused as invalid input. The key is kept in the same commit as
    /// the change, so a caller that lost the answer retries safely.
    fn apply_once(
        &self,
        key: &IdempotencyKey,
        change: &KeyedChange<'_>,
    ) -> Result<Claim, CoordError>;

    /// Whether a change can commit while its caller, still running, gets an
    /// error instead of the answer (a connection broken during the commit:
    /// PostgreSQL). Callers that retry then send changes under an
    /// idempotency key ([`KeyedChange::retrying`]). `false` by default: a
    /// directory's answer is lost only with the process that asked.
    fn may_lose_answers(&self) -> bool {
        false
    }

    /// Writes down every lapsed lease now; returns the items it changed.
    fn reap(&self, agent_id: &str) -> Result<Vec<Claim>, CoordError>;

    /// Cancels or retries (`request.operation`) one item or every item a
    /// filter selects, in one change; returns the items it changed (by id:
    /// one, or an error saying why it could not; by filter: any number,
    /// none included). Items that depended on a cancelled one fail with it
    /// as their `--on-dependency-failure` says ([`crate::decide::cascade`]).
    fn operate(&self, request: &OperateRequest) -> Result<Vec<Claim>, CoordError>;

    /// Stops (`pause` true) or restarts `next` handing out `work_type`,
    /// by `agent_id`; returns the paused work types after it. Pausing a
    /// paused type, or resuming one that is not, changes nothing.
    fn pause(
        &self,
        agent_id: &str,
        work_type: &str,
        pause: bool,
    ) -> Result<Vec<Paused>, CoordError>;

    /// The work types `next` does not hand out now, by name.
    fn paused(&self) -> Result<Vec<Paused>, CoordError>;

    /// Archives final items that finished more than `older_than` ago;
    /// returns the ids it moved.
    fn cleanup(&self, agent_id: &str, older_than: Duration) -> Result<Vec<String>, CoordError>;

    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError>;

    /// An item `cleanup` archived, as it stood then (`None`: no archived
    /// item has that id). The default archives nothing.
    fn archived_item(&self, _work_item_id: &str) -> Result<Option<serde_json::Value>, CoordError> {
        Ok(None)
    }

    /// The items that match `filter`, oldest first.
    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError>;

    fn register_agent(&self, registration: &AgentRegistration) -> Result<AgentRecord, CoordError>;

    fn agents(&self) -> Result<Vec<AgentRecord>, CoordError>;

    /// Records that `agent_id`'s process ended (`coord work`, `coord run`):
    /// its entry shows `stopped` until it acts again. An agent the registry
    /// does not know is left unknown. The default records nothing.
    fn agent_stopped(&self, _agent_id: &str) -> Result<(), CoordError> {
        Ok(())
    }

    /// Events after `cursor` (0: from the start of the current log).
    fn events(&self, cursor: u64) -> Result<EventPage, CoordError>;

    /// A way to wait for this store's next change instead of polling, if
    /// it has one (PostgreSQL: a connection that waits in the database).
    /// `None` (the default, and the directory's answer): poll.
    fn wakeup(&self) -> Result<Option<Box<dyn Wakeup>>, CoordError> {
        Ok(None)
    }

    /// The board at a glance: items counted by status, priority, work type
    /// and owner, the oldest live claim, leases about to end, agents active
    /// and stale (unseen for `stale_after`), and what the event log says of
    /// the last hour and day. The default reads every item, the log and the
    /// agents; a store may read less.
    fn stats(&self, stale_after: Duration) -> Result<Stats, CoordError> {
        let items = self.list(&Filter::default())?;
        let events = self.events(0)?.events;
        let agents = self.agents()?;
        let mut stats = Stats::compute(&items, &events, &agents, self.now(), stale_after);
        stats.paused = self.paused()?.into_iter().map(|p| p.work_type).collect();
        Ok(stats)
    }

    /// The W3C `traceparent` of the span of the last change this thread
    /// made through a store of this kind, for a process it starts to join
    /// (`coord run` and `coord work` hand it to their children). `None`
    /// (the default) when the store records no spans.
    fn trace_parent(&self) -> Option<String> {
        None
    }

    /// The time the store acts at now, which statuses (an agent gone
    /// `stale`) are worked out against: the machine's clock for a
    /// directory, the database's for PostgreSQL. Default: the system's.
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Making a keyed change on a store (here, not in `once.rs`, which the
/// `Store` trait's signatures use).
impl KeyedChange<'_> {
    /// Makes the change, retrying as `policy` allows. Where the store may
    /// lose an answer ([`Store::may_lose_answers`]), under a fresh key
    /// named after `purpose`, database errors retried too; elsewhere plainly,
    /// with no key to keep.
    pub fn retrying(
        &self,
        store: &(impl Store + ?Sized),
        policy: RetryPolicy,
        purpose: &str,
    ) -> Result<Claim, CoordError> {
        if store.may_lose_answers() {
            let key = IdempotencyKey::fresh(purpose);
            policy.run_keyed(|| store.apply_once(&key, self))
        } else {
            policy.run(|| self.apply(store))
        }
    }

    /// Makes the change, without a key.
    pub fn apply(&self, store: &(impl Store + ?Sized)) -> Result<Claim, CoordError> {
        match *self {
            KeyedChange::Claim(r) => store.claim(r),
            KeyedChange::Post(r) => store.post(r),
            KeyedChange::Next(r) => store.next(r),
            KeyedChange::Act {
                work_item_id,
                action,
                ref actor,
            } => store.act(work_item_id, action, actor),
        }
    }
}
