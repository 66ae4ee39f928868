//! The behaviour every store must show, whatever keeps its items. Each
//! function is one test; [`conformance_suite!`](crate::conformance_suite)
//! runs them all against a store.
//!
//! A harness gives a fresh, empty store whose clock the test moves, and
//! more handles on the same store for the tests of concurrent callers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use coord_core::operate::{Match, OperateRequest, Operation, Target};
use coord_core::{
    Action, Actor, AgentRegistration, Claim, ClaimRequest, ErrorKind, Event, EventKind, Filter,
    IdempotencyKey, Invalid, KEY_TTL, KeyedChange, NextRequest, OnDependencyFailure, PostRequest,
    Priority, Status, Store,
};
use proptest::strategy::Strategy;

use crate::TestClock;

/// A fresh store for one test.
pub trait Harness {
    fn store(&self) -> &dyn Store;
    fn clock(&self) -> &TestClock;
    /// Another handle on the same store (its own connection or file
    /// handles), for a thread of its own.
    fn another(&self) -> Box<dyn Store + Send>;
    /// The archived items as they stood, oldest first.
    fn archived(&self) -> Vec<serde_json::Value>;

    /// The ids of the archived items, oldest first.
    fn archived_ids(&self) -> Vec<String> {
        self.archived()
            .iter()
            .map(|v| v["work_item_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Runs every conformance test as a `#[test]` of the calling crate.
/// `$make` is a function returning a fresh [`Harness`].
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@each $make;
            a_lapsed_lease_frees_the_work_and_fences_off_the_old_owner,
            heartbeats_and_progress_keep_a_lease_alive,
            only_the_owner_acts_and_force_is_recorded,
            next_takes_by_priority_then_age_and_says_when_nothing_is_left,
            dependencies_hold_items_back_until_completed,
            failed_items_are_retried_until_max_attempts_then_stay_failed,
            retry_after_holds_a_requeued_item_back,
            release_hands_work_back_for_someone_else,
            cleanup_moves_old_finished_items_and_fences_never_go_back,
            cleanup_keeps_items_that_pending_work_depends_on,
            agents_are_registered_seen_and_go_stale,
            bad_requests_are_refused_and_change_nothing,
            list_filters_and_keeps_the_order_of_arrival,
            concurrent_exclusive_claims_admit_exactly_one,
            concurrent_claims_that_do_not_conflict_all_succeed,
            concurrent_workers_take_each_item_exactly_once,
            concurrent_nexts_take_every_ready_item_best_first,
            the_event_log_replays_to_the_store_and_its_cursor_resumes,
            a_follower_reading_while_writers_commit_sees_every_event_once,
            text_a_store_cannot_hold_is_refused_and_changes_nothing,
            every_change_writes_down_the_leases_that_lapsed_before_it,
            a_keyed_change_is_made_once_however_often_it_is_sent,
            a_key_remembers_a_refusal_and_refuses_a_different_call,
            keys_belong_to_their_agent_and_expire_after_a_day,
            concurrent_calls_with_one_key_make_one_change,
            next_many_takes_what_next_would_take_one_by_one,
            next_many_never_takes_two_exclusive_items_of_a_type,
            concurrent_batch_takers_take_each_item_exactly_once,
            an_archived_item_is_found_in_the_archive,
            cancel_ends_pending_work_and_in_progress_work_only_by_force,
            retry_sends_ended_queue_items_back_with_their_history,
            bulk_operations_act_on_every_match_they_can_and_nothing_else,
            a_dependency_that_ends_badly_fails_its_dependents_unless_they_wait,
            a_lapsed_dependency_fails_its_dependents_when_written_down,
            a_paused_work_type_is_not_handed_out_until_resumed
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let harness = $make();
                $crate::conformance::$name(&harness);
            }
        )*

        #[test]
        fn random_operations_keep_every_invariant() {
            $crate::conformance::random_operations_keep_every_invariant($make);
        }
    };
}

const MIN: Duration = Duration::from_secs(60);

fn high(agent: &str, work_type: &str) -> ClaimRequest {
    ClaimRequest::new(agent, work_type)
        .priority(Priority::High)
        .lease(MIN)
}

fn events(store: &dyn Store) -> Vec<Event> {
    store.events(0).unwrap().events
}

/// Completes `id` as its owner `agent` (the tests' everyday transition).
pub fn complete(store: &dyn Store, id: &str, agent: &str) {
    store
        .act(id, &Action::Complete { result: None }, &Actor::new(agent))
        .unwrap();
}

fn cancel(id: &str, force: bool) -> OperateRequest {
    OperateRequest {
        agent_id: "ops".into(),
        operation: Operation::Cancel {
            reason: None,
            force,
        },
        target: Target::Item(id.into()),
    }
}

fn retry(id: &str, reset_attempts: bool) -> OperateRequest {
    OperateRequest {
        agent_id: "ops".into(),
        operation: Operation::Retry { reset_attempts },
        target: Target::Item(id.into()),
    }
}

fn fail_for_good() -> Action {
    Action::Fail {
        reason: Some("broken".into()),
        requeue: false,
        retry_after: None,
    }
}

pub fn a_lapsed_lease_frees_the_work_and_fences_off_the_old_owner(h: &dyn Harness) {
    let store = h.store();
    let old = store.claim(&high("alice", "deploy")).unwrap();
    assert_eq!(
        store.claim(&high("bob", "deploy")).unwrap_err().kind(),
        ErrorKind::Conflict
    );

    h.clock().advance(MIN + Duration::from_secs(1));
    // Expired whether or not it was written down: bob can claim at once.
    let new = store.claim(&high("bob", "deploy")).unwrap();
    assert!(new.fence > old.fence, "fences only grow");
    // ...and bob's change wrote alice's expiry down, with an event.
    let alice = store.get(&old.work_item_id).unwrap();
    assert_eq!(alice.status, Status::Expired);
    assert!(alice.reason.as_deref().unwrap().contains("lease expired"));
    let expired: Vec<_> = events(store)
        .into_iter()
        .filter(|e| e.event == EventKind::Expired)
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].agent.as_deref(), Some("alice"));
    assert_eq!(
        (expired[0].from, expired[0].to),
        (Some(Status::InProgress), Some(Status::Expired))
    );

    // Alice's late completion is refused, and changes nothing.
    for action in [
        Action::Complete { result: None },
        Action::Heartbeat { lease: None },
    ] {
        let err = store
            .act(&old.work_item_id, &action, &Actor::new("alice"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LeaseExpired, "{action:?}");
    }
    assert_eq!(
        store.get(&old.work_item_id).unwrap().status,
        Status::Expired
    );
}

pub fn heartbeats_and_progress_keep_a_lease_alive(h: &dyn Harness) {
    let store = h.store();
    let c = store.claim(&high("alice", "deploy")).unwrap();
    let me = Actor::new("alice");
    for _ in 0..3 {
        h.clock().advance(Duration::from_secs(50));
        store
            .act(&c.work_item_id, &Action::Heartbeat { lease: None }, &me)
            .unwrap();
    }
    h.clock().advance(Duration::from_secs(50));
    let progressed = store
        .act(&c.work_item_id, &Action::Progress { percent: 80 }, &me)
        .unwrap();
    assert_eq!(progressed.progress, Some(80));
    h.clock().advance(Duration::from_secs(50));
    assert_eq!(
        store.claim(&high("bob", "deploy")).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    complete(store, &c.work_item_id, "alice");
    let kinds: Vec<EventKind> = events(store).iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Claimed,
            EventKind::Progress,
            EventKind::Completed
        ],
        "heartbeats are not logged"
    );
}

pub fn only_the_owner_acts_and_force_is_recorded(h: &dyn Harness) {
    let store = h.store();
    let c = store.claim(&high("alice", "deploy")).unwrap();
    let err = store
        .act(
            &c.work_item_id,
            &Action::Complete { result: None },
            &Actor::new("bob"),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotOwner);
    assert_eq!(
        store.get(&c.work_item_id).unwrap().status,
        Status::InProgress
    );
    let done = store
        .act(
            &c.work_item_id,
            &Action::Complete { result: None },
            &Actor::new("bob").force(true),
        )
        .unwrap();
    assert_eq!(done.status, Status::Completed);
    let last = events(store).pop().unwrap();
    assert!(last.forced);
    assert_eq!(last.agent.as_deref(), Some("bob"));
}

