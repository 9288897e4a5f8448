//! The real binary: what it acknowledged survives SIGKILL (presence and queued notifications), SIGTERM
//! stops it cleanly, its token command mints tokens it accepts, and its command-line client works.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use presence_testkit::binary::{self, Running};
use presence_testkit::receiver;
use presence_testkit::{ADELE, ALEX, APP};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_presenced");

/// Starts the binary on `data_dir` and waits (bounded) until it accepts connections.
fn start(data_dir: &Path) -> Running {
    start_with(data_dir, &[])
}

/// Starts the binary with extra global arguments (say `--config FILE`).
fn start_with(data_dir: &Path, global: &[&str]) -> Running {
    let mut arguments = global.to_vec();
    arguments.extend(["--data-dir", data_dir.to_str().unwrap()]);
    binary::start(Path::new(BINARY), &arguments, Duration::from_secs(30))
}

fn token(data_dir: &Path, extra: &[&str]) -> String {
    binary::token(Path::new(BINARY), &["--data-dir", data_dir.to_str().unwrap()], extra)
}

async fn call(base: &str, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    binary::call(&binary::client(), base, method, path, token, body.unwrap_or(Value::Null)).await
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let writer = token(dir.path(), &[]);
    let set = |availability: &str, activity: &str| json!({ "sessionId": APP, "availability": availability, "activity": activity, "expirationDuration": "PT4H" });
    let base = server.base.clone();
    let (status, _) = call(
        &base,
        Method::POST,
        &format!("/v1.0/users/{ADELE}/presence/setPresence"),
        &writer,
        Some(set("Busy", "InACall")),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &base,
        Method::POST,
        &format!("/v1.0/users/{ALEX}/presence/setPresence"),
        &writer,
        Some(set("DoNotDisturb", "Presenting")),
    )
    .await;
    assert_eq!(status, 200);
    let prefer = json!({ "availability": "BeRightBack", "activity": "BeRightBack" });
    let (status, _) = call(
        &base,
        Method::POST,
        &format!("/v1.0/users/{ALEX}/presence/setUserPreferredPresence"),
        &writer,
        Some(prefer),
    )
    .await;
    assert_eq!(status, 200);
    let note = json!({ "statusMessage": { "message": { "content": "Survives SIGKILL", "contentType": "text" } } });
    let (status, _) =
        call(&base, Method::POST, &format!("/v1.0/users/{ADELE}/presence/setStatusMessage"), &writer, Some(note)).await;
    assert_eq!(status, 200);
    let (_, before) = call(&base, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &writer, None).await;

    drop(server); // SIGKILL: no shutdown handler runs.

    let server = start(dir.path());
    let reader = token(dir.path(), &["--roles", "Presence.Read.All"]);
    let (status, adele) =
        call(&server.base, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &reader, None).await;
    assert_eq!(status, 200);
    assert_eq!(adele["availability"], "Busy");
    assert_eq!(adele["activity"], "InACall");
    assert_eq!(adele["statusMessage"]["message"]["content"], "Survives SIGKILL");
    assert_eq!(adele["sequenceNumber"], before["sequenceNumber"]);
    let (_, alex) = call(&server.base, Method::GET, &format!("/v1.0/users/{ALEX}/presence"), &reader, None).await;
    assert_eq!((alex["availability"].as_str(), alex["activity"].as_str()), (Some("BeRightBack"), Some("BeRightBack")));
}

