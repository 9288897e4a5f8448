//! The running presence engine, as a library with no HTTP in it.
//!
//! A [`Service`] owns the store, the clock, and everything that runs between requests:
//! - the write path ([`writer`]): writes of distinct users waiting at once are applied in one store call by
//!   one writer thread, each user's writes in order, each stamped under its user's lock ([`locks`]);
//! - reads ([`read`]): facts and "now" taken with no write of those users in between, then evaluated;
//! - the subscription registry ([`registry`]): which subscriptions watch whom, in memory, following the
//!   store's change log so that subscriptions made by other processes are learnt;
//! - subscription lifecycle ([`lifecycle`]): create, renew, delete, `reauthorizationRequired` and expiry,
//!   each an atomic change of the stored subscription;
//! - timers ([`scheduler`]): users' timers claimed from the store, subscriptions' timers, retries;
//! - delivery ([`dispatch`]): one delivery at a time per queue, through a [`Webhooks`] client;
//! - the change feed ([`feed`]): the users whose presence changed visibly, for live listeners.
//!
//! Its API speaks in `presence-core`, `presence-store` and `presence-notify` types. Callers build a
//! service with [`Service::new`], start its background work with [`Service::spawn_workers`] (the workers
//! stop when the returned [`Workers`] is dropped), and stop it with [`Service::shutdown`].
//!
//! What it must never do: know HTTP (no axum, hyper or tower type, no Graph wire JSON of requests or
//! responses), read the system clock other than through its [`Clock`], or keep state that another process
//! sharing the store cannot learn from the store (the in-memory registry and timers are rebuilt from it).

pub mod clock;
mod dispatch;
mod error;
mod feed;
mod lifecycle;
mod locks;
mod metrics;
mod read;
mod registry;
mod scheduler;
mod webhooks;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use presence_auth::Issuer;
use presence_core::{Change, Command};
use presence_notify::subscription::SubscriptionLimits;
use presence_store::{DirectoryUser, PresenceStore, SharedCount, StoreStats, UserKey};

pub use clock::{system_now, Clock, ManualClock, SystemClock};
pub use error::ServiceError;
pub use feed::ChangeFeed;
pub use lifecycle::{Renewal, Subscriber};
pub use webhooks::{Posted, WebhookFuture, Webhooks};

/// Settings of the engine. There is no `Default`: every default lives once, in the binary's settings
/// table (`presenced config example`).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Subscription lifetime and notification-target rules.
    pub limits: SubscriptionLimits,
    /// Time a subscriber has to answer a notification POST (Graph: 3 seconds).
    pub delivery_timeout: Duration,
    /// Time a subscriber has to answer the validation handshake (Graph: 10 seconds).
    pub validation_timeout: Duration,
    /// How long undelivered notifications are retried before they are dropped (Graph: 4 hours).
    pub retry_window: Duration,
    /// Most subscriptions per application and tenant.
    pub max_subscriptions_per_app: usize,
    /// Most notifications queued for one subscription; beyond it they are dropped with a `missed` event.
    pub max_queued_per_subscription: usize,
    /// Most notifications in one POST.
    pub max_batch: usize,
    /// Most deliveries in flight at once.
    pub max_concurrent_deliveries: usize,
}

/// The engine. Shared as `Arc<Service>` by the HTTP layer and the background workers.
pub struct Service {
    store: Arc<dyn PresenceStore>,
    clock: Arc<dyn Clock>,
    locks: locks::UserLocks,
    writer: writer::Writer,
    registry: registry::Registry,
    timers: scheduler::Timers,
    deliveries: dispatch::Dispatch,
    lifecycle: lifecycle::Settings,
    /// The client for subscriber endpoints, or why there is none (no trusted root certificates): presence
    /// is still served, and subscription requests say what is missing.
    webhooks: Result<Arc<dyn Webhooks>, String>,
    /// Signs the `validationTokens` of rich notifications.
    issuer: Issuer,
    /// This process's name as the holder of delivery leases.
    node: String,
    feed: feed::Feed,
    metrics: metrics::ServiceMetrics,
    /// Set once the stored subscriptions and queues are loaded and the workers run.
    ready: AtomicBool,
}