pub fn next_takes_by_priority_then_age_and_says_when_nothing_is_left(h: &dyn Harness) {
    let store = h.store();
    let post = |t: &str, p: Priority| {
        h.clock().advance(Duration::from_millis(1));
        store
            .post(&PostRequest::new("boss", t).priority(p))
            .unwrap()
    };
    let low = post("docs", Priority::Low);
    let med_old = post("build", Priority::Medium);
    let _med_new = post("build", Priority::Medium);
    let crit = post("fix", Priority::Critical);
    let take = || store.next(&NextRequest::new("worker").lease(MIN));
    assert_eq!(take().unwrap().work_item_id, crit.work_item_id);
    assert_eq!(take().unwrap().work_item_id, med_old.work_item_id);
    take().unwrap();
    let only_docs = store
        .next(&NextRequest::new("w").work_types(["docs"]))
        .unwrap();
    assert_eq!(only_docs.work_item_id, low.work_item_id);
    assert_eq!(take().unwrap_err().kind(), ErrorKind::NothingToTake);
}

pub fn dependencies_hold_items_back_until_completed(h: &dyn Harness) {
    let store = h.store();
    let first = store.post(&PostRequest::new("boss", "step1")).unwrap();
    let second = store
        .post(&PostRequest::new("boss", "step2").after([first.work_item_id.clone()]))
        .unwrap();
    let err = store
        .post(&PostRequest::new("boss", "x").after(["work_nope"]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let taken = store.next(&NextRequest::new("w")).unwrap();
    assert_eq!(taken.work_item_id, first.work_item_id);
    assert_eq!(
        store.next(&NextRequest::new("w")).unwrap_err().kind(),
        ErrorKind::NothingToTake
    );
    complete(store, &first.work_item_id, "w");
    assert_eq!(
        store.next(&NextRequest::new("w")).unwrap().work_item_id,
        second.work_item_id
    );
}

pub fn failed_items_are_retried_until_max_attempts_then_stay_failed(h: &dyn Harness) {
    let store = h.store();
    let item = store
        .post(&PostRequest::new("boss", "flaky").max_attempts(3))
        .unwrap();
    let requeue = Action::Fail {
        reason: Some("boom".into()),
        requeue: true,
        retry_after: None,
    };
    for attempt in 1..=3 {
        let taken = store.next(&NextRequest::new("w").lease(MIN)).unwrap();
        assert_eq!(
            (taken.work_item_id.as_str(), taken.attempt),
            (item.work_item_id.as_str(), Some(attempt))
        );
        if attempt == 2 {
            // A lapsed lease counts as a failed attempt too.
            h.clock().advance(MIN * 2);
            let reaped = store.reap("janitor").unwrap();
            assert_eq!(reaped.len(), 1);
        } else {
            store
                .act(&item.work_item_id, &requeue, &Actor::new("w"))
                .unwrap();
        }
    }
    let last = store.get(&item.work_item_id).unwrap();
    assert_eq!((last.status, last.attempt), (Status::Failed, Some(3)));
    assert_eq!(
        store.next(&NextRequest::new("w")).unwrap_err().kind(),
        ErrorKind::NothingToTake
    );
    let kinds: Vec<EventKind> = events(store).iter().map(|e| e.event).collect();
    use EventKind::*;
    assert_eq!(
        kinds,
        [Posted, Claimed, Requeued, Claimed, Expired, Claimed, Failed]
    );
}

pub fn retry_after_holds_a_requeued_item_back(h: &dyn Harness) {
    let store = h.store();
    let item = store.post(&PostRequest::new("boss", "flaky")).unwrap();
    store.next(&NextRequest::new("w")).unwrap();
    store
        .act(
            &item.work_item_id,
            &Action::Fail {
                reason: None,
                requeue: true,
                retry_after: Some(Duration::from_secs(30)),
            },
            &Actor::new("w"),
        )
        .unwrap();
    assert_eq!(
        store.next(&NextRequest::new("w")).unwrap_err().kind(),
        ErrorKind::NothingToTake
    );
    h.clock().advance(Duration::from_secs(31));
    assert_eq!(
        store.next(&NextRequest::new("w")).unwrap().work_item_id,
        item.work_item_id
    );
}

pub fn release_hands_work_back_for_someone_else(h: &dyn Harness) {
    let store = h.store();
    let item = store.post(&PostRequest::new("boss", "t")).unwrap();
    let a = store.next(&NextRequest::new("alice")).unwrap();
    store
        .act(&item.work_item_id, &Action::Release, &Actor::new("alice"))
        .unwrap();
    let b = store.next(&NextRequest::new("bob")).unwrap();
    assert_eq!(b.work_item_id, item.work_item_id);
    assert_eq!(b.attempt, Some(1), "a release is not a failed attempt");
    assert!(b.fence > a.fence);
    // Alice, holding the old fence, is fenced off even though she names it.
    let err = store
        .act(
            &item.work_item_id,
            &Action::Complete { result: None },
            &Actor::new("alice").fence(a.fence),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseExpired);
}

pub fn cleanup_moves_old_finished_items_and_fences_never_go_back(h: &dyn Harness) {
    let store = h.store();
    let done = store.claim(&high("a", "x")).unwrap();
    complete(store, &done.work_item_id, "a");
    let live = store
        .claim(&high("a", "y").lease(Duration::from_secs(7200)))
        .unwrap();
    h.clock().advance(Duration::from_secs(3600));
    let recent = store.claim(&high("a", "z")).unwrap();
    store
        .act(
            &recent.work_item_id,
            &Action::Fail {
                reason: None,
                requeue: false,
                retry_after: None,
            },
            &Actor::new("a"),
        )
        .unwrap();

    let moved = store.cleanup("a", Duration::from_secs(1800)).unwrap();
    assert_eq!(moved, std::slice::from_ref(&done.work_item_id));
    assert_eq!(h.archived_ids(), std::slice::from_ref(&done.work_item_id));
    let left: Vec<String> = store
        .list(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|c| c.work_item_id)
        .collect();
    assert_eq!(
        left,
        [live.work_item_id.clone(), recent.work_item_id.clone()]
    );
    assert_eq!(
        store.get(&done.work_item_id).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Archive everything, then claim again: the fence still grows.
    complete(store, &live.work_item_id, "a");
    let all = store.cleanup("a", Duration::ZERO).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(store.list(&Filter::default()).unwrap(), vec![]);
    let again = store.claim(&high("a", "x")).unwrap();
    assert!(again.fence > recent.fence);
    assert!(again.fence > live.fence);
}

pub fn cleanup_keeps_items_that_pending_work_depends_on(h: &dyn Harness) {
    let store = h.store();
    let dep = store.post(&PostRequest::new("b", "first")).unwrap();
    store
        .post(&PostRequest::new("b", "second").after([dep.work_item_id.clone()]))
        .unwrap();
    store
        .next(&NextRequest::new("w").work_types(["first"]))
        .unwrap();
    complete(store, &dep.work_item_id, "w");
    assert!(store.cleanup("b", Duration::ZERO).unwrap().is_empty());
    assert!(h.archived_ids().is_empty());
    let second = store.next(&NextRequest::new("w")).unwrap();
    assert_eq!(second.work_type, "second");
}

pub fn agents_are_registered_seen_and_go_stale(h: &dyn Harness) {
    let store = h.store();
    store
        .register_agent(&AgentRegistration {
            agent_id: "alice".into(),
            team: Some("platform".into()),
            capacity: Some(4),
        })
        .unwrap();
    h.clock().advance(Duration::from_secs(600));
    store.claim(&ClaimRequest::new("bob", "t")).unwrap();
    let agents = store.agents().unwrap();
    let by_id: HashMap<&str, &coord_core::AgentRecord> =
        agents.iter().map(|a| (a.agent_id.as_str(), a)).collect();
    assert_eq!(by_id["alice"].team.as_deref(), Some("platform"));
    assert_eq!(by_id["alice"].capacity, Some(4));
    let now = h.store().now();
    assert_eq!(
        by_id["alice"].status(now, Duration::from_secs(300)),
        "stale"
    );
    assert_eq!(by_id["bob"].status(now, Duration::from_secs(300)), "active");
}

pub fn bad_requests_are_refused_and_change_nothing(h: &dyn Harness) {
    let store = h.store();
    let kept = store.claim(&high("alice", "deploy")).unwrap();
    let before = store.list(&Filter::default()).unwrap();
    let log_before = events(store).len();
    let refusals = [
        store.claim(&ClaimRequest::new("", "t")).unwrap_err(),
        store.claim(&ClaimRequest::new("a", "")).unwrap_err(),
        store
            .claim(&ClaimRequest::new("a", "t").lease(Duration::ZERO))
            .unwrap_err(),
        store.post(&PostRequest::new("a", "")).unwrap_err(),
        store
            .act(
                &kept.work_item_id,
                &Action::Progress { percent: 101 },
                &Actor::new("alice"),
            )
            .unwrap_err(),
    ];
    for err in refusals {
        assert_eq!(err.kind(), ErrorKind::ValidationFailed, "{err}");
    }
    let missing = store
        .act(
            "work_missing",
            &Action::Complete { result: None },
            &Actor::new("alice"),
        )
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_eq!(store.list(&Filter::default()).unwrap(), before);
    assert_eq!(events(store).len(), log_before);
}

pub fn list_filters_and_keeps_the_order_of_arrival(h: &dyn Harness) {
    let store = h.store();
    let mut ids = Vec::new();
    for (agent, work_type) in [("a", "x"), ("b", "y"), ("a", "y"), ("b", "x")] {
        h.clock().advance(Duration::from_millis(1));
        ids.push(
            store
                .claim(&ClaimRequest::new(agent, work_type))
                .unwrap()
                .work_item_id,
        );
    }
    complete(store, &ids[1], "b");
    let list = |filter: Filter| -> Vec<String> {
        store
            .list(&filter)
            .unwrap()
            .into_iter()
            .map(|c| c.work_item_id)
            .collect()
    };
    assert_eq!(list(Filter::default()), ids);
    let by_owner = Filter {
        owner: Some("a".into()),
        ..Filter::default()
    };
    assert_eq!(list(by_owner), [ids[0].clone(), ids[2].clone()]);
    let by_type_and_status = Filter {
        work_type: Some("y".into()),
        status: Some(Status::InProgress),
        ..Filter::default()
    };
    assert_eq!(list(by_type_and_status), [ids[2].clone()]);
}

/// Runs `f(i, store)` on `n` threads, each with its own handle, all
/// starting together.
fn on_threads<T: Send + 'static>(
    h: &dyn Harness,
    n: usize,
    f: impl Fn(usize, &dyn Store) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let store = h.another();
            let barrier = Arc::clone(&barrier);
            let f = Arc::clone(&f);
            std::thread::spawn(move || {
                barrier.wait();
                f(i, store.as_ref())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

/// Every item in the store, by id.
fn all_items(store: &dyn Store) -> Vec<Claim> {
    store.list(&Filter::default()).unwrap()
}

pub fn a_keyed_change_is_made_once_however_often_it_is_sent(h: &dyn Harness) {
    let store = h.store();
    // claim, post, next and an acting change, each sent twice.
    let claim = high("a1", "deploy");
    let first = store
        .apply_once(&key("c"), &KeyedChange::Claim(&claim))
        .unwrap();
    let again = store
        .apply_once(&key("c"), &KeyedChange::Claim(&claim))
        .unwrap();
    assert_eq!(again, first, "the repeat answers with the first claim");
    let post = PostRequest::new("a1", "tests").description("run them");
    let posted = store
        .apply_once(&key("p"), &KeyedChange::Post(&post))
        .unwrap();
    assert_eq!(
        store
            .apply_once(&key("p"), &KeyedChange::Post(&post))
            .unwrap(),
        posted
    );
    let next = NextRequest::new("a2").lease(MIN);
    let taken = store
        .apply_once(&key("n"), &KeyedChange::Next(&next))
        .unwrap();
    assert_eq!(taken.work_item_id, posted.work_item_id);
    assert_eq!(
        store
            .apply_once(&key("n"), &KeyedChange::Next(&next))
            .unwrap(),
        taken
    );
    let complete = Action::Complete {
        result: Some("ok".into()),
    };
    let act = KeyedChange::Act {
        work_item_id: &taken.work_item_id,
        action: &complete,
        actor: Actor::new("a2").fence(taken.fence),
    };
    let completed = store.apply_once(&key("done"), &act).unwrap();
    assert_eq!(completed.status, Status::Completed);
    // Unkeyed, completing twice is refused; keyed, the repeat is answered.
    assert_eq!(store.apply_once(&key("done"), &act).unwrap(), completed);
    let items = all_items(store);
    assert_eq!(items.len(), 2, "one claim, one post: {items:?}");
    let kinds: Vec<EventKind> = events(store).iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Claimed,
            EventKind::Posted,
            EventKind::Claimed,
            EventKind::Completed
        ],
        "each change logged once"
    );
}

pub fn a_key_remembers_a_refusal_and_refuses_a_different_call(h: &dyn Harness) {
    let store = h.store();
    let holder = store.claim(&high("holder", "deploy")).unwrap();
    // "Not now" is not remembered: once the way is free, the key claims.
    let claim = high("a1", "deploy");
    let blocked = store
        .apply_once(&key("c"), &KeyedChange::Claim(&claim))
        .unwrap_err();
    assert_eq!(blocked.kind(), ErrorKind::Conflict);
    complete(store, &holder.work_item_id, "holder");
    let claimed = store
        .apply_once(&key("c"), &KeyedChange::Claim(&claim))
        .unwrap();
    assert_eq!(claimed.agent_id.as_deref(), Some("a1"));
    // A final refusal is: a1 may not complete what a2 holds, and the key
    // says so again even once a1 holds the item.
    store
        .post(&PostRequest::new("poster", "tests").description("one"))
        .unwrap();
    let held = store.next(&NextRequest::new("a2").lease(MIN)).unwrap();
    let done = Action::Complete { result: None };
    let act = KeyedChange::Act {
        work_item_id: &held.work_item_id,
        action: &done,
        actor: Actor::new("a1"),
    };
    let refused = store.apply_once(&key("k"), &act).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::NotOwner, "{refused}");
    store
        .act(&held.work_item_id, &Action::Release, &Actor::new("a2"))
        .unwrap();
    let mine = store.next(&NextRequest::new("a1").lease(MIN)).unwrap();
    assert_eq!(mine.work_item_id, held.work_item_id);
    let again = store.apply_once(&key("k"), &act).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::NotOwner, "{again}");
    assert_eq!(again.to_string(), refused.to_string());
    assert_eq!(
        store.get(&held.work_item_id).unwrap().status,
        Status::InProgress
    );
    // The same key for another call: refused, nothing written.
    let before = all_items(store);
    let other = high("a1", "release");
    let e = store
        .apply_once(&key("k"), &KeyedChange::Claim(&other))
        .unwrap_err();
    assert_eq!(e.invalid_reason(), Some(Invalid::Input), "{e}");
    assert!(e.to_string().contains("different call"), "{e}");
    assert_eq!(all_items(store), before);
    // Bad input is refused before any key is kept: fixed, it goes through.
    let empty = ClaimRequest::new("a1", "");
    let e = store
        .apply_once(&key("k3"), &KeyedChange::Claim(&empty))
        .unwrap_err();
    assert_eq!(e.invalid_reason(), Some(Invalid::Input));
    let fixed = ClaimRequest::new("a1", "docs");
    store
        .apply_once(&key("k3"), &KeyedChange::Claim(&fixed))
        .unwrap();
}

pub fn keys_belong_to_their_agent_and_expire_after_a_day(h: &dyn Harness) {
    let store = h.store();
    let post = |agent: &str| PostRequest::new(agent, "tests").description("same words");
    let (a, b) = (post("a"), post("b"));
    let first = store.apply_once(&key("k"), &KeyedChange::Post(&a)).unwrap();
    let other = store.apply_once(&key("k"), &KeyedChange::Post(&b)).unwrap();
    assert_ne!(
        first.work_item_id, other.work_item_id,
        "another agent's key"
    );
    h.clock().advance(KEY_TTL - Duration::from_secs(60));
    assert_eq!(
        store.apply_once(&key("k"), &KeyedChange::Post(&a)).unwrap(),
        first
    );
    h.clock().advance(Duration::from_secs(120));
    let later = store.apply_once(&key("k"), &KeyedChange::Post(&a)).unwrap();
    assert_ne!(later.work_item_id, first.work_item_id, "an expired key");
    assert_eq!(all_items(store).len(), 3);
}

pub fn concurrent_calls_with_one_key_make_one_change(h: &dyn Harness) {
    let results = on_threads(h, 6, |_, store| {
        let post = PostRequest::new("a1", "tests").description("once");
        store.apply_once(&key("same"), &KeyedChange::Post(&post))
    });
    let ids: HashSet<String> = results
        .iter()
        .map(|r| {
            r.as_ref()
                .expect("every call answered")
                .work_item_id
                .clone()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{results:?}");
    assert_eq!(all_items(h.store()).len(), 1);
}

pub fn next_many_takes_what_next_would_take_one_by_one(h: &dyn Harness) {
    let store = h.store();
    let mut posted = Vec::new();
    for (n, p) in [
        Priority::Low,
        Priority::Medium,
        Priority::Low,
        Priority::Medium,
        Priority::Low,
    ]
    .into_iter()
    .enumerate()
    {
        h.clock().advance(Duration::from_millis(1));
        let request = PostRequest::new("boss", "tests")
            .description(format!("item {n}"))
            .priority(p);
        posted.push(store.post(&request).unwrap().work_item_id);
    }
    // Best first: the mediums by age, then the lows by age.
    let order = [&posted[1], &posted[3], &posted[0], &posted[2], &posted[4]];
    let request = NextRequest::new("w").lease(MIN);
    let e = store.next_many(&request, 0).unwrap_err();
    assert_eq!(e.invalid_reason(), Some(Invalid::Input), "{e}");
    let first = store.next_many(&request, 3).unwrap();
    let ids: Vec<&String> = first.iter().map(|c| &c.work_item_id).collect();
    assert_eq!(ids, order[..3], "the three best, best first");
    let fences: Vec<u64> = first.iter().map(|c| c.fence.unwrap()).collect();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    for claim in &first {
        assert_eq!(claim.status, Status::InProgress);
        assert_eq!(claim.agent_id.as_deref(), Some("w"));
        assert!(claim.lease_expires_at.is_some());
        assert_eq!(&store.get(&claim.work_item_id).unwrap(), claim);
    }
    let rest = store.next_many(&request, 5).unwrap();
    let ids: Vec<&String> = rest.iter().map(|c| &c.work_item_id).collect();
    assert_eq!(ids, order[3..], "fewer than asked when fewer are left");
    let e = store.next_many(&request, 2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NothingToTake);
    let taken = events(store)
        .iter()
        .filter(|e| e.event == EventKind::Claimed)
        .count();
    assert_eq!(taken, 5, "one event per item taken");
}

pub fn next_many_never_takes_two_exclusive_items_of_a_type(h: &dyn Harness) {
    let store = h.store();
    for n in 0..2 {
        let request = PostRequest::new("boss", "deploy")
            .description(format!("release {n}"))
            .priority(Priority::High);
        store.post(&request).unwrap();
    }
    store
        .post(&PostRequest::new("boss", "tests").priority(Priority::Medium))
        .unwrap();
    let taken = store
        .next_many(&NextRequest::new("w").lease(MIN), 3)
        .unwrap();
    assert_eq!(taken[0].work_type, "deploy", "the best first: {taken:?}");
    let deploys = taken.iter().filter(|c| c.work_type == "deploy").count();
    assert_eq!(deploys, 1, "{taken:?}");
    // The second deploy waits for the first to end.
    let rest = store.next_many(&NextRequest::new("w2").lease(MIN), 3);
    if let Ok(rest) = rest {
        assert!(rest.iter().all(|c| c.work_type != "deploy"), "{rest:?}");
    }
}

pub fn concurrent_batch_takers_take_each_item_exactly_once(h: &dyn Harness) {
    let store = h.store();
    let mut posted = HashSet::new();
    for n in 0..40 {
        let request = PostRequest::new("boss", format!("t{}", n % 3)).description(n.to_string());
        posted.insert(store.post(&request).unwrap().work_item_id);
    }
    let taken = on_threads(h, 5, |i, store| {
        let request = NextRequest::new(format!("w{i}"));
        let mut mine = Vec::new();
        loop {
            match store.next_many(&request, 1 + i) {
                Ok(batch) => mine.extend(batch.into_iter().map(|c| c.work_item_id)),
                Err(e) if e.kind() == ErrorKind::NothingToTake => return mine,
                Err(e) => panic!("{e}"),
            }
        }
    });
    let all: Vec<String> = taken.into_iter().flatten().collect();
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "an item was taken twice");
    assert_eq!(unique, posted, "every item was taken");
}

pub fn an_archived_item_is_found_in_the_archive(h: &dyn Harness) {
    let store = h.store();
    let done = store.claim(&ClaimRequest::new("a1", "build")).unwrap();
    complete(store, &done.work_item_id, "a1");
    assert_eq!(store.archived_item(&done.work_item_id).unwrap(), None);
    h.clock().advance(Duration::from_secs(10));
    store.cleanup("a1", Duration::from_secs(1)).unwrap();
    let e = store.get(&done.work_item_id).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let archived = store
        .archived_item(&done.work_item_id)
        .unwrap()
        .expect("in the archive");
    assert_eq!(archived["work_item_id"], done.work_item_id.as_str());
    assert_eq!(archived["status"], "completed");
    assert_eq!(store.archived_item("work_nope").unwrap(), None);
}

pub fn concurrent_exclusive_claims_admit_exactly_one(h: &dyn Harness) {
    let results = on_threads(h, 8, |i, store| {
        store.claim(&high(&format!("agent{i}"), "deploy"))
    });
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        }
    }
    let live = h
        .store()
        .list(&Filter {
            status: Some(Status::InProgress),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].work_item_id, won[0].work_item_id);
}

