//! Several real presenced processes on one real Redis Cluster (`store = "redis"`): what one node writes,
//! another reads; a token one node's key signed is accepted by all; a subscription made on one node is
//! notified of changes written on the others, each once, in order; and a node killed with SIGKILL loses
//! nothing it acknowledged.

use std::path::Path;
use std::time::Duration;

use hyper::Method;
use presence_testkit::binary::Running;
use presence_testkit::deployment::{call, set_presence, Deployment};
use presence_testkit::receiver::Receiver;
use presence_testkit::{ADELE, ALEX};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_presenced");
const USERS: [&str; 4] = [ADELE, ALEX, "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"];

fn deploy(webhook_ca: Option<&str>, test_clock: bool) -> Deployment {
    Deployment::new(Path::new(BINARY), webhook_ca, test_clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_writes_every_node_reads() {
    let deployment = deploy(None, false);
    let (a, b) = (deployment.start(0), deployment.start(1));
    // Minted with node A's key, accepted by node B: the nodes share the key file.
    let writer = deployment.token(0, &[]);
    let reader = deployment.token(1, &["--roles", "Presence.Read.All"]);

    let pairs = [("Busy", "InACall"), ("DoNotDisturb", "Presenting"), ("Away", "Away"), ("Available", "Available")];
    for (index, (user, (availability, activity))) in USERS.iter().zip(pairs).enumerate() {
        let node = if index % 2 == 0 { &a } else { &b };
        assert_eq!(set_presence(node, &writer, user, availability, activity).await, 200);
    }
    assert!(deployment.primaries_holding("*u:*").len() >= 2, "the users' records spread over the primaries");

    for node in [&a, &b] {
        let body = json!({ "ids": USERS });
        let (status, many) =
            call(node, Method::POST, "/v1.0/communications/getPresencesByUserId", &reader, Some(body)).await;
        assert_eq!(status, 200, "{many}");
        let shown: Vec<(&str, &str, &str)> = many["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|presence| {
                (
                    presence["id"].as_str().unwrap(),
                    presence["availability"].as_str().unwrap(),
                    presence["activity"].as_str().unwrap(),
                )
            })
            .collect();
        let expected: Vec<(&str, &str, &str)> =
            USERS.iter().zip(pairs).map(|(user, (availability, activity))| (*user, availability, activity)).collect();
        assert_eq!(shown, expected, "every user, whichever node wrote it");
    }

    // One user written by both nodes in turn: each write sees the last, and sequence numbers increase.
    let mut sequences = Vec::new();
    for (round, (availability, activity)) in
        [("Available", "Available"), ("Busy", "InAConferenceCall"), ("Away", "Away")].iter().enumerate()
    {
        let (writer_node, reader_node) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        assert_eq!(set_presence(writer_node, &writer, ADELE, availability, activity).await, 200);
        let (status, presence) =
            call(reader_node, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &reader, None).await;
        assert_eq!(status, 200);
        assert_eq!(
            (presence["availability"].as_str(), presence["activity"].as_str()),
            (Some(*availability), Some(*activity))
        );
        sequences.push(presence["sequenceNumber"].as_str().unwrap().to_owned());
    }
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "sequence numbers increase across nodes: {sequences:?}"
    );

    // A status message set on B, read on A.
    let note = json!({ "statusMessage": { "message": { "content": "Written on B", "contentType": "text" } } });
    let path = format!("/v1.0/users/{ALEX}/presence/setStatusMessage");
    assert_eq!(call(&b, Method::POST, &path, &writer, Some(note)).await.0, 200);
    let (_, alex) = call(&a, Method::GET, &format!("/v1.0/users/{ALEX}/presence"), &reader, None).await;
    assert_eq!(alex["statusMessage"]["message"]["content"], "Written on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_on_one_node_hears_changes_written_on_any_node_once_and_in_order() {
    let Watched { receiver, deployment: _deployment, a, b, writer, reader, id, settled } =
        Watched::start(false, 50).await;

    // Each differs from the one before (and from the sentinels), so each is a visible change.
    let pairs = [
        ("Busy", "InACall"),
        ("DoNotDisturb", "Presenting"),
        ("Away", "Away"),
        ("Available", "Available"),
        ("Busy", "InACall"),
        ("DoNotDisturb", "Presenting"),
    ];
    for (round, (availability, activity)) in pairs.iter().enumerate() {
        let node = if round % 2 == 0 { &a } else { &b };
        assert_eq!(set_presence(node, &writer, ADELE, availability, activity).await, 200);
    }
    let (_, now) = call(&b, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &reader, None).await;
    let last = now["sequenceNumber"].as_str().unwrap();
    wait_for_sequence(&receiver, last).await;
    let items = receiver.items("/hook");
    let delivered = &items[settled..];
    assert!(delivered.iter().all(|item| item_is(item, &id)), "{delivered:#?}");
    let sequences: Vec<&str> =
        delivered.iter().map(|item| item["resourceData"]["sequenceNumber"].as_str().unwrap()).collect();
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sequences, sorted, "in order, each once: {delivered:#?}");
    assert_eq!(sequences.len(), pairs.len(), "one notification per change: {delivered:#?}");
    assert_eq!(sequences.last().copied(), Some(last), "the last one is the current version");

    // Nothing else arrives meanwhile: a sentinel change written later is the only item after them.
    let after = settle(&receiver, &b, &writer, &reader).await;
    assert_eq!(after, settled + pairs.len() + 1, "a change was notified twice: {:#?}", receiver.items("/hook"));
}

