//! The engine without HTTP: commands, reads, timers, subscriptions and delivery through a recording
//! webhook client, on a real SQLite store; and two engines sharing one store, as two nodes share one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_auth::{Issuer, SigningKey};
use presence_core::{Availability, Command, Timestamp};
use presence_notify::record::SubscriptionRecord;
use presence_notify::subscription::{SubscriptionLimits, SubscriptionRequest};
use presence_notify::target::TargetPolicy;
use presence_service::{
    ManualClock, Posted, Service, ServiceConfig, ServiceError, Subscriber, WebhookFuture, Webhooks, Workers,
};
use presence_store::{PresenceStore, QueueKind, SqliteStore, StoredSubscription, UserKey};
use serde_json::Value;
use url::Url;

const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
const ADELE: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
const ALEX: &str = "5e9a1c7b-8d44-4b0e-a3f2-6c1d2e3f4a5b";
/// 2026-09-01T10:00:00Z.
const START: i64 = 1_788_256_800_000;
const MINUTE: i64 = 60_000;

/// Subscriber endpoints that answer every handshake and every POST with 202 (unless told to time out or to
/// hold their answer), and keep what arrived.
#[derive(Default)]
struct Recorder {
    posts: Mutex<Vec<(String, Value)>>,
    arrived: tokio::sync::Notify,
    /// URLs whose POSTs time out at once (as if no answer came within the timeout).
    timing_out: Mutex<HashSet<String>>,
    /// URLs whose POSTs wait for [`Recorder::release`] (at most the timeout, then time out).
    held: Mutex<HashSet<String>>,
    released: tokio::sync::Notify,
    /// POSTs waiting for their answer now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl Webhooks for Recorder {
    fn validate<'a>(&'a self, _url: &'a Url, _timeout: Duration) -> WebhookFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn post<'a>(&'a self, url: &'a str, body: Vec<u8>, timeout: Duration) -> WebhookFuture<'a, Posted> {
        Box::pin(async move {
            let in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(in_flight, Ordering::SeqCst);
            let body = serde_json::from_slice(&body).expect("a JSON body");
            self.posts.lock().unwrap().push((url.to_owned(), body));
            self.arrived.notify_waiters();
            let released = async {
                loop {
                    let released = self.released.notified();
                    if !self.held.lock().unwrap().contains(url) {
                        return;
                    }
                    released.await;
                }
            };
            let answer = if self.timing_out.lock().unwrap().contains(url) {
                Posted::TimedOut
            } else {
                match tokio::time::timeout(timeout, released).await {
                    Ok(()) => Posted::Status(202),
                    Err(_) => Posted::TimedOut,
                }
            };
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        })
    }
}

impl Recorder {
    fn time_out(&self, url: &str) {
        self.timing_out.lock().unwrap().insert(url.to_owned());
    }

    fn hold(&self, url: &str) {
        self.held.lock().unwrap().insert(url.to_owned());
    }

    /// Answers the held POSTs to `url`, and the next ones at once.
    fn release(&self, url: &str) {
        self.held.lock().unwrap().remove(url);
        self.released.notify_waiters();
    }

    /// The bodies POSTed to `url` so far.
    fn posts_to(&self, url: &str) -> Vec<Value> {
        self.posts.lock().unwrap().iter().filter(|(to, _)| to == url).map(|(_, body)| body.clone()).collect()
    }

    /// Waits (at most 20 s) until `url` got `count` POSTs, and returns their bodies.
    async fn wait_posts(&self, url: &str, count: usize) -> Vec<Value> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                let posts = self.posts_to(url);
                if posts.len() >= count {
                    return posts;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("expected {count} POSTs to {url}, got {:?}", self.posts_to(url)))
    }

    /// The change notification items so far: (user, sequence number, subscription).
    fn changes(&self) -> Vec<(String, String, String)> {
        let posts = self.posts.lock().unwrap();
        posts
            .iter()
            .flat_map(|(_, body)| body["value"].as_array().cloned().unwrap_or_default())
            .filter(|item| item.get("lifecycleEvent").is_none())
            .map(|item| {
                let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
                (
                    text(&item["resourceData"]["id"]),
                    text(&item["resourceData"]["sequenceNumber"]),
                    text(&item["subscriptionId"]),
                )
            })
            .collect()
    }

    /// Waits (at most 20 s, a guard against a hang) until `count` change items arrived, and returns them.
    async fn wait_changes(&self, count: usize) -> Vec<(String, String, String)> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                let changes = self.changes();
                if changes.len() >= count {
                    return changes;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("expected {count} change notifications, got {:?}", self.changes()))
    }
}