pub fn concurrent_claims_that_do_not_conflict_all_succeed(h: &dyn Harness) {
    let results = on_threads(h, 8, |i, store| {
        (0..5)
            .map(|k| {
                let request = if i % 2 == 0 {
                    ClaimRequest::new(format!("agent{i}"), "build").priority(Priority::Medium)
                } else {
                    high(&format!("agent{i}"), &format!("deploy{i}_{k}"))
                };
                store.claim(&request).map(|c| c.work_item_id)
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let mut ids = Vec::new();
    for r in results {
        ids.extend(r.expect("no claim here conflicts"));
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 40, "every claim got its own item");
    assert_eq!(h.store().list(&Filter::default()).unwrap().len(), 40);
}

pub fn concurrent_workers_take_each_item_exactly_once(h: &dyn Harness) {
    let store = h.store();
    let mut posted = HashSet::new();
    for n in 0..30 {
        let p = if n % 3 == 0 {
            Priority::High
        } else {
            Priority::Low
        };
        posted.insert(
            store
                .post(&PostRequest::new("boss", format!("t{}", n % 7)).priority(p))
                .unwrap()
                .work_item_id,
        );
    }
    let taken = on_threads(h, 6, |i, store| {
        let agent = format!("w{i}");
        let mut mine = Vec::new();
        loop {
            match store.next(&NextRequest::new(agent.as_str())) {
                Ok(c) => {
                    complete(store, &c.work_item_id, &agent);
                    mine.push(c.work_item_id);
                }
                Err(e) if e.kind() == ErrorKind::NothingToTake => {
                    // A high item may wait only for one of its type to end.
                    let left = store
                        .list(&Filter {
                            status: Some(Status::Pending),
                            ..Filter::default()
                        })
                        .unwrap();
                    if left.is_empty() {
                        return mine;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    let all: Vec<String> = taken.into_iter().flatten().collect();
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "an item was taken twice");
    assert_eq!(unique, posted, "every item was taken");
}

/// Posts 25 items of each priority, spread over five work types
/// (`<prefix>0` to `<prefix>4`); returns them.
fn post_every_priority(store: &dyn Store, prefix: &str) -> Vec<Claim> {
    (0..100)
        .map(|n| {
            let request = PostRequest::new("boss", format!("{prefix}{}", n % 5))
                .priority(Priority::ALL[n % 4]);
            store.post(&request).unwrap()
        })
        .collect()
}

/// A `next` takes an item whenever one it may take is ready and not being
/// taken by a concurrent `next`, and priority order holds but for items in
/// flight. 100 items over five work types, 25 of each priority: one high
/// or critical item per type can be held at a time, so 55 can be taken,
/// the best first. 120 concurrent callers take exactly those 55 (the oldest
/// critical item of each type), the other 65 are told nothing is left; 30
/// callers over 100 more take five critical items and every medium one.
pub fn concurrent_nexts_take_every_ready_item_best_first(h: &dyn Harness) {
    let check = |posted: &[Claim], callers: usize, expected: [usize; 4]| {
        let results = on_threads(h, callers, |i, store| {
            store.next(&NextRequest::new(format!("w{i}")).lease(10 * MIN))
        });
        let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            refused.iter().all(|e| e.kind() == ErrorKind::NothingToTake),
            "{refused:?}"
        );
        let taken: Vec<&Claim> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let count = |p: Priority| taken.iter().filter(|c| c.priority == p).count();
        let counts = [
            Priority::Critical,
            Priority::High,
            Priority::Medium,
            Priority::Low,
        ]
        .map(count);
        assert_eq!(
            counts,
            expected,
            "critical, high, medium and low items taken by {callers} callers \
             ({} refused while ready work waited?)",
            refused.len()
        );
        for work_type in taken
            .iter()
            .filter(|c| c.priority == Priority::Critical)
            .map(|c| &c.work_type)
        {
            let oldest = posted
                .iter()
                .find(|c| c.priority == Priority::Critical && c.work_type == *work_type)
                .unwrap();
            assert!(
                taken.iter().any(|c| c.work_item_id == oldest.work_item_id),
                "the oldest critical item of {work_type} is the one taken"
            );
        }
    };
    let posted = post_every_priority(h.store(), "shared_");
    check(&posted, 120, [5, 0, 25, 25]);
    let posted = post_every_priority(h.store(), "other_");
    check(&posted, 30, [5, 0, 25, 0]);
}

pub fn the_event_log_replays_to_the_store_and_its_cursor_resumes(h: &dyn Harness) {
    let store = h.store();
    let a = store.claim(&high("alice", "x")).unwrap();
    let first = store.events(0).unwrap();
    assert_eq!(first.events.len(), 1);
    let none = store.events(first.cursor).unwrap();
    assert!(none.events.is_empty());
    assert_eq!(none.cursor, first.cursor);

    on_threads(h, 4, |i, store| {
        for k in 0..5 {
            let c = store
                .claim(&ClaimRequest::new(format!("a{i}"), format!("t{k}")))
                .unwrap();
            complete(store, &c.work_item_id, &format!("a{i}"));
        }
    });
    complete(store, &a.work_item_id, "alice");
    let rest = store.events(first.cursor).unwrap();
    assert_eq!(rest.events.len(), 4 * 5 * 2 + 1);
    // Replaying the log gives every item's final status, and each item's
    // events come in the order they happened.
    let mut status: HashMap<String, Status> = HashMap::new();
    for e in first.events.iter().chain(&rest.events) {
        let id = e.work_item_id.clone().unwrap();
        assert_eq!(status.get(&id).copied(), e.from, "{e:?}");
        status.insert(id, e.to.unwrap());
    }
    for c in store.list(&Filter::default()).unwrap() {
        assert_eq!(status[&c.work_item_id], c.status);
    }
    let revisions: Vec<u64> = rest.events.iter().map(|e| e.revision.unwrap()).collect();
    assert!(revisions.iter().all(|r| *r > 0));
}

pub fn a_follower_reading_while_writers_commit_sees_every_event_once(h: &dyn Harness) {
    let follower = h.another();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = follower.events(cursor).unwrap();
                cursor = page.cursor;
                seen.extend(page.events);
                if finished {
                    return seen;
                }
            }
        })
    };
    on_threads(h, 6, |i, store| {
        for k in 0..15 {
            let agent = format!("a{i}");
            let c = store
                .claim(&ClaimRequest::new(agent.as_str(), format!("t{}", k % 3)))
                .unwrap();
            complete(store, &c.work_item_id, &agent);
        }
    });
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let followed = reader.join().unwrap();
    let all = events(h.store());
    assert_eq!(all.len(), 6 * 15 * 2);
    let key = |e: &Event| (e.work_item_id.clone(), format!("{:?}", e.event), e.revision);
    let mut followed_keys: Vec<_> = followed.iter().map(key).collect();
    let mut all_keys: Vec<_> = all.iter().map(key).collect();
    followed_keys.sort();
    all_keys.sort();
    assert_eq!(
        followed_keys, all_keys,
        "the follower missed or repeated events"
    );
}

pub fn text_a_store_cannot_hold_is_refused_and_changes_nothing(h: &dyn Harness) {
    let store = h.store();
    // A NUL is valid JSON text (`\u0000`), which PostgreSQL's jsonb refuses;
    // the directory stores it. Either way: a result or a clear refusal.
    match store.claim(&ClaimRequest::new("a", "t").description("nul \0 inside")) {
        Ok(c) => assert_eq!(
            store.get(&c.work_item_id).unwrap().description,
            "nul \0 inside"
        ),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::ValidationFailed, "{e}");
            assert!(store.list(&Filter::default()).unwrap().is_empty());
            assert!(events(store).is_empty());
        }
    }
}

pub fn every_change_writes_down_the_leases_that_lapsed_before_it(h: &dyn Harness) {
    let store = h.store();
    // Each mutation, with what it needs set up first (`target`: an item it
    // acts on, held by "tom" on a long lease).
    let act = |action: Action| {
        move |store: &dyn Store, target: &str| {
            store.act(target, &action, &Actor::new("tom")).map(|_| ())
        }
    };
    type Mutation = Box<dyn Fn(&dyn Store, &str) -> Result<(), coord_core::CoordError>>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "claim",
            Box::new(|s, _| s.claim(&ClaimRequest::new("bob", "build")).map(|_| ())),
        ),
        (
            "exclusive claim",
            Box::new(|s, _| s.claim(&high("bob", "ship")).map(|_| ())),
        ),
        (
            "post",
            Box::new(|s, _| s.post(&PostRequest::new("bob", "queue")).map(|_| ())),
        ),
        (
            "next",
            Box::new(|s, _| {
                s.post(&PostRequest::new("bob", "queue")).unwrap();
                s.next(&NextRequest::new("bob").lease(10 * MIN)).map(|_| ())
            }),
        ),
        (
            "heartbeat",
            Box::new(act(Action::Heartbeat { lease: None })),
        ),
        ("progress", Box::new(act(Action::Progress { percent: 5 }))),
        ("complete", Box::new(act(Action::Complete { result: None }))),
        (
            "fail",
            Box::new(act(Action::Fail {
                reason: None,
                requeue: false,
                retry_after: None,
            })),
        ),
        ("release", Box::new(act(Action::Release))),
        ("reap", Box::new(|s, _| s.reap("bob").map(|_| ()))),
        (
            "cleanup",
            Box::new(|s, _| s.cleanup("bob", Duration::ZERO).map(|_| ())),
        ),
    ];
    for (name, mutation) in mutations {
        let target = store
            .post(&PostRequest::new("boss", "held"))
            .and_then(|_| {
                store.next(
                    &NextRequest::new("tom")
                        .work_types(["held"])
                        .lease(100 * MIN),
                )
            })
            .unwrap();
        let lapsing = store
            .claim(&ClaimRequest::new("alice", "build").lease(MIN))
            .unwrap();
        h.clock().advance(MIN * 2);
        let logged = events(store).len();
        mutation(store, &target.work_item_id).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            store.get(&lapsing.work_item_id).map(|c| c.status).ok(),
            Some(Status::Expired),
            "{name} wrote the lapsed lease down"
        );
        let after: Vec<(EventKind, String)> = events(store)[logged..]
            .iter()
            .map(|e| (e.event, e.work_item_id.clone().unwrap_or_default()))
            .collect();
        // The expiries come first (earlier items' leases may lapse too), then
        // the mutation's own events.
        let expiries = after.iter().take_while(|(e, _)| *e == EventKind::Expired);
        assert!(
            expiries.clone().any(|(_, id)| *id == lapsing.work_item_id),
            "{name}: the expiry is logged before the change: {after:?}"
        );
        assert!(
            after[expiries.count()..]
                .iter()
                .all(|(e, _)| *e != EventKind::Expired),
            "{name}: {after:?}"
        );
        if name == "exclusive claim" || name == "claim" {
            let fences: Vec<Option<u64>> =
                events(store)[logged..].iter().map(|e| e.fence).collect();
            assert!(
                fences.last() > fences.first(),
                "{name}: a later fence: {fences:?}"
            );
        }
    }
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Claim {
        agent: u8,
        work_type: u8,
        priority: Priority,
        lease_s: u64,
    },
    Post {
        work_type: u8,
        priority: Priority,
        after_prev: bool,
    },
    Next {
        agent: u8,
        lease_s: u64,
    },
    Heartbeat {
        item: usize,
    },
    Progress {
        item: usize,
        percent: i64,
    },
    Complete {
        item: usize,
        force: bool,
    },
    Fail {
        item: usize,
        requeue: bool,
    },
    Release {
        item: usize,
    },
    Wait {
        s: u64,
    },
    Cleanup {
        older_than_s: u64,
    },
    Reap,
    Cancel {
        item: usize,
        force: bool,
    },
    Retry {
        item: usize,
        reset_attempts: bool,
    },
    /// Cancels every pending item of a work type.
    CancelType {
        work_type: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    use proptest::prelude::*;
    let priority = prop::sample::select(Priority::ALL.to_vec());
    prop_oneof![
        3 => (0u8..3, 0u8..2, priority.clone(), 1u64..120).prop_map(|(agent, work_type, priority, lease_s)| Op::Claim { agent, work_type, priority, lease_s }),
        3 => (0u8..2, priority, any::<bool>()).prop_map(|(work_type, priority, after_prev)| Op::Post { work_type, priority, after_prev }),
        3 => (0u8..3, 1u64..120).prop_map(|(agent, lease_s)| Op::Next { agent, lease_s }),
        1 => any::<usize>().prop_map(|item| Op::Heartbeat { item }),
        1 => (any::<usize>(), -5i64..110).prop_map(|(item, percent)| Op::Progress { item, percent }),
        2 => (any::<usize>(), prop::bool::weighted(0.1)).prop_map(|(item, force)| Op::Complete { item, force }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(item, requeue)| Op::Fail { item, requeue }),
        1 => any::<usize>().prop_map(|item| Op::Release { item }),
        2 => (1u64..90).prop_map(|s| Op::Wait { s }),
        1 => (0u64..200).prop_map(|older_than_s| Op::Cleanup { older_than_s }),
        1 => Just(Op::Reap),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(item, force)| Op::Cancel { item, force }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(item, reset_attempts)| Op::Retry { item, reset_attempts }),
        1 => (0u8..2).prop_map(|work_type| Op::CancelType { work_type }),
    ]
}

