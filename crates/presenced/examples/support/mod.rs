//! What the benchmark programs share: the bench tenant and its users, starting the release binary, calls,
//! percentiles, and reading arrivals off the test webhook receiver.

#![allow(dead_code, unused_imports)] // each example uses its own part

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

pub(crate) use presence_testkit::binary::{call, HttpClient};
pub(crate) use presence_testkit::{free_port, receiver};

pub(crate) const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
pub(crate) const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
/// A second registered application, for users' second session.
pub(crate) const SECOND_APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e12";

pub(crate) fn user_id(index: usize) -> String {
    format!("00000000-0000-4000-8000-{index:012}")
}

/// The release binary next to this example, which must have been built.
pub(crate) fn binary() -> PathBuf {
    let binary = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("presenced");
    assert!(binary.exists(), "build the server first: cargo build --release ({} is missing)", binary.display());
    binary
}

/// Writes a configuration file in `dir`: the bench tenant with `users` users and both apps, the test clock,
/// no throttling, and `extra` lines.
pub(crate) fn write_config(dir: &Path, data_dir: &Path, port: u16, users: usize, extra: &str) -> PathBuf {
    let mut config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nissuer = \"https://login.presenced.local\"\n\
         test_clock = true\nthrottle_limit = 0\nlog_level = \"warn\"\n{extra}\n\
         [[tenants]]\nid = \"{TENANT}\"\ndisplayName = \"Bench\"\n\
         [[tenants.apps]]\nid = \"{APP}\"\ndisplayName = \"Bench\"\n\
         [[tenants.apps]]\nid = \"{SECOND_APP}\"\ndisplayName = \"Bench two\"\n",
        data_dir.to_str().unwrap(),
    );
    for index in 0..users {
        let _ = write!(
            config,
            "[[tenants.users]]\nid = \"{}\"\nuserPrincipalName = \"user{index}@bench.example\"\ndisplayName = \"User {index}\"\n",
            user_id(index)
        );
    }
    let file = dir.join("presenced.toml");
    std::fs::write(&file, config).unwrap();
    file
}

/// An application token for the configuration, minted by the binary.
pub(crate) fn token(config: &Path) -> String {
    let output = Command::new(binary()).args(["--config", config.to_str().unwrap(), "token"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The running release binary, stopped when dropped.
pub(crate) struct Server(Child);

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the release binary on `config`.
pub(crate) fn spawn(config: &Path) -> Server {
    Server(
        Command::new(binary())
            .args(["--config", config.to_str().unwrap(), "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub(crate) async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "presenced did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The test clock's instant (milliseconds since the epoch).
pub(crate) async fn clock(client: &HttpClient, base: &str) -> i64 {
    let (_, clock) = call(client, base, Method::GET, "/_test/clock", "", Value::Null).await;
    clock["epochMilliseconds"].as_i64().unwrap()
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A table row: how many arrived of `expected`, p50/p90/p99/max in milliseconds, and the rate.
pub(crate) fn summary(name: &str, mut latencies: Vec<Duration>, expected: usize, elapsed: Duration) -> String {
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
pub(crate) fn arrivals(receiver: &receiver::Receiver) -> HashMap<(String, String), Instant> {
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

/// Waits until `count` notification items have arrived at `/hook` (at most 10 minutes).
pub(crate) async fn wait_for(receiver: &receiver::Receiver, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let got = receiver.item_count("/hook");
        if got >= count {
            return;
        }
        assert!(Instant::now() < deadline, "only {got} of {count} notifications arrived");
        receiver.wait_item_count("/hook", got + 1).await;
    }
}

/// Creates bulk subscriptions (650 users each) of `users` to `/hook`, for 55 minutes of the test clock.
pub(crate) async fn subscribe(
    client: &HttpClient,
    base: &str,
    token: &str,
    receiver: &receiver::Receiver,
    users: &[String],
) {
    let expiration = clock(client, base).await + 55 * 60_000;
    subscribe_until(client, base, token, receiver, users, expiration).await;
}

/// Creates bulk subscriptions (650 users each) of `users` to `/hook`, expiring at `expiration`
/// (milliseconds since the epoch).
pub(crate) async fn subscribe_until(
    client: &HttpClient,
    base: &str,
    token: &str,
    receiver: &receiver::Receiver,
    users: &[String],
    expiration: i64,
) {
    let expiration = jiff::Timestamp::from_millisecond(expiration).unwrap().to_string();
    for chunk in users.chunks(650) {
        let filter = chunk.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
        let body = serde_json::json!({
            "changeType": "updated",
            "resource": format!("communications/presences?$filter=id in ({filter})"),
            "notificationUrl": format!("{}/hook", receiver.base),
            "expirationDateTime": expiration,
            "clientState": "bench",
        });
        let (status, reply) = call(client, base, Method::POST, "/v1.0/subscriptions", token, body).await;
        assert_eq!(status, 201, "{reply}");
    }
}
