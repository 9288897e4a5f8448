//! The conformance suite: what every backend of [`PresenceStore`] must do, as tests that take any backend.
//!
//! A backend crate implements [`Backend`] for a harness that opens its storage, and instantiates the suite
//! with [`conformance_suite!`](crate::conformance_suite), which expands to one `#[test]` per promise:
//!
//! ```text
//! presence_store::conformance_suite!(my_backend_tests, || MyHarness::new());          // one process
//! presence_store::conformance_suite!(my_backend_tests, || MyHarness::new(), shared);  // several
//! ```
//!
//! A backend is done when the suite passes unchanged. A backend that serves several processes is
//! instantiated with `shared`, which adds the tests that need two handles on one storage at once (what
//! one process writes, another sees); its [`Backend::shared`] answers true, and the other tests then use
//! the second handle too.
//!
//! Every test panics with a message naming the broken promise.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use presence_core::{Command, Timestamp, UserFacts};

use crate::{
    DirectoryUser, Effects, NewNotification, PresenceStore, QueueId, StoredSubscription, Updated, UserKey, UserRecord,
};

/// A harness around one backend's storage.
pub trait Backend: Send + Sync + 'static {
    /// The store type.
    type Store: PresenceStore;

    /// Opens the harness's storage: the same storage every time, so that what a dropped handle wrote is
    /// read by the next.
    fn open(&self) -> Self::Store;

    /// True when several handles may be open on the storage at once (the backend serves several
    /// processes); false for a backend owned by one process.
    fn shared(&self) -> bool;
}

/// Expands to one `#[test]` per conformance test, in a module `$module`, each on a fresh harness from
/// `$make` (an expression giving a [`Backend`]); with `shared`, also the tests of two handles at once.
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $make:expr, shared) => {
        $crate::conformance_suite!($module, $make);
        mod shared {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@tests $make;
                a_second_handle_sees_what_the_first_wrote,
                a_second_handle_never_claims_what_the_first_holds,
                each_handle_builds_on_the_other_handles_writes,
            );
        }
    };
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_suite!(@tests $make;
                absent_users_read_as_nothing,
                updates_are_atomic_per_user_under_concurrency,
                only_the_last_run_of_a_closure_is_written,
                a_declined_update_writes_nothing,
                versions_increase_with_every_write,
                many_user_updates_answer_per_user,
                tenants_are_separate,
                due_timers_are_claimed_for_a_lease,
                concurrent_claims_never_share_a_user,
                a_write_ends_a_claim,
                queues_keep_order_and_acknowledge_per_queue,
                notifications_reach_their_queues_once,
                one_holder_at_a_time_delivers_a_queue,
                subscriptions_count_against_the_limit_and_change_atomically,
                removing_a_subscription_drops_its_queue_and_queues_its_farewell,
                subscription_changes_are_logged,
                everything_survives_reopening,
                optional_reads_agree_with_get_many,
                added_users_are_found_by_id_and_name_and_listed_in_order,
            );
        }
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name(&$make);
            }
        )+
    };
}

fn key(tenant: &str, user: &str) -> UserKey {
    UserKey::new(tenant, user)
}

/// Applies a one-hour Busy/InACall session of `app` at `at`: a real command, so stored facts are real.
fn busy(facts: &mut UserFacts, at: i64) {
    Command::set_presence("app", Some("app"), Some("Busy"), Some("InACall"), Some("PT1H"))
        .expect("a valid command")
        .apply(facts, Timestamp(at))
        .expect("applies");
}

/// A write that bumps the sequence stamp, with a timer at `due_at`.
fn bump(due_at: Option<i64>) -> impl FnMut(&mut UserFacts, Option<i64>) -> Option<Effects> {
    move |facts, _| {
        facts.sequence_base += 1;
        Some(Effects { due_at, ..Effects::default() })
    }
}

fn note(queue: QueueId, item: &str) -> NewNotification {
    NewNotification {
        queue,
        url: "https://example.org/hook".into(),
        created_at: 5,
        item: item.into(),
        resource_data: None,
    }
}

fn items<S: PresenceStore>(store: &S, queue: &QueueId) -> Vec<String> {
    store.queue_head(queue, 1000).expect("queue_head").into_iter().map(|row| row.item).collect()
}

fn subscription(id: &str, tenant: &str, app: &str, body: &str) -> StoredSubscription {
    StoredSubscription {
        id: id.into(),
        tenant_id: tenant.into(),
        application_id: app.into(),
        version: 0,
        body: body.into(),
    }
}

fn written<S: PresenceStore>(store: &S, key: &UserKey) -> UserRecord {
    store.get(key).expect("get").expect("the record was written")
}

/// A user never written reads as `None`, alone and among others, in the order asked.
pub fn absent_users_read_as_nothing<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    assert_eq!(store.get(&key("t", "nobody")).expect("get"), None);
    store.update(&key("t", "u1"), &mut bump(None)).expect("update");
    let many = store.get_many(&[key("t", "u2"), key("t", "u1"), key("t", "u3")]).expect("get_many");
    assert_eq!(many.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true, false], "get_many keeps order");
    assert_eq!(store.get_many(&[]).expect("get_many of nothing"), Vec::<Option<UserRecord>>::new());
}