impl Service {
    /// Builds the engine on `store` with presence time from `clock`. `webhooks` is the client for
    /// subscriber endpoints (or why there is none). Starts the writer thread; call
    /// [`Service::spawn_workers`] inside a Tokio runtime before serving.
    pub fn new(
        store: Arc<dyn PresenceStore>,
        clock: Arc<dyn Clock>,
        webhooks: Result<Arc<dyn Webhooks>, String>,
        issuer: Issuer,
        config: ServiceConfig,
    ) -> Arc<Self> {
        if let Err(reason) = &webhooks {
            tracing::warn!("change notifications are unavailable: {reason}");
        }
        Arc::new_cyclic(|service| Service {
            store,
            clock,
            locks: locks::UserLocks::new(),
            writer: writer::Writer::start(service.clone()),
            registry: registry::Registry::default(),
            timers: scheduler::Timers::default(),
            deliveries: dispatch::Dispatch::new(&config),
            lifecycle: lifecycle::Settings::new(&config),
            webhooks,
            issuer,
            node: uuid::Uuid::new_v4().to_string(),
            feed: feed::Feed::new(),
            metrics: metrics::ServiceMetrics::new(),
            ready: AtomicBool::new(false),
        })
    }

    /// Loads the stored subscriptions and queues, then starts the timers, the dispatcher and the registry's
    /// follower of the store's change log. Call once, inside the runtime. The workers stop when the
    /// returned [`Workers`] is dropped (or given to [`Service::shutdown`]).
    pub fn spawn_workers(self: &Arc<Self>) -> Result<Workers, ServiceError> {
        self.load_subscriptions()?;
        self.sweep_queues()?;
        let tasks = vec![
            tokio::spawn(self.clone().run_scheduler()),
            tokio::spawn(self.clone().run_dispatcher()),
            tokio::spawn(self.clone().run_follower()),
            tokio::spawn(self.clone().run_change_follower()),
        ];
        self.deliveries.kick();
        self.ready.store(true, Ordering::SeqCst);
        Ok(Workers { tasks })
    }

    /// Stops cleanly: stops the workers, lets deliveries in flight finish (each has the notification
    /// timeout; one that does not finish is delivered again after a restart), and closes the store. Call
    /// once requests are drained.
    pub async fn shutdown(self: &Arc<Self>, workers: Workers) {
        drop(workers);
        self.finish_deliveries().await;
        match self.blocking(|service| Ok(service.store.close()?)).await {
            Ok(()) => tracing::info!("store closed"),
            Err(error) => tracing::error!(%error, "closing the store at shutdown failed"),
        }
    }

    /// Presence time now.
    pub fn now(&self) -> presence_core::Timestamp {
        self.clock.now()
    }

    /// Tells the timers that the clock moved (the test clock), so that what fell due runs now.
    pub fn clock_moved(&self) {
        self.timers.wake();
    }

    /// Applies `command` to the user's facts at the current instant, taken under the user's lock, with the
    /// notifications it causes and the user's next timer; returns once that is durable.
    pub async fn apply(&self, key: UserKey, command: Command) -> Result<Change, ServiceError> {
        self.write(key, move |facts, now| {
            let change = command.apply(facts, now)?;
            let visible = change.is_visible().then(|| change.after.clone());
            Ok((change, visible))
        })
        .await
    }

    /// The issuer of this server's tokens (its signing key): what the token endpoint mints with.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The stream of users whose presence changed visibly (writes and timers), as the changes become
    /// durable.
    pub fn follow_changes(&self) -> ChangeFeed {
        self.feed.follow()
    }

