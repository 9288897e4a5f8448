//! A real router over a real engine and SQLite store in a temporary directory, with real RS256 tokens,
//! configured with the defaults users get.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use presence_api::AppState;
use presence_core::Timestamp;
use presence_service::{ManualClock, Service, ServiceConfig, Webhooks, Workers};
use presence_store::SqliteStore;
use presence_webhook::WebhookClient;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::directory::{directory, mint, signing_key, APP, ISSUER, START, TENANT};

pub struct Server {
    pub router: Router,
    /// The presence clock of the engine when the test clock is on; otherwise a clock nothing reads.
    pub clock: Arc<ManualClock>,
    pub store: Arc<SqliteStore>,
    pub state: AppState,
    pub service: Arc<Service>,
    workers: Option<Workers>,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {:?}", self.text))
    }

    /// Asserts a Graph error envelope with this status and code, and returns the message.
    pub fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}", self.text);
        let inner = &body["error"]["innerError"];
        assert_eq!(inner["request-id"], self.headers["request-id"].to_str().unwrap());
        assert!(inner["client-request-id"].is_string());
        let date = inner["date"].as_str().unwrap();
        assert_eq!(date.len(), 19, "yyyy-MM-ddTHH:mm:ss: {date}");
        assert!(self.headers["content-type"].to_str().unwrap().starts_with("application/json"));
        body["error"]["message"].as_str().unwrap().to_owned()
    }

    pub fn ok_empty(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert!(self.text.is_empty(), "{}", self.text);
        assert!(self.headers.get("content-type").is_none(), "an empty success carries no content type");
    }
}

impl Default for Server {
    /// A server with the test clock and default settings.
    fn default() -> Self {
        Self::with(true, 64 * 1024)
    }
}

impl Server {
    /// A server with the test clock and default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// A server with or without the test clock, accepting bodies up to `max_body_bytes`.
    pub fn with(test_clock: bool, max_body_bytes: usize) -> Self {
        Self::configured(test_clock, &[&format!("max_body_bytes={max_body_bytes}")], |_| {}, &[])
    }

    /// A server allowing `limit` presence requests per `window_seconds` per app and tenant.
    pub fn throttled(limit: u32, window_seconds: u64) -> Self {
        let overrides = [format!("throttle_limit={limit}"), format!("throttle_window_seconds={window_seconds}")];
        Self::configured(true, &[&overrides[0], &overrides[1]], |_| {}, &[])
    }

    /// A server with the test clock that delivers change notifications to endpoints on this machine
    /// whose certificates `ca` (DER) issued, with its timers and deliveries running.
    pub fn notifying(ca: &[u8], adjust: impl FnOnce(&mut ServiceConfig)) -> Self {
        let mut server = Self::configured(true, &["notification_allow_internal=true"], adjust, &[ca.to_vec()]);
        server.start();
        server
    }

    /// A server with the test clock, its timers and deliveries running (so also ready).
    pub fn started() -> Self {
        let mut server = Self::new();
        server.start();
        server
    }

    /// Starts the engine's workers (timers, deliveries, the registry's follower).
    pub fn start(&mut self) {
        self.workers = Some(self.service.spawn_workers().expect("the engine starts"));
    }

    /// Builds the layers as `presenced::assemble` does, from the default settings with `overrides`, the
    /// engine's settings adjusted by `adjust`, and `extra_roots` (DER) trusted for webhooks.
    fn configured(
        test_clock: bool,
        overrides: &[&str],
        adjust: impl FnOnce(&mut ServiceConfig),
        extra_roots: &[Vec<u8>],
    ) -> Self {
        let mut all = vec!["public_url=\"http://presenced.test\"", "issuer=\"https://login.presenced.test\""];
        all.extend_from_slice(overrides);
        let settings = crate::settings(&all);
        assert_eq!(settings.issuer_base(), ISSUER);
        let mut service_config = settings.service_config();
        adjust(&mut service_config);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("the store opens"));
        let clock = Arc::new(ManualClock::new(Timestamp(START)));
        let webhooks = WebhookClient::new(service_config.limits.targets, extra_roots)
            .map(|client| Arc::new(client) as Arc<dyn Webhooks>);
        let presenced::Assembled { service, state } = presenced::assemble_with(
            &settings,
            service_config,
            webhooks,
            Arc::new(directory()),
            store.clone(),
            signing_key(),
            test_clock.then(|| clock.clone()),
        )
        .expect("the server assembles");
        Server { router: presence_api::router(state.clone()), clock, store, state, service, workers: None, _dir: dir }
    }

    /// Moves the test clock forward through the API, which also wakes the timers.
    pub async fn advance(&self, seconds: u64) {
        let reply = self.post("/_test/clock/advance", "", json!({ "seconds": seconds })).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }

    fn mint(&self, tenant: &str, app: &str, user: Option<&str>, permissions: &[&str]) -> String {
        mint(tenant, app, user, permissions)
    }

    /// An application token of the Contoso dialler with these roles.
    pub fn app(&self, roles: &[&str]) -> String {
        self.mint(TENANT, APP, None, roles)
    }

    /// An application token of `app` in `tenant`.
    pub fn app_of(&self, tenant: &str, app: &str, roles: &[&str]) -> String {
        self.mint(tenant, app, None, roles)
    }

    /// A delegated token of `user` (Contoso, the dialler app) with these scopes.
    pub fn user(&self, user: &str, scopes: &[&str]) -> String {
        self.mint(TENANT, APP, Some(user), scopes)
    }

    pub fn writer(&self) -> String {
        self.app(&["Presence.ReadWrite.All"])
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, text: String::from_utf8(bytes.to_vec()).unwrap() }
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// The presence of `user` as the dialler app sees it.
    pub async fn presence(&self, user: &str) -> Value {
        let reply = self.get(&format!("/v1.0/users/{user}/presence"), &self.app(&["Presence.Read.All"])).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()
    }

    pub async fn shows(&self, user: &str) -> (String, String) {
        let presence = self.presence(user).await;
        (presence["availability"].as_str().unwrap().into(), presence["activity"].as_str().unwrap().into())
    }

    pub async fn set_presence(&self, user: &str, availability: &str, activity: &str, duration: Option<&str>) {
        let mut body = json!({ "sessionId": APP, "availability": availability, "activity": activity });
        if let Some(duration) = duration {
            body["expirationDuration"] = json!(duration);
        }
        self.post(&format!("/v1.0/users/{user}/presence/setPresence"), &self.writer(), body).await.ok_empty(200);
    }

    pub fn advance_minutes(&self, minutes: i64) {
        self.clock.advance(minutes * 60_000);
    }
}
