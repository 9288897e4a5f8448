//! A power cut under load. The real binary runs on the testkit's power-cut file system (which keeps in
//! memory whatever was not fsynced); writers set presence and status messages, create subscriptions and
//! queue notifications (the endpoint refuses them until the restart); the binary is killed (SIGKILL) at a
//! seeded random moment; the power is cut, dropping everything unsynced; the binary restarts on what a disk
//! would have kept. Then every acknowledged write must be there (the last acknowledged value, or the one in
//! flight at the kill), every acknowledged subscription too, the queued notifications must arrive, and a
//! token minted before the cut must still be accepted (the signing key survived). Every other round starts
//! from an empty directory, so that the first start's files (the data directory, the key, the database and
//! its WAL) are cut too.
//!
//! `PRESENCED_POWERCUT_ROUNDS` (default 16) and `PRESENCED_POWERCUT_SEED` (default 14) choose the run; the
//! figures are printed at the end (`cargo test --test powercut -- --nocapture`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use presence_testkit::binary::{self, HttpClient, Running};
use presence_testkit::powercut::{Losses, PowerCut};
use presence_testkit::receiver::{trusting_receivers, Receiver};
use presence_testkit::{ADELE, ALEX, APP};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_presenced");

/// The example configuration's four users.
const USERS: [&str; 4] = [ADELE, ALEX, "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e"];

/// What the presence writers cycle through (each one a change of the user's presence).
const CYCLE: [(&str, &str); 4] =
    [("Busy", "InACall"), ("DoNotDisturb", "Presenting"), ("Away", "Away"), ("Available", "Available")];

/// One value written again and again by one writer, one request at a time.
#[derive(Debug, Default)]
struct Register {
    /// The last value acknowledged.
    acked: Option<String>,
    /// Sent and not answered: the kill came first.
    in_flight: Option<String>,
}

/// What the restarted server holds of a [`Register`].
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The value in flight at the kill (it may or may not have been applied).
    InFlight,
    /// The last acknowledged value.
    Acked,
    /// Neither: an acknowledged write was lost.
    Lost,
    /// Nothing was acknowledged or in flight in this round: anything goes.
    Unknown,
}

impl Register {
    fn send(&mut self, value: &str) {
        self.in_flight = Some(value.to_owned());
    }

    fn answered(&mut self, acknowledged: bool) {
        let value = self.in_flight.take();
        if acknowledged {
            self.acked = value;
        }
    }

    fn found(&self, value: Option<&str>) -> Found {
        match &self.acked {
            _ if self.in_flight.is_some() && value == self.in_flight.as_deref() => Found::InFlight,
            Some(acked) if value == Some(acked.as_str()) => Found::Acked,
            Some(_) => Found::Lost,
            None => Found::Unknown,
        }
    }
}

/// One user's writes in a round.
#[derive(Debug, Default)]
struct UserLog {
    status: Register,
    /// Availabilities.
    presence: Register,
    /// When each acknowledged status message was sent.
    status_sent: Vec<Instant>,
    acknowledged: u64,
}

/// A subscription whose creation was acknowledged.
#[derive(Debug)]
struct Created {
    id: String,
    user: usize,
    path: String,
    at: Instant,
}

#[derive(Debug, Default)]
struct Figures {
    rounds: u64,
    first_starts: u64,
    acknowledged_writes: u64,
    acknowledged_subscriptions: u64,
    notifications_checked: u64,
    /// Writes sent and not answered at the kill, and how many of them the restarted server had applied.
    in_flight: u64,
    in_flight_applied: u64,
    lost: u64,
    losses: Losses,
}

async fn try_call(client: &HttpClient, base: &str, path: &str, token: &str, body: Value) -> Option<u16> {
    binary::try_call(client, base, Method::POST, path, token, body).await.map(|(status, _)| status)
}

