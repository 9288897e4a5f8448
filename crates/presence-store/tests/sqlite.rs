//! The SQLite backend: the conformance suite, and what only SQLite promises (group commit, checkpoints,
//! monitoring counts, migrations of older files, corrupt records).

use presence_core::{Command, Timestamp, UserFacts};
use presence_store::conformance::Backend;
use presence_store::{Effects, PresenceStore, SqliteStore, StoreError, Updated, UserKey};

/// A temporary data directory with the SQLite store in it.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Sqlite { dir: tempfile::tempdir().expect("a temporary directory") }
    }
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    fn open(&self) -> SqliteStore {
        SqliteStore::open(self.dir.path()).expect("the store opens")
    }

    /// One process owns the file.
    fn shared(&self) -> bool {
        false
    }
}

presence_store::conformance_suite!(conformance, || Sqlite::new());

fn key(tenant: &str, user: &str) -> UserKey {
    UserKey::new(tenant, user)
}

fn busy(facts: &mut UserFacts, _due: Option<i64>) -> Option<Effects> {
    Command::set_presence("app", Some("app"), Some("Busy"), Some("InACall"), Some("PT1H"))
        .unwrap()
        .apply(facts, Timestamp(1_000))
        .ok()
        .map(|_| Effects::default())
}

#[test]
fn every_update_returns_after_an_fsync_that_followed_its_commit() {
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
            let results = store.update_many(chunk, &mut |_, facts, due| busy(facts, due));
            assert!(results.iter().all(|result| matches!(result, Ok(Updated::Written { .. }))));
        }
        let (frames, copied) = store.checkpoint().unwrap();
        assert_eq!(frames, copied, "every frame of the WAL reached the database file");
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.user_count().unwrap(), 3000);
    assert_eq!(store.get(&keys[2999]).unwrap().expect("stored").facts.sessions.len(), 1);
}

/// A reader holding an old snapshot stands for writes arriving while a checkpoint copies: either way a
/// passive checkpoint leaves frames behind, and until one copies every frame the WAL cannot start again.
#[test]
fn the_writer_finishes_a_checkpoint_that_fell_behind_so_the_wal_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let restart_frames = 4096;
    store.set_wal_restart_frames(restart_frames);
    store.update(&key("t1", "first"), &mut busy).unwrap();
    let snapshot = rusqlite::Connection::open(dir.path().join(presence_store::DATABASE_FILE)).unwrap();
    snapshot.execute_batch("BEGIN; SELECT count(*) FROM presence;").unwrap();
    let mut users = 0;
    let (frames, copied) = loop {
        let chunk: Vec<UserKey> = (users..users + 100).map(|user| key("t1", &format!("u{user}"))).collect();
        users += 100;
        let results = store.update_many(&chunk, &mut |_, facts, due| busy(facts, due));
        assert!(results.iter().all(|result| matches!(result, Ok(Updated::Written { .. }))));
        let (frames, copied) = store.checkpoint().unwrap();
        if frames >= restart_frames {
            break (frames, copied);
        }
        assert!(users < 100_000, "the WAL grows with the writes");
    };
    assert!(copied < frames, "the old snapshot kept frames in the WAL ({copied} of {frames} copied)");
    snapshot.execute_batch("COMMIT;").unwrap();

    // The next write copies the rest before it begins, and so writes at the WAL's beginning again.
    store.update(&key("t1", "after"), &mut busy).unwrap();
    let (frames_after, copied_after) = store.checkpoint().unwrap();
    assert!(frames_after < 64, "the WAL started again: {frames_after} frames after one write (was {frames})");
    assert_eq!(frames_after, copied_after);

    // Nothing written while the WAL was copied and started again is lost.
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.user_count().unwrap(), users + 2);
    assert!(store.get(&key("t1", "after")).unwrap().is_some());
}

#[test]
fn stats_count_users_live_sessions_and_timers_at_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.stats(0).unwrap(), Some(presence_store::StoreStats::default()));
    for (user, due) in [("u1", Some(500)), ("u2", None)] {
        store
            .update(&key("t1", user), &mut |facts, _| {
                busy(facts, None).map(|effects| Effects { due_at: due, ..effects })
            })
            .unwrap();
    }
    // `busy` sets a one-hour session at instant 1,000.
    let at = |now| store.stats(now).unwrap().unwrap();
    assert_eq!(at(2_000), presence_store::StoreStats { users: 2, live_sessions: 2, pending_timers: 1 });
    assert_eq!(at(1_000 + 3_600_000).live_sessions, 0);
    store.ping().unwrap();
    store.close().unwrap();
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
        connection
            .execute_batch("ALTER TABLE presence DROP COLUMN version; ALTER TABLE presence DROP COLUMN due_at;")
            .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.claim_due(0, 10, 10).unwrap(), [key("t", "u1")], "due at once, to compute its next change");
    assert_eq!(store.get(&key("t", "u1")).unwrap().expect("kept").facts.sessions.len(), 1);
}

