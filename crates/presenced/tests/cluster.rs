//! Several real presenced processes on one real Redis Cluster (`store = "redis"`): what one node writes,
//! another reads; a token one node's key signed is accepted by all; a subscription made on one node is
//! notified of changes written on the others, each once, in order; and a node killed with SIGKILL loses
//! nothing it acknowledged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Method;
use presence_store_redis::testing;
use presence_testkit::binary::{self, Running};
use presence_testkit::receiver::Receiver;
use presence_testkit::{ADELE, ALEX, APP};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_presenced");
const USERS: [&str; 4] = [ADELE, ALEX, "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"];

/// Nodes sharing one configuration file: one cluster, one key prefix, one signing key.
struct Deployment {
    dir: tempfile::TempDir,
    config: PathBuf,
    prefix: String,
}

impl Deployment {
    /// A deployment on the test cluster under a fresh prefix; subscriber endpoints are trusted with
    /// `webhook_ca` (PEM) when given.
    fn new(webhook_ca: Option<&[u8]>) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let prefix = testing::prefix();
        let urls: Vec<String> = testing::cluster().urls.iter().map(|url| format!("{url:?}")).collect();
        let mut config = include_str!("../../../presenced.example.toml")
            .replace("store = \"sqlite\"", "store = \"redis\"")
            .replace("redis_urls = []", &format!("redis_urls = [{}]", urls.join(", ")))
            .replace("redis_key_prefix = \"pd:\"", &format!("redis_key_prefix = {prefix:?}"))
            .replace(
                "# signing_key_file = \"/etc/presenced/signing-key.pem\"",
                &format!("signing_key_file = {:?}", dir.path().join("signing-key.pem").to_str().unwrap()),
            );
        if let Some(ca) = webhook_ca {
            let ca_file = dir.path().join("webhook-ca.pem");
            std::fs::write(&ca_file, ca).unwrap();
            config =
                config.replace("notification_allow_internal = false", "notification_allow_internal = true").replace(
                    "# notification_ca_file = \"/etc/presenced/webhook-ca.pem\"",
                    &format!("notification_ca_file = {:?}", ca_file.to_str().unwrap()),
                );
        }
        let path = dir.path().join("presenced.toml");
        std::fs::write(&path, config).unwrap();
        Deployment { dir, config: path, prefix }
    }

    fn global(&self, node: usize) -> Vec<String> {
        let data = self.dir.path().join(format!("node-{node}"));
        vec![
            "--config".into(),
            self.config.to_str().unwrap().into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
        ]
    }

    /// Starts node `node` (its own data directory) and waits until it accepts connections.
    fn start(&self, node: usize) -> Running {
        let global = self.global(node);
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        binary::start(Path::new(BINARY), &global, Duration::from_secs(60))
    }

    /// A token minted on node `node`'s machine (`presenced token`).
    fn token(&self, node: usize, extra: &[&str]) -> String {
        let global = self.global(node);
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        binary::token(Path::new(BINARY), &global, extra)
    }
}

async fn call(node: &Running, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    binary::call(&binary::client(), &node.base, method, path, token, body.unwrap_or(Value::Null)).await
}

async fn set_presence(node: &Running, token: &str, user: &str, availability: &str, activity: &str) -> u16 {
    let body =
        json!({ "sessionId": APP, "availability": availability, "activity": activity, "expirationDuration": "PT1H" });
    let (status, answer) =
        call(node, Method::POST, &format!("/v1.0/users/{user}/presence/setPresence"), token, Some(body)).await;
    assert!(status == 200 || answer.is_null(), "{availability}/{activity}: {answer}");
    status
}

/// The primaries' ports holding at least one user record of `prefix`.
fn nodes_holding_records(prefix: &str) -> usize {
    testing::cluster()
        .ports()
        .into_iter()
        .filter(|port| {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            let mut connection = client.get_connection().unwrap();
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connection).unwrap();
            let primary = matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master");
            let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*u:*")).query(&mut connection).unwrap();
            primary && !keys.is_empty()
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_node_writes_every_node_reads() {
    let deployment = Deployment::new(None);
    let (a, b) = (deployment.start(0), deployment.start(1));
    // Minted with node A's key, accepted by node B: the nodes share the key file.
    let writer = deployment.token(0, &[]);
    let reader = deployment.token(1, &["--roles", "Presence.Read.All"]);

    let pairs = [("Busy", "InACall"), ("DoNotDisturb", "Presenting"), ("Away", "Away"), ("Available", "Available")];
    for (index, (user, (availability, activity))) in USERS.iter().zip(pairs).enumerate() {
        let node = if index % 2 == 0 { &a } else { &b };
        assert_eq!(set_presence(node, &writer, user, availability, activity).await, 200);
    }
    assert!(nodes_holding_records(&deployment.prefix) >= 2, "the users' records spread over the primaries");

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
    let receiver = Receiver::start().await;
    let deployment = Deployment::new(Some(receiver.ca_pem.as_bytes()));
    let (a, b) = (deployment.start(0), deployment.start(1));
    let writer = deployment.token(0, &[]);
    let reader = deployment.token(0, &["--roles", "Presence.Read.All"]);
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(30)).to_string();
    let subscription = json!({
        "changeType": "updated",
        "resource": format!("communications/presences/{ADELE}"),
        "notificationUrl": format!("{}/hook", receiver.base),
        "expirationDateTime": expiration,
        "clientState": "cluster",
    });
    let (status, created) = call(&a, Method::POST, "/v1.0/subscriptions", &reader, Some(subscription)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // Node B learns of the subscription from the registry's change log, which it follows every second:
    // until then its writes notify nobody. Write on B until one of its changes is notified.
    let (status, seen) = call(&b, Method::GET, &format!("/v1.0/subscriptions/{id}"), &reader, None).await;
    assert_eq!(status, 200, "node B reads the subscription from the store: {seen}");
    for round in 0.. {
        let (availability, activity) = if round % 2 == 0 { ("Available", "Available") } else { ("Away", "Away") };
        assert_eq!(set_presence(&b, &writer, ADELE, availability, activity).await, 200);
        if !receiver.items("/hook").is_empty() {
            break;
        }
        assert!(round < 100, "node B never notified the subscription made on node A");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A queue is delivered in order: once a change written on A last is delivered, all before it are.
    let settled = settle(&receiver, &a, &writer, &reader).await;

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