/// Runs `work` `rounds` times on each of four threads, the odd ones through the second handle when there
/// is one (two processes), and waits for them all.
fn on_four_threads<S: PresenceStore>(
    first: &Arc<S>,
    second: &Option<Arc<S>>,
    rounds: usize,
    work: impl Fn(&S) + Send + Sync + 'static,
) {
    let work = Arc::new(work);
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let store = match (second, thread % 2) {
                (Some(second), 1) => second.clone(),
                _ => first.clone(),
            };
            let work = work.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    work(&store);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a worker thread panicked");
    }
}

/// Four threads (and, for a shared backend, two handles) increment one user 25 times each: no increment is
/// lost, because each update reads what the previous one wrote.
pub fn updates_are_atomic_per_user_under_concurrency<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let first = Arc::new(backend.open());
    let second = backend.shared().then(|| Arc::new(backend.open()));
    let user = key("t", "u");
    let target = user.clone();
    on_four_threads(&first, &second, 25, move |store| {
        store.update(&target, &mut bump(None)).expect("update");
    });
    assert_eq!(written(&*first, &user).facts.sequence_base, 100, "an update was lost");
}

/// Closures may run more than once: what is written is the last run's result, and the notifications of
/// earlier runs are not queued. Checked under contention, where a retrying backend does re-run them.
pub fn only_the_last_run_of_a_closure_is_written<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let first = Arc::new(backend.open());
    let second = backend.shared().then(|| Arc::new(backend.open()));
    let user = key("t", "u");
    let queue = QueueId::changes("s1");
    let runs = Arc::new(Mutex::new(0u64));
    let (target, changes, counted) = (user.clone(), queue.clone(), runs.clone());
    on_four_threads(&first, &second, 10, move |store| {
        let mut apply = |facts: &mut UserFacts, _: Option<i64>| {
            *counted.lock().expect("runs") += 1;
            facts.sequence_base += 1;
            let item = format!("after {}", facts.sequence_base);
            Some(Effects { notifications: vec![note(changes.clone(), &item)], ..Effects::default() })
        };
        store.update(&target, &mut apply).expect("update");
    });
    first.relay(10_000).expect("relay");
    let queued = items(&*first, &queue);
    let expected: Vec<String> = (1..=40).map(|n| format!("after {n}")).collect();
    assert_eq!(queued, expected, "exactly one notification per committed update, from its last run, in order");
    assert!(*runs.lock().expect("runs") >= 40);
}

/// A closure that returns `None` writes nothing, whatever it did to the facts.
pub fn a_declined_update_writes_nothing<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    let user = key("t", "u1");
    let declined = store
        .update(&user, &mut |facts, _| {
            facts.sequence_base = 99;
            None
        })
        .expect("update");
    assert_eq!(declined, Updated::Declined);
    assert_eq!(store.get(&user).expect("get"), None, "a declined update created a record");
    store.update(&user, &mut bump(Some(7))).expect("update");
    let before = written(&store, &user);
    store
        .update(&user, &mut |facts, _| {
            facts.sequence_base = 99;
            None
        })
        .expect("update");
    assert_eq!(written(&store, &user), before, "a declined update changed the record");
}

/// Every write, timer-only ones included, increases the record's version; the facts keep their sequence
/// stamp.
pub fn versions_increase_with_every_write<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    let user = key("t", "u1");
    let mut versions = Vec::new();
    for step in 0..3 {
        let updated = store
            .update(&user, &mut |facts, _| {
                busy(facts, 1_000 + step);
                Some(Effects { due_at: Some(10_000), ..Effects::default() })
            })
            .expect("update");
        let Updated::Written { version } = updated else { panic!("the update was not written") };
        versions.push(version);
    }
    let Updated::Written { version } = store
        .update(&user, &mut |_, _| Some(Effects { due_at: Some(20_000), timer_only: true, ..Effects::default() }))
        .expect("timer-only update")
    else {
        panic!("the timer-only update was not written")
    };
    versions.push(version);
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]), "versions do not increase: {versions:?}");
    assert!(versions[0] >= 1, "a first write has version 1 or more");
    let record = written(&store, &user);
    assert_eq!(record.version, version, "get reads the version the last write answered");
    assert_eq!(record.due_at, Some(20_000), "the timer-only write moved the timer");
    assert_eq!(record.facts.sessions.len(), 1, "the timer-only write kept the facts");
    assert_eq!(record.facts.sequence_at, Timestamp(1_002), "the sequence stamp is part of the record");
}