#[test]
fn a_database_from_before_claims_keeps_its_timers_and_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The layout of the files written before timer claims and subscription owners.
        let connection = rusqlite::Connection::open(dir.path().join(presence_store::DATABASE_FILE)).unwrap();
        connection
            .execute_batch(
                r#"CREATE TABLE presence (tenant_id TEXT NOT NULL, user_id TEXT NOT NULL, facts TEXT NOT NULL,
                       due_at INTEGER, PRIMARY KEY (tenant_id, user_id)) WITHOUT ROWID;
                   CREATE INDEX presence_due ON presence (due_at) WHERE due_at IS NOT NULL;
                   INSERT INTO presence VALUES ('t', 'u1', '{"v":1,"seq":3,"seq_at":10}', 500);
                   CREATE TABLE subscriptions (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, body TEXT NOT NULL)
                       WITHOUT ROWID;
                   INSERT INTO subscriptions VALUES ('s1', 't', '{"id":"s1","applicationId":"app-1"}');"#,
            )
            .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let record = store.get(&key("t", "u1")).unwrap().expect("kept");
    assert_eq!((record.facts.sequence_base, record.due_at), (3, Some(500)));
    assert_eq!(store.next_due().unwrap(), Some(500), "the timer is claimable");
    let subscription = store.subscription("s1").unwrap().expect("kept");
    assert_eq!((subscription.application_id.as_str(), subscription.version), ("app-1", 1), "the owner is backfilled");
    let second = presence_store::StoredSubscription { id: "s2".into(), version: 0, ..subscription };
    assert!(!store.create_subscription(&second, 1).unwrap(), "the backfilled owner counts against the limit");
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
    let results = store.update_many(&[key("t", "u1"), key("t", "u2")], &mut |key, _, _| {
        seen.push(key.user_id.clone());
        Some(Effects { due_at: Some(20), timer_only: true, ..Effects::default() })
    });
    assert!(matches!(&results[0], Err(StoreError::Corrupt { record, .. }) if record == "t/u1"), "{results:?}");
    assert!(matches!(results[1], Ok(Updated::Written { .. })), "{results:?}");
    assert_eq!(seen, ["u2"]);
    assert_eq!(store.claim_due(100, 200, 10).unwrap(), [key("t", "u2")], "the corrupt record's timer is cleared");
    assert!(matches!(store.get(&key("t", "u1")), Err(StoreError::Corrupt { .. })));
}

#[test]
fn the_change_log_is_trimmed_and_a_follower_too_far_behind_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let subscription = presence_store::StoredSubscription {
        id: "s1".into(),
        tenant_id: "t".into(),
        application_id: "a".into(),
        version: 0,
        body: String::new(),
    };
    assert!(store.create_subscription(&subscription, 1).unwrap());
    for _ in 0..1_050 {
        store
            .update_subscription("s1", &mut |record| {
                record.body.push('.');
                Some(Vec::new())
            })
            .unwrap();
    }
    assert_eq!(store.subscription_changes(0).unwrap(), None, "the log no longer reaches back to the start");
    let (_, cursor) = store.subscriptions().unwrap();
    assert_eq!(store.subscription_changes(cursor - 5).unwrap().map(|changes| changes.ids), Some(vec!["s1".into()]));
}

#[test]
fn timer_claims_end_with_the_process_that_made_them() {
    let dir = tempfile::tempdir().unwrap();
    let due = |store: &SqliteStore| {
        let mut claimed = store.claim_due(100, 50_000, 10).unwrap();
        claimed.sort();
        claimed
    };
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        for user in ["u1", "u2"] {
            store
                .update(&key("t", user), &mut |facts, _| {
                    facts.sequence_base = 1;
                    Some(Effects { due_at: Some(100), ..Effects::default() })
                })
                .unwrap();
        }
        assert_eq!(due(&store), [key("t", "u1"), key("t", "u2")]);
        assert!(due(&store).is_empty(), "claimed");
        // Dropped without close: a crash.
    }
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(due(&store), [key("t", "u1"), key("t", "u2")], "due again after a crash, not at the lease's end");
        store.close().unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(due(&store), [key("t", "u1"), key("t", "u2")], "a clean close undoes the claims too");
}

#[test]
fn users_whose_ids_differ_only_in_spelling_stay_apart() {
    // The cache keys lowercase GUIDs by their numbers: an uppercase spelling of the same GUID is another
    // key to the store, and must stay one.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let tenant = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
    let (lower, upper) = ("7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11", "7D3B5E0A-2C61-4F3E-9D1A-5A2B8C9E0F11");
    let stamp = |base: u64| {
        move |facts: &mut UserFacts, _due: Option<i64>| {
            facts.sequence_base = base;
            Some(Effects::default())
        }
    };
    store.update(&key(tenant, lower), &mut stamp(1)).unwrap();
    store.update(&key(tenant, upper), &mut stamp(2)).unwrap();
    store.update(&key(&tenant.to_uppercase(), lower), &mut stamp(3)).unwrap();
    let read = |store: &SqliteStore| -> Vec<u64> {
        let keys = [key(tenant, lower), key(tenant, upper), key(&tenant.to_uppercase(), lower), key(tenant, "x")];
        store.get_many(&keys).unwrap().into_iter().map(|record| record.map_or(0, |r| r.facts.sequence_base)).collect()
    };
    assert_eq!(read(&store), [1, 2, 3, 0], "from the cache");
    drop(store);
    assert_eq!(read(&SqliteStore::open(dir.path()).unwrap()), [1, 2, 3, 0], "from the database");
}

/// Recovered users due at the same instant are claimed in the table's order (by ids), whatever order
/// they were written in: a burst's batches then keep users subscribed to in id order together.
#[test]
fn recovered_timers_due_together_are_claimed_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let users: Vec<String> = (0..300).map(|user| format!("u{user:03}")).collect();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        for user in users.iter().rev() {
            store
                .update(&key("t1", user), &mut |facts, _| {
                    busy(facts, None).map(|effects| Effects { due_at: Some(500), ..effects })
                })
                .unwrap();
        }
        store.close().unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let claimed: Vec<String> = store.claim_due(500, 600, 1000).unwrap().into_iter().map(|key| key.user_id).collect();
    assert_eq!(claimed, users);
}
