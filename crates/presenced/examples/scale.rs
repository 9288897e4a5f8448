//! The scale run (issue 5): 1,000,000 users with 2 sessions each.
//!
//! 1. Seeds a data directory through the store library (the bytes the server itself writes: each user's
//!    facts after two setPresence commands, and the user's timer). 900,000 users have two Busy/InACall
//!    sessions for 4 hours (their expiry timers are pending); the last 100,000 have two Available sessions,
//!    which fade in 5 minutes. Seeding through HTTP would take minutes at the measured write rate and
//!    measure nothing more.
//! 2. Recovery: starts the release binary on an empty data directory and then on the seeded one, and
//!    times each from the start of the process to its first answered presence read. The difference is
//!    what the store's recovery costs; the rest is loading the directory of 1,000,000 users.
//! 3. Memory: reads every user once (getPresencesByUserId, 650 at a time), as a live server would have,
//!    then reports the resident memory (VmRSS) per user.
//! 4. Idle CPU: the process's CPU time over 20 s with no requests and every timer pending.
//! 5. The fade burst: subscribes to the 100,000 users (bulk subscriptions of 650 to a local HTTPS
//!    receiver), moves the test clock to just after their common fade instant, and reports the lag from
//!    the move to each notification's arrival.
//!
//! Run: `cargo build --release && cargo run --release -p presenced --example scale`
//! (`USERS=200000 BURST=20000` for a smaller run).

mod support;

use std::time::{Duration, Instant};

use hyper::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use presence_core::{next_change, Command, Timestamp};
use presence_store::{Effects, PresenceStore, SqliteStore, UserKey};
use serde_json::{json, Value};
use support::{arrivals, call, receiver, subscribe, summary, user_id, wait_for, HttpClient, APP, SECOND_APP, TENANT};

const SEED_BATCH: usize = 10_000;
const FADE_MILLIS: i64 = 5 * 60_000;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

/// Writes every user's facts and timer at `now`; users from `burst_from` on get Available sessions.
fn seed(data_dir: &std::path::Path, users: usize, burst_from: usize, now: Timestamp) {
    std::fs::create_dir_all(data_dir).unwrap();
    let store = SqliteStore::open(data_dir).unwrap();
    let keys: Vec<UserKey> =
        (0..users).map(|index| UserKey { tenant_id: TENANT.into(), user_id: user_id(index) }).collect();
    let busy = [APP, SECOND_APP]
        .map(|app| Command::set_presence(app, Some(app), Some("Busy"), Some("InACall"), Some("PT4H")).unwrap());
    let available = [APP, SECOND_APP]
        .map(|app| Command::set_presence(app, Some(app), Some("Available"), Some("Available"), Some("PT1H")).unwrap());
    for chunk in keys.chunks(SEED_BATCH) {
        let results = store.update_many(chunk, &mut |key, facts, _| {
            let index: usize = key.user_id[24..].parse().unwrap();
            let commands = if index >= burst_from { &available } else { &busy };
            for command in commands {
                command.apply(facts, now).unwrap();
            }
            Some(Effects { due_at: next_change(facts, now).map(|at| at.as_millis()), ..Effects::default() })
        });
        assert!(results.iter().all(Result::is_ok), "seeding failed");
    }
    // Closed as the server closes it, so that its next open is a clean one.
    store.close().unwrap();
}

/// Resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// CPU time (user + system) of process `pid`, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Starts the server on `config` and returns it with the time from its start to the first answered read of
/// `probe`'s presence, and that presence.
async fn start_and_time(
    client: &HttpClient,
    config: &std::path::Path,
    port: u16,
    token: &str,
    probe: &str,
) -> (support::Server, Duration, Value) {
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let server = support::spawn(config);
    support::wait_for_port(port).await;
    loop {
        let (status, body) =
            call(client, &base, Method::GET, &format!("/v1.0/users/{probe}/presence"), token, Value::Null).await;
        if status == 200 {
            return (server, started.elapsed(), body);
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no answer: {status} {body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let users = env_number("USERS", 1_000_000);
    let burst = env_number("BURST", 100_000).min(users);
    let burst_from = users - burst;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let receiver = receiver::Receiver::start().await;
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &receiver.ca_pem).unwrap();
    let extra = format!(
        "notification_allow_internal = true\nnotification_ca_file = {:?}\nmax_concurrent_deliveries = 64",
        ca_file.to_str().unwrap()
    );

    let started = Instant::now();
    let port = support::free_port();
    let data = dir.path().join("data");
    let config = support::write_config(dir.path(), &data, port, users, &extra);
    println!("configuration with {users} users written in {:.1} s", started.elapsed().as_secs_f64());
    let seeded_at = Timestamp(presence_service::system_now().as_millis());
    let started = Instant::now();
    seed(&data, users, burst_from, seeded_at);
    println!("seeded {users} users x 2 sessions in {:.1} s", started.elapsed().as_secs_f64());
    let token = support::token(&config);

    // Recovery: first on an empty data directory (the directory alone), then on the seeded one.
    let empty_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let empty_config = support::write_config(empty_dir.path(), &empty_dir.path().join("data"), port, users, &extra);
    let empty_token = support::token(&empty_config);
    let (empty_server, empty_time, _) = start_and_time(&client, &empty_config, port, &empty_token, &user_id(0)).await;
    let empty_resident = resident_bytes(empty_server.pid());
    drop(empty_server);
    drop(empty_dir);
    let (server, recovery, probe) = start_and_time(&client, &config, port, &token, &user_id(0)).await;
    assert_eq!(probe["availability"], if burst_from > 0 { "Busy" } else { "Available" }, "{probe}");
    let base = format!("http://127.0.0.1:{port}");
    let pid = server.pid();
    let cold_resident = resident_bytes(pid);

    // Every user read once, four requests at a time.
    let ids: Vec<String> = (0..users).map(user_id).collect();
    let started = Instant::now();
    let chunks: Vec<Vec<String>> = ids.chunks(650).map(<[String]>::to_vec).collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let chunks = std::sync::Arc::new(chunks);
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (client, base, token, next, chunks) =
                (client.clone(), base.clone(), token.clone(), next.clone(), chunks.clone());
            tokio::spawn(async move {
                let mut available = 0;
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(chunk) = chunks.get(index) else { return available };
                    let path = "/v1.0/communications/getPresencesByUserId";
                    let (status, body) =
                        call(&client, &base, Method::POST, path, &token, json!({ "ids": chunk })).await;
                    assert_eq!(status, 200, "{body}");
                    let value = body["value"].as_array().unwrap();
                    assert_eq!(value.len(), chunk.len());
                    available += value.iter().filter(|presence| presence["availability"] == "Available").count();
                }
            })
        })
        .collect();
    let mut available = 0;
    for reader in readers {
        available += reader.await.unwrap();
    }
    assert_eq!(available, burst, "the burst users are Available, the others Busy");
    let read_all = started.elapsed();
    let warm_resident = resident_bytes(pid);

    // Idle: no requests, every timer pending.
    let before = cpu_ticks(pid);
    let idle_window = Duration::from_secs(20);
    tokio::time::sleep(idle_window).await;
    let idle_ticks = cpu_ticks(pid) - before;
    let idle_share = idle_ticks as f64 / (idle_window.as_secs_f64() * 100.0);

    // The fade burst.
    subscribe(&client, &base, &token, &receiver, &ids[burst_from..]).await;
    let now = support::clock(&client, &base).await;
    let fade_at = seeded_at.as_millis() + FADE_MILLIS;
    let seconds = ((fade_at - now).max(0) + 999) / 1000 + 1;
    let moved = Instant::now();
    let (status, _) =
        call(&client, &base, Method::POST, "/_test/clock/advance", "", json!({ "seconds": seconds })).await;
    assert_eq!(status, 200);
    wait_for(&receiver, burst).await;
    let all = arrivals(&receiver);
    let lags: Vec<Duration> = all.values().map(|at| at.saturating_duration_since(moved)).collect();
    let span = all.values().max().unwrap().saturating_duration_since(moved);
    drop(server);

    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!();
    println!("Scale run: {users} users with 2 sessions each ({burst} of them fading together)");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| start to first answer, empty data directory (directory loading) | {:.2} s |", empty_time.as_secs_f64());
    println!("| start to first answer, seeded data directory (recovery) | {:.2} s |", recovery.as_secs_f64());
    println!("| resident memory, empty data directory | {:.0} MiB |", mib(empty_resident));
    println!("| resident memory after recovery | {:.0} MiB |", mib(cold_resident));
    println!(
        "| resident memory after reading every user once ({:.1} s) | {:.0} MiB, {:.0} bytes per user |",
        read_all.as_secs_f64(),
        mib(warm_resident),
        warm_resident as f64 / users as f64
    );
    println!(
        "| of which presence state (minus the empty-store process) | {:.0} bytes per user |",
        warm_resident.saturating_sub(empty_resident) as f64 / users as f64
    );
    println!(
        "| CPU at idle over {} s, all timers pending | {:.2}% of a core |",
        idle_window.as_secs(),
        idle_share * 100.0
    );
    println!();
    println!("| change | delivered | p50 ms | p90 ms | p99 ms | max ms | notifications/s |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", summary("fade burst (clock move to arrival)", lags, burst, span));
    println!("POSTs received: {}", receiver.posts("/hook").len());
}
