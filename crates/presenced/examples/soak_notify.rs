//! The soak's change notifications (issue 15): runs beside `bench/http-load.sh`'s soak, on wrk's core.
//!
//! Starts a local HTTPS webhook receiver and writes its CA certificate to `CA_FILE` (presenced's
//! `notification_ca_file`), waits for presenced on `PORT`, subscribes `WATCHED` users (ids from `FIRST`
//! on, outside wrk's range) in bulk subscriptions of 650, prints `READY`, and then changes their presence
//! from the first line read on standard input on, at `RATE` writes a second: each write flips a user
//! between Busy and Available (from the state its last answered write set), so each one is a change to
//! notify. For each line read it prints a `RESULT` line (JSON) about the time since the line before: its
//! length, writes made and failed, notifications delivered, those about a user with no write waiting
//! for one (a notification later than the user's next write, about 13 s on), and the latency from each
//! write's start to its notification's arrival. At the end of input it stops writing, waits up to 30 s
//! for the notifications still due, and prints a last `RESULT` with how many never came. The
//! subscriptions last 55 minutes, which bounds the soak.
//!
//! Environment: `PORT`, `TOKEN` (an application token), `CA_FILE`, `FIRST`, `WATCHED` (6,500),
//! `RATE` (500).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
struct Period {
    started: Instant,
    latencies: Vec<Duration>,
    /// Arrivals about a user with no write waiting for its notification.
    unmatched: u64,
}

impl Period {
    fn starting_now() -> Self {
        Period { started: Instant::now(), latencies: Vec::new(), unmatched: 0 }
    }
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
        let Period { started, mut latencies, unmatched } =
            std::mem::replace(&mut *self.period.lock().unwrap(), Period::starting_now());
        latencies.sort_unstable();
        let ms = |p: f64| if latencies.is_empty() { 0.0 } else { percentile(&latencies, p).as_secs_f64() * 1000.0 };
        let mut line = json!({
            "seconds": started.elapsed().as_secs_f64(),
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
        period: Mutex::new(Period::starting_now()),
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
    // Standard input is read on a thread of its own: a line is one message, the end of input the channel's end.
    let (line_read, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            if line_read.send(()).is_err() {
                return;
            }
        }
    });
    // The first line starts the writes (after the script's capacity run, which they would take from).
    if lines.recv().await.is_some() {
        shared.collect(&receiver);
        println!("{}", shared.report(None));
    }
    let writer = {
        let shared = shared.clone();
        let token = Arc::new(token);
        // Whether each watched user is Busy, as its last answered write set it: the next write flips it.
        let busy: Arc<Vec<AtomicBool>> = Arc::new((0..ids.len()).map(|_| AtomicBool::new(false)).collect());
        tokio::spawn(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut next = 0;
            loop {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    shared.skipped.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let index = next;
                next = (next + 1) % ids.len();
                let user = ids[index].clone();
                let to_busy = !busy[index].load(Ordering::SeqCst);
                let (availability, activity) = if to_busy { ("Busy", "InACall") } else { ("Available", "Available") };
                let body = json!({ "sessionId": APP, "availability": availability, "activity": activity,
                                   "expirationDuration": "PT1H" });
                let path = format!("/v1.0/users/{user}/presence/setPresence");
                // A notification later than the user's next write is matched to the write it tells of.
                shared.due.lock().unwrap().entry(user.clone()).or_insert_with(Instant::now);
                shared.writes.fetch_add(1, Ordering::SeqCst);
                let (client, base, token, shared, busy) =
                    (client.clone(), base.clone(), token.clone(), shared.clone(), busy.clone());
                tokio::spawn(async move {
                    let answer = presence_testkit::binary::try_call(&client, &base, Method::POST, &path, &token, body);
                    if matches!(answer.await, Some((200, _))) {
                        busy[index].store(to_busy, Ordering::SeqCst);
                    } else {
                        // Counted (a failed write fails the soak), and no notification awaited for it.
                        shared.failed.fetch_add(1, Ordering::SeqCst);
                        shared.due.lock().unwrap().remove(&user);
                    }
                    drop(permit);
                });
            }
        })
    };

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