    /// Whether stored subscriptions and queues are loaded and the workers run (readiness).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Whether the store answers (readiness).
    pub async fn ping(self: &Arc<Self>) -> Result<(), ServiceError> {
        self.blocking(|service| Ok(service.store.ping()?)).await
    }

    /// Shares the test clock with the other processes of the store: raises the shared instant to `clock`'s
    /// and moves `clock` forward to the shared instant when another process moved it further. Answers
    /// false when the store shares no test clock (it serves one process).
    pub async fn share_test_clock(self: &Arc<Self>, clock: Arc<ManualClock>) -> Result<bool, ServiceError> {
        let local = clock.now().as_millis();
        let Some(shared) = self.blocking(move |service| Ok(service.store.share_test_clock(local)?)).await? else {
            return Ok(false);
        };
        if clock.advance_to(presence_core::Timestamp(shared)) {
            self.clock_moved();
        }
        Ok(true)
    }

    /// Adds `counts` to the counters every process of the store shares and answers their totals; `None`
    /// when the store serves one process.
    pub async fn add_to_shared_counters(
        self: &Arc<Self>,
        counts: Vec<SharedCount>,
    ) -> Result<Option<Vec<u64>>, ServiceError> {
        self.blocking(move |service| Ok(service.store.add_to_shared_counters(&counts)?)).await
    }

    /// Adds `user` to the directory of `tenant_id` kept in the store (or updates its names), durably.
    pub async fn put_directory_user(
        self: &Arc<Self>,
        tenant_id: String,
        user: DirectoryUser,
    ) -> Result<(), ServiceError> {
        self.blocking(move |service| Ok(service.store.put_directory_user(&tenant_id, &user)?)).await
    }

    /// The added users of `tenant_id` with these ids, in order (`None` for an id not added).
    pub async fn directory_users(
        self: &Arc<Self>,
        tenant_id: String,
        ids: Vec<String>,
    ) -> Result<Vec<Option<DirectoryUser>>, ServiceError> {
        self.blocking(move |service| Ok(service.store.directory_users(&tenant_id, &ids)?)).await
    }

    /// The added user of `tenant_id` with this user principal name.
    pub async fn directory_user_by_upn(
        self: &Arc<Self>,
        tenant_id: String,
        upn: String,
    ) -> Result<Option<DirectoryUser>, ServiceError> {
        self.blocking(move |service| Ok(service.store.directory_user_by_upn(&tenant_id, &upn)?)).await
    }

    /// Up to `limit` added users of `tenant_id` in id order, after the id `after` when given.
    pub async fn list_directory_users(
        self: &Arc<Self>,
        tenant_id: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<DirectoryUser>, ServiceError> {
        self.blocking(move |service| Ok(service.store.list_directory_users(&tenant_id, after.as_deref(), limit)?)).await
    }

    /// The store's monitoring counts now, when the backend keeps them.
    pub async fn store_stats(self: &Arc<Self>) -> Result<Option<StoreStats>, ServiceError> {
        self.blocking(|service| Ok(service.store.stats(service.clock.now().as_millis())?)).await
    }

    /// Active subscriptions, delivery queues with notifications waiting, and notifications waiting.
    pub fn counts(&self) -> Counts {
        let (queues, queued) = self.deliveries.counts();
        Counts { subscriptions: self.registry.count(), queues, queued }
    }

    /// Registers the engine's metrics (store operation times, notification POSTs, delivered and dropped
    /// notifications) in `registry`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    /// Runs `work` on a blocking thread (store calls block).
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let service = self.clone();
        tokio::task::spawn_blocking(move || work(&service))
            .await
            .map_err(|error| ServiceError::Internal(format!("storage task failed: {error}")))?
    }
}

/// Monitoring counts of the engine's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Active subscriptions.
    pub subscriptions: usize,
    /// Delivery queues with notifications waiting.
    pub queues: usize,
    /// Notifications waiting, all queues.
    pub queued: usize,
}

/// The background work of a running [`Service`]; dropping it stops the work.
pub struct Workers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
