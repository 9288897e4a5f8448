//! The soak's change notifications (issue 15): runs beside `bench/http-load.sh`'s soak, on wrk's core.
//!
//! Starts a local HTTPS webhook receiver and writes its CA certificate to `CA_FILE` (presenced's
//! `notification_ca_file`), waits for presenced on `PORT`, subscribes `WATCHED` users (ids from `FIRST`
//! on, outside wrk's range) in bulk subscriptions of 650, prints `READY`, and then changes their presence
//! at `RATE` writes a second: each write flips a user between Busy and Available, so each one is a change
//! to notify. For each line read on standard input it prints a `RESULT` line (JSON) about the time since
//! the line before: writes made and failed, notifications delivered, and the latency from each write's
//! start to its notification's arrival. At the end of input it stops writing, waits up to 30 s for the
//! notifications still due, and prints a last `RESULT` with how many never came.
//!
//! Environment: `PORT`, `TOKEN` (an application token), `CA_FILE`, `FIRST`, `WATCHED` (6,500),
//! `RATE` (500).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;
use support::{percentile, receiver::Receiver, user_id, APP};

/// At most this many writes in flight: beyond it a tick is skipped and counted, not queued.
const IN_FLIGHT: usize = 64;

fn env_number(name: &str, default: Option<u64>) -> u64 {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{name} is not a number: {value}")),
        Err(_) => default.unwrap_or_else(|| panic!("{name} is needed")),
    }
}

/// What the writes and the arrivals of one reporting period came to.
#[derive(Default)]
struct Period {
    latencies: Vec<Duration>,
    /// Arrivals about a user with no write waiting for its notification.
    unmatched: u64,
}

struct Shared {
    /// The start of each write whose notification has not arrived yet, by user id.
    due: Mutex<HashMap<String, Instant>>,
    period: Mutex<Period>,
    writes: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

impl Shared {
    /// Matches the notifications that have arrived to the writes they tell of.
    fn collect(&self, receiver: &Receiver) {
        let posts = receiver.take_posts();
        let mut due = self.due.lock().unwrap();
        let mut period = self.period.lock().unwrap();
        for post in posts {
            for item in post.body["value"].as_array().into_iter().flatten() {
                let user = item["resourceData"]["id"].as_str().unwrap_or_default();
                match due.remove(user) {
                    Some(started) => period.latencies.push(post.at.saturating_duration_since(started)),
                    None => period.unmatched += 1,
                }
            }
        }
    }

    /// The `RESULT` line of the period now ending, which starts the next one.
    fn report(&self, lost: Option<usize>) -> String {
        let Period { mut latencies, unmatched } = std::mem::take(&mut *self.period.lock().unwrap());
        latencies.sort_unstable();
        let ms = |p: f64| if latencies.is_empty() { 0.0 } else { percentile(&latencies, p).as_secs_f64() * 1000.0 };
        let mut line = json!({
            "writes": self.writes.swap(0, Ordering::SeqCst),
            "failed": self.failed.swap(0, Ordering::SeqCst),
            "skipped": self.skipped.swap(0, Ordering::SeqCst),
            "delivered": latencies.len(),
            "unmatched": unmatched,
            "p50_ms": ms(0.5),
            "p99_ms": ms(0.99),
            "max_ms": ms(1.0),
        });
        if let Some(lost) = lost {
            line["lost"] = json!(lost);
        }
        format!("RESULT {line}")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port = u16::try_from(env_number("PORT", None)).expect("PORT is a port");
    let first = env_number("FIRST", None) as usize;
    let watched = env_number("WATCHED", Some(6_500)) as usize;
    let rate = env_number("RATE", Some(500)).max(1);
    let token = std::env::var("TOKEN").expect("TOKEN is needed");
    let ca_file = std::env::var("CA_FILE").expect("CA_FILE is needed");

    let receiver = Arc::new(Receiver::start().await);
    // Written whole, then renamed: the script starts presenced once the file is there.
    let part = format!("{ca_file}.part");
    std::fs::write(&part, &receiver.ca_pem).unwrap();
    std::fs::rename(&part, &ca_file).unwrap();
    support::wait_for_port(port).await;
    let base = format!("http://127.0.0.1:{port}");
    let client = presence_testkit::binary::client();
    let ids: Arc<Vec<String>> = Arc::new((first..first + watched).map(user_id).collect());
    let expiration = jiff::Timestamp::now().as_millisecond() + 55 * 60_000;
    support::subscribe_until(&client, &base, &token, &receiver, &ids, expiration).await;
    println!("READY");

    let shared = Arc::new(Shared {
        due: Mutex::default(),
        period: Mutex::default(),
        writes: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        skipped: AtomicU64::new(0),
    });
    let collector = {
        let (shared, receiver) = (shared.clone(), receiver.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                shared.collect(&receiver);
            }
        })
    };
    let writer = {
        let shared = shared.clone();
        let token = Arc::new(token);
        tokio::spawn(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for count in 0_usize.. {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    shared.skipped.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let user = ids[count % ids.len()].clone();
                // Even rounds over the watched users set Busy, odd ones Available: every write changes.
                let (availability, activity) = if (count / ids.len()).is_multiple_of(2) {
                    ("Busy", "InACall")
                } else {
                    ("Available", "Available")
                };
                let body = json!({ "sessionId": APP, "availability": availability, "activity": activity,
                                   "expirationDuration": "PT1H" });
                let path = format!("/v1.0/users/{user}/presence/setPresence");
                let (client, base, token, shared) = (client.clone(), base.clone(), token.clone(), shared.clone());
                tokio::spawn(async move {
                    shared.due.lock().unwrap().insert(user.clone(), Instant::now());
                    let answer = presence_testkit::binary::try_call(&client, &base, Method::POST, &path, &token, body);
                    shared.writes.fetch_add(1, Ordering::SeqCst);
                    if !matches!(answer.await, Some((200, _))) {
                        shared.failed.fetch_add(1, Ordering::SeqCst);
                        shared.due.lock().unwrap().remove(&user);
                    }
                    drop(permit);
                });
            }
        })
    };

    // Standard input is read on a thread of its own: a line is one message, the end of input the channel's end.
    let (line_read, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            if line_read.send(()).is_err() {
                return;
            }
        }
    });
    while lines.recv().await.is_some() {
        shared.collect(&receiver);
        println!("{}", shared.report(None));
    }
    writer.abort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        shared.collect(&receiver);
        if shared.due.lock().unwrap().is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collector.abort();
    let lost = shared.due.lock().unwrap().len();
    println!("{}", shared.report(Some(lost)));
}
