//! What the Redis backend promises beyond the conformance suite, against the real cluster: writes that
//! too few replicas acknowledged fail as unavailable, a handle relays what a dead handle staged, and a
//! store made with another partition count is refused.

use std::time::Duration;

use presence_store::{Effects, NewNotification, PresenceStore, QueueId, StoreError, StoredSubscription, UserKey};
use presence_store_redis::{testing, RedisStore};
use redis::Commands;

fn note(subscription: &str, item: &str) -> NewNotification {
    NewNotification {
        queue: QueueId::changes(subscription),
        url: "https://example.org/hook".into(),
        created_at: 1,
        item: item.into(),
        resource_data: None,
    }
}

#[test]
fn a_write_too_few_replicas_have_is_refused_as_unavailable() {
    // Each primary has one replica: asking for two can never be met.
    let mut config = testing::config();
    config.wait_replicas = 2;
    config.wait_timeout = Duration::from_millis(50);
    let store = RedisStore::open(&config).expect("open");
    let result = store.update(&UserKey::new("t", "u"), &mut |facts, _| {
        facts.sequence_base += 1;
        Some(Effects::default())
    });
    assert!(matches!(result, Err(StoreError::Unavailable(_))), "{result:?}");

    config.wait_replicas = 1;
    config.wait_timeout = Duration::from_secs(5);
    let store = RedisStore::open(&config).expect("open");
    let result = store.update(&UserKey::new("t", "u2"), &mut |facts, _| {
        facts.sequence_base += 1;
        Some(Effects::default())
    });
    assert!(result.is_ok(), "one replica acknowledges: {result:?}");
}

/// Writes `users` users of tenant `t` in one many-user update, each staging one notification.
fn write_many(store: &RedisStore, users: usize) -> Vec<Result<presence_store::Updated, StoreError>> {
    let keys: Vec<UserKey> = (0..users).map(|user| UserKey::new("t", format!("u{user}"))).collect();
    store.update_many(&keys, &mut |key, facts, _| {
        facts.sequence_base += 1;
        Some(Effects { notifications: vec![note("s1", &key.user_id)], due_at: Some(5_000), ..Effects::default() })
    })
}

#[test]
fn a_many_user_write_spans_every_primary_and_is_refused_whole_when_too_few_replicas_have_it() {
    let mut config = testing::config();
    config.wait_replicas = 2;
    config.wait_timeout = Duration::from_millis(50);
    let refused = write_many(&RedisStore::open(&config).expect("open"), 60);
    assert!(refused.iter().all(|result| matches!(result, Err(StoreError::Unavailable(_)))), "{refused:?}");

    config.wait_replicas = 1;
    config.wait_timeout = Duration::from_secs(5);
    let store = RedisStore::open(&config).expect("open");
    // The users were written before (a refused write is not undone), so these are their second versions.
    let written = write_many(&store, 60);
    assert!(written.iter().all(|result| *result == Ok(presence_store::Updated::Written { version: 2 })), "{written:?}");
    let read = store.get(&UserKey::new("t", "u59")).expect("get").expect("written");
    assert_eq!((read.facts.sequence_base, read.due_at), (2, Some(5_000)));
    assert_eq!(store.next_due().expect("next_due"), Some(5_000));
}

#[test]
fn a_many_user_write_sent_to_the_wrong_nodes_is_written_once_each() {
    let store = RedisStore::open(&testing::config()).expect("open");
    store.misroute_next_write();
    let written = write_many(&store, 60);
    assert!(written.iter().all(|result| *result == Ok(presence_store::Updated::Written { version: 1 })), "{written:?}");
    store.relay(1_000).expect("relay");
    let mut items: Vec<String> =
        store.queue_head(&QueueId::changes("s1"), 100).expect("queue_head").into_iter().map(|row| row.item).collect();
    items.sort();
    let mut expected: Vec<String> = (0..60).map(|user| format!("u{user}")).collect();
    expected.sort();
    assert_eq!(items, expected, "each user's notification staged once");
}

#[test]
fn another_handle_relays_what_a_dead_handle_staged() {
    let config = testing::config();
    {
        let dying = RedisStore::open(&config).expect("open");
        for (user, item) in [("u1", "first"), ("u2", "second"), ("u3", "third")] {
            dying
                .update(&UserKey::new("t", user), &mut |facts, _| {
                    facts.sequence_base += 1;
                    Some(Effects { notifications: vec![note("s1", item)], ..Effects::default() })
                })
                .expect("update");
        }
        // Dropped before relaying: its notifications are staged only.
    }
    let other = RedisStore::open(&config).expect("open");
    let grown = other.relay(1_000).expect("relay");
    assert_eq!(grown, [QueueId::changes("s1")], "the first relay of a handle looks at every partition");
    let items: Vec<String> =
        other.queue_head(&QueueId::changes("s1"), 10).expect("queue_head").into_iter().map(|row| row.item).collect();
    assert_eq!(items, ["first", "second", "third"], "in the order they were written");
    assert!(other.relay(1_000).expect("relay").is_empty(), "relayed once");
}

#[test]
fn a_store_made_with_another_partition_count_is_refused() {
    let config = testing::config();
    let client = redis::cluster::ClusterClient::new(config.urls.clone()).expect("client");
    let mut connection = client.get_connection().expect("connection");
    let _: () = connection.hset(format!("{}{{registry}}format", config.key_prefix), "partitions", 128).expect("hset");
    let refused = RedisStore::open(&config).expect_err("refused");
    assert!(matches!(&refused, StoreError::Corrupt { reason, .. } if reason.contains("128")), "{refused}");
}