/// Two nodes, a receiver, and a subscription to Adele's presence made on node A that both nodes know,
/// with every change so far delivered.
struct Watched {
    receiver: Receiver,
    deployment: Deployment,
    a: Running,
    b: Running,
    writer: String,
    reader: String,
    id: String,
    /// Items delivered so far.
    settled: usize,
}

impl Watched {
    /// With shared test clocks when `test_clock`; the subscription lasts `minutes`.
    async fn start(test_clock: bool, minutes: i64) -> Watched {
        let receiver = Receiver::start().await;
        let deployment = deploy(Some(receiver.ca_pem.as_str()), test_clock);
        let (a, b) = (deployment.start(0), deployment.start(1));
        let writer = deployment.token(0, &[]);
        let reader = deployment.token(1, &["--roles", "Presence.Read.All"]);
        let id = subscribe(&receiver, &a, &reader, minutes).await;
        let settled = known_everywhere(&receiver, &a, &b, &id, &writer, &reader).await;
        Watched { receiver, deployment, a, b, writer, reader, id, settled }
    }
}

/// Subscribes `receiver`'s `/hook` to Adele's presence on `node` for `minutes` and answers the
/// subscription's id.
async fn subscribe(receiver: &Receiver, node: &Running, reader: &str, minutes: i64) -> String {
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(minutes)).to_string();
    let subscription = json!({
        "changeType": "updated",
        "resource": format!("communications/presences/{ADELE}"),
        "notificationUrl": format!("{}/hook", receiver.base),
        "expirationDateTime": expiration,
        "clientState": "cluster",
    });
    let (status, created) = call(node, Method::POST, "/v1.0/subscriptions", reader, Some(subscription)).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// Writes a change on node `b` right after subscription `id` was made on node `a`, and a sentinel on `a`;
/// answers how many items arrived once both are delivered. Node B's writes first follow the registry's
/// change log when it moved, so even its first write after the subscription was made is notified.
async fn known_everywhere(
    receiver: &Receiver,
    a: &Running,
    b: &Running,
    id: &str,
    writer: &str,
    reader: &str,
) -> usize {
    assert_eq!(set_presence(b, writer, ADELE, "Available", "Available").await, 200);
    // A queue is delivered in order: once a change written on A last is delivered, all before it are.
    let settled = settle(receiver, a, writer, reader).await;
    assert_eq!(settled, 2, "node B's first change was notified: {:#?}", receiver.items("/hook"));
    let (status, seen) = call(b, Method::GET, &format!("/v1.0/subscriptions/{id}"), reader, None).await;
    assert_eq!(status, 200, "node B reads the subscription from the store: {seen}");
    settled
}

