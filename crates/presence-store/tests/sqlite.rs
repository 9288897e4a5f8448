//! The SQLite backend keeps what it acknowledged, across reopen, per tenant and user.

use presence_core::{Command, Timestamp, UserFacts};
use presence_store::{Effects, NewNotification, PresenceStore, SqliteStore, StoredSubscription, UserKey};

fn key(tenant: &str, user: &str) -> UserKey {
    UserKey { tenant_id: tenant.into(), user_id: user.into() }
}

fn busy(facts: &mut UserFacts, _due: Option<i64>) -> Option<Effects> {
    Command::set_presence("app", Some("app"), Some("Busy"), Some("InACall"), Some("PT1H"))
        .unwrap()
        .apply(facts, Timestamp(1_000))
        .ok()
        .map(|_| Effects::default())
}

fn note(queue: &str, item: &str) -> NewNotification {
    NewNotification {
        queue: queue.into(),
        url: "https://example.org/hook".into(),
        created_at: 5,
        item: item.into(),
        resource_data: None,
    }
}

#[test]
fn updates_survive_reopening_and_stay_in_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        assert!(store.update(&key("t1", "u1"), &mut busy).unwrap());
        assert_eq!(store.user_count().unwrap(), 1);
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let facts = store.get(&key("t1", "u1")).unwrap().expect("stored");
    assert_eq!(facts.sessions.len(), 1);
    assert_eq!(facts.sequence_base, 1);
    assert_eq!(store.get(&key("t2", "u1")).unwrap(), None, "another tenant's user of the same id");
    let many = store.get_many(&[key("t1", "u2"), key("t1", "u1"), key("t2", "u1")]).unwrap();
    assert_eq!(many.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true, false]);
}

#[test]
fn an_update_that_declines_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    assert!(!store
        .update(&key("t1", "u1"), &mut |facts, _| {
            facts.sequence_base = 99;
            None
        })
        .unwrap());
    assert_eq!(store.get(&key("t1", "u1")).unwrap(), None);
}

#[test]
fn concurrent_updates_of_one_user_do_not_lose_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SqliteStore::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    store
                        .update(&key("t", "u"), &mut |facts, _| {
                            facts.sequence_base += 1;
                            Some(Effects::default())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(store.get(&key("t", "u")).unwrap().unwrap().sequence_base, 100);
    let (commits, durable, syncs) = store.commit_stats();
    assert_eq!(commits, 100);
    assert_eq!(durable, 100, "every update returned after an fsync that followed its commit");
    assert!((1..=100).contains(&syncs), "{syncs} fsyncs for 100 commits");
}

#[test]
fn the_database_commits_durably() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (journal, synchronous) = store.durability_settings().unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 1, "synchronous = NORMAL: the store fsyncs the WAL itself (group commit)");
}

#[test]
fn checkpoints_run_beside_the_writes_and_copy_the_whole_wal() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<UserKey> = (0..3000).map(|user| key("t1", &format!("u{user}"))).collect();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.wal_autocheckpoint().unwrap(), 0, "no checkpoint inside a write");
        for chunk in keys.chunks(100) {
            store.update_many(chunk, &mut |_, facts, due| busy(facts, due)).unwrap();
        }
        let (frames, copied) = store.checkpoint().unwrap();
        assert_eq!(frames, copied, "every frame of the WAL reached the database file");
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.user_count().unwrap(), 3000);
    assert_eq!(store.get(&keys[2999]).unwrap().expect("stored").sessions.len(), 1);
}

#[test]
fn stats_count_users_live_sessions_and_timers_at_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.stats(0).unwrap(), presence_store::StoreStats::default());
    for (user, due) in [("u1", Some(500)), ("u2", None)] {
        store
            .update(&key("t1", user), &mut |facts, _| {
                busy(facts, None).map(|effects| Effects { due_at: due, ..effects })
            })
            .unwrap();
    }
    // `busy` sets a one-hour session at instant 1,000.
    let at = |now| store.stats(now).unwrap();
    assert_eq!(at(2_000), presence_store::StoreStats { users: 2, live_sessions: 2, pending_timers: 1 });
    assert_eq!(at(1_000 + 3_600_000).live_sessions, 0);
    store.ping().unwrap();
    store.flush().unwrap();
}