/// Checks what must hold after every operation.
fn check_invariants(h: &dyn Harness, created: &HashSet<String>) {
    let now = h.store().now();
    let claims: Vec<Claim> = h.store().list(&Filter::default()).unwrap();
    let archived = h.archived_ids();
    let in_claims: HashSet<String> = claims.iter().map(|c| c.work_item_id.clone()).collect();
    assert_eq!(in_claims.len(), claims.len(), "no id twice among the items");
    let in_archive: HashSet<String> = archived.iter().cloned().collect();
    assert_eq!(
        in_archive.len(),
        archived.len(),
        "no id twice in the archive"
    );
    assert!(
        in_claims.is_disjoint(&in_archive),
        "no item both live and archived"
    );
    let everywhere: HashSet<String> = in_claims.union(&in_archive).cloned().collect();
    assert_eq!(&everywhere, created, "every item in exactly one place");

    let mut exclusive: HashMap<&str, usize> = HashMap::new();
    let mut holders: HashMap<u64, &str> = HashMap::new();
    for c in &claims {
        if c.head().is_live(now) && c.priority >= Priority::High {
            *exclusive.entry(&c.work_type).or_default() += 1;
        }
        if c.status == Status::InProgress {
            let fence = c.fence.expect("an in-progress item has a fence");
            assert!(
                holders.insert(fence, &c.work_item_id).is_none(),
                "two items at fence {fence}"
            );
            assert!(c.agent_id.is_some(), "an in-progress item has an owner");
        }
        if c.status == Status::Pending {
            assert!(c.agent_id.is_none(), "a pending item has no owner");
        }
    }
    assert!(
        exclusive.values().all(|n| *n <= 1),
        "at most one live exclusive claim per work type: {exclusive:?}"
    );
}