#[test]
fn a_relay_repeated_after_a_crash_queues_nothing_twice() {
    let store = RedisStore::open(&testing::config()).expect("open");
    for (user, item) in [("u1", "first"), ("u2", "second"), ("u1", "third")] {
        store
            .update(&UserKey::new("t", user), &mut |facts, _| {
                facts.sequence_base += 1;
                Some(Effects { notifications: vec![note("s1", item)], ..Effects::default() })
            })
            .expect("update");
    }
    assert_eq!(store.relay_then_crash(1_000).expect("relay"), [QueueId::changes("s1")]);
    assert!(store.relay(1_000).expect("relay").is_empty(), "the replay queued something");
    let items: Vec<String> =
        store.queue_head(&QueueId::changes("s1"), 10).expect("queue_head").into_iter().map(|row| row.item).collect();
    assert_eq!(items, ["first", "second", "third"], "each once, in order");
}

#[test]
fn a_removal_cut_short_by_a_crash_is_finished_by_the_next_handle_once() {
    let config = testing::config();
    let store = RedisStore::open(&config).expect("open");
    let subscription = StoredSubscription {
        id: "s1".into(),
        tenant_id: "t".into(),
        application_id: "a".into(),
        version: 0,
        body: "body".into(),
    };
    assert!(store.create_subscription(&subscription, 10).expect("create"));
    store.enqueue(&[note("s1", "queued")]).expect("enqueue");
    let farewell = |_: &StoredSubscription| {
        Some(vec![NewNotification { queue: QueueId::lifecycle("s1"), ..note("s1", "subscriptionRemoved") }])
    };
    let removed = store.remove_subscription_then_crash("s1", &mut farewell.clone()).expect("remove");
    assert_eq!(removed.map(|record| record.id), Some("s1".to_owned()));
    assert_eq!(store.subscription("s1").expect("subscription"), None, "the registry's step is done");
    assert_eq!(store.queue_head(&QueueId::changes("s1"), 10).expect("queue_head").len(), 1, "the queues' is not");
    drop(store);

    let lifecycle = |store: &RedisStore| -> Vec<String> {
        store.queue_head(&QueueId::lifecycle("s1"), 10).expect("queue_head").into_iter().map(|row| row.item).collect()
    };
    let next = RedisStore::open(&config).expect("open");
    assert!(next.queue_head(&QueueId::changes("s1"), 10).expect("queue_head").is_empty(), "the change queue went");
    assert_eq!(lifecycle(&next), ["subscriptionRemoved"], "the farewell was queued");
    let again = RedisStore::open(&config).expect("open");
    assert_eq!(lifecycle(&again), ["subscriptionRemoved"], "and only once");
    assert!(again.create_subscription(&StoredSubscription { id: "s2".into(), ..subscription }, 1).expect("create"));
}

#[test]
fn every_handle_reads_the_visible_changes_any_handle_made() {
    let config = testing::config();
    let (writer, reader) = (RedisStore::open(&config).expect("open"), RedisStore::open(&config).expect("open"));
    let write = |user: &str, visible: bool| {
        writer
            .update(&UserKey::new("t", user), &mut |facts, _| {
                facts.sequence_base += 1;
                Some(Effects { visible, ..Effects::default() })
            })
            .expect("update");
    };
    write("before", true);
    let now = reader.changed_users(None, 100).expect("changed_users").expect("a shared store");
    assert!(now.users.is_empty(), "without a cursor: none, and the cursor of now");
    write("u1", true);
    write("u2", false);
    write("u3", true);
    let changed = reader.changed_users(Some(&now.cursor), 100).expect("changed_users").expect("a shared store");
    let mut users: Vec<String> = changed.users.into_iter().map(|key| key.user_id).collect();
    users.sort();
    assert_eq!(users, ["u1", "u3"], "the visible changes since the cursor");
    let later = reader.changed_users(Some(&changed.cursor), 100).expect("changed_users").expect("a shared store");
    assert!(later.users.is_empty(), "each once");
}

#[test]
fn a_cluster_that_speaks_only_tls_to_its_acl_user_is_used_with_its_ca_and_that_user() {
    let config = testing::secure_config();
    let store = RedisStore::open(&config).expect("open over TLS as the ACL user");
    let written = write_many(&store, 30);
    assert!(written.iter().all(|result| *result == Ok(presence_store::Updated::Written { version: 1 })), "{written:?}");
    assert_eq!(store.get(&UserKey::new("t", "u7")).expect("get").map(|record| record.version), Some(1));
    store.relay(1_000).expect("relay");
    assert_eq!(store.queue_head(&QueueId::changes("s1"), 100).expect("queue_head").len(), 30);

    let wrong_password = presence_store_redis::RedisConfig { password: Some("wrong".into()), ..config.clone() };
    let refused = RedisStore::open(&wrong_password).expect_err("a wrong password is refused");
    assert!(refused.to_string().contains("authentication failed"), "{refused}");
    let no_ca = presence_store_redis::RedisConfig { ca_file: None, ..config };
    RedisStore::open(&no_ca).expect_err("a certificate from an unknown CA is refused");
}
