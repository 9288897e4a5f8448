//! The SQLite backend keeps what it acknowledged, across reopen, per tenant and user.

use presence_core::{Command, Timestamp, UserFacts};
use presence_store::{PresenceStore, SqliteStore, UserKey};

fn key(tenant: &str, user: &str) -> UserKey {
    UserKey { tenant_id: tenant.into(), user_id: user.into() }
}

fn busy(facts: &mut UserFacts) -> bool {
    Command::set_presence("app", Some("app"), Some("Busy"), Some("InACall"), Some("PT1H"))
        .unwrap()
        .apply(facts, Timestamp(1_000))
        .is_ok()
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
        .update(&key("t1", "u1"), &mut |facts| {
            facts.sequence_base = 99;
            false
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
                        .update(&key("t", "u"), &mut |facts| {
                            facts.sequence_base += 1;
                            true
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
}

#[test]
fn the_database_commits_durably() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (journal, synchronous) = store.durability_settings().unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, 2, "synchronous = FULL: COMMIT returns after fsync");
}
