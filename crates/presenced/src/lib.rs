//! presenced as a library: the configuration ([`config`], every key documented once) and the wiring of
//! the layers ([`assemble`]). The binary, the tests (`presence-testkit`) and the benchmarks build presenced
//! through it, so they run what users run, with the defaults users get.

pub mod config;
pub mod documents;

use std::sync::Arc;

use presence_api::AppState;
use presence_auth::{Directory, Issuer, SigningKey};
use presence_service::{Clock, ManualClock, Service, ServiceConfig, SystemClock, Webhooks};
use presence_store::PresenceStore;
use presence_webhook::WebhookClient;

pub use config::Config;

/// The engine and the HTTP layer of one server, wired.
pub struct Assembled {
    /// The engine: start its workers with [`Service::spawn_workers`].
    pub service: Arc<Service>,
    /// The HTTP layer's state: serve it with [`presence_api::router`].
    pub state: AppState,
}

/// Wires the layers on `store` as `config` says: the engine, whose presence clock is `test_clock` when
/// given (and `/_test/clock` then moves it) and the system clock otherwise, with the webhook client for
/// subscriber endpoints; and the HTTP layer on top. Tokens are signed and verified with `key`.
pub fn assemble(
    config: &Config,
    directory: Arc<Directory>,
    store: Arc<dyn PresenceStore>,
    key: SigningKey,
    test_clock: Option<Arc<ManualClock>>,
) -> anyhow::Result<Assembled> {
    let roots = config.notification_roots()?;
    let webhooks =
        WebhookClient::new(config.target_policy(), &roots).map(|client| Arc::new(client) as Arc<dyn Webhooks>);
    assemble_with(config, config.service_config(), webhooks, directory, store, key, test_clock)
}

/// [`assemble`] with the engine's settings and its client for subscriber endpoints (or why there is none)
/// given rather than taken from `config` (tests adjust both).
pub fn assemble_with(
    config: &Config,
    service_config: ServiceConfig,
    webhooks: Result<Arc<dyn Webhooks>, String>,
    directory: Arc<Directory>,
    store: Arc<dyn PresenceStore>,
    key: SigningKey,
    test_clock: Option<Arc<ManualClock>>,
) -> anyhow::Result<Assembled> {
    let clock: Arc<dyn Clock> = match &test_clock {
        Some(clock) => clock.clone(),
        None => Arc::new(SystemClock::default()),
    };
    let issuer = Issuer::new(key.clone(), &config.issuer_base());
    let service = Service::new(store, clock, webhooks, issuer, service_config);
    let state = AppState::new(service.clone(), directory, key, test_clock, config.api_config()?);
    Ok(Assembled { service, state })
}