/// A many-user update answers per user, in order, and each user's closure sees that user's record.
pub fn many_user_updates_answer_per_user<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    store.update(&key("t", "u1"), &mut bump(Some(300))).expect("update");
    let keys = [key("t", "u1"), key("t", "u2"), key("t", "u3")];
    let mut seen = Vec::new();
    let results = store.update_many(&keys, &mut |key, facts, due| {
        seen.push((key.user_id.clone(), facts.sequence_base, due));
        (key.user_id != "u2").then(|| {
            facts.sequence_base += 10;
            Effects::default()
        })
    });
    assert_eq!(results.len(), 3, "one result per user");
    assert!(matches!(results[0], Ok(Updated::Written { .. })), "{results:?}");
    assert_eq!(results[1], Ok(Updated::Declined));
    assert!(matches!(results[2], Ok(Updated::Written { .. })), "{results:?}");
    seen.sort();
    assert_eq!(seen, [("u1".into(), 1, Some(300)), ("u2".into(), 0, None), ("u3".into(), 0, None)]);
    assert_eq!(written(&store, &keys[0]).facts.sequence_base, 11);
    assert_eq!(store.get(&keys[1]).expect("get"), None);
    assert_eq!(written(&store, &keys[2]).facts.sequence_base, 10);
}

/// The same user id in two tenants is two records.
pub fn tenants_are_separate<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    store
        .update(&key("t1", "u1"), &mut |facts, _| {
            busy(facts, 1_000);
            Some(Effects::default())
        })
        .expect("update");
    assert_eq!(store.get(&key("t2", "u1")).expect("get"), None, "another tenant's user of the same id");
    assert_eq!(written(&store, &key("t1", "u1")).facts.sessions.len(), 1);
}

/// Due users are claimed, the earliest first and up to the limit; a claimed user is not claimed again
/// until its lease ends, and then it is.
pub fn due_timers_are_claimed_for_a_lease<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    for (user, due) in [("u1", Some(300)), ("u2", Some(100)), ("u3", None), ("u4", Some(5_000))] {
        store.update(&key("t", user), &mut bump(due)).expect("update");
    }
    assert_eq!(store.next_due().expect("next_due"), Some(100));
    assert_eq!(store.claim_due(99, 1_000, 10).expect("claim"), Vec::<UserKey>::new(), "nothing due yet");
    assert_eq!(store.claim_due(300, 1_000, 1).expect("claim"), [key("t", "u2")], "the earliest first, up to the limit");
    assert_eq!(
        store.claim_due(300, 1_000, 10).expect("claim"),
        [key("t", "u1")],
        "a claimed user is not claimed again"
    );
    assert_eq!(store.claim_due(999, 2_000, 10).expect("claim"), Vec::<UserKey>::new(), "leases hold until they end");
    assert_eq!(store.next_due().expect("next_due"), Some(1_000), "a claimed timer is due when its lease ends");
    let mut again = store.claim_due(1_000, 2_000, 10).expect("claim");
    again.sort();
    assert_eq!(again, [key("t", "u1"), key("t", "u2")], "an expired claim is claimed again");
    let record = written(&store, &key("t", "u1"));
    assert_eq!(record.due_at, Some(300), "a claim does not change the record's due_at");
}

/// Four threads claim the same due users at once: each user goes to exactly one of them.
pub fn concurrent_claims_never_share_a_user<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = Arc::new(backend.open());
    let keys: Vec<UserKey> = (0..200).map(|user| key("t", &format!("u{user:03}"))).collect();
    for chunk in keys.chunks(50) {
        let results = store.update_many(chunk, &mut |key, facts, _| {
            facts.sequence_base = 1;
            let due = 100 + key.user_id[1..].parse::<i64>().expect("a number");
            Some(Effects { due_at: Some(due), ..Effects::default() })
        });
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }
    let claimed: Vec<Vec<UserKey>> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_due(1_000, 60_000, 7).expect("claim");
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|thread| thread.join().expect("a claimer panicked"))
        .collect();
    let all: Vec<&UserKey> = claimed.iter().flatten().collect();
    let distinct: HashSet<&UserKey> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a user was claimed twice");
    assert_eq!(distinct.len(), keys.len(), "a due user was never claimed");
}

/// The write that catches a claimed user up sets its next timer, which ends the claim.
pub fn a_write_ends_a_claim<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    let user = key("t", "u1");
    store.update(&user, &mut bump(Some(100))).expect("update");
    assert_eq!(store.claim_due(100, 50_000, 10).expect("claim"), std::slice::from_ref(&user));
    let mut seen_due = None;
    store
        .update(&user, &mut |_, due| {
            seen_due = due;
            Some(Effects { due_at: Some(200), timer_only: true, ..Effects::default() })
        })
        .expect("catch-up");
    assert_eq!(seen_due, Some(100), "the catch-up sees the record's due_at, not the lease");
    assert_eq!(store.next_due().expect("next_due"), Some(200), "the write replaced the lease");
    assert_eq!(store.claim_due(200, 50_000, 10).expect("claim"), std::slice::from_ref(&user));
    store.update(&user, &mut |_, _| Some(Effects { timer_only: true, ..Effects::default() })).expect("catch-up");
    assert_eq!(store.next_due().expect("next_due"), None, "no timer after a write without one");
    assert_eq!(store.claim_due(i64::MAX, i64::MAX, 10).expect("claim"), Vec::<UserKey>::new());
    store.update(&user, &mut bump(Some(300))).expect("update");
    assert_eq!(store.claim_due(300, 50_000, 10).expect("claim"), std::slice::from_ref(&user));
    store.update(&user, &mut bump(Some(400))).expect("a write of the facts");
    assert_eq!(store.next_due().expect("next_due"), Some(400), "a full write ends the claim too");
}