#[test]
fn timers_and_queued_notifications_are_written_with_the_facts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        for (user, due) in [("u1", Some(300)), ("u2", Some(100)), ("u3", None)] {
            store
                .update(&key("t", user), &mut |facts, _| {
                    facts.sequence_base += 1;
                    Some(Effects { due_at: due, notifications: vec![note("s1", user)], timer_only: false })
                })
                .unwrap();
        }
        let declined = store.update(&key("t", "u4"), &mut |_, _| None).unwrap();
        assert!(!declined);
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.next_due().unwrap(), Some(100));
    assert_eq!(store.due_users(299, 10).unwrap(), [key("t", "u2")]);
    assert_eq!(store.due_users(300, 10).unwrap(), [key("t", "u2"), key("t", "u1")], "earliest first");
    assert_eq!(store.due_users(300, 1).unwrap(), [key("t", "u2")]);
    let head = store.queue_head("s1", 10).unwrap();
    assert_eq!(head.iter().map(|n| n.item.as_str()).collect::<Vec<_>>(), ["u1", "u2", "u3"], "queue order");
    assert_eq!(store.queue_lengths().unwrap(), [("s1".to_owned(), 3)]);
    store.acknowledge(&[head[0].id], &[note("s1/lifecycle", "missed")]).unwrap();
    assert_eq!(store.queue_head("s1/lifecycle", 5).unwrap()[0].item, "missed", "queued with the removal");
    assert_eq!(store.queue_head("s1", 1).unwrap()[0].item, "u2");

    // Several users in one transaction; the closure sees each user's timer.
    let mut seen = Vec::new();
    store
        .update_many(&[key("t", "u1"), key("t", "u2")], &mut |key, _, due| {
            seen.push((key.user_id.clone(), due));
            Some(Effects { due_at: None, notifications: vec![], timer_only: true })
        })
        .unwrap();
    assert_eq!(seen, [("u1".to_owned(), Some(300)), ("u2".to_owned(), Some(100))]);
    assert_eq!(store.next_due().unwrap(), None);
}

#[test]
fn removing_a_subscription_drops_its_queue_and_queues_its_farewell() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let subscription = StoredSubscription { id: "s1".into(), tenant_id: "t".into(), body: "{}".into() };
    store.put_subscription(&subscription, &[]).unwrap();
    store.enqueue(&[note("s1", "a"), note("s1/lifecycle", "b")]).unwrap();
    assert_eq!(store.subscriptions().unwrap(), [subscription]);
    assert!(store.remove_subscription("s1", &["s1"], &[note("s1/lifecycle", "bye")]).unwrap());
    assert!(!store.remove_subscription("s1", &["s1"], &[]).unwrap());
    assert!(store.subscriptions().unwrap().is_empty());
    assert!(store.queue_head("s1", 10).unwrap().is_empty());
    let lifecycle: Vec<_> = store.queue_head("s1/lifecycle", 10).unwrap().into_iter().map(|n| n.item).collect();
    assert_eq!(lifecycle, ["b", "bye"]);
}

#[test]
fn a_database_from_before_timers_gets_every_user_due_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.update(&key("t", "u1"), &mut busy).unwrap();
    }
    {
        let connection = rusqlite::Connection::open(dir.path().join(presence_store::DATABASE_FILE)).unwrap();
        connection.execute_batch("DROP INDEX presence_due; ALTER TABLE presence DROP COLUMN due_at;").unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.due_users(0, 10).unwrap(), [key("t", "u1")], "due at once, to compute its next change");
}

#[test]
fn a_corrupt_record_does_not_stop_other_users_timers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for user in ["u1", "u2"] {
        store
            .update(&key("t", user), &mut |facts, _| {
                facts.sequence_base = 1;
                Some(Effects { due_at: Some(10), ..Effects::default() })
            })
            .unwrap();
    }
    drop(store);
    let connection = rusqlite::Connection::open(dir.path().join(presence_store::DATABASE_FILE)).unwrap();
    connection.execute("UPDATE presence SET facts = 'garbage' WHERE user_id = 'u1'", []).unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut seen = Vec::new();
    let skipped = store
        .update_many(&[key("t", "u1"), key("t", "u2")], &mut |key, _, _| {
            seen.push(key.user_id.clone());
            Some(Effects { due_at: Some(20), timer_only: true, ..Effects::default() })
        })
        .unwrap();
    assert_eq!(skipped, [key("t", "u1")]);
    assert_eq!(seen, ["u2"]);
    assert_eq!(store.due_users(100, 10).unwrap(), [key("t", "u2")], "the corrupt record's timer is cleared");
}