/// A property test: random sequences of operations (claims, posts, takes,
/// every action, waits, cleanups, reaps, cancels and retries) on a fresh store from `make` keep
/// every invariant after every step, and the log's fences grow. Failing,
/// it panics with the smallest sequence proptest found.
pub fn random_operations_keep_every_invariant<H: Harness>(make: impl Fn() -> H) {
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config {
        cases: 32,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(op(), 1..40);
    runner
        .run(&strategy, |ops| {
            let h = make();
            run_ops(&h, &ops);
            Ok(())
        })
        .unwrap();
}

fn run_ops(h: &dyn Harness, ops: &[Op]) {
    let store = h.store();
    let mut created: HashSet<String> = HashSet::new();
    let mut ids: Vec<String> = Vec::new();
    let mut last_fence = 0u64;
    let agent = |n: u8| format!("agent_{n}");
    for op in ops.iter().cloned() {
        let pick = |item: usize| {
            if ids.is_empty() {
                "work_missing".to_owned()
            } else {
                ids[item % ids.len()].clone()
            }
        };
        // Acts as whoever holds the item, so most actions can succeed.
        let owner = |id: &str| {
            store
                .get(id)
                .ok()
                .and_then(|c| c.agent_id)
                .unwrap_or_else(|| "agent_0".into())
        };
        let act = |item: usize, action: Action, force: bool| {
            let id = pick(item);
            let who = if force {
                "intruder".to_owned()
            } else {
                owner(&id)
            };
            store
                .act(&id, &action, &Actor::new(&who).force(force))
                .map(Some)
        };
        let result: Result<Option<Claim>, coord_core::CoordError> = match op {
            Op::Claim {
                agent: a,
                work_type,
                priority,
                lease_s,
            } => store
                .claim(
                    &ClaimRequest::new(agent(a), format!("type_{work_type}"))
                        .priority(priority)
                        .lease(Duration::from_secs(lease_s)),
                )
                .map(Some),
            Op::Post {
                work_type,
                priority,
                after_prev,
            } => {
                let mut req =
                    PostRequest::new("poster", format!("type_{work_type}")).priority(priority);
                if after_prev && let Some(prev) = ids.last() {
                    req = req.after([prev.clone()]);
                }
                store.post(&req).map(Some)
            }
            Op::Next { agent: a, lease_s } => store
                .next(&NextRequest::new(agent(a)).lease(Duration::from_secs(lease_s)))
                .map(Some),
            Op::Heartbeat { item } => act(item, Action::Heartbeat { lease: None }, false),
            Op::Progress { item, percent } => act(item, Action::Progress { percent }, false),
            Op::Complete { item, force } => act(item, Action::Complete { result: None }, force),
            Op::Fail { item, requeue } => act(
                item,
                Action::Fail {
                    reason: None,
                    requeue,
                    retry_after: None,
                },
                false,
            ),
            Op::Release { item } => act(item, Action::Release, false),
            Op::Wait { s } => {
                h.clock().advance(Duration::from_secs(s));
                Ok(None)
            }
            Op::Cleanup { older_than_s } => store
                .cleanup("janitor", Duration::from_secs(older_than_s))
                .map(|_| None),
            Op::Reap => store.reap("janitor").map(|_| None),
            Op::Cancel { item, force } => store.operate(&cancel(&pick(item), force)).map(|_| None),
            Op::Retry {
                item,
                reset_attempts,
            } => store
                .operate(&retry(&pick(item), reset_attempts))
                .map(|_| None),
            Op::CancelType { work_type } => store
                .operate(&OperateRequest {
                    agent_id: "ops".into(),
                    operation: Operation::Cancel {
                        reason: None,
                        force: false,
                    },
                    target: Target::Matching(Match {
                        work_type: Some(format!("type_{work_type}")),
                        ..Match::default()
                    }),
                })
                .map(|_| None),
        };
        match result {
            Ok(Some(c)) => {
                if created.insert(c.work_item_id.clone()) {
                    ids.push(c.work_item_id.clone());
                }
                if matches!(op, Op::Claim { .. } | Op::Next { .. }) {
                    let fence = c.fence.unwrap();
                    assert!(fence > last_fence, "fence {fence} after {last_fence}");
                    last_fence = fence;
                }
            }
            Ok(None) => {}
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Conflict
                        | ErrorKind::NotFound
                        | ErrorKind::ValidationFailed
                        | ErrorKind::LeaseExpired
                        | ErrorKind::NotOwner
                        | ErrorKind::NothingToTake
                ),
                "unexpected error kind: {e}"
            ),
        }
        check_invariants(h, &created);
    }
    // The event log agrees: fences of acquisitions strictly increase.
    let fences: Vec<u64> = events(store)
        .iter()
        .filter(|e| e.event == EventKind::Claimed)
        .filter_map(|e| e.fence)
        .collect();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