#[tokio::test]
async fn delegated_tokens_from_the_command_line_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let adele = token(dir.path(), &["--user", "adele@contoso.example"]);
    let body = json!({ "sessionId": APP, "availability": "Away", "activity": "Away" });
    let (status, _) = call(&server.base, Method::POST, "/v1.0/me/presence/setPresence", &adele, Some(body)).await;
    assert_eq!(status, 200);
    let (status, me) = call(&server.base, Method::GET, "/beta/me/presence", &adele, None).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], ADELE);
    assert_eq!(me["availability"], "Away");
    let (status, error) = call(&server.base, Method::GET, "/v1.0/me/presence", "not-a-token", None).await;
    assert_eq!(status, 401);
    assert_eq!(error["error"]["code"], "InvalidAuthenticationToken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_notifications_survive_sigkill_and_are_delivered_in_order_after_restart() {
    let receiver = receiver::Receiver::start().await;
    receiver.answer_with(503);
    let dir = tempfile::tempdir().unwrap();
    let config =
        receiver::trusting_receivers(include_str!("../../../presenced.example.toml"), &receiver.ca_pem, dir.path());
    let config_file = dir.path().join("presenced.toml");
    std::fs::write(&config_file, config).unwrap();
    let global = ["--config", config_file.to_str().unwrap()];
    let data = dir.path().join("data");

    let server = start_with(&data, &global);
    let reader = token(&data, &["--roles", "Presence.Read.All"]);
    let writer = token(&data, &[]);
    let expiration = (jiff::Timestamp::now() + jiff::SignedDuration::from_mins(30)).to_string();
    let subscription = json!({
        "changeType": "updated",
        "resource": format!("communications/presences/{ADELE}"),
        "notificationUrl": format!("{}/hook", receiver.base),
        "expirationDateTime": expiration,
        "clientState": "kept",
    });
    let (status, created) = call(&server.base, Method::POST, "/v1.0/subscriptions", &reader, Some(subscription)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    for (availability, activity) in [("Busy", "InACall"), ("DoNotDisturb", "Presenting"), ("Away", "Away")] {
        let body = json!({ "sessionId": APP, "availability": availability, "activity": activity, "expirationDuration": "PT1H" });
        let path = format!("/v1.0/users/{ADELE}/presence/setPresence");
        assert_eq!(call(&server.base, Method::POST, &path, &writer, Some(body)).await.0, 200);
    }
    receiver.wait_posts("/hook", 1).await; // the endpoint refused at least one attempt
    drop(server); // SIGKILL while the three notifications are queued

    let refused = receiver.items("/hook").len();
    receiver.answer_with(202);
    let server = start_with(&data, &global);
    let (status, _) = call(&server.base, Method::GET, &format!("/v1.0/subscriptions/{id}"), &reader, None).await;
    assert_eq!(status, 200, "the subscription survived");
    let items = receiver.wait_items("/hook", refused + 3).await;
    let delivered = &items[refused..];
    let sequences: Vec<&str> =
        delivered.iter().map(|item| item["resourceData"]["sequenceNumber"].as_str().unwrap()).collect();
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sequences, sorted, "in order, each once: {delivered:#?}");
    assert!(delivered.iter().all(|item| item["subscriptionId"] == id.as_str() && item["clientState"] == "kept"));
    let (_, now) = call(&server.base, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &reader, None).await;
    assert_eq!(sequences[2], now["sequenceNumber"].as_str().unwrap(), "the last one is the current version");
}