/// Each queue gives back its notifications in the order queued, with increasing positions; acknowledging
/// removes only that queue's notifications, and may queue others in the same step.
pub fn queues_keep_order_and_acknowledge_per_queue<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    let (changes, lifecycle, other) = (QueueId::changes("s1"), QueueId::lifecycle("s1"), QueueId::changes("s2"));
    for user in ["u1", "u2", "u3"] {
        store
            .update(&key("t", user), &mut |facts, _| {
                facts.sequence_base += 1;
                let notifications = vec![note(changes.clone(), user), note(other.clone(), user)];
                Some(Effects { notifications, ..Effects::default() })
            })
            .expect("update");
    }
    store.enqueue(&[note(lifecycle.clone(), "reauthorizationRequired")]).expect("enqueue");
    store.relay(1_000).expect("relay");
    let head = store.queue_head(&changes, 10).expect("queue_head");
    assert_eq!(head.iter().map(|row| row.item.as_str()).collect::<Vec<_>>(), ["u1", "u2", "u3"], "queue order");
    assert!(head.windows(2).all(|pair| pair[0].position < pair[1].position), "positions increase");
    assert_eq!(store.queue_head(&changes, 2).expect("queue_head").len(), 2, "the limit holds");
    let mut lengths = store.queue_lengths().expect("queue_lengths");
    lengths.sort();
    assert_eq!(lengths, [(changes.clone(), 3), (lifecycle.clone(), 1), (other.clone(), 3)]);

    // Positions of one queue do not touch another, even where the numbers coincide.
    let other_positions: Vec<u64> =
        store.queue_head(&other, 10).expect("queue_head").iter().map(|row| row.position).collect();
    store.acknowledge(&lifecycle, &other_positions, &[]).expect("acknowledge");
    assert_eq!(items(&store, &other).len(), 3, "acknowledging in another queue removed notifications");
    store.acknowledge(&changes, &[head[0].position], &[note(lifecycle.clone(), "missed")]).expect("acknowledge");
    assert_eq!(items(&store, &changes), ["u2", "u3"]);
    assert_eq!(items(&store, &lifecycle), ["reauthorizationRequired", "missed"], "queued with the removal");
    assert_eq!(items(&store, &other), ["u1", "u2", "u3"]);
    store.acknowledge(&changes, &[head[1].position, head[2].position], &[]).expect("acknowledge");
    assert!(items(&store, &changes).is_empty());

    // A position is never given twice in a queue, also once the queue was emptied: acknowledging an old
    // position cannot remove a newer notification.
    store.enqueue(&[note(changes.clone(), "later")]).expect("enqueue");
    let later = store.queue_head(&changes, 10).expect("queue_head");
    assert!(later[0].position > head[2].position, "a position was reused");
    store.acknowledge(&changes, &[head[0].position, head[2].position], &[]).expect("acknowledge");
    assert_eq!(items(&store, &changes), ["later"], "an old position removed a newer notification");
}

/// The notifications of updates reach their queues exactly once, in order, however often the fan-out
/// runs; a declined update queues nothing.
pub fn notifications_reach_their_queues_once<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    let queue = QueueId::changes("s1");
    for step in 0..20 {
        let user = key("t", &format!("u{}", step % 3));
        store
            .update(&user, &mut |facts, _| {
                facts.sequence_base += 1;
                Some(Effects { notifications: vec![note(queue.clone(), &format!("n{step}"))], ..Effects::default() })
            })
            .expect("update");
        if step % 4 == 0 {
            store.relay(3).expect("relay");
        }
    }
    store.update(&key("t", "u0"), &mut |_, _| None).expect("declined update");
    for _ in 0..3 {
        store.relay(1_000).expect("relay");
    }
    let expected: Vec<String> = (0..20).map(|step| format!("n{step}")).collect();
    assert_eq!(items(&store, &queue), expected, "each notification once, in the order of the updates");
    assert!(store.relay(1_000).expect("relay").is_empty(), "nothing left to move");
}

