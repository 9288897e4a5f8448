#![recursion_limit = "256"]

//! The Microsoft Graph presence API over HTTP: routing, wire types, the error envelope.
//!
//! Every request under `/v1.0` and `/beta` goes through one path: the [`envelope`] middleware gives it a
//! request id; [`route::resolve`] turns method and path into an [`route::Endpoint`] (Graph's case-insensitive
//! segments, qualified and unqualified action names); the bearer token is verified into a caller;
//! [`handlers`] authorise the caller, decode the body into a validated core command, and run it against
//! the store at the instant the [`clock`] gives. Errors of every layer become one [`error::ApiError`],
//! rendered as Graph's error envelope in one place.
//!
//! This crate holds no presence rule (that is `presence-core`) and no durable state of its own.

mod action;
pub mod batch;
mod board;
pub mod clock;
mod consistency;
mod envelope;
pub mod error;
mod handlers;
mod metrics;
pub mod notify;
pub mod openapi;
pub mod route;
pub mod server;
mod subscriptions;
pub mod throttle;
mod timezone;
pub mod tls;
mod webhook;
mod wire;
mod writer;

use std::sync::Arc;

use axum::Router;
use presence_auth::{Directory, Issuer, SigningKey, Verifier};
use presence_store::PresenceStore;

pub use action::decode_action;
pub use clock::{Clock, ManualClock, SystemClock};
pub use handlers::MAX_IDS_PER_REQUEST;
pub use notify::NotifyConfig;
pub use server::{serve, ConnectionLimits};
pub use throttle::ThrottleConfig;
pub use wire::encode_presences;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The URL clients reach this server at, used in `@odata.context` and the OpenID metadata.
    pub public_url: String,
    /// Base of the token issuer: tokens carry `iss = {issuer_base}/{tenant}/v2.0`.
    pub issuer_base: String,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Throttling of presence operations per application and tenant.
    pub throttle: ThrottleConfig,
    /// Time a client has to send a request body once its head arrived; a slower one gets `408`.
    pub body_read_timeout: std::time::Duration,
    /// Change notifications: subscription limits, targets, delivery.
    pub notifications: NotifyConfig,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
    /// Serve the live presence board at `/board`.
    pub board: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: "http://127.0.0.1:8080".into(),
            issuer_base: "http://127.0.0.1:8080".into(),
            max_body_bytes: 256 * 1024,
            throttle: ThrottleConfig::default(),
            body_read_timeout: std::time::Duration::from_secs(30),
            notifications: NotifyConfig::default(),
            metrics: true,
            board: true,
        }
    }
}

/// Everything a request needs, shared by all requests.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn PresenceStore>,
    directory: Arc<Directory>,
    verifier: Verifier,
    signing_key: SigningKey,
    issuer: Issuer,
    notifier: notify::Notifier,
    clock: Arc<dyn Clock>,
    test_clock: Option<Arc<ManualClock>>,
    throttle: throttle::Throttle,
    locks: consistency::UserLocks,
    writer: writer::Writer,
    metrics: metrics::Metrics,
    /// Set once stored subscriptions and queues are loaded (`/readyz`).
    ready: std::sync::atomic::AtomicBool,
    /// Visible changes, for the board's listeners.
    feed: Arc<board::Feed>,
    /// Set when the server starts shutting down: long-lived streams end.
    stopping: tokio::sync::watch::Sender<bool>,
    config: ApiConfig,
}

impl AppState {
    /// Wires the parts. With `test_clock`, presence time is that clock and `/_test/clock` is served.
    /// Call [`AppState::start_notifications`] inside the runtime before serving.
    pub fn new(
        store: Arc<dyn PresenceStore>,
        directory: Arc<Directory>,
        signing_key: SigningKey,
        test_clock: Option<Arc<ManualClock>>,
        config: ApiConfig,
    ) -> Self {
        let notifier = notify::Notifier::new(config.notifications.clone());
        let issuer = Issuer::new(signing_key.clone(), &config.issuer_base);
        let verifier = Verifier::new(&signing_key, &config.issuer_base, directory.clone());
        let clock: Arc<dyn Clock> = match &test_clock {
            Some(clock) => clock.clone(),
            None => Arc::new(SystemClock::default()),
        };
        let throttle = throttle::Throttle::new(config.throttle);
        let metrics = metrics::Metrics::new();
        metrics.directory_users.set(directory.tenants().map(|tenant| tenant.users.len() as i64).sum());
        AppState {
            inner: Arc::new_cyclic(|inner| Inner {
                store,
                directory,
                verifier,
                signing_key,
                issuer,
                notifier,
                clock,
                test_clock,
                throttle,
                locks: consistency::UserLocks::new(),
                writer: writer::Writer::start(inner.clone()),
                metrics,
                ready: std::sync::atomic::AtomicBool::new(false),
                feed: Arc::new(board::Feed::new()),
                stopping: tokio::sync::watch::Sender::new(false),
                config,
            }),
        }
    }
}

impl AppState {
    pub(crate) fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// Marks the start of shutdown: the board's event streams end, so that draining does not wait for them.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }
}

/// The complete router: the Graph API, the issuer's metadata, and (when enabled) the test clock.
pub fn router(state: AppState) -> Router {
    handlers::router(state)
}