/// Runs the binary's command-line client against `base` with a locally minted token.
fn cli(data_dir: &Path, base: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BINARY)
        .args(["--data-dir", data_dir.to_str().unwrap(), "presence", "--url", base])
        .args(args)
        .output()
        .unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_client_reads_and_changes_presence() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let (ok, out, err) =
        cli(dir.path(), &server.base, &["set", "adele@contoso.example", "Busy", "InACall", "--expires", "PT2H"]);
    assert!(ok, "{err}");
    assert!(out.contains("availability    Busy\n") && out.contains("activity        InACall\n"), "{out}");
    assert!(out.contains(&format!("user            {ADELE}\n")), "{out}");

    let (ok, out, err) = cli(
        dir.path(),
        &server.base,
        &["status", ADELE, "Back at 3", "--expires", "2030-01-01T15:00:00", "--time-zone", "UTC"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("status message  \"Back at 3\""), "{out}");

    let (ok, out, err) = cli(dir.path(), &server.base, &["prefer", ADELE, "DoNotDisturb", "DoNotDisturb"]);
    assert!(ok, "{err}");
    assert!(out.contains("availability    DoNotDisturb\n"), "{out}");

    let (ok, out, err) = cli(dir.path(), &server.base, &["--json", "get", ADELE]);
    assert!(ok, "{err}");
    let presence: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((presence["availability"].as_str(), presence["id"].as_str()), (Some("DoNotDisturb"), Some(ADELE)));

    for args in [&["prefer", ADELE, "--clear"][..], &["status", ADELE, "--clear"], &["clear", ADELE]] {
        let (ok, _, err) = cli(dir.path(), &server.base, args);
        assert!(ok, "{args:?}: {err}");
    }
    let (_, out, _) = cli(dir.path(), &server.base, &["get", ADELE]);
    assert!(out.contains("availability    Offline\n") && !out.contains("status message"), "{out}");

    let (ok, _, err) = cli(dir.path(), &server.base, &["set", ADELE, "Busy", "Busy"]);
    assert!(!ok);
    assert!(
        err.contains("400 Bad Request: BadRequest The combination of availability 'Busy' and activity 'Busy'"),
        "{err}"
    );
    let (ok, _, err) = cli(dir.path(), &server.base, &["get", "nobody@contoso.example"]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
}

/// Waits (at most `within`) for the process to exit, and returns its status.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_ends_streams_flushes_the_store_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let writer = token(dir.path(), &[]);
    let body =
        json!({ "sessionId": APP, "availability": "Available", "activity": "Available", "expirationDuration": "PT1H" });
    let path = format!("/v1.0/users/{ADELE}/presence/setPresence");
    assert_eq!(call(&server.base, Method::POST, &path, &writer, Some(body)).await.0, 200);

    // A board stream stays open until the server stops: shutdown must end it rather than wait for it.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .uri(format!("{}/board/events", server.base))
        .header("authorization", format!("Bearer {writer}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let stream = client.request(request).await.unwrap();
    assert_eq!(stream.status(), 200);

    let started = Instant::now();
    let terminated = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(terminated.success());
    let status = wait_exit(&mut server.child, Duration::from_secs(8)).expect("no exit within 8 s of SIGTERM");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(8));
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.into_body().collect()).await;
    assert!(ended.is_ok(), "the board stream did not end");
    // Flushed: the WAL was copied into the database file and emptied.
    let wal = dir.path().join(format!("{}-wal", presence_store::DATABASE_FILE));
    assert_eq!(std::fs::metadata(&wal).map(|metadata| metadata.len()).unwrap_or(0), 0, "the WAL is not empty");

    // After the restart the presence is there.
    let server = start(dir.path());
    let reader = token(dir.path(), &["--roles", "Presence.Read.All"]);
    let (_, adele) = call(&server.base, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &reader, None).await;
    assert_eq!(adele["availability"], "Available");
}

#[tokio::test]
async fn a_signing_key_file_outside_the_data_directory_is_created_and_shared() {
    let dir = tempfile::tempdir().unwrap();
    let key = format!("signing_key_file={:?}", dir.path().join("keys/signing-key.pem").to_str().unwrap());
    // Neither directory exists yet: the server makes both.
    let data = dir.path().join("a/b");
    let server = start_with(&data, &["--set", &key]);
    assert!(data.join(presence_store::DATABASE_FILE).exists(), "the database is in the data directory");
    assert!(!data.join("signing-key.pem").exists(), "the key is where the configuration says");
    // A token minted from the key file alone (another data directory) is accepted.
    let other = dir.path().join("elsewhere");
    let token = binary::token(Path::new(BINARY), &["--data-dir", other.to_str().unwrap(), "--set", &key], &[]);
    let (status, _) = call(&server.base, Method::GET, &format!("/v1.0/users/{ADELE}/presence"), &token, None).await;
    assert_eq!(status, 200);
}