/// Waits (at most 20 s) until no node has a notification queued: every delivery was acknowledged, not
/// only received. A queue's lease is kept in presence time, so moving the clock past it while a delivery
/// awaits its acknowledgement lets another node deliver the queue again (at least once, as after a crash).
async fn acknowledged(nodes: &[&Running]) {
    let client = presence_testkit::binary::client();
    for _ in 0..1000 {
        let mut idle = true;
        for node in nodes {
            let (status, metrics) = presence_testkit::binary::get_text(&client, &node.base, "/metrics").await;
            assert_eq!(status, 200, "{metrics}");
            idle &= metrics.lines().any(|line| line == "presenced_queued_notifications 0");
        }
        if idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("notifications stayed queued");
}

/// Moves the shared test clock forward on `node` and waits until `other` follows.
async fn advance(node: &Running, other: &Running, seconds: u64) {
    let target = advance_alone(node, seconds).await;
    for _ in 0..500 {
        let (_, clock) = call(other, Method::GET, "/_test/clock", "", None).await;
        if clock["epochMilliseconds"].as_i64().unwrap() >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the other node's test clock did not follow to {target}");
}

/// Adele's presence on `node`: availability, activity and sequence number.
async fn adele(node: &Running, reader: &str) -> (String, String, String) {
    let (status, presence) = call(node, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), reader, None).await;
    assert_eq!(status, 200, "{presence}");
    let text = |field: &str| presence[field].as_str().unwrap().to_owned();
    (text("availability"), text("activity"), text("sequenceNumber"))
}

/// Writes a sentinel change of Adele on `node` and waits until it is delivered: everything queued before
/// it was delivered too. Answers how many items arrived in all, the sentinel's last.
async fn settle(receiver: &Receiver, node: &Running, writer: &str, reader: &str) -> usize {
    assert_eq!(set_presence(node, writer, ADELE, "Busy", "InAConferenceCall").await, 200);
    let (_, now) = call(node, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), reader, None).await;
    let sequence = now["sequenceNumber"].as_str().unwrap();
    wait_for_sequence(receiver, sequence).await;
    let items = receiver.items("/hook");
    assert_eq!(items.last().unwrap()["resourceData"]["sequenceNumber"], sequence, "the sentinel came last: {items:#?}");
    items.len()
}