/// A queue's delivery lease is held by one holder at a time: renewed by its holder, refused to others
/// until it ends or is released; leases of different queues are independent.
pub fn one_holder_at_a_time_delivers_a_queue<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let first = Arc::new(backend.open());
    let second_handle = backend.shared().then(|| Arc::new(backend.open()));
    let second = second_handle.as_ref().unwrap_or(&first);
    let (queue, other) = (QueueId::changes("s1"), QueueId::lifecycle("s1"));
    assert!(first.lease_queue(&queue, "node-a", 100, 1_000).expect("lease"), "a free queue is leased");
    assert!(!second.lease_queue(&queue, "node-b", 500, 2_000).expect("lease"), "held by another until it ends");
    assert!(second.lease_queue(&other, "node-b", 500, 2_000).expect("lease"), "another queue is independent");
    assert!(first.lease_queue(&queue, "node-a", 900, 3_000).expect("lease"), "the holder renews");
    assert!(!second.lease_queue(&queue, "node-b", 2_999, 4_000).expect("lease"), "the renewal holds");
    assert!(second.lease_queue(&queue, "node-b", 3_000, 4_000).expect("lease"), "an ended lease is taken over");
    assert!(!first.lease_queue(&queue, "node-a", 3_500, 5_000).expect("lease"), "the old holder lost it");
    first.release_queue(&queue, "node-a").expect("release");
    assert!(!first.lease_queue(&queue, "node-a", 3_600, 5_000).expect("lease"), "only the holder releases");
    second.release_queue(&queue, "node-b").expect("release");
    assert!(first.lease_queue(&queue, "node-a", 3_700, 5_000).expect("lease"), "a released lease is free");

    // Under contention, exactly one of several claimants (through both handles) gets a free queue.
    let winners: usize = (0..4)
        .map(|claimant| {
            let store = if claimant % 2 == 0 { first.clone() } else { second.clone() };
            std::thread::spawn(move || {
                usize::from(
                    store.lease_queue(&QueueId::changes("s9"), &format!("node-{claimant}"), 0, 60_000).expect("lease"),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|thread| thread.join().expect("a claimant panicked"))
        .sum();
    assert_eq!(winners, 1, "{winners} holders at once");
}

/// Creating counts against the per-application limit of the tenant; an update changes the current record
/// atomically with the notifications it queues, and bumps the version.
pub fn subscriptions_count_against_the_limit_and_change_atomically<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    assert!(store.create_subscription(&subscription("s1", "t", "a", "one"), 2).expect("create"));
    assert!(store.create_subscription(&subscription("s2", "t", "a", "two"), 2).expect("create"));
    assert!(!store.create_subscription(&subscription("s3", "t", "a", "three"), 2).expect("create"), "over the limit");
    assert!(store.create_subscription(&subscription("s4", "t", "b", "other app"), 2).expect("create"));
    assert!(store.create_subscription(&subscription("s5", "t2", "a", "other tenant"), 2).expect("create"));
    assert_eq!(store.subscription("s3").expect("subscription"), None, "a refused creation stored nothing");
    let stored = store.subscription("s1").expect("subscription").expect("created");
    assert_eq!((stored.version, stored.body.as_str(), stored.application_id.as_str()), (1, "one", "a"));
    let (all, _) = store.subscriptions().expect("subscriptions");
    assert_eq!(all.iter().map(|s| s.id.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from(["s1", "s2", "s4", "s5"]));

    let lifecycle = QueueId::lifecycle("s1");
    let updated = store
        .update_subscription("s1", &mut |record| {
            record.body.push_str(" renewed");
            record.tenant_id = "hijacked".into();
            Some(vec![note(lifecycle.clone(), "reauthorizationRequired")])
        })
        .expect("update")
        .expect("exists");
    assert_eq!((updated.version, updated.body.as_str(), updated.tenant_id.as_str()), (2, "one renewed", "t"));
    assert_eq!(store.subscription("s1").expect("subscription"), Some(updated.clone()));
    assert_eq!(items(&store, &lifecycle), ["reauthorizationRequired"], "queued with the update");
    let unchanged = store.update_subscription("s1", &mut |_| None).expect("update").expect("exists");
    assert_eq!(unchanged, updated, "a declined update writes nothing");
    assert_eq!(store.update_subscription("nope", &mut |_| Some(Vec::new())).expect("update"), None);

    // Concurrent updates of one subscription lose nothing.
    let store = Arc::new(store);
    on_four_threads(&store, &None, 10, |store| {
        store
            .update_subscription("s2", &mut |record| {
                record.body.push('+');
                Some(Vec::new())
            })
            .expect("update");
    });
    let s2 = store.subscription("s2").expect("subscription").expect("exists");
    assert_eq!(s2.body, format!("two{}", "+".repeat(40)), "a concurrent subscription update was lost");
    assert_eq!(s2.version, 41);
}

/// Removal takes the subscription and its change queue away, and queues the farewell made from the current
/// record in its lifecycle queue (which goes too when there is no farewell).
pub fn removing_a_subscription_drops_its_queue_and_queues_its_farewell<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    assert!(store.create_subscription(&subscription("kept", "t", "a", "renewed"), 10).expect("create"));
    store.enqueue(&[note(QueueId::changes("kept"), "a")]).expect("enqueue");
    let kept =
        store.remove_subscription("kept", &mut |record| (record.body != "renewed").then(Vec::new)).expect("remove");
    assert_eq!(kept, None, "a farewell of None keeps the subscription");
    assert!(store.subscription("kept").expect("subscription").is_some(), "kept");
    assert_eq!(items(&store, &QueueId::changes("kept")), ["a"], "with its queue");
    for id in ["s1", "s2"] {
        assert!(store.create_subscription(&subscription(id, "t", "a", id), 10).expect("create"));
        store.enqueue(&[note(QueueId::changes(id), "a"), note(QueueId::lifecycle(id), "b")]).expect("enqueue");
    }
    let mut seen = Vec::new();
    let removed = store
        .remove_subscription("s1", &mut |record| {
            seen.push(record.body.clone());
            Some(vec![note(QueueId::lifecycle("s1"), "subscriptionRemoved")])
        })
        .expect("remove");
    assert_eq!(removed.map(|record| record.id), Some("s1".to_owned()));
    assert_eq!(seen.last().map(String::as_str), Some("s1"), "the farewell is made from the current record");
    assert_eq!(store.subscription("s1").expect("subscription"), None);
    assert!(items(&store, &QueueId::changes("s1")).is_empty(), "the change queue went with it");
    assert_eq!(items(&store, &QueueId::lifecycle("s1")), ["b", "subscriptionRemoved"]);
    assert_eq!(store.remove_subscription("s1", &mut |_| Some(Vec::new())).expect("remove"), None, "removed once");

    store.remove_subscription("s2", &mut |_| Some(Vec::new())).expect("remove");
    assert!(items(&store, &QueueId::lifecycle("s2")).is_empty(), "without a farewell the lifecycle queue goes too");
    assert!(
        store.create_subscription(&subscription("s3", "t", "a", "s3"), 2).expect("create"),
        "removal frees the limit"
    );
}

/// Every creation, change and removal is in the change log after the cursor of the moment before it.
pub fn subscription_changes_are_logged<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    let (_, start) = store.subscriptions().expect("subscriptions");
    let nothing = store.subscription_changes(start).expect("changes").expect("the log reaches back");
    assert!(nothing.ids.is_empty());
    assert_eq!(nothing.cursor, start);
    store.create_subscription(&subscription("s1", "t", "a", "x"), 10).expect("create");
    store.create_subscription(&subscription("s2", "t", "a", "x"), 10).expect("create");
    let first = store.subscription_changes(start).expect("changes").expect("the log reaches back");
    assert_eq!(first.ids.iter().collect::<BTreeSet<_>>(), BTreeSet::from([&"s1".to_owned(), &"s2".to_owned()]));
    assert!(first.cursor > start);
    store
        .update_subscription("s1", &mut |record| {
            record.body.push('!');
            Some(Vec::new())
        })
        .expect("update");
    store.remove_subscription("s2", &mut |_| Some(Vec::new())).expect("remove");
    store.update_subscription("s1", &mut |_| None).expect("declined update");
    let second = store.subscription_changes(first.cursor).expect("changes").expect("the log reaches back");
    assert_eq!(second.ids.iter().collect::<BTreeSet<_>>(), BTreeSet::from([&"s1".to_owned(), &"s2".to_owned()]));
    let (all, cursor) = store.subscriptions().expect("subscriptions");
    assert_eq!(cursor, second.cursor, "the listing is current as of the newest cursor");
    assert_eq!(all.len(), 1);
    assert!(store.subscription_changes(cursor).expect("changes").expect("reaches back").ids.is_empty());
}

/// What one handle acknowledged is there after it is dropped and the storage opened again: facts, versions,
/// timers, queues and subscriptions.
pub fn everything_survives_reopening<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let user = key("t1", "u1");
    let (version, positions) = {
        let store = backend.open();
        let updated = store
            .update(&user, &mut |facts, _| {
                busy(facts, 1_000);
                Some(Effects {
                    due_at: Some(4_000),
                    notifications: vec![note(QueueId::changes("s1"), "n1")],
                    ..Effects::default()
                })
            })
            .expect("update");
        store.create_subscription(&subscription("s1", "t1", "a", "body"), 10).expect("create");
        store.enqueue(&[note(QueueId::lifecycle("s1"), "l1")]).expect("enqueue");
        store.relay(1_000).expect("relay");
        let positions: BTreeMap<String, u64> = store
            .queue_head(&QueueId::changes("s1"), 10)
            .expect("queue_head")
            .into_iter()
            .map(|row| (row.item, row.position))
            .collect();
        let Updated::Written { version } = updated else { panic!("not written") };
        (version, positions)
    };
    let store = backend.open();
    let record = written(&store, &user);
    assert_eq!(record.facts.sessions.len(), 1);
    assert_eq!(record.facts.sequence_base, 1);
    assert_eq!(record.due_at, Some(4_000));
    assert_eq!(record.version, version);
    assert_eq!(store.next_due().expect("next_due"), Some(4_000));
    assert_eq!(store.claim_due(4_000, 9_000, 10).expect("claim"), std::slice::from_ref(&user));
    let reread: BTreeMap<String, u64> = store
        .queue_head(&QueueId::changes("s1"), 10)
        .expect("queue_head")
        .into_iter()
        .map(|row| (row.item, row.position))
        .collect();
    assert_eq!(reread, positions, "queued notifications and their positions survive");
    assert_eq!(items(&store, &QueueId::lifecycle("s1")), ["l1"]);
    assert_eq!(store.subscription("s1").expect("subscription").map(|s| s.body), Some("body".to_owned()));
    store.ping().expect("ping");
    store.close().expect("close");
}

