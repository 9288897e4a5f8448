//! Change-notification latency with 10,000 subscribed users (issue 4's benchmark).
//!
//! Starts the release binary (`target/release/presenced`, built first) on the embedded store with the test
//! clock, a local HTTPS webhook receiver in this process, and 16 bulk subscriptions covering 10,000 users.
//! Then measures, per notification, the time from the change to its arrival at the receiver:
//! - writes: every user gets a setPresence (64 concurrent clients); from the request's start to the
//!   arrival of its notification;
//! - timer-driven fades: the test clock moves 5 minutes, so all 10,000 Available sessions fade at once;
//!   from the clock's move to each arrival.
//!
//! Run: `cargo build --release && cargo run --release -p presenced --example notify_latency`
//! (`USERS=2000` for a smaller run).

#[path = "../../presence-api/tests/common/receiver.rs"]
mod receiver;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
const CONCURRENCY: usize = 64;

fn user_id(index: usize) -> String {
    format!("00000000-0000-4000-8000-{index:012}")
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn call(client: &HttpClient, base: &str, method: Method, path: &str, token: &str, body: Value) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut latencies: Vec<Duration>, expected: usize, elapsed: Duration) -> String {
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "| {name} | {}/{expected} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
        latencies.len() as f64 / elapsed.as_secs_f64(),
    )
}

/// Arrival instant of each (user, sequence number) notification so far.
fn arrivals(receiver: &receiver::Receiver) -> HashMap<(String, String), Instant> {
    let mut map = HashMap::new();
    for post in receiver.posts("/hook") {
        for item in post.body["value"].as_array().cloned().unwrap_or_default() {
            let user = item["resourceData"]["id"].as_str().unwrap_or_default().to_owned();
            let sequence = item["resourceData"]["sequenceNumber"].as_str().unwrap_or_default().to_owned();
            map.entry((user, sequence)).or_insert(post.at);
        }
    }
    map
}

async fn wait_for(receiver: &receiver::Receiver, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while receiver.items("/hook").len() < count {
        assert!(Instant::now() < deadline, "only {} of {count} notifications arrived", receiver.items("/hook").len());
        receiver.wait_items("/hook", (receiver.items("/hook").len() + 1).min(count)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users: usize = std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let binary = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("presenced");
    assert!(binary.exists(), "build the server first: cargo build --release ({} is missing)", binary.display());

    let receiver = receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &receiver.ca_pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nissuer = \"https://login.presenced.local\"\n\
         test_clock = true\nthrottle_limit = 0\nnotification_allow_internal = true\nnotification_ca_file = {:?}\n\
         [[tenants]]\nid = \"{TENANT}\"\ndisplayName = \"Bench\"\n[[tenants.apps]]\nid = \"{APP}\"\ndisplayName = \"Bench\"\n",
        dir.path().join("data").to_str().unwrap(),
        ca_file.to_str().unwrap()
    );
    for index in 0..users {
        let _ = write!(
            config,
            "[[tenants.users]]\nid = \"{}\"\nuserPrincipalName = \"user{index}@bench.example\"\ndisplayName = \"User {index}\"\n",
            user_id(index)
        );
    }
    let config_file = dir.path().join("presenced.toml");
    std::fs::write(&config_file, config).unwrap();
    let mut server = Command::new(&binary)
        .args(["--config", config_file.to_str().unwrap(), "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "presenced did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = Command::new(&binary).args(["--config", config_file.to_str().unwrap(), "token"]).output().unwrap();
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Subscriptions: bulk, 650 users each.
    let expiration = {
        let (_, clock) = call(&client, &base, Method::GET, "/_test/clock", "", Value::Null).await;
        let now = clock["epochMilliseconds"].as_i64().unwrap();
        jiff::Timestamp::from_millisecond(now + 55 * 60_000).unwrap().to_string()
    };
    let ids: Vec<String> = (0..users).map(user_id).collect();
    for chunk in ids.chunks(650) {
        let filter = chunk.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
        let body = json!({
            "changeType": "updated",
            "resource": format!("communications/presences?$filter=id in ({filter})"),
            "notificationUrl": format!("{}/hook", receiver.base),
            "expirationDateTime": expiration,
            "clientState": "bench",
        });
        let (status, reply) = call(&client, &base, Method::POST, "/v1.0/subscriptions", &token, body).await;
        assert_eq!(status, 201, "{reply}");
    }

    // Writes.
    let token = Arc::new(token);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started_writes = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, base, token, next) = (client.clone(), base.clone(), token.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if index >= users {
                    return sent;
                }
                let body = json!({ "sessionId": APP, "availability": "Available", "activity": "Available",
                                   "expirationDuration": "PT1H" });
                let started = Instant::now();
                let path = format!("/v1.0/users/{}/presence/setPresence", user_id(index));
                let (status, reply) = call(&client, &base, Method::POST, &path, &token, body).await;
                assert_eq!(status, 200, "{reply}");
                sent.push((user_id(index), started));
            }
        }));
    }
    let mut sent = HashMap::new();
    for worker in workers {
        sent.extend(worker.await.unwrap());
    }
    let write_phase = started_writes.elapsed();
    wait_for(&receiver, users).await;
    let after_writes = arrivals(&receiver);
    let write_latencies: Vec<Duration> = after_writes
        .iter()
        .filter_map(|((user, _), at)| sent.get(user).map(|started| at.saturating_duration_since(*started)))
        .collect();
    let write_span = after_writes.values().max().unwrap().saturating_duration_since(started_writes);

    // Timer-driven fades: all sessions fade 5 minutes after their write.
    let before: std::collections::HashSet<_> = after_writes.keys().cloned().collect();
    let moved = Instant::now();
    let (status, _) = call(&client, &base, Method::POST, "/_test/clock/advance", "", json!({ "seconds": 300 })).await;
    assert_eq!(status, 200);
    wait_for(&receiver, 2 * users).await;
    let all = arrivals(&receiver);
    let fade_latencies: Vec<Duration> = all
        .iter()
        .filter(|(key, _)| !before.contains(*key))
        .map(|(_, at)| at.saturating_duration_since(moved))
        .collect();
    let fade_span = all.values().max().unwrap().saturating_duration_since(moved);

    let _ = server.kill();
    let _ = server.wait();
    println!("Notification latency, {users} subscribed users in {} bulk subscriptions", users.div_ceil(650));
    println!("(setPresence phase: {users} writes in {:.2} s with {CONCURRENCY} clients)", write_phase.as_secs_f64());
    println!();
    println!("| change | delivered | p50 ms | p90 ms | p99 ms | max ms | notifications/s |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", summary("setPresence (write)", write_latencies, users, write_span));
    println!("{}", summary("fade (timer, all at once)", fade_latencies, users, fade_span));
    println!();
    println!("POSTs received: {}", receiver.posts("/hook").len());
}
