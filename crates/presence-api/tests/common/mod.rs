//! A real router over a real SQLite store in a temporary directory, with real RS256 tokens.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use presence_api::{ApiConfig, AppState, ManualClock};
use presence_auth::{Directory, Issuer, SigningKey, Tenant, TokenRequest};
use presence_core::Timestamp;
use presence_store::SqliteStore;
use serde_json::{json, Value};
use tower::ServiceExt;

pub mod receiver;

pub const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
pub const OTHER_TENANT: &str = "6f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
pub const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
pub const APP2: &str = "1b1f2e6d-9073-4e40-8e63-4c2d4c1e6f22";
pub const OTHER_APP: &str = "2c2f3e7d-9073-4e40-8e63-4c2d4c1e6f33";
pub const ADELE: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
pub const ALEX: &str = "5e9a1c7b-8d44-4b0e-a3f2-6c1d2e3f4a5b";
pub const STRANGER: &str = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d6e7f";
pub const ISSUER: &str = "https://login.presenced.test";
/// 2026-09-01T10:00:00Z.
pub const START: i64 = 1_788_256_800_000;

fn key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate).clone()
}

fn directory() -> Directory {
    let tenants: Vec<Tenant> = serde_json::from_value(json!([
        { "id": TENANT, "displayName": "Contoso",
          "users": [
            { "id": ADELE, "userPrincipalName": "adele@contoso.example", "displayName": "Adele Vance" },
            { "id": ALEX, "userPrincipalName": "alex@contoso.example", "displayName": "Alex Wilber" }],
          "apps": [{ "id": APP, "displayName": "Dialler" }, { "id": APP2, "displayName": "Busy light" }] },
        { "id": OTHER_TENANT, "displayName": "Fabrikam",
          "users": [{ "id": STRANGER, "userPrincipalName": "sam@fabrikam.example", "displayName": "Sam" }],
          "apps": [{ "id": OTHER_APP, "displayName": "Fabrikam app" }] }
    ]))
    .unwrap();
    Directory::new(tenants).unwrap()
}

pub struct Server {
    pub router: Router,
    pub clock: Arc<ManualClock>,
    pub store: Arc<SqliteStore>,
    pub state: AppState,
    issuer: Issuer,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
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

impl Server {
    pub fn new() -> Self {
        Self::with(true, 64 * 1024)
    }

    pub fn with(test_clock: bool, max_body_bytes: usize) -> Self {
        Self::configured(test_clock, max_body_bytes, presence_api::ThrottleConfig::default())
    }

    /// A server allowing `limit` presence requests per `window_seconds` per app and tenant.
    pub fn throttled(limit: u32, window_seconds: u64) -> Self {
        let throttle = presence_api::ThrottleConfig { limit, window: std::time::Duration::from_secs(window_seconds) };
        Self::configured(true, 64 * 1024, throttle)
    }

    fn configured(test_clock: bool, max_body_bytes: usize, throttle: presence_api::ThrottleConfig) -> Self {
        let config = ApiConfig {
            public_url: "http://presenced.test".into(),
            issuer_base: ISSUER.into(),
            max_body_bytes,
            throttle,
            ..ApiConfig::default()
        };
        Self::build(tempfile::tempdir().unwrap(), Arc::new(ManualClock::new(Timestamp(START))), test_clock, config)
    }

    fn build(dir: tempfile::TempDir, clock: Arc<ManualClock>, test_clock: bool, config: ApiConfig) -> Self {
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let state =
            AppState::new(store.clone(), Arc::new(directory()), key(), test_clock.then(|| clock.clone()), config);
        Server {
            router: presence_api::router(state.clone()),
            clock,
            store,
            state,
            issuer: Issuer::new(key(), ISSUER),
            tasks: Vec::new(),
            dir,
        }
    }

    /// A server with the test clock that delivers change notifications to endpoints on this machine
    /// whose certificates `ca` (DER) issued, with its timers and deliveries running.
    pub fn notifying(ca: &[u8], adjust: impl FnOnce(&mut presence_api::NotifyConfig)) -> Self {
        let mut notifications = presence_api::NotifyConfig::default();
        notifications.limits.targets.allow_internal = true;
        notifications.extra_roots = vec![ca.to_vec()];
        adjust(&mut notifications);
        let config = ApiConfig {
            public_url: "http://presenced.test".into(),
            issuer_base: ISSUER.into(),
            notifications,
            ..ApiConfig::default()
        };
        let mut server =
            Self::build(tempfile::tempdir().unwrap(), Arc::new(ManualClock::new(Timestamp(START))), true, config);
        server.tasks = server.state.start_notifications().unwrap();
        server
    }

    /// A server with the test clock, its timers and deliveries running (so also ready).
    pub fn started() -> Self {
        let mut server = Self::new();
        server.tasks = server.state.start_notifications().unwrap();
        server
    }

    /// Moves the test clock forward through the API, which also wakes the timers.
    pub async fn advance(&self, seconds: u64) {
        let reply = self.post("/_test/clock/advance", "", json!({ "seconds": seconds })).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    }

    fn mint(&self, tenant: &str, app: &str, user: Option<&str>, permissions: &[&str]) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        self.issuer.mint(&TokenRequest {
            tenant_id: tenant.into(),
            app_id: app.into(),
            user_id: user.map(str::to_owned),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            issued_at: now,
            lifetime_seconds: 3600,
        })
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