fn added(id: &str, upn: &str, name: &str) -> DirectoryUser {
    DirectoryUser { id: id.into(), user_principal_name: upn.into(), display_name: name.into() }
}

/// Added users: found by id (per tenant) and by user principal name in any case, renamed in place (the old
/// name no longer finds them; a name another holds stays with its holder until freed), listed in id order
/// from a cursor, and kept across reopening.
pub fn added_users_are_found_by_id_and_name_and_listed_in_order<B: Backend>(make: &impl Fn() -> B) {
    const A: &str = "0a000000-0000-4000-8000-00000000000a";
    const B: &str = "0b000000-0000-4000-8000-00000000000b";
    const C: &str = "0c000000-0000-4000-8000-00000000000c";
    let backend = make();
    {
        let store = backend.open();
        let ids = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
        assert_eq!(store.directory_users("t1", &ids(&[A])).expect("read"), [None], "nobody added yet");
        assert_eq!(store.list_directory_users("t1", None, 10).expect("list"), []);
        for user in [added(C, "carol@x.example", "Carol"), added(A, "Alice@X.example", "Alice")] {
            store.put_directory_user("t1", &user).expect("put");
        }
        store.put_directory_user("t2", &added(B, "bob@x.example", "Bob")).expect("put");
        assert_eq!(
            store.directory_users("t1", &ids(&[C, B, A])).expect("read"),
            [Some(added(C, "carol@x.example", "Carol")), None, Some(added(A, "Alice@X.example", "Alice"))],
            "by id, in the order asked, each tenant its own"
        );
        assert_eq!(
            store.directory_user_by_upn("t1", "alice@x.EXAMPLE").expect("upn").map(|user| user.id),
            Some(A.into())
        );
        assert_eq!(store.directory_user_by_upn("t2", "alice@x.example").expect("upn"), None, "not in another tenant");
        // Alice is renamed: her old name finds nobody; then Carol takes Alice's new name.
        store.put_directory_user("t1", &added(A, "alice.smith@x.example", "Alice Smith")).expect("rename");
        assert_eq!(store.directory_user_by_upn("t1", "alice@x.example").expect("upn"), None, "the old name is free");
        assert_eq!(
            store.directory_user_by_upn("t1", "ALICE.SMITH@x.example").expect("upn"),
            Some(added(A, "alice.smith@x.example", "Alice Smith"))
        );
        // Carol claims Alice's name: Alice keeps it until she changes hers; then Carol, written again
        // unchanged, has it.
        store.put_directory_user("t1", &added(C, "alice.smith@x.example", "Carol")).expect("claim");
        let holder = |store: &B::Store| {
            store.directory_user_by_upn("t1", "alice.smith@x.example").expect("upn").map(|user| user.id)
        };
        assert_eq!(holder(&store), Some(A.into()), "a name stays with its first holder");
        assert_eq!(
            store.directory_user_by_upn("t1", "carol@x.example").expect("upn"),
            None,
            "Carol's old name is free"
        );
        store.put_directory_user("t1", &added(A, "alice.jones@x.example", "Alice Jones")).expect("rename");
        assert_eq!(holder(&store), None, "freed by its holder");
        store.put_directory_user("t1", &added(C, "alice.smith@x.example", "Carol")).expect("the same again");
        assert_eq!(holder(&store), Some(C.into()), "taken by the next to claim it");
        store.put_directory_user("t1", &added(B, "bob@x.example", "Bob")).expect("put");
        store.put_directory_user("t1", &added(B, "bob@x.example", "Bob")).expect("put the same again");
    }
    let store = backend.open();
    let listed = |after: Option<&str>, limit: usize| -> Vec<String> {
        store.list_directory_users("t1", after, limit).expect("list").into_iter().map(|user| user.id).collect()
    };
    assert_eq!(listed(None, 10), [A, B, C], "in id order, each once, after reopening");
    assert_eq!(listed(None, 2), [A, B]);
    assert_eq!(listed(Some(B), 2), [C], "after a cursor");
    assert_eq!(listed(Some(C), 2), Vec::<String>::new());
    assert_eq!(listed(None, 0), Vec::<String>::new());
    assert_eq!(store.list_directory_users("t2", None, 10).expect("list"), [added(B, "bob@x.example", "Bob")]);
}