/// Writes user `index`'s status message and presence in turn until the server stops answering.
async fn write_user(
    client: HttpClient,
    base: String,
    token: String,
    round: u64,
    index: usize,
    log: Arc<Mutex<UserLog>>,
) {
    let user = USERS[index];
    for write in 0u64.. {
        let sent = Instant::now();
        let (path, body) = if write % 2 == 0 {
            let content = format!("round {round} write {write}");
            log.lock().unwrap().status.send(&content);
            let body = json!({ "statusMessage": { "message": { "content": content, "contentType": "text" } } });
            (format!("/v1.0/users/{user}/presence/setStatusMessage"), body)
        } else {
            let (availability, activity) = CYCLE[(write as usize / 2) % CYCLE.len()];
            log.lock().unwrap().presence.send(availability);
            let body = json!({ "sessionId": APP, "availability": availability, "activity": activity, "expirationDuration": "PT1H" });
            (format!("/v1.0/users/{user}/presence/setPresence"), body)
        };
        let Some(status) = try_call(&client, &base, &path, &token, body).await else { return };
        let mut log = log.lock().unwrap();
        let register = if write % 2 == 0 { &mut log.status } else { &mut log.presence };
        register.answered(status == 200);
        if status == 200 {
            log.acknowledged += 1;
            if write % 2 == 0 {
                log.status_sent.push(sent);
            }
        }
    }
}

/// Creates subscriptions (one endpoint path each) until the server stops answering.
async fn subscribe(
    client: HttpClient,
    base: String,
    token: String,
    hooks: String,
    round: u64,
    created: Arc<Mutex<Vec<Created>>>,
) {
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(50)).to_string();
    for k in 0usize.. {
        let user = k % USERS.len();
        let path = format!("/hook/{round}/{k}");
        let body = json!({
            "changeType": "updated",
            "resource": format!("communications/presences/{}", USERS[user]),
            "notificationUrl": format!("{hooks}{path}"),
            "expirationDateTime": expiration,
        });
        let Some((status, answer)) =
            binary::try_call(&client, &base, Method::POST, "/v1.0/subscriptions", &token, body).await
        else {
            return;
        };
        if status == 201 {
            let id = answer["id"].as_str().expect("a created subscription has an id").to_owned();
            created.lock().unwrap().push(Created { id, user, path, at: Instant::now() });
        }
    }
}

