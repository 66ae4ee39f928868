//! A worker's slot takes its next item while it records the last one's
//! outcome. When the worker is told to stop in between, the item it took
//! ahead is released at once, not left to its lease.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use coord_core::operate::{OperateRequest, Paused};
use coord_core::{
    Action, Actor, AgentRecord, AgentRegistration, Claim, ClaimRequest, CoordError, EventPage,
    Filter, IdempotencyKey, KeyedChange, NextRequest, PostRequest, Status, Store,
};
use coord_file::FileStore;
use coord_runner::{RunOptions, Shutdown, WorkOptions, work};

/// A directory store whose first completion waits until a second take has
/// been answered, then asks the worker to stop before it completes.
struct StopAfterTakeAhead {
    inner: FileStore,
    shutdown: Shutdown,
    takes: Arc<(Mutex<usize>, Condvar)>,
}

impl Store for StopAfterTakeAhead {
    fn next_many(&self, request: &NextRequest, max: usize) -> Result<Vec<Claim>, CoordError> {
        let taken = self.inner.next_many(request, max);
        let (count, changed) = &*self.takes;
        *count.lock().unwrap() += 1;
        changed.notify_all();
        taken
    }

    fn act(&self, id: &str, action: &Action, actor: &Actor<'_>) -> Result<Claim, CoordError> {
        if matches!(action, Action::Complete { .. }) {
            let (count, changed) = &*self.takes;
            let guard = count.lock().unwrap();
            let (guard, waited) = changed
                .wait_timeout_while(guard, Duration::from_secs(10), |n| *n < 2)
                .unwrap();
            drop(guard);
            assert!(!waited.timed_out(), "the slot never took ahead");
            self.shutdown.request();
        }
        self.inner.act(id, action, actor)
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Claim, CoordError> {
        self.inner.claim(request)
    }
    fn post(&self, request: &PostRequest) -> Result<Claim, CoordError> {
        self.inner.post(request)
    }
    fn next(&self, request: &NextRequest) -> Result<Claim, CoordError> {
        self.inner.next(request)
    }
    fn apply_once(
        &self,
        key: &IdempotencyKey,
        change: &KeyedChange<'_>,
    ) -> Result<Claim, CoordError> {
        self.inner.apply_once(key, change)
    }
    fn reap(&self, agent_id: &str) -> Result<Vec<Claim>, CoordError> {
        self.inner.reap(agent_id)
    }
    fn operate(&self, request: &OperateRequest) -> Result<Vec<Claim>, CoordError> {
        self.inner.operate(request)
    }
    fn pause(
        &self,
        agent_id: &str,
        work_type: &str,
        pause: bool,
    ) -> Result<Vec<Paused>, CoordError> {
        self.inner.pause(agent_id, work_type, pause)
    }
    fn paused(&self) -> Result<Vec<Paused>, CoordError> {
        self.inner.paused()
    }
    fn cleanup(&self, agent_id: &str, older_than: Duration) -> Result<Vec<String>, CoordError> {
        self.inner.cleanup(agent_id, older_than)
    }
    fn get(&self, work_item_id: &str) -> Result<Claim, CoordError> {
        self.inner.get(work_item_id)
    }
    fn list(&self, filter: &Filter) -> Result<Vec<Claim>, CoordError> {
        self.inner.list(filter)
    }
    fn register_agent(&self, registration: &AgentRegistration) -> Result<AgentRecord, CoordError> {
        self.inner.register_agent(registration)
    }
    fn agents(&self) -> Result<Vec<AgentRecord>, CoordError> {
        self.inner.agents()
    }
    fn events(&self, cursor: u64) -> Result<EventPage, CoordError> {
        self.inner.events(cursor)
    }
}

#[test]
fn an_item_taken_ahead_of_a_stop_is_released_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let store = StopAfterTakeAhead {
        inner: FileStore::new(dir.path()),
        shutdown: shutdown.clone(),
        takes: Arc::default(),
    };
    for i in 0..3 {
        store
            .post(&PostRequest::new("boss", "job").description(i.to_string()))
            .unwrap();
    }
    let options = WorkOptions::new(RunOptions::new(vec!["true".into()]));
    let report = work(&store, "w", &options, &shutdown);
    assert_eq!((report.taken, report.completed), (1, 1), "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let statuses: Vec<Status> = store
        .list(&Filter::default())
        .unwrap()
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(
        statuses,
        [Status::Completed, Status::Pending, Status::Pending],
        "the item taken ahead went back to the queue"
    );
}