/// With two handles open at once (two processes), what one writes the other reads: facts, queued
/// notifications, subscriptions and the change log. Only for a backend that serves several processes.
pub fn a_second_handle_sees_what_the_first_wrote<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    assert!(backend.shared(), "a suite instantiated with `shared` needs a backend that serves several processes");
    let (first, second) = (backend.open(), backend.open());
    let (_, cursor) = second.subscriptions().expect("subscriptions");
    let user = key("t", "u1");
    first
        .update(&user, &mut |facts, _| {
            busy(facts, 1_000);
            Some(Effects { notifications: vec![note(QueueId::changes("s1"), "n1")], ..Effects::default() })
        })
        .expect("update");
    first.create_subscription(&subscription("s1", "t", "a", "body"), 10).expect("create");
    first.relay(1_000).expect("relay");
    assert_eq!(written(&second, &user).facts.sessions.len(), 1, "the second handle reads the first's write");
    second.update(&user, &mut bump(None)).expect("update");
    assert_eq!(written(&first, &user).facts.sequence_base, 2, "and the first reads the second's");
    assert_eq!(items(&second, &QueueId::changes("s1")), ["n1"]);
    assert_eq!(second.subscription("s1").expect("subscription").map(|s| s.body), Some("body".to_owned()));
    let changes = second.subscription_changes(cursor).expect("changes").expect("reaches back");
    assert_eq!(changes.ids, ["s1"], "the second handle learns of the first's subscription from the log");
}