/// Waits (at most 20 s) until the change of `sequence` was delivered.
async fn wait_for_sequence(receiver: &Receiver, sequence: &str) {
    for _ in 0..1000 {
        if receiver.items("/hook").iter().any(|item| item["resourceData"]["sequenceNumber"] == sequence) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the change {sequence} was never delivered: {:#?}", receiver.items("/hook"));
}

fn item_is(item: &Value, subscription: &str) -> bool {
    item["subscriptionId"] == subscription && item["clientState"] == "cluster"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fades_and_expiry_fire_once_across_nodes_and_a_killed_node_s_users_fade_on_another() {
    let Watched { receiver, deployment: _deployment, a, b, writer, reader, id: _, settled } =
        Watched::start(true, 600).await;

    // Written on B; both nodes run timers on the shared clock, moved on A: each change once.
    assert_eq!(set_presence(&b, &writer, ADELE, "Available", "Available").await, 200);
    let mut expected = vec![adele(&b, &reader).await];
    wait_for_sequence(&receiver, &expected[0].2).await;
    acknowledged(&[&a, &b]).await;
    for (seconds, availability, activity) in
        [(300, "Available", "AvailableInactive"), (300, "Away", "Away"), (3000, "Offline", "Offline")]
    {
        advance(&a, &b, seconds).await;
        let now = adele(&b, &reader).await;
        assert_eq!((now.0.as_str(), now.1.as_str()), (availability, activity));
        wait_for_sequence(&receiver, &now.2).await;
        acknowledged(&[&a, &b]).await;
        expected.push(now);
    }
    let items = receiver.items("/hook");
    let sequences: Vec<&str> =
        items[settled..].iter().map(|item| item["resourceData"]["sequenceNumber"].as_str().unwrap()).collect();
    let expected_sequences: Vec<&str> = expected.iter().map(|(_, _, sequence)| sequence.as_str()).collect();
    assert_eq!(sequences, expected_sequences, "the write, the fade, away and the expiry, each once");

    // Node A dies (SIGKILL) right after a write: node B's timers fade the user A wrote.
    assert_eq!(set_presence(&a, &writer, ADELE, "Available", "Available").await, 200);
    let written = adele(&b, &reader).await;
    wait_for_sequence(&receiver, &written.2).await;
    acknowledged(&[&a, &b]).await;
    drop(a);
    advance_alone(&b, 300).await;
    let faded = adele(&b, &reader).await;
    assert_eq!((faded.0.as_str(), faded.1.as_str()), ("Available", "AvailableInactive"));
    wait_for_sequence(&receiver, &faded.2).await;
    let after = settle(&receiver, &b, &writer, &reader).await;
    assert_eq!(after, settled + expected.len() + 3, "each change once: {:#?}", &receiver.items("/hook")[settled..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_queued_deliveries_are_taken_over_once_its_lease_ends() {
    let Watched { receiver, deployment: _deployment, a, b, writer, reader, id: _, settled: _ } =
        Watched::start(true, 600).await;

    // The endpoint refuses: node A, which queued the change, holds the queue's lease and retries.
    receiver.answer_with(503);
    assert_eq!(set_presence(&a, &writer, ADELE, "Available", "Available").await, 200);
    let written = adele(&b, &reader).await;
    wait_for_sequence(&receiver, &written.2).await;
    let killed = std::time::Instant::now();
    drop(a); // SIGKILL with the notification queued and its lease held
    receiver.answer_with(202);
    // A's lease ends in presence time (the delivery timeout and a margin); node B's sweep finds the queue.
    advance_alone(&b, 60).await;
    let delivered = loop {
        let accepted: Vec<_> = receiver
            .posts("/hook")
            .into_iter()
            .filter(|post| post.at > killed)
            .flat_map(|post| post.body["value"].as_array().cloned().unwrap_or_default())
            .collect();
        if accepted.iter().any(|item| item["resourceData"]["sequenceNumber"] == written.2.as_str()) {
            break accepted;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "node B never delivered node A's queue");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "node B delivered node A's queued notification {:.1} s after A was killed",
        killed.elapsed().as_secs_f64()
    );
    let sequences: Vec<&str> =
        delivered.iter().map(|item| item["resourceData"]["sequenceNumber"].as_str().unwrap()).collect();
    assert_eq!(sequences, [written.2.as_str()], "delivered once");
}

/// Moves the test clock of `node` (without waiting for other nodes to follow); answers the instant it
/// moved to.
async fn advance_alone(node: &Running, seconds: u64) -> i64 {
    let (status, moved) =
        call(node, Method::POST, "/_test/clock/advance", "", Some(json!({ "seconds": seconds }))).await;
    assert_eq!(status, 200, "{moved}");
    moved["epochMilliseconds"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_s_throttling_budget_is_the_deployment_s() {
    // Ten presence requests a day per application, whichever node serves them.
    let deployment = deploy(None, false);
    let limits = ["--set", "throttle_limit=10", "--set", "throttle_window_seconds=86400"];
    let (a, b) = (deployment.start_with(0, &limits), deployment.start_with(1, &limits));
    let reader = deployment.token(0, &["--roles", "Presence.Read.All"]);
    let day = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    let started = day();
    let get = |node: &Running| {
        let (base, reader) = (node.base.clone(), reader.clone());
        async move {
            let path = format!("/v1.0/users/{ADELE}/presence");
            let client = presence_testkit::binary::client();
            presence_testkit::binary::call(&client, &base, Method::GET, &path, &reader, Value::Null).await
        }
    };
    // Each node's counts reach the others within a tenth of a second; a second is ample.
    let synced = || tokio::time::sleep(Duration::from_secs(1));
    assert_eq!(get(&b).await.0, 200, "B's first request");
    for _ in 0..6 {
        assert_eq!(get(&a).await.0, 200);
    }
    synced().await;
    for _ in 0..3 {
        assert_eq!(get(&b).await.0, 200, "B admits what is left of the budget");
    }
    let (status, refused) = get(&b).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (429, Some("TooManyRequests")), "{refused}");
    synced().await;
    assert_eq!(get(&a).await.0, 429, "A counts B's requests too");
    assert_eq!(day(), started, "the test ran across midnight (UTC), where the budget starts again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_of_one_node_shows_changes_made_on_the_other() {
    use http_body_util::BodyExt;

    let deployment = deploy(None, false);
    let (a, b) = (deployment.start(0), deployment.start(1));
    let writer = deployment.token(0, &[]);
    let reader = deployment.token(1, &["--roles", "Presence.Read.All"]);
    let request = hyper::Request::builder()
        .uri(format!("{}/board/events", b.base))
        .header("authorization", format!("Bearer {reader}"))
        .body(http_body_util::Full::new(hyper::body::Bytes::new()))
        .unwrap();
    let response = presence_testkit::binary::client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = String::new();
    // Node B's board listens once its stream is open (the `ready` event); the change is made on node A.
    let shown = tokio::time::timeout(Duration::from_secs(20), async {
        let mut written = false;
        let mut round = 0;
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if block.contains("event: ready") {
                    written = true;
                }
                if block.contains("event: presence") {
                    let data = block.lines().find_map(|line| line.strip_prefix("data: ")).unwrap().to_owned();
                    return serde_json::from_str::<Value>(&data).unwrap();
                }
                continue;
            }
            if written {
                // Each a visible change: the node follows others' changes from when its board listens.
                let (availability, activity) = if round % 2 == 0 { ("Busy", "InACall") } else { ("Away", "Away") };
                assert_eq!(set_presence(&a, &writer, ADELE, availability, activity).await, 200);
                round += 1;
            }
            let frame = tokio::time::timeout(Duration::from_millis(500), body.frame()).await;
            if let Ok(frame) = frame {
                let frame = frame.expect("the stream ended").unwrap();
                if let Ok(data) = frame.into_data() {
                    text.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
        }
    })
    .await
    .expect("node B's board never showed node A's change");
    assert_eq!(shown["id"].as_str(), Some(ADELE));
    assert!(["Busy", "Away"].contains(&shown["availability"].as_str().unwrap()), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_use_a_cluster_that_speaks_only_tls_to_its_acl_user() {
    let deployment = deploy(None, false);
    let secure = presence_store_redis::testing::secure_cluster();
    let urls: Vec<String> = secure.urls.iter().map(|url| format!("{url:?}")).collect();
    let settings = [
        format!("redis_urls=[{}]", urls.join(", ")),
        "redis_username=\"presenced\"".to_owned(),
        format!("redis_password={:?}", secure.password()),
        format!("redis_ca_file={:?}", secure.ca_file().to_str().unwrap()),
    ];
    let mut extra = Vec::new();
    for setting in &settings {
        extra.extend(["--set", setting.as_str()]);
    }
    let (a, b) = (deployment.start_with(0, &extra), deployment.start_with(1, &extra));
    let token = deployment.token(0, &[]);
    assert_eq!(set_presence(&a, &token, ADELE, "Busy", "InACall").await, 200);
    let (status, presence) = call(&b, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &token, None).await;
    assert_eq!(status, 200, "{presence}");
    assert_eq!((presence["availability"].as_str(), presence["activity"].as_str()), (Some("Busy"), Some("InACall")));
}