fn start(data: &Path, global: &[&str]) -> Running {
    let mut arguments = global.to_vec();
    arguments.extend(["--data-dir", data.to_str().unwrap()]);
    binary::start(Path::new(BINARY), &arguments, Duration::from_secs(30))
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_power_cut_under_load() {
    let rounds = env_number("PRESENCED_POWERCUT_ROUNDS", 16);
    let seed = env_number("PRESENCED_POWERCUT_SEED", 14);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let receiver = Receiver::start().await;
    let outside = tempfile::tempdir().unwrap();
    let example = include_str!("../../../presenced.example.toml");
    let config = trusting_receivers(example, &receiver.ca_pem, outside.path());
    let config_file = outside.path().join("presenced.toml");
    std::fs::write(&config_file, config).unwrap();
    let global = ["--config", config_file.to_str().unwrap(), "--test-clock"];
    let client = binary::client();
    let mut figures = Figures::default();
    let mut backing = tempfile::tempdir().unwrap();

    for round in 0..rounds {
        let first_start = round % 2 == 0;
        if first_start {
            backing = tempfile::tempdir().unwrap();
            figures.first_starts += 1;
        }
        let mut mountpoint = tempfile::tempdir().unwrap();
        let mut power = PowerCut::mount(backing.path(), mountpoint.path()).unwrap();
        let mut data = mountpoint.path().join("data");
        let data_arg = ["--data-dir", data.to_str().unwrap()];
        // On a first start the token command creates the data directory and the signing key; every other
        // first start loses power right after it, before the server ever ran.
        let reader = binary::token(Path::new(BINARY), &data_arg, &["--roles", "Presence.Read.All"]);
        let writer = binary::token(Path::new(BINARY), &data_arg, &[]);
        if round % 4 == 0 {
            figures.losses.add(power.cut().unwrap());
            mountpoint = tempfile::tempdir().unwrap();
            power = PowerCut::mount(backing.path(), mountpoint.path()).unwrap();
            data = mountpoint.path().join("data");
        }
        let server = start(&data, &global);
        receiver.answer_with(503);

        let logs: Vec<Arc<Mutex<UserLog>>> = USERS.iter().map(|_| Arc::default()).collect();
        let created = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (index, log) in logs.iter().enumerate() {
            let task = write_user(client.clone(), server.base.clone(), writer.clone(), round, index, log.clone());
            tasks.push(tokio::spawn(task));
        }
        let task = subscribe(
            client.clone(),
            server.base.clone(),
            reader.clone(),
            receiver.base.clone(),
            round,
            created.clone(),
        );
        tasks.push(tokio::spawn(task));
        // The random moment: on a first start sometimes before anything was acknowledged.
        let kill_after = Duration::from_millis(rng.gen_range(if first_start { 0..1_500 } else { 100..1_500 }));
        tokio::time::sleep(kill_after).await;
        drop(server); // SIGKILL, reaped
        for task in tasks {
            task.await.unwrap();
        }
        figures.losses.add(power.cut().unwrap());

        // The reboot: the same backing directory, mounted again, holds what a disk would have kept.
        let mountpoint = tempfile::tempdir().unwrap();
        let power = PowerCut::mount(backing.path(), mountpoint.path()).unwrap();
        let data = mountpoint.path().join("data");
        receiver.answer_with(202);
        let server = start(&data, &global);
        let mut current = Vec::new();
        for (index, user) in USERS.iter().enumerate() {
            let path = format!("/v1.0/users/{user}/presence");
            let (status, presence) =
                binary::call(&client, &server.base, Method::GET, &path, &reader, Value::Null).await;
            assert_eq!(status, 200, "round {round}: a token minted before the cut is refused: {presence}");
            let log = logs[index].lock().unwrap();
            figures.acknowledged_writes += log.acknowledged;
            let content = presence["statusMessage"]["message"]["content"].as_str();
            for (what, register, value) in [
                ("status message", &log.status, content),
                ("availability", &log.presence, presence["availability"].as_str()),
            ] {
                let found = register.found(value);
                if found == Found::Lost {
                    figures.lost += 1;
                    eprintln!("round {round}: {user}'s acknowledged {what} was lost: {register:?}, found {value:?}");
                }
                figures.in_flight += u64::from(register.in_flight.is_some());
                figures.in_flight_applied += u64::from(found == Found::InFlight);
            }
            current.push(presence["sequenceNumber"].as_str().unwrap_or_default().to_owned());
        }
        let created = std::mem::take(&mut *created.lock().unwrap());
        figures.acknowledged_subscriptions += created.len() as u64;
        for subscription in &created {
            let path = format!("/v1.0/subscriptions/{}", subscription.id);
            let (status, _) = binary::call(&client, &server.base, Method::GET, &path, &reader, Value::Null).await;
            if status != 200 {
                figures.lost += 1;
                eprintln!("round {round}: acknowledged subscription {} is gone ({status})", subscription.id);
            }
        }

        // The queued notifications: every subscription acknowledged before a change it must hear of gets
        // the user's current version, and at least one item per acknowledged status message sent after it.
        // Retries are due in presence time: move it past the whole back-off and the delivery leases.
        let (status, _) =
            binary::call(&client, &server.base, Method::POST, "/_test/clock/advance", "", json!({ "seconds": 600 }))
                .await;
        assert_eq!(status, 200);
        let expected: Vec<(&Created, usize)> = created
            .iter()
            .filter_map(|subscription| {
                let log = logs[subscription.user].lock().unwrap();
                let after = log.status_sent.iter().filter(|sent| **sent > subscription.at).count();
                (after > 0).then_some((subscription, after))
            })
            .collect();
        let delivered = |subscription: &Created, after: usize| {
            let items = receiver.items(&subscription.path);
            let mut sequences: Vec<&str> =
                items.iter().filter_map(|item| item["resourceData"]["sequenceNumber"].as_str()).collect();
            sequences.sort_unstable();
            sequences.dedup();
            sequences.contains(&current[subscription.user].as_str()) && sequences.len() >= after
        };
        let all_delivered = || expected.iter().all(|(subscription, after)| delivered(subscription, *after));
        receiver.wait_until(Duration::from_secs(30), all_delivered).await;
        for (subscription, after) in &expected {
            figures.notifications_checked += 1;
            if !delivered(subscription, *after) {
                figures.lost += 1;
                let items = receiver.items(&subscription.path);
                eprintln!(
                    "round {round}: subscription {} missed notifications: wanted {} ({after} changes), got {items:#?}",
                    subscription.id, current[subscription.user]
                );
            }
        }
        drop(server);
        drop(power); // unmounts; what the checks wrote is not needed
        figures.rounds += 1;
    }

    println!("power cut: seed {seed}, {figures:#?}");
    assert!(figures.acknowledged_writes > 0 && figures.acknowledged_subscriptions > 0, "{figures:?}");
    assert!(figures.losses.unsynced_bytes > 0, "the cuts dropped nothing: the test proves nothing: {figures:?}");
    assert_eq!(figures.lost, 0, "acknowledged state was lost: {figures:#?}");
}
