//! Redis failures under load, on a real cluster of this test binary's own (failures here would disturb
//! other tests sharing a cluster): two presenced nodes take writes for every user while the primary
//! holding one user's shard is killed with SIGKILL (and restarted, as a supervisor would, once before the
//! cluster's node timeout and once after its replica took over), and then stopped with SIGSTOP for longer
//! than the node timeout, then continued. Afterwards:
//! no acknowledged write is lost, and the subscriber got every change of the user, in order (a
//! notification whose acknowledgement could not reach the store may come twice; the count is printed).
//! The figures (seconds unavailable, writes acknowledged) are printed (`--nocapture`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use presence_store_redis::testing;
use presence_testkit::binary::Running;
use presence_testkit::deployment::{call, set_presence, Deployment};
use presence_testkit::receiver::Receiver;
use presence_testkit::{ADELE, ALEX};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_presenced");
const USERS: [&str; 4] = [ADELE, ALEX, "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"];
const PAIRS: [(&str, &str); 2] = [("Available", "Available"), ("Busy", "InACall")];

/// One attempted write: which pair, and whether it was acknowledged, and when it was answered.
#[derive(Clone, Copy)]
struct Attempt {
    pair: usize,
    acknowledged: bool,
    status: u16,
    at: Instant,
}

/// Writers that set every user's presence in turn, on both nodes, until stopped, logging each attempt.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Vec<Attempt>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(nodes: &Arc<Vec<Running>>, writer: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(vec![Vec::new(); USERS.len()]));
        let tasks = (0..USERS.len())
            .map(|user| {
                let (stop, log, nodes, writer) = (stop.clone(), log.clone(), nodes.clone(), writer.to_owned());
                tokio::spawn(async move {
                    let mut round = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let pair = round % 2;
                        let node = &nodes[(round + user) % nodes.len()];
                        let (availability, activity) = PAIRS[pair];
                        let status = set_presence(node, &writer, USERS[user], availability, activity).await;
                        let attempt = Attempt { pair, acknowledged: status == 200, status, at: Instant::now() };
                        log.lock().unwrap()[user].push(attempt);
                        if !attempt.acknowledged {
                            // A client's back-off.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        round += 1;
                    }
                })
            })
            .collect();
        Load { stop, log, tasks }
    }

    async fn finish(self) -> Vec<Vec<Attempt>> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(self.log).ok().unwrap().into_inner().unwrap()
    }
}

/// The longest time, across users, that a user went without an acknowledged write after `since` (from
/// `since` to the first, or between two).
fn longest_outage(log: &[Vec<Attempt>], since: Instant) -> Duration {
    log.iter()
        .map(|attempts| {
            let mut last = since;
            let mut longest = Duration::ZERO;
            for attempt in attempts.iter().filter(|attempt| attempt.acknowledged && attempt.at >= since) {
                longest = longest.max(attempt.at - last);
                last = attempt.at;
            }
            longest
        })
        .max()
        .unwrap_or_default()
}

/// Users whose stored presence is neither their last acknowledged write nor a later attempt (which may
/// have been applied without being acknowledged): acknowledged writes lost.
async fn lost_writes(log: &[Vec<Attempt>], node: &Running, reader: &str) -> usize {
    let mut lost = 0;
    for (user, attempts) in USERS.iter().zip(log) {
        let (status, presence) = call(node, Method::GET, &format!("/v1.0/users/{user}/presence"), reader, None).await;
        assert_eq!(status, 200, "{presence}");
        let shown = (presence["availability"].as_str().unwrap(), presence["activity"].as_str().unwrap());
        let Some(last) = attempts.iter().rposition(|attempt| attempt.acknowledged) else { continue };
        let possible: Vec<(&str, &str)> = attempts[last..].iter().map(|attempt| PAIRS[attempt.pair]).collect();
        if !possible.contains(&shown) {
            lost += 1;
        }
    }
    lost
}

/// Duplicated and missing sequence numbers among the notified changes (one per visible change).
fn duplicates_and_gaps(items: &[Value]) -> (usize, usize) {
    let sequences: Vec<u64> =
        items.iter().map(|item| item["resourceData"]["sequenceNumber"].as_str().unwrap().parse().unwrap()).collect();
    let mut duplicates = 0;
    let mut gaps = 0;
    for pair in sequences.windows(2) {
        if pair[1] <= pair[0] {
            duplicates += 1;
        } else {
            gaps += usize::try_from(pair[1] - pair[0] - 1).unwrap();
        }
    }
    (duplicates, gaps)
}

/// Writes a sentinel change of Adele on `node` and waits (bounded) until it is delivered. Answers all items.
async fn settle(receiver: &Receiver, node: &Running, writer: &str, reader: &str, pair: (&str, &str)) -> Vec<Value> {
    for _ in 0..100 {
        if set_presence(node, writer, ADELE, pair.0, pair.1).await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, now) = call(node, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), reader, None).await;
    let sequence = now["sequenceNumber"].as_str().unwrap().to_owned();
    for _ in 0..3000 {
        let items = receiver.items("/hook");
        if items.iter().any(|item| item["resourceData"]["sequenceNumber"] == sequence.as_str()) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the change {sequence} was never delivered");
}