fn config() -> ServiceConfig {
    ServiceConfig {
        limits: SubscriptionLimits { max_lifetime: Duration::from_secs(3600), targets: TargetPolicy::STRICT },
        delivery_timeout: Duration::from_secs(3),
        validation_timeout: Duration::from_secs(10),
        retry_window: Duration::from_secs(4 * 3600),
        max_subscriptions_per_app: 2,
        max_queued_per_subscription: 10_000,
        max_batch: 100,
        max_concurrent_deliveries: 8,
    }
}

/// One engine (a node) on `store`, with its workers running.
struct Node {
    service: Arc<Service>,
    _workers: Workers,
}

fn node(store: &Arc<SqliteStore>, clock: &Arc<ManualClock>, recorder: &Arc<Recorder>) -> Node {
    node_with(store, clock, recorder, config())
}

fn node_with(
    store: &Arc<SqliteStore>,
    clock: &Arc<ManualClock>,
    recorder: &Arc<Recorder>,
    config: ServiceConfig,
) -> Node {
    let issuer = Issuer::new(SigningKey::generate(), "https://login.presenced.test");
    let webhooks: Arc<dyn Webhooks> = recorder.clone();
    let service = Service::new(store.clone(), clock.clone(), Ok(webhooks), issuer, config);
    let workers = service.spawn_workers().expect("the engine starts");
    Node { service, _workers: workers }
}

/// A fresh store in a temporary directory, the clock at [`START`], and a recording endpoint.
struct Setup {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    recorder: Arc<Recorder>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    Setup {
        _dir: dir,
        store,
        clock: Arc::new(ManualClock::new(Timestamp(START))),
        recorder: Arc::new(Recorder::default()),
    }
}

fn key(user: &str) -> UserKey {
    UserKey::new(TENANT, user)
}

fn set_presence(availability: &str, activity: &str) -> Command {
    Command::set_presence(APP, Some(APP), Some(availability), Some(activity), Some("PT1H")).expect("valid")
}

fn subscriber() -> Subscriber {
    Subscriber { tenant_id: TENANT.into(), application_id: APP.into(), user_id: None }
}

/// Every id names a user.
async fn everyone(ids: Vec<String>) -> Result<Vec<bool>, ServiceError> {
    Ok(vec![true; ids.len()])
}

/// Only Adele is a user.
async fn only_adele(ids: Vec<String>) -> Result<Vec<bool>, ServiceError> {
    Ok(ids.iter().map(|id| id == ADELE).collect())
}

fn request(users: &[&str], minutes: i64) -> SubscriptionRequest {
    request_to(users, minutes, "https://hooks.example.org/presence")
}