/// With two handles open at once, a user claimed through one is not claimed through the other until the
/// lease ends. Only for a backend that serves several processes.
pub fn a_second_handle_never_claims_what_the_first_holds<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    assert!(backend.shared(), "a suite instantiated with `shared` needs a backend that serves several processes");
    let (first, second) = (backend.open(), backend.open());
    let user = key("t", "u1");
    first.update(&user, &mut bump(Some(100))).expect("update");
    assert_eq!(first.claim_due(100, 1_000, 10).expect("claim"), std::slice::from_ref(&user));
    assert!(second.claim_due(999, 2_000, 10).expect("claim").is_empty(), "claimed twice at once");
    assert_eq!(second.claim_due(1_000, 2_000, 10).expect("claim"), [user], "not taken over after the lease");
}

/// Two handles writing the same users in turn, one user at a time and several at once: every write builds
/// on the last one, whichever handle made it (a handle that remembers records must notice the other's
/// writes). Only for a backend that serves several processes.
pub fn each_handle_builds_on_the_other_handles_writes<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    assert!(backend.shared(), "a suite instantiated with `shared` needs a backend that serves several processes");
    let (first, second) = (backend.open(), backend.open());
    let users = [key("t", "u1"), key("t", "u2")];
    for _ in 0..3 {
        for handle in [&first, &second] {
            let results = handle.update_many(&users, &mut |_, facts, _| {
                facts.sequence_base += 1;
                Some(Effects::default())
            });
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            handle.update(&users[0], &mut bump(None)).expect("update");
        }
    }
    assert_eq!(written(&first, &users[0]).facts.sequence_base, 12, "every write of u1 counted once");
    assert_eq!(written(&second, &users[1]).facts.sequence_base, 6, "every write of u2 counted once");
    // The second handle wrote last: a closure of the first that declines unless it sees that write must
    // see it, alone and in a batch.
    let unless_seen = |seen: u64| {
        move |facts: &mut UserFacts, _: Option<i64>| {
            (facts.sequence_base == seen).then(|| {
                facts.sequence_base += 1;
                Effects::default()
            })
        }
    };
    let result = first.update(&users[0], &mut unless_seen(12));
    assert!(matches!(result, Ok(Updated::Written { .. })), "the first handle declined over an old record: {result:?}");
    let closure = unless_seen(6);
    let results = first.update_many(&users[1..], &mut |_, facts, due| closure(facts, due));
    assert!(matches!(results[0], Ok(Updated::Written { .. })), "declined over an old record: {results:?}");
}

/// Where a backend answers reads without blocking, it answers what `get_many` does, and visits every
/// record once where it lets readers look at them in place, from a fresh handle too.
pub fn optional_reads_agree_with_get_many<B: Backend>(make: &impl Fn() -> B) {
    let backend = make();
    let store = backend.open();
    // Enough users to spread over the shards of a cache; every other one written.
    let keys: Vec<UserKey> = (0..40).map(|user| key("t", &format!("u{user}"))).collect();
    for written in keys.iter().skip(1).step_by(2) {
        store.update(written, &mut bump(Some(3))).expect("update");
    }
    let expected = store.get_many(&keys).expect("get_many");
    assert_eq!(expected.iter().filter(|record| record.is_some()).count(), 20);
    if let Some(now) = store.get_many_now(&keys) {
        assert_eq!(now.expect("get_many_now"), expected);
    }
    if let Some(stats) = store.stats(0).expect("stats") {
        assert_eq!((stats.users, stats.pending_timers), (20, 20));
    }
    let visited = |store: &B::Store| -> Option<Vec<Option<UserRecord>>> {
        let mut seen: Vec<Option<Option<UserRecord>>> = vec![None; keys.len()];
        let outcome = store.visit_many_now(&keys, &mut |position, record| {
            assert!(seen[position].is_none(), "position {position} visited twice");
            seen[position] = Some(record.cloned());
        });
        outcome.map(|result| {
            result.expect("visit_many_now");
            seen.into_iter().map(|record| record.expect("every position visited")).collect()
        })
    };
    if let Some(records) = visited(&store) {
        assert_eq!(records, expected);
    }
    drop(store);
    let store = backend.open();
    if let Some(records) = visited(&store) {
        assert_eq!(records, expected, "from a fresh handle");
    }
}
