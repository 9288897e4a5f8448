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

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use support::{arrivals, call, receiver, subscribe, summary, user_id, wait_for, HttpClient, APP};

const CONCURRENCY: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users: usize = std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let receiver = receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &receiver.ca_pem).unwrap();
    let port = support::free_port();
    let extra = format!("notification_allow_internal = true\nnotification_ca_file = {:?}", ca_file.to_str().unwrap());
    let config_file = support::write_config(dir.path(), &dir.path().join("data"), port, users, &extra);
    let server = support::spawn(&config_file);
    let base = format!("http://127.0.0.1:{port}");
    support::wait_for_port(port).await;
    let token = support::token(&config_file);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Subscriptions: bulk, 650 users each.
    let ids: Vec<String> = (0..users).map(user_id).collect();
    subscribe(&client, &base, &token, &receiver, &ids).await;

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

    drop(server);
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
