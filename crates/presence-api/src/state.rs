//! What every request shares: the engine, the directory and token verifier, throttling, metrics, and the
//! settings of the HTTP layer, each resolved once at start-up into the part that uses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_auth::{Directory, SigningKey, Verifier};
use presence_service::{ManualClock, Service};

use crate::metrics::Metrics;
use crate::throttle::{Throttle, ThrottleConfig};

/// Settings of the HTTP layer. There is no `Default`: every default lives once, in the binary's settings
/// table (`presenced config example`).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The URL clients reach this server at, used in `@odata.context` and the OpenID metadata.
    pub public_url: String,
    /// Base of the token issuer: tokens carry `iss = {issuer_base}/{tenant}/v2.0`.
    pub issuer_base: String,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Time a client has to send a request body once its head arrived; a slower one gets `408`.
    pub body_read_timeout: Duration,
    /// Throttling of presence operations per application and tenant.
    pub throttle: ThrottleConfig,
    /// Serve Prometheus metrics at `/metrics`.
    pub metrics: bool,
    /// Serve the live presence board at `/board`.
    pub board: bool,
    /// The trusted identity providers, whose tokens are accepted beside the local issuer's.
    pub trust_keys: Option<Arc<crate::trust::TrustKeys>>,
}

/// How request bodies are read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    pub(crate) max_bytes: usize,
    pub(crate) read_timeout: Duration,
}

/// Open board streams per `(tenant, application)`.
pub(crate) type OpenStreams = Mutex<HashMap<(String, String), usize>>;

/// Everything a request needs, shared by all requests.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) service: Arc<Service>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) verifier: Verifier,
    /// The issuer's key, for the JWKS document.
    pub(crate) signing_key: SigningKey,
    /// The test clock, when presence time is moved by `/_test/clock` (never in production).
    pub(crate) test_clock: Option<Arc<ManualClock>>,
    pub(crate) throttle: Throttle,
    pub(crate) metrics: Metrics,
    pub(crate) streams: OpenStreams,
    /// Set when the server starts shutting down: long-lived streams end.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    pub(crate) public_url: String,
    pub(crate) issuer_base: String,
    pub(crate) body: BodyLimits,
    pub(crate) serve_metrics: bool,
    pub(crate) serve_board: bool,
    pub(crate) trust_keys: Option<Arc<crate::trust::TrustKeys>>,
    /// Whether the trusted providers' keys were fetched once (each fetch done, or failed): until then
    /// the server is not ready, as it would refuse tokens it will accept a moment later. Set from the
    /// start when there are no trusts.
    pub(crate) trust_keys_fetched: std::sync::atomic::AtomicBool,
    /// The directory requests see: configured users, and those added from trusted tokens.
    pub(crate) users: crate::users::Users,
}

impl AppState {
    /// Wires the HTTP layer to `service`. With `test_clock` (the clock `service` reads), `/_test/clock` is
    /// served and moves it.
    pub fn new(
        service: Arc<Service>,
        directory: Arc<Directory>,
        signing_key: SigningKey,
        test_clock: Option<Arc<ManualClock>>,
        config: ApiConfig,
    ) -> Self {
        let trusts = config.trust_keys.as_ref().map(|keys| keys.trusts().to_vec()).unwrap_or_default();
        let users = crate::users::Users::new(directory.clone(), &trusts);
        let verifier = Verifier::new(&signing_key, &config.issuer_base, directory.clone()).with_trusts(trusts);
        let metrics = Metrics::new(&service);
        metrics.directory_users.set(directory.tenants().map(|tenant| tenant.user_count() as i64).sum());
        AppState {
            inner: Arc::new(Inner {
                service,
                directory,
                verifier,
                signing_key,
                test_clock,
                throttle: Throttle::new(config.throttle),
                metrics,
                streams: Mutex::default(),
                stopping: tokio::sync::watch::Sender::new(false),
                public_url: config.public_url.trim_end_matches('/').to_owned(),
                issuer_base: config.issuer_base,
                body: BodyLimits { max_bytes: config.max_body_bytes, read_timeout: config.body_read_timeout },
                serve_metrics: config.metrics,
                serve_board: config.board,
                trust_keys_fetched: std::sync::atomic::AtomicBool::new(config.trust_keys.is_none()),
                trust_keys: config.trust_keys,
                users,
            }),
        }
    }

    /// Marks the start of shutdown: the board's event streams end, so that draining does not wait for them.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// The engine behind the API.
    pub fn service(&self) -> &Arc<Service> {
        &self.inner.service
    }

    /// The public URL without a trailing slash.
    pub(crate) fn public_url(&self) -> &str {
        &self.inner.public_url
    }
}

/// Keeps the trusted providers' keys fresh: fetches them now (the server is ready once this first fetch
/// is over), then every `every`. Runs until the server stops (spawn it).
pub async fn keep_trust_keys_fresh(state: AppState, every: std::time::Duration) {
    let Some(keys) = state.inner.trust_keys.clone() else { return };
    loop {
        keys.fetch_all(&state.inner.verifier).await;
        state.inner.trust_keys_fetched.store(true, std::sync::atomic::Ordering::Release);
        tokio::time::sleep(every).await;
    }
}