/// What happens to the primary holding Adele's shard: killed and restarted after so many seconds, or stopped
/// and continued after so many.
#[derive(Clone, Copy)]
enum Fault {
    Kill(u64),
    Stop(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_or_stopped_under_load_loses_no_acknowledged_write_and_no_notification() {
    let cluster = testing::cluster();
    let receiver = Receiver::start().await;
    let deployment = Deployment::new(Path::new(BINARY), Some(receiver.ca_pem.as_str()), false);
    let nodes = Arc::new(vec![deployment.start(0), deployment.start(1)]);
    let writer = deployment.token(0, &[]);
    let reader = deployment.token(0, &["--roles", "Presence.Read.All"]);
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(50)).to_string();
    let subscription = json!({
        "changeType": "updated",
        "resource": format!("communications/presences/{ADELE}"),
        "notificationUrl": format!("{}/hook", receiver.base),
        "expirationDateTime": expiration,
        "clientState": "failover",
    });
    let (status, created) = call(&nodes[0], Method::POST, "/v1.0/subscriptions", &reader, Some(subscription)).await;
    assert_eq!(status, 201, "{created}");
    // Both nodes know the subscription once a change written on each is notified.
    for node in nodes.iter() {
        let before = receiver.items("/hook").len();
        for round in 0..100 {
            let pair = PAIRS[round % 2];
            assert_eq!(set_presence(node, &writer, ADELE, pair.0, pair.1).await, 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
            if receiver.items("/hook").len() > before {
                break;
            }
        }
    }
    let settled = settle(&receiver, &nodes[0], &writer, &reader, ("Away", "Away")).await.len();

    let scenarios = [
        ("SIGKILL, restarted after 1 s (before the node timeout)", Fault::Kill(1)),
        ("SIGKILL, restarted after 5 s (the replica took over)", Fault::Kill(5)),
        ("SIGSTOP for 6 s, then SIGCONT", Fault::Stop(6)),
    ];
    for (scenario, fault) in scenarios {
        let adele_record = format!("*u:*{ADELE}");
        let primary = *deployment.primaries_holding(&adele_record).first().expect("a primary holds Adele");
        let node = cluster.node_on(primary);
        let load = Load::start(&nodes, &writer);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let failed_at = Instant::now();
        match fault {
            Fault::Stop(seconds) => {
                cluster.signal(node, "STOP");
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                cluster.signal(node, "CONT");
            }
            Fault::Kill(seconds) => {
                cluster.signal(node, "KILL");
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                cluster.restart(node);
            }
        }
        // Until every user's writes are acknowledged again for a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let recovered = load.log.lock().unwrap().iter().all(|attempts| {
                attempts.iter().rev().take(5).filter(|attempt| attempt.acknowledged).count() == 5
                    && attempts.last().is_some_and(|attempt| attempt.at > failed_at + Duration::from_secs(1))
            });
            if recovered {
                break;
            }
            if Instant::now() > deadline {
                let log = load.log.lock().unwrap();
                let last: Vec<Vec<(u16, u128)>> = log
                    .iter()
                    .map(|attempts| {
                        attempts.iter().rev().take(5).map(|a| (a.status, (a.at - failed_at).as_millis())).collect()
                    })
                    .collect();
                panic!("{scenario}: writes did not resume within a minute: last attempts per user {last:?}");
            }
        }
        let log = load.finish().await;
        let outage = longest_outage(&log, failed_at);
        let acknowledged: usize = log.iter().map(|attempts| attempts.iter().filter(|a| a.acknowledged).count()).sum();
        let refused: usize = log.iter().map(|attempts| attempts.iter().filter(|a| !a.acknowledged).count()).sum();
        let lost = lost_writes(&log, &nodes[1], &reader).await;
        let items = settle(&receiver, &nodes[1], &writer, &reader, ("DoNotDisturb", "Presenting")).await;
        let (duplicates, gaps) = duplicates_and_gaps(&items[settled..]);
        println!(
            "{scenario}: {:.1} s without an acknowledged write (longest, of a user), {acknowledged} writes acknowledged, \
             {refused} refused, {lost} acknowledged writes lost, {} notifications, {duplicates} duplicated, \
             {gaps} missed",
            outage.as_secs_f64(),
            items.len() - settled,
        );
        assert_eq!(lost, 0, "{scenario}: acknowledged writes lost");
        // A notification delivered while its acknowledgement could not reach the store is delivered again:
        // at least once, never lost.
        assert_eq!(gaps, 0, "{scenario}: notifications missed");
    }
}