/// A subscription to `users` for `minutes`, notified at `url`.
fn request_to(users: &[&str], minutes: i64, url: &str) -> SubscriptionRequest {
    let filter = users.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    SubscriptionRequest {
        change_type: Some("updated".into()),
        resource: Some(format!("communications/presences?$filter=id in ({filter})")),
        notification_url: Some(url.into()),
        expiration: Some(START + minutes * MINUTE),
        ..SubscriptionRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_read_back_and_notify_each_watcher_once_in_order() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node(&store, &clock, &recorder);
    let service = &node.service;

    let created =
        service.create_subscription(subscriber(), &request(&[ADELE], 60), "v1_2".into(), everyone).await.unwrap();
    service.apply(key(ADELE), set_presence("Busy", "InACall")).await.unwrap();
    service.apply(key(ADELE), set_presence("Busy", "InACall")).await.unwrap(); // a refresh: nothing visible
    service.apply(key(ALEX), set_presence("Away", "Away")).await.unwrap(); // not watched
    service.apply(key(ADELE), set_presence("Available", "Available")).await.unwrap();

    let presence = service.read(key(ADELE)).await.unwrap();
    assert_eq!(presence.availability, Availability::Available);
    let many = service.read_many(vec![key(ALEX), key("00000000-0000-4000-8000-000000000000")]).await.unwrap();
    assert_eq!((many[0].availability, many[1].availability), (Availability::Away, Availability::Offline));

    // Five idle minutes later Adele fades: a change no request made.
    clock.advance(5 * MINUTE);
    service.clock_moved();
    let changes = recorder.wait_changes(3).await;
    let sequences: Vec<&str> = changes.iter().map(|(_, sequence, _)| sequence.as_str()).collect();
    assert_eq!(sequences, ["00000000000000000001", "00000000000000000002", "00000000000000000003"]);
    assert!(changes.iter().all(|(user, _, subscription)| user == ADELE && *subscription == created.id));
    assert_eq!(service.read(key(ADELE)).await.unwrap().sequence_number, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_application_limit_holds_and_refused_requests_change_nothing() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node(&store, &clock, &recorder);
    let service = &node.service;
    for _ in 0..2 {
        service.create_subscription(subscriber(), &request(&[ADELE], 30), "v1_2".into(), everyone).await.unwrap();
    }
    let over = service.create_subscription(subscriber(), &request(&[ADELE], 30), "v1_2".into(), everyone).await;
    assert!(matches!(over, Err(ServiceError::SubscriptionLimit(2))), "{over:?}");
    let unknown = service.create_subscription(subscriber(), &request(&[ALEX], 30), "v1_2".into(), only_adele).await;
    assert!(matches!(unknown, Err(ServiceError::UnknownUser(ref id)) if id == ALEX), "{unknown:?}");
    let too_long = service.create_subscription(subscriber(), &request(&[ADELE], 61), "v1_2".into(), everyone).await;
    assert!(matches!(too_long, Err(ServiceError::Subscription(_))), "{too_long:?}");
    assert_eq!(store.subscriptions().unwrap().0.len(), 2, "refused creations stored nothing");
    let refused = service.apply(key(ADELE), Command::clear_presence(APP, Some(APP)).unwrap()).await;
    assert!(matches!(refused, Err(ServiceError::Command(_))), "{refused:?}");
    assert_eq!(store.get(&key(ADELE)).unwrap(), None, "a refused command wrote nothing");
}

/// A subscription record as another process would store it.
fn foreign_subscription(id: &str, users: &[&str]) -> StoredSubscription {
    let record = SubscriptionRecord {
        id: id.into(),
        tenant_id: TENANT.into(),
        application_id: APP.into(),
        user_id: None,
        resource: "communications/presences".into(),
        user_ids: users.iter().map(|user| (*user).to_owned()).collect(),
        notification_url: "https://hooks.example.org/other".into(),
        lifecycle_notification_url: None,
        renewed_at: START,
        expiration: START + 60 * MINUTE,
        client_state: None,
        include_resource_data: false,
        encryption_certificate: None,
        encryption_certificate_id: None,
        latest_supported_tls_version: "v1_2".into(),
        reauthorization_sent: false,
    };
    StoredSubscription {
        id: record.id.clone(),
        tenant_id: record.tenant_id.clone(),
        application_id: record.application_id.clone(),
        version: 0,
        body: record.encode(),
    }
}

/// Waits (at most 20 s) until `ready` holds, checking every 20 ms.
async fn eventually(what: &str, ready: impl Fn() -> bool) {
    let wait = async {
        while !ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.unwrap_or_else(|_| panic!("{what} did not happen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_another_process_makes_and_removes_are_learnt_from_the_store() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node(&store, &clock, &recorder);
    let service = &node.service;

    // Another process creates a subscription: this one learns it from the change log, and notifies it.
    let id = "4c1a9f0e-1111-4b2b-9c3d-2e4f5a6b7c8d";
    assert!(store.create_subscription(&foreign_subscription(id, &[ALEX]), 10).unwrap());
    eventually("learning of the subscription", || service.subscriptions_of(TENANT, APP).len() == 1).await;
    service.apply(key(ALEX), set_presence("Busy", "InACall")).await.unwrap();
    let changes = recorder.wait_changes(1).await;
    assert_eq!(changes[0].2, id);
    assert_eq!(recorder.posts.lock().unwrap()[0].0, "https://hooks.example.org/other");

    assert_eq!(service.reauthorize_subscription(id).await.unwrap().id, id);

    // Another process removes it: this one stops notifying it, and reauthorizing it answers not found at
    // once (the store decides, not this process's copy).
    assert!(store.remove_subscription(id, &mut |_| Some(Vec::new())).unwrap().is_some());
    let gone = service.reauthorize_subscription(id).await;
    assert!(matches!(gone, Err(ServiceError::SubscriptionNotFound(_))), "{gone:?}");
    eventually("learning of the removal", || service.subscriptions_of(TENANT, APP).is_empty()).await;
    assert_eq!(service.subscription(id).await.unwrap(), None);
    service.apply(key(ALEX), set_presence("Away", "Away")).await.unwrap();
    assert_eq!(recorder.changes().len(), 1, "a removed subscription was notified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_store_report_every_timer_change_once() {
    let Setup { _dir, store, clock, recorder } = setup();
    let (first, second) = (node(&store, &clock, &recorder), node(&store, &clock, &recorder));

    // 40 users, written through both nodes; a subscription made on the first watches them all.
    let users: Vec<String> = (0..40).map(|index| format!("00000000-0000-4000-8000-{index:012}")).collect();
    let ids: Vec<&str> = users.iter().map(String::as_str).collect();
    first.service.create_subscription(subscriber(), &request(&ids, 60), "v1_2".into(), everyone).await.unwrap();
    eventually("the second node learning the subscription", || second.service.subscriptions_of(TENANT, APP).len() == 1)
        .await;
    for (index, user) in users.iter().enumerate() {
        let node = if index % 2 == 0 { &first } else { &second };
        node.service.apply(key(user), set_presence("Available", "Available")).await.unwrap();
    }
    let written = recorder.wait_changes(40).await.len();
    assert_eq!(written, 40);
    // Delivered is not yet acknowledged: a delivery lease is kept in presence time, so moving the clock past
    // it before the acknowledgement lets the other node deliver the queue again (at least once, as after a
    // crash). Both nodes' queues are empty first.
    let idle = || first.service.counts().queued == 0 && second.service.counts().queued == 0;
    eventually("every delivery acknowledged", idle).await;

    // Each user fades twice (5 and 10 minutes); both nodes run timers, each change goes out once.
    for _ in 0..2 {
        clock.advance(5 * MINUTE);
        first.service.clock_moved();
        second.service.clock_moved();
    }
    let changes = recorder.wait_changes(120).await;
    let mut seen = std::collections::HashSet::new();
    for change in &changes {
        assert!(seen.insert(change.clone()), "reported twice: {change:?}");
    }
    for user in &users {
        let sequences: Vec<&str> =
            changes.iter().filter(|(id, _, _)| id == user).map(|(_, sequence, _)| sequence.as_str()).collect();
        assert_eq!(sequences, ["00000000000000000001", "00000000000000000002", "00000000000000000003"], "{user}");
    }
    // Nothing more arrives: wait for a later sentinel change and check that only it came.
    first.service.apply(key(&users[0]), set_presence("Busy", "InACall")).await.unwrap();
    assert_eq!(recorder.wait_changes(121).await.len(), 121);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_does_not_remove_a_subscription_renewed_meanwhile() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node(&store, &clock, &recorder);
    let service = &node.service;
    let created =
        service.create_subscription(subscriber(), &request(&[ADELE], 10), "v1_2".into(), everyone).await.unwrap();

    // Another process renews it for an hour; this one's copy still says it ends at 10 minutes.
    let renewed = store
        .update_subscription(&created.id, &mut |stored| {
            let mut record = SubscriptionRecord::decode(&stored.body).unwrap();
            record.expiration = START + 60 * MINUTE;
            stored.body = record.encode();
            Some(Vec::new())
        })
        .unwrap();
    assert!(renewed.is_some());
    clock.advance(10 * MINUTE);
    service.clock_moved();
    let renewed_here =
        || service.subscriptions_of(TENANT, APP).first().is_some_and(|record| record.expiration == START + 60 * MINUTE);
    eventually("learning of the renewal", renewed_here).await;
    assert!(store.subscription(&created.id).unwrap().is_some(), "the renewed subscription was removed");

    // At its new end it goes.
    clock.advance(50 * MINUTE);
    service.clock_moved();
    eventually("the removal at the new end", || service.subscriptions_of(TENANT, APP).is_empty()).await;
    assert!(store.subscription(&created.id).unwrap().is_none());
}

/// The origin whose deliveries the slow-endpoint tests make slow, and a healthy one.
const SLOW: &str = "https://slow.example.org";
const OTHER: &str = "https://other.example.org";

/// Room for the many subscriptions of one application the delivery tests make.
fn roomy() -> ServiceConfig {
    ServiceConfig { max_subscriptions_per_app: 100, ..config() }
}

/// Notification POSTs so far with `outcome` (delivered, timed_out...), from the engine's metrics.
fn posts_by_outcome(service: &Service, outcome: &str) -> u64 {
    let mut registry = prometheus_client::registry::Registry::default();
    service.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = format!("notification_posts_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|row| row.strip_prefix(&line)).map_or(0, |count| count.parse().unwrap())
}

/// Gives the [`SLOW`] origin `fast * changes` deliveries answered in time (`fast` subscriptions to Adele,
/// `changes` changes delivered one by one) and then `slow` that time out (as many subscriptions to Alex, one
/// change). Returns the fast subscriptions: (id, URL).
async fn slow_share(
    node: &Node,
    recorder: &Recorder,
    (fast, changes, slow): (usize, usize, usize),
    lifecycle: Option<&str>,
) -> Vec<(String, String)> {
    let service = &node.service;
    let mut subscriptions = Vec::new();
    for index in 0..fast {
        let url = format!("{SLOW}/fast/{index}");
        let mut request = request_to(&[ADELE], 60, &url);
        request.lifecycle_notification_url = lifecycle.map(str::to_owned);
        let created = service.create_subscription(subscriber(), &request, "v1_2".into(), everyone).await.unwrap();
        subscriptions.push((created.id, url));
    }
    for change in 0..changes {
        let (availability, activity) = if change % 2 == 0 { ("Busy", "InACall") } else { ("Available", "Available") };
        service.apply(key(ADELE), set_presence(availability, activity)).await.unwrap();
        for (_, url) in &subscriptions {
            recorder.wait_posts(url, change + 1).await;
        }
    }
    for index in 0..slow {
        let url = format!("{SLOW}/slow/{index}");
        recorder.time_out(&url);
        service
            .create_subscription(subscriber(), &request_to(&[ALEX], 60, &url), "v1_2".into(), everyone)
            .await
            .unwrap();
    }
    service.apply(key(ALEX), set_presence("Busy", "InACall")).await.unwrap();
    // Counted once each attempt is over (a POST is recorded when it arrives, before its answer).
    let counted = || {
        posts_by_outcome(service, "delivered") == (fast * changes) as u64
            && posts_by_outcome(service, "timed_out") == slow as u64
    };
    eventually("every delivery counted", counted).await;
    subscriptions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_ten_percent_slow_deliveries_is_delayed_until_its_window_ends() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node_with(&store, &clock, &recorder, roomy());
    let service = &node.service;
    // 90 deliveries in time, then 10 timeouts: 10% of 100, which delays the origin's notifications.
    let fast = slow_share(&node, &recorder, (9, 10, 10), None).await;
    let sentinel = format!("{OTHER}/sentinel");
    service
        .create_subscription(subscriber(), &request_to(&[ADELE], 60, &sentinel), "v1_2".into(), everyone)
        .await
        .unwrap();

    service.apply(key(ADELE), set_presence("DoNotDisturb", "Presenting")).await.unwrap();
    recorder.wait_posts(&sentinel, 1).await;
    // Nine minutes on (every retry of the timed-out queues fell due meanwhile), a later change reaches the
    // healthy origin; the slow one got nothing since.
    clock.advance(9 * MINUTE);
    service.clock_moved();
    service.apply(key(ADELE), set_presence("Away", "Away")).await.unwrap();
    recorder.wait_posts(&sentinel, 2).await;
    for (_, url) in &fast {
        assert_eq!(recorder.posts_to(url).len(), 10, "{url} was not delayed");
    }
    for index in 0..10 {
        assert_eq!(recorder.posts_to(&format!("{SLOW}/slow/{index}")).len(), 1, "a retry was not delayed");
    }

    // Ten minutes after the first delayed notification (when the counters reset too), both changes go.
    clock.advance(MINUTE);
    service.clock_moved();
    for (_, url) in &fast {
        let posts = recorder.wait_posts(url, 11).await;
        let items = posts[10]["value"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{url}: {items:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_fifteen_percent_slow_deliveries_is_dropped_with_missed_events() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node_with(&store, &clock, &recorder, roomy());
    let service = &node.service;
    // 85 deliveries in time, then 15 timeouts: 15% of 100, the share at which notifications are dropped.
    let lifecycle = format!("{OTHER}/lifecycle");
    let fast = slow_share(&node, &recorder, (5, 17, 15), Some(&lifecycle)).await;

    service.apply(key(ADELE), set_presence("DoNotDisturb", "Presenting")).await.unwrap();
    let posts = recorder.wait_posts(&lifecycle, fast.len()).await;
    let mut told: Vec<&str> = Vec::new();
    for item in posts.iter().flat_map(|post| post["value"].as_array().unwrap()) {
        assert_eq!(item["lifecycleEvent"], "missed", "{item}");
        told.push(item["subscriptionId"].as_str().unwrap());
    }
    told.sort_unstable();
    let mut expected: Vec<&str> = fast.iter().map(|(id, _)| id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(told, expected, "each dropped queue's subscription is told once");
    for (_, url) in &fast {
        assert_eq!(recorder.posts_to(url).len(), 17, "{url} got the dropped notification");
    }
    let changes_left = store.queue_lengths().unwrap().into_iter().filter(|(queue, _)| {
        queue.kind == QueueKind::Changes && fast.iter().any(|(id, _)| *id == queue.subscription_id)
    });
    assert_eq!(changes_left.count(), 0, "the dropped queues are empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_answer_holds_up_only_its_own_queue() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node(&store, &clock, &recorder);
    let service = &node.service;
    let (held, quick) = ("https://hooks.example.org/held", format!("{OTHER}/quick"));
    for url in [held, quick.as_str()] {
        service
            .create_subscription(subscriber(), &request_to(&[ADELE], 60, url), "v1_2".into(), everyone)
            .await
            .unwrap();
    }
    recorder.hold(held);
    service.apply(key(ADELE), set_presence("Busy", "InACall")).await.unwrap();
    recorder.wait_posts(held, 1).await;
    service.apply(key(ADELE), set_presence("Available", "Available")).await.unwrap();
    // Both changes reach the other subscriber while the first POST to the held one waits for its answer.
    let mut delivered = 0;
    while delivered < 2 {
        let arrived = recorder.arrived.notified();
        delivered = recorder.posts_to(&quick).iter().map(|post| post["value"].as_array().unwrap().len()).sum();
        if delivered < 2 {
            tokio::time::timeout(Duration::from_secs(20), arrived).await.expect("the quick subscriber is held up");
        }
    }
    assert_eq!(recorder.posts_to(held).len(), 1, "the held queue waits for its answer");
    recorder.release(held);
    let posts = recorder.wait_posts(held, 2).await;
    assert_eq!(posts[1]["value"].as_array().unwrap().len(), 1, "the second change, after the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_stay_within_max_concurrent_deliveries() {
    let Setup { _dir, store, clock, recorder } = setup();
    let config = ServiceConfig { max_concurrent_deliveries: 2, delivery_timeout: Duration::from_secs(30), ..roomy() };
    let node = node_with(&store, &clock, &recorder, config);
    let service = &node.service;
    let urls: Vec<String> = (0..4).map(|index| format!("https://hooks.example.org/held/{index}")).collect();
    for url in &urls {
        recorder.hold(url);
        service
            .create_subscription(subscriber(), &request_to(&[ADELE], 60, url), "v1_2".into(), everyone)
            .await
            .unwrap();
    }
    service.apply(key(ADELE), set_presence("Busy", "InACall")).await.unwrap();
    eventually("two POSTs waiting", || recorder.in_flight.load(Ordering::SeqCst) == 2).await;
    for url in &urls {
        recorder.release(url);
    }
    for url in &urls {
        recorder.wait_posts(url, 1).await;
    }
    assert_eq!(recorder.most_in_flight.load(Ordering::SeqCst), 2, "more than max_concurrent_deliveries at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_notifications_go_out_in_posts_of_notification_batch_size() {
    let Setup { _dir, store, clock, recorder } = setup();
    let node = node_with(&store, &clock, &recorder, ServiceConfig { max_batch: 2, ..config() });
    let service = &node.service;
    let url = "https://hooks.example.org/presence";
    service.create_subscription(subscriber(), &request(&[ADELE], 60), "v1_2".into(), everyone).await.unwrap();
    recorder.hold(url);
    service.apply(key(ADELE), set_presence("Busy", "InACall")).await.unwrap();
    recorder.wait_posts(url, 1).await;
    // Four more changes queue behind the POST that waits.
    for (availability, activity) in
        [("Available", "Available"), ("Away", "Away"), ("DoNotDisturb", "Presenting"), ("Busy", "InACall")]
    {
        service.apply(key(ADELE), set_presence(availability, activity)).await.unwrap();
    }
    recorder.release(url);
    let posts = recorder.wait_posts(url, 3).await;
    let sizes: Vec<usize> = posts.iter().map(|post| post["value"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [1, 2, 2]);
    let sequences: Vec<String> = recorder.changes().into_iter().map(|(_, sequence, _)| sequence).collect();
    let expected: Vec<String> = (1..=5).map(|sequence| format!("{sequence:020}")).collect();
    assert_eq!(sequences, expected, "in order, each once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fades_that_fell_due_while_no_engine_ran_are_notified_when_one_starts() {
    let Setup { _dir, store, clock, recorder } = setup();
    let before = node(&store, &clock, &recorder);
    before.service.create_subscription(subscriber(), &request(&[ADELE], 60), "v1_2".into(), everyone).await.unwrap();
    before.service.apply(key(ADELE), set_presence("Available", "Available")).await.unwrap();
    recorder.wait_changes(1).await;
    eventually("the delivery acknowledged", || before.service.counts().queued == 0).await;
    drop(before);

    // Eleven minutes with no engine: both fades (5 and 10 minutes) fall due unseen.
    clock.advance(11 * MINUTE);
    let after = node(&store, &clock, &recorder);
    let changes = recorder.wait_changes(3).await;
    let sequences: Vec<&str> = changes.iter().map(|(_, sequence, _)| sequence.as_str()).collect();
    assert_eq!(sequences, ["00000000000000000001", "00000000000000000002", "00000000000000000003"]);
    let presence = after.service.read(key(ADELE)).await.unwrap();
    assert_eq!(presence.availability, Availability::Away);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_delivery_in_flight_finish_and_leaves_one_that_cannot_queued() {
    let Setup { _dir, store, clock, recorder } = setup();
    let config = ServiceConfig { delivery_timeout: Duration::from_millis(500), ..config() };
    let url = "https://hooks.example.org/presence";
    let shutdown = |node: Node| tokio::spawn(async move { node.service.shutdown(node._workers).await });

    // Answered while the engine stops: delivered, acknowledged, nothing left queued.
    let first = node_with(&store, &clock, &recorder, config.clone());
    first.service.create_subscription(subscriber(), &request(&[ADELE], 60), "v1_2".into(), everyone).await.unwrap();
    recorder.hold(url);
    first.service.apply(key(ADELE), set_presence("Busy", "InACall")).await.unwrap();
    recorder.wait_posts(url, 1).await;
    let stopping = shutdown(first);
    recorder.release(url);
    tokio::time::timeout(Duration::from_secs(20), stopping).await.expect("shutdown finishes").unwrap();
    assert_eq!(store.queue_lengths().unwrap(), [], "the delivery in flight was acknowledged");

    // Never answered: the stop waits no longer than the delivery's timeout, and the notification stays
    // queued for the next start.
    let store = Arc::new(SqliteStore::open(_dir.path()).unwrap());
    let second = node_with(&store, &clock, &recorder, config.clone());
    recorder.hold(url);
    second.service.apply(key(ADELE), set_presence("Available", "Available")).await.unwrap();
    recorder.wait_posts(url, 2).await;
    let stopping = shutdown(second);
    tokio::time::timeout(Duration::from_secs(20), stopping).await.expect("shutdown finishes").unwrap();
    let queued: Vec<u64> = store.queue_lengths().unwrap().into_iter().map(|(_, length)| length).collect();
    assert_eq!(queued, [1], "the unanswered notification stays queued");
    recorder.release(url);
    let store = Arc::new(SqliteStore::open(_dir.path()).unwrap());
    clock.advance(MINUTE); // past the stopped engine's delivery lease
    let _third = node_with(&store, &clock, &recorder, config);
    let posts = recorder.wait_posts(url, 3).await;
    assert_eq!(posts[2]["value"][0]["resourceData"]["sequenceNumber"], "00000000000000000002");
}
