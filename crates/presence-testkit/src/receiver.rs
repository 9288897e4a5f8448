//! A real HTTPS webhook receiver: a test CA, a certificate for 127.0.0.1 issued by it, and a server that
//! answers Graph's validation handshake and records every notification POST.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the POST's body had arrived.
    pub at: std::time::Instant,
    pub path: String,
    pub content_type: String,
    pub body: Value,
}

struct Shared {
    posts: Mutex<Vec<Received>>,
    /// When set, every request is answered `307 Temporary Redirect` to this path of the receiver.
    redirect: Mutex<Option<String>>,
    status: AtomicU16,
    refuse_validation: AtomicBool,
    arrived: tokio::sync::Notify,
    /// While true, a notification POST is recorded at once but answered only when it turns false.
    held: tokio::sync::watch::Sender<bool>,
}

pub struct Receiver {
    /// `https://127.0.0.1:{port}`.
    pub base: String,
    /// The CA certificate (DER) that issued the receiver's certificate.
    pub ca_der: Vec<u8>,
    /// The same, PEM.
    pub ca_pem: String,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

async fn answer(shared: Arc<Shared>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let redirect = shared.redirect.lock().unwrap().clone();
    if let Some(target) = redirect.filter(|target| *target != uri.path()) {
        return (StatusCode::TEMPORARY_REDIRECT, [("location", target)]).into_response();
    }
    let token = uri.query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(name, _)| name == "validationToken")
            .map(|(_, value)| value.into_owned())
    });
    if let Some(token) = token {
        if shared.refuse_validation.load(Ordering::SeqCst) {
            return (StatusCode::OK, "not the token").into_response();
        }
        return (StatusCode::OK, [("content-type", "text/plain")], token).into_response();
    }
    let received = Received {
        at: std::time::Instant::now(),
        path: uri.path().to_owned(),
        content_type: headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    shared.posts.lock().unwrap().push(received);
    shared.arrived.notify_waiters();
    let _ = shared.held.subscribe().wait_for(|held| !*held).await;
    StatusCode::from_u16(shared.status.load(Ordering::SeqCst)).unwrap().into_response()
}

impl Receiver {
    pub async fn start() -> Self {
        let identity = crate::TlsIdentity::new();
        let shared = Arc::new(Shared {
            posts: Mutex::default(),
            redirect: Mutex::default(),
            status: AtomicU16::new(202),
            refuse_validation: AtomicBool::new(false),
            arrived: tokio::sync::Notify::new(),
            held: tokio::sync::watch::Sender::new(false),
        });
        let handler_shared = shared.clone();
        let router = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            answer(handler_shared.clone(), uri, headers, body)
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = crate::settings(&[]).connection_limits();
        tokio::spawn(presence_api::serve(
            listener,
            router,
            limits,
            Some(identity.server_config),
            std::future::pending(),
        ));
        Receiver {
            base: format!("https://{address}"),
            ca_der: identity.ca_der,
            ca_pem: identity.ca_pem,
            shared,
            _dir: identity.dir,
        }
    }

    /// The status notifications are answered with from now on.
    pub fn answer_with(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// Holds the answers to notification POSTs (they are recorded when they arrive) until
    /// [`Receiver::release`]: the sender's attempt stays in flight meanwhile.
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    /// Answers the held POSTs, and the next ones at once.
    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// Answers every request to another path with `307 Temporary Redirect` to `path` (which answers as
    /// usual), so that a client that follows redirects is seen posting there.
    pub fn redirect_to(&self, path: &str) {
        *self.shared.redirect.lock().unwrap() = Some(path.to_owned());
    }

    /// Makes the validation handshake fail (a 200 with the wrong body).
    pub fn refuse_validation(&self) {
        self.shared.refuse_validation.store(true, Ordering::SeqCst);
    }

    /// Every POST so far to `path`.
    pub fn posts(&self, path: &str) -> Vec<Received> {
        self.shared.posts.lock().unwrap().iter().filter(|post| post.path == path).cloned().collect()
    }

    /// Every POST so far, of any path, handed over and forgotten: a long run reads its arrivals in
    /// rounds without the receiver holding them all.
    pub fn take_posts(&self) -> Vec<Received> {
        std::mem::take(&mut *self.shared.posts.lock().unwrap())
    }

    /// Every notification item so far POSTed to `path`, in arrival order.
    pub fn items(&self, path: &str) -> Vec<Value> {
        self.posts(path)
            .into_iter()
            .flat_map(|post| post.body["value"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// How many notification items were POSTed to `path` so far (without copying them).
    pub fn item_count(&self, path: &str) -> usize {
        let posts = self.shared.posts.lock().unwrap();
        posts
            .iter()
            .filter(|post| post.path == path)
            .map(|post| post.body["value"].as_array().map_or(0, Vec::len))
            .sum()
    }

    /// Waits (at most 20 seconds, as a guard against a hang) until `path` got at least `count` items, and
    /// returns how many it got.
    pub async fn wait_item_count(&self, path: &str, count: usize) -> usize {
        self.wait_for(
            || Some(self.item_count(path)).filter(|got| *got >= count),
            || format!("{path}: expected {count} notification items, got {}", self.item_count(path)),
        )
        .await
    }

    /// Waits (at most 20 seconds, as a guard against a hang) until `path` got at least `count` items.
    pub async fn wait_items(&self, path: &str, count: usize) -> Vec<Value> {
        self.wait_for(
            || Some(self.items(path)).filter(|items| items.len() >= count),
            || format!("{path}: expected {count} notification items, got {:#?}", self.items(path)),
        )
        .await
    }

    /// Waits until `path` got at least `count` POSTs.
    pub async fn wait_posts(&self, path: &str, count: usize) -> Vec<Received> {
        self.wait_for(
            || Some(self.posts(path)).filter(|posts| posts.len() >= count),
            || format!("{path}: expected {count} POSTs, got {:#?}", self.posts(path)),
        )
        .await
    }

    /// Checks `ready` now and after every POST that arrives until it holds, for at most `within`: whether
    /// it came to hold.
    pub async fn wait_until(&self, within: Duration, ready: impl Fn() -> bool) -> bool {
        self.wait_within(within, || ready().then_some(())).await.is_some()
    }

    /// Checks `ready` after every POST that arrives until it answers, for at most 20 seconds.
    async fn wait_for<T>(&self, ready: impl Fn() -> Option<T>, failure: impl Fn() -> String) -> T {
        match self.wait_within(Duration::from_secs(20), ready).await {
            Some(value) => value,
            None => panic!("{}", failure()),
        }
    }

    async fn wait_within<T>(&self, within: Duration, ready: impl Fn() -> Option<T>) -> Option<T> {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                if let Some(value) = ready() {
                    return value;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(within, wait).await.ok()
    }
}

/// `config` (a presenced configuration's text) changed to deliver to test receivers: internal targets
/// allowed, and the receivers' CA `ca_pem` trusted, written to `dir/webhook-ca.pem`.
pub fn trusting_receivers(config: &str, ca_pem: &str, dir: &Path) -> String {
    let ca_file = dir.join("webhook-ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("the CA file is written");
    config.replace("notification_allow_internal = false", "notification_allow_internal = true").replace(
        "# notification_ca_file = \"/etc/presenced/webhook-ca.pem\"",
        &format!("notification_ca_file = {:?}", ca_file.to_str().expect("a UTF-8 path")),
    )
}