pub fn cancel_ends_pending_work_and_in_progress_work_only_by_force(h: &dyn Harness) {
    let store = h.store();
    let pending = store.post(&PostRequest::new("boss", "build")).unwrap();
    let changed = store
        .operate(&cancel(&pending.work_item_id, false))
        .unwrap();
    assert_eq!(changed.len(), 1);
    let cancelled = store.get(&pending.work_item_id).unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    assert_eq!(changed[0], cancelled);
    assert!(cancelled.cancelled_at.is_some());
    assert_eq!(cancelled.reason.as_deref(), Some("cancelled by ops"));
    let last = events(store).pop().unwrap();
    assert_eq!(
        (last.event, last.from, last.to, last.agent.as_deref()),
        (
            EventKind::Cancelled,
            Some(Status::Pending),
            Some(Status::Cancelled),
            Some("ops")
        )
    );
    // A cancelled item is not taken, and is not cancelled twice.
    assert_eq!(
        store.next(&NextRequest::new("w")).unwrap_err().kind(),
        ErrorKind::NothingToTake
    );
    let err = store
        .operate(&cancel(&pending.work_item_id, false))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
    assert!(err.to_string().contains("already cancelled"), "{err}");
    let err = store.operate(&cancel("work_nope", false)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // In progress: refused without --force, and nothing changes.
    let held = store.claim(&high("alice", "deploy")).unwrap();
    let before = events(store).len();
    let err = store
        .operate(&cancel(&held.work_item_id, false))
        .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(events(store).len(), before);
    assert_eq!(
        store.get(&held.work_item_id).unwrap().status,
        Status::InProgress
    );
    store.operate(&cancel(&held.work_item_id, true)).unwrap();
    // The owner's tenure is over: its next act is refused as a lost lease,
    // and the exclusive work type is free again.
    let err = store
        .act(
            &held.work_item_id,
            &Action::Complete { result: None },
            &Actor::new("alice"),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseExpired);
    store.claim(&high("bob", "deploy")).unwrap();
    assert!(
        events(store)
            .iter()
            .any(|e| e.event == EventKind::Cancelled && e.forced)
    );
}

pub fn retry_sends_ended_queue_items_back_with_their_history(h: &dyn Harness) {
    let store = h.store();
    let item = store
        .post(&PostRequest::new("boss", "flaky").max_attempts(1))
        .unwrap();
    let id = item.work_item_id.clone();
    // Not ended yet: nothing to retry.
    let err = store.operate(&retry(&id, false)).unwrap_err();
    assert!(err.to_string().contains("only a failed"), "{err}");
    store.next(&NextRequest::new("w").lease(MIN)).unwrap();
    store.act(&id, &fail_for_good(), &Actor::new("w")).unwrap();
    assert_eq!(store.get(&id).unwrap().status, Status::Failed);

    let back = store.operate(&retry(&id, false)).unwrap().remove(0);
    assert_eq!(back.status, Status::Pending);
    assert_eq!(back.failed_at, None);
    assert_eq!((back.attempt, back.max_attempts), (Some(2), Some(2)));
    let taken = store.next(&NextRequest::new("w2").lease(MIN)).unwrap();
    assert_eq!(taken.work_item_id, id);
    assert!(taken.fence > item.fence, "a new tenure, a new fence");
    store.act(&id, &fail_for_good(), &Actor::new("w2")).unwrap();
    let back = store.operate(&retry(&id, true)).unwrap().remove(0);
    assert_eq!(back.attempt, Some(1), "--reset-attempts");
    // Cancelled items come back too; the log keeps the whole story.
    store.operate(&cancel(&id, false)).unwrap();
    store.operate(&retry(&id, false)).unwrap();
    let story: Vec<EventKind> = events(store)
        .iter()
        .filter(|e| e.work_item_id.as_deref() == Some(id.as_str()))
        .map(|e| e.event)
        .collect();
    use EventKind::*;
    assert_eq!(
        story,
        [
            Posted, Claimed, Failed, Retried, Claimed, Failed, Retried, Cancelled, Retried
        ]
    );
    // An item claimed on the spot is not the queue's to retry.
    let spot = store.claim(&ClaimRequest::new("alice", "fix")).unwrap();
    store
        .act(&spot.work_item_id, &fail_for_good(), &Actor::new("alice"))
        .unwrap();
    let err = store
        .operate(&retry(&spot.work_item_id, false))
        .unwrap_err();
    assert!(err.to_string().contains("claimed on the spot"), "{err}");
}

pub fn bulk_operations_act_on_every_match_they_can_and_nothing_else(h: &dyn Harness) {
    let store = h.store();
    let builds: Vec<Claim> = (0..3)
        .map(|_| store.post(&PostRequest::new("boss", "build")).unwrap())
        .collect();
    let other = store.post(&PostRequest::new("boss", "tests")).unwrap();
    let taken = store
        .next(&NextRequest::new("w").work_types(["build"]).lease(MIN))
        .unwrap();
    let bulk = |operation, m: Match| OperateRequest {
        agent_id: "ops".into(),
        operation,
        target: Target::Matching(m),
    };
    let cancel_builds = bulk(
        Operation::Cancel {
            reason: Some("release cancelled".into()),
            force: false,
        },
        Match {
            work_type: Some("build".into()),
            ..Match::default()
        },
    );
    let changed = store.operate(&cancel_builds).unwrap();
    let mut ids: Vec<&str> = changed.iter().map(|c| c.work_item_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = builds
        .iter()
        .map(|c| c.work_item_id.as_str())
        .filter(|id| *id != taken.work_item_id)
        .collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "the pending builds, not the one in progress");
    assert!(
        changed
            .iter()
            .all(|c| c.reason.as_deref() == Some("release cancelled"))
    );
    // One change: the events share a revision.
    let revisions: HashSet<Option<u64>> = events(store)
        .iter()
        .filter(|e| e.event == EventKind::Cancelled)
        .map(|e| e.revision)
        .collect();
    assert_eq!(revisions.len(), 1);
    assert_eq!(
        store.get(&other.work_item_id).unwrap().status,
        Status::Pending
    );
    assert_eq!(
        store.get(&taken.work_item_id).unwrap().status,
        Status::InProgress
    );
    // Nothing matches now: an empty answer, not an error.
    assert!(store.operate(&cancel_builds).unwrap().is_empty());
    // Retry by status brings the cancelled ones back.
    let retried = store
        .operate(&bulk(
            Operation::Retry {
                reset_attempts: false,
            },
            Match {
                status: Some(Status::Cancelled),
                ..Match::default()
            },
        ))
        .unwrap();
    assert_eq!(retried.len(), 2);
    assert!(retried.iter().all(|c| c.status == Status::Pending));
    // By owner, with force.
    let forced = store
        .operate(&bulk(
            Operation::Cancel {
                reason: None,
                force: true,
            },
            Match {
                owner: Some("w".into()),
                ..Match::default()
            },
        ))
        .unwrap();
    assert_eq!(forced.len(), 1);
    assert_eq!(forced[0].work_item_id, taken.work_item_id);
    // A filter-less bulk operation is refused.
    let err = store
        .operate(&bulk(
            Operation::Retry {
                reset_attempts: false,
            },
            Match::default(),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
}

pub fn a_dependency_that_ends_badly_fails_its_dependents_unless_they_wait(h: &dyn Harness) {
    let store = h.store();
    let a = store.post(&PostRequest::new("boss", "a")).unwrap();
    let after = |id: &Claim, work_type: &str, on: Option<OnDependencyFailure>| {
        store
            .post(
                &PostRequest::new("boss", work_type)
                    .after([id.work_item_id.clone()])
                    .on_dependency_failure(on),
            )
            .unwrap()
    };
    let b = after(&a, "b", None);
    let c = after(&b, "c", Some(OnDependencyFailure::Fail));
    let d = after(&a, "d", Some(OnDependencyFailure::Wait));
    assert_eq!(
        store.get(&d.work_item_id).unwrap().on_dependency_failure,
        Some(OnDependencyFailure::Wait)
    );
    store
        .next(&NextRequest::new("w").work_types(["a"]).lease(MIN))
        .unwrap();
    store
        .act(&a.work_item_id, &fail_for_good(), &Actor::new("w"))
        .unwrap();
    let b_now = store.get(&b.work_item_id).unwrap();
    let c_now = store.get(&c.work_item_id).unwrap();
    assert_eq!(
        (b_now.status, c_now.status),
        (Status::Failed, Status::Failed)
    );
    assert_eq!(
        b_now.reason.as_deref(),
        Some(format!("dependency {} failed", a.work_item_id).as_str())
    );
    assert_eq!(
        c_now.reason.as_deref(),
        Some(format!("dependency {} failed", b.work_item_id).as_str())
    );
    assert_eq!(store.get(&d.work_item_id).unwrap().status, Status::Pending);
    let cascaded: Vec<Event> = events(store)
        .into_iter()
        .filter(|e| e.event == EventKind::DependencyFailed)
        .collect();
    assert_eq!(cascaded.len(), 2);
    assert!(cascaded.iter().all(|e| e.agent.as_deref() == Some("w")));
    // Posted after the dependency failed: failed at once, or waiting.
    let late = after(&a, "late", None);
    assert_eq!(late.status, Status::Failed);
    assert_eq!(store.get(&late.work_item_id).unwrap(), late);
    let patient = after(&a, "patient", Some(OnDependencyFailure::Wait));
    assert_eq!(patient.status, Status::Pending);
    store
        .operate(&cancel(&patient.work_item_id, false))
        .unwrap();
    // Retrying the dependency lets the one that waited go on.
    store.operate(&retry(&a.work_item_id, false)).unwrap();
    let again = store.next(&NextRequest::new("w").lease(MIN)).unwrap();
    assert_eq!(again.work_item_id, a.work_item_id);
    complete(store, &a.work_item_id, "w");
    assert_eq!(
        store
            .next(&NextRequest::new("w").lease(MIN))
            .unwrap()
            .work_item_id,
        d.work_item_id
    );
    // A cancelled dependency fails its dependents the same way.
    let e = store.post(&PostRequest::new("boss", "e")).unwrap();
    let f = after(&e, "f", None);
    store.operate(&cancel(&e.work_item_id, false)).unwrap();
    let f_now = store.get(&f.work_item_id).unwrap();
    assert_eq!(f_now.status, Status::Failed);
    assert!(f_now.reason.unwrap().ends_with("cancelled"));
}

pub fn a_lapsed_dependency_fails_its_dependents_when_written_down(h: &dyn Harness) {
    let store = h.store();
    let spot = store.claim(&high("alice", "migrate")).unwrap();
    let next = store
        .post(&PostRequest::new("boss", "deploy").after([spot.work_item_id.clone()]))
        .unwrap();
    h.clock().advance(MIN + Duration::from_secs(1));
    let reaped = store.reap("janitor").unwrap();
    assert_eq!(reaped.len(), 1);
    let now = store.get(&next.work_item_id).unwrap();
    assert_eq!(now.status, Status::Failed);
    assert!(now.reason.unwrap().ends_with("expired"));
}

pub fn a_paused_work_type_is_not_handed_out_until_resumed(h: &dyn Harness) {
    let store = h.store();
    let build = store.post(&PostRequest::new("boss", "build")).unwrap();
    let later = store.post(&PostRequest::new("boss", "build")).unwrap();
    let tests = store
        .post(&PostRequest::new("boss", "tests").priority(Priority::Low))
        .unwrap();
    assert!(store.paused().unwrap().is_empty());
    let paused = store.pause("ops", "build", true).unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(
        (paused[0].work_type.as_str(), paused[0].paused_by.as_str()),
        ("build", "ops")
    );
    // Pausing again changes nothing, not even who paused it.
    assert_eq!(store.pause("other", "build", true).unwrap(), paused);
    assert_eq!(store.paused().unwrap(), paused);
    // `next` passes the paused type over (the lower priority is taken), by
    // one and by many, and by name too.
    let taken = store.next(&NextRequest::new("w").lease(MIN)).unwrap();
    assert_eq!(taken.work_item_id, tests.work_item_id);
    for request in [
        NextRequest::new("w").lease(MIN),
        NextRequest::new("w").work_types(["build"]).lease(MIN),
    ] {
        assert_eq!(
            store.next(&request).unwrap_err().kind(),
            ErrorKind::NothingToTake
        );
        assert_eq!(
            store.next_many(&request, 4).unwrap_err().kind(),
            ErrorKind::NothingToTake
        );
    }
    // Posting and claiming on the spot go on.
    store.post(&PostRequest::new("boss", "build")).unwrap();
    store.claim(&ClaimRequest::new("alice", "build")).unwrap();
    assert!(store.pause("ops", "build", false).unwrap().is_empty());
    assert!(store.pause("ops", "build", false).unwrap().is_empty());
    let taken = store
        .next_many(&NextRequest::new("w").lease(MIN), 2)
        .unwrap();
    let ids: Vec<&str> = taken.iter().map(|c| c.work_item_id.as_str()).collect();
    assert_eq!(
        ids,
        [build.work_item_id.as_str(), later.work_item_id.as_str()]
    );
    let err = store.pause("ops", "", true).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValidationFailed);
}
