//! Change notifications at run time: which subscriptions watch whom, the timers, and webhook delivery.
//!
//! How a change reaches a subscriber:
//! 1. A write, or a user's timer, runs under the user's lock: `presence_core::due_changes` yields every
//!    time-driven change owed up to now, the command (if any) yields its own change, and one notification
//!    per change and watching subscription is queued **in the same store transaction** as the facts and the
//!    user's next timer. So a change is never lost between commit and delivery, and never reported twice.
//! 2. After the commit, the queues that grew are marked ready; the dispatcher starts one delivery per ready
//!    queue (at most one at a time per queue, so a subscriber gets a user's changes in order), up to a
//!    bounded number at once.
//! 3. A delivery POSTs up to `max_batch` queued notifications for the same URL in one
//!    changeNotificationCollection and removes them from the store on a 2xx answer. Otherwise the queue
//!    waits and retries ([`presence_notify::delivery::retry_delay`]); notifications older than the retry
//!    window are dropped with a `missed` lifecycle event.
//!
//! Users' timers live in the store (an indexed instant per user with a pending transition), so nothing
//! scans all users: the scheduler asks for the earliest timer and sleeps until then, or until a write, a
//! new subscription timer or the test clock wakes it. Subscription expiry and `reauthorizationRequired`
//! are in-memory timers rebuilt from the stored subscriptions at start-up.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use presence_core::{due_changes, next_change, Presence, Timestamp, UserFacts};
use presence_notify::delivery::{reauthorization_at, retry_delay, EndpointHealth, Verdict, SLOW_ENDPOINT_DELAY};
use presence_notify::encryption::{seal, EncryptionCertificate};
use presence_notify::record::{queue_owner, SubscriptionRecord};
use presence_notify::subscription::SubscriptionLimits;
use presence_notify::target::check_url;
use presence_store::{Effects, NewNotification, QueuedNotification, StoreError, StoredSubscription, UserKey};
use serde_json::{json, Map, Value};
use tokio::sync::{Notify, Semaphore};

use crate::error::ApiError;
use crate::metrics::DeliveryOutcome;
use crate::webhook::{Posted, Webhooks};
use crate::wire::{format_instant, sequence_text, PresenceJson};
use crate::AppState;

/// Settings of change notifications.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Subscription lifetime and notification-target rules.
    pub limits: SubscriptionLimits,
    /// Extra trusted root certificates (DER) for subscriber endpoints, beside the platform's.
    pub extra_roots: Vec<Vec<u8>>,
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

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            limits: SubscriptionLimits::default(),
            extra_roots: Vec::new(),
            delivery_timeout: Duration::from_secs(3),
            validation_timeout: Duration::from_secs(10),
            retry_window: Duration::from_secs(4 * 3600),
            max_subscriptions_per_app: 1000,
            max_queued_per_subscription: 10_000,
            max_batch: 100,
            max_concurrent_deliveries: 64,
        }
    }
}

/// A live subscription: its record and its parsed certificate.
pub(crate) struct Active {
    pub(crate) record: SubscriptionRecord,
    certificate: Option<EncryptionCertificate>,
}

impl Active {
    pub(crate) fn new(record: SubscriptionRecord) -> Self {
        let certificate =
            record.encryption_certificate.as_deref().and_then(|text| EncryptionCertificate::from_base64(text).ok());
        Active { record, certificate }
    }
}

#[derive(Default)]
struct Registry {
    subscriptions: HashMap<String, Arc<Active>>,
    watchers: HashMap<UserKey, Vec<String>>,
}

impl Registry {
    fn insert(&mut self, active: Arc<Active>) {
        self.remove(&active.record.id);
        for user in &active.record.user_ids {
            let key = UserKey { tenant_id: active.record.tenant_id.clone(), user_id: user.clone() };
            self.watchers.entry(key).or_default().push(active.record.id.clone());
        }
        self.subscriptions.insert(active.record.id.clone(), active);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Active>> {
        let active = self.subscriptions.remove(id)?;
        for user in &active.record.user_ids {
            let key = UserKey { tenant_id: active.record.tenant_id.clone(), user_id: user.clone() };
            if let Some(ids) = self.watchers.get_mut(&key) {
                ids.retain(|other| other != id);
                if ids.is_empty() {
                    self.watchers.remove(&key);
                }
            }
        }
        Some(active)
    }
}

/// Where one delivery queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueState {
    /// Waiting in `ready` for a delivery slot.
    Ready,
    /// A delivery is running; `again` when more was queued meanwhile.
    InFlight { again: bool },
    /// Waiting until this instant before the next attempt.
    Waiting(i64),
}

#[derive(Default)]
struct Deliveries {
    states: HashMap<String, QueueState>,
    ready: VecDeque<String>,
    waiting: BTreeSet<(i64, String)>,
    attempts: HashMap<String, u32>,
    lengths: HashMap<String, usize>,
}

impl Deliveries {
    fn mark_ready(&mut self, queue: &str) {
        match self.states.get_mut(queue) {
            None => {
                self.states.insert(queue.to_owned(), QueueState::Ready);
                self.ready.push_back(queue.to_owned());
            }
            Some(QueueState::InFlight { again }) => *again = true,
            Some(QueueState::Ready | QueueState::Waiting(_)) => {}
        }
    }
}

/// The run-time side of change notifications, shared by requests and the background tasks.
pub(crate) struct Notifier {
    pub(crate) config: NotifyConfig,
    registry: RwLock<Registry>,
    /// Serialises changes to subscriptions (create, update, remove): each checks the current record and
    /// writes the store and the registry as one step.
    writes: Mutex<()>,
    deliveries: Mutex<Deliveries>,
    subscription_timers: Mutex<BTreeSet<(i64, String)>>,
    health: Mutex<HashMap<String, EndpointHealth>>,
    /// The client for subscriber endpoints, or why there is none (no trusted root certificates): the
    /// server still serves presence, and subscription requests say what is missing.
    webhooks: Result<Webhooks, String>,
    wake: Notify,
    /// The instant the scheduler sleeps until; `i64::MAX` while it is working out the next one, so that
    /// any timer set meanwhile wakes it.
    planned_wake: AtomicI64,
    dispatch: Notify,
    slots: Arc<Semaphore>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn as_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The endpoint a URL belongs to, for the slow-endpoint rule: its origin, so that varying the path or the
/// query string does not start new counters.
fn endpoint(url: &str) -> String {
    url::Url::parse(url).map(|url| url.origin().ascii_serialization()).unwrap_or_else(|_| url.to_owned())
}

/// The resource path of a user's presence in notifications.
fn resource(user_id: &str) -> String {
    format!("communications/presences/{user_id}")
}

impl Notifier {
    pub(crate) fn new(config: NotifyConfig) -> Self {
        let roots = config.extra_roots.iter().map(|der| rustls::pki_types::CertificateDer::from(der.clone())).collect();
        let webhooks = Webhooks::new(config.limits.targets, roots).map_err(|reason| {
            let reason = format!(
                "change notifications are unavailable: {reason} (install the system's CA certificates or set \
                 notification_ca_file)"
            );
            tracing::warn!("{reason}");
            reason
        });
        let slots = Arc::new(Semaphore::new(config.max_concurrent_deliveries.max(1)));
        Notifier {
            config,
            registry: RwLock::default(),
            writes: Mutex::default(),
            deliveries: Mutex::default(),
            subscription_timers: Mutex::default(),
            health: Mutex::default(),
            webhooks,
            wake: Notify::new(),
            planned_wake: AtomicI64::new(i64::MAX),
            dispatch: Notify::new(),
            slots,
        }
    }

    /// The client for subscriber endpoints.
    pub(crate) fn webhooks(&self) -> Result<&Webhooks, ApiError> {
        self.webhooks.as_ref().map_err(|reason| ApiError::Internal(reason.clone()))
    }

    /// Wakes the scheduler: a timer may have moved earlier, or the test clock moved.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the scheduler if a user's timer now falls before its planned wake-up.
    /// Active subscriptions, queues with notifications waiting, and notifications waiting (for metrics).
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let subscriptions = self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner()).subscriptions.len();
        let deliveries = lock(&self.deliveries);
        let queues = deliveries.lengths.values().filter(|length| **length > 0).count();
        (subscriptions, queues, deliveries.lengths.values().sum())
    }

    pub(crate) fn timer_set(&self, due_at: Option<i64>) {
        if due_at.is_some_and(|at| at < self.planned_wake.load(Ordering::SeqCst)) {
            self.wake();
        }
    }

    pub(crate) fn subscription(&self, id: &str) -> Option<Arc<Active>> {
        self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner()).subscriptions.get(id).cloned()
    }

    /// The subscriptions of one application in one tenant.
    pub(crate) fn subscriptions_of(&self, tenant_id: &str, application_id: &str) -> Vec<Arc<Active>> {
        let registry = self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut list: Vec<Arc<Active>> = registry
            .subscriptions
            .values()
            .filter(|active| active.record.tenant_id == tenant_id && active.record.application_id == application_id)
            .cloned()
            .collect();
        list.sort_by(|left, right| left.record.id.cmp(&right.record.id));
        list
    }

    /// Makes `record` live (new or renewed) and schedules its lifecycle timer.
    pub(crate) fn register(&self, record: SubscriptionRecord) -> Arc<Active> {
        let active = Arc::new(Active::new(record));
        self.schedule_subscription(&active.record);
        self.registry.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(active.clone());
        active
    }

    pub(crate) fn unregister(&self, id: &str) -> Option<Arc<Active>> {
        lock(&self.subscription_timers).retain(|(_, timer)| timer != id);
        let removed = self.registry.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(id);
        let mut deliveries = lock(&self.deliveries);
        deliveries.lengths.remove(id);
        removed
    }

    fn schedule_subscription(&self, record: &SubscriptionRecord) {
        let at = if record.reauthorization_sent || record.lifecycle_notification_url.is_none() {
            record.expiration
        } else {
            reauthorization_at(record.renewed_at, record.expiration)
        };
        let mut timers = lock(&self.subscription_timers);
        timers.retain(|(_, timer)| *timer != record.id);
        timers.insert((at, record.id.clone()));
        drop(timers);
        self.wake();
    }

    /// The subscriptions watching `key`.
    pub(crate) fn watchers(&self, key: &UserKey) -> Vec<Arc<Active>> {
        let registry = self.registry.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        registry
            .watchers
            .get(key)
            .map(|ids| ids.iter().filter_map(|id| registry.subscriptions.get(id).cloned()).collect())
            .unwrap_or_default()
    }

    /// One notification per change and watcher.
    fn render(watchers: &[Arc<Active>], key: &UserKey, changes: &[Presence], now: Timestamp) -> Vec<NewNotification> {
        let mut notifications = Vec::with_capacity(watchers.len() * changes.len());
        for active in watchers {
            let record = &active.record;
            for presence in changes {
                let sequence = sequence_text(presence.sequence_number);
                let item = json!({
                    "subscriptionId": record.id,
                    "changeType": "updated",
                    "resource": resource(&key.user_id),
                    "tenantId": key.tenant_id,
                    "organizationId": key.tenant_id,
                    "resourceData": {
                        "@odata.type": "#microsoft.graph.presence",
                        "@odata.id": format!("users/{}/presence", key.user_id),
                        "id": key.user_id,
                        "sequenceNumber": sequence,
                    },
                });
                let resource_data = record.include_resource_data.then(|| {
                    let owner_view = record.user_id.as_deref() == Some(key.user_id.as_str());
                    let json = PresenceJson::known(&key.user_id, presence.clone(), owner_view, None);
                    let mut value = serde_json::to_value(&json).unwrap_or_default();
                    if let Value::Object(object) = &mut value {
                        object.insert("@odata.type".into(), "#microsoft.graph.presence".into());
                        object.insert("@odata.id".into(), format!("users/{}/presence", key.user_id).into());
                    }
                    value.to_string()
                });
                notifications.push(NewNotification {
                    queue: record.queue().to_owned(),
                    url: record.notification_url.clone(),
                    created_at: now.as_millis(),
                    item: item.to_string(),
                    resource_data,
                });
            }
        }
        notifications
    }

    /// What a user's write or timer stores besides the facts: the changes owed by time up to `now`
    /// (computed from the facts as they were), then `visible` (a command's own change, if it changed what
    /// readers see), as notifications; and the user's next timer, from the facts as they are now.
    pub(crate) fn effects(
        watchers: &[Arc<Active>],
        key: &UserKey,
        changes: &[Presence],
        now: Timestamp,
        facts_after: &UserFacts,
    ) -> Effects {
        let due_at = next_change(facts_after, now).map(|at| at.as_millis());
        Effects { due_at, notifications: Self::render(watchers, key, changes, now), timer_only: false }
    }

    /// The visible changes a user's write or timer brings: those owed by the timer `due` (if it passed
    /// before `now`), in order, then the write's own `visible` change.
    pub(crate) fn changes(
        facts_before: &UserFacts,
        due: Option<i64>,
        now: Timestamp,
        visible: Option<Presence>,
    ) -> Vec<Presence> {
        let (mut changes, _) = due_changes(facts_before, due.map(Timestamp), now);
        changes.extend(visible);
        changes
    }

    /// Records newly queued notifications and marks their queues ready; queues over their bound are
    /// marked too, and their delivery drops what is beyond it.
    pub(crate) fn queued(&self, notifications: &[NewNotification]) {
        if notifications.is_empty() {
            return;
        }
        let bound = self.config.max_queued_per_subscription;
        let mut deliveries = lock(&self.deliveries);
        for notification in notifications {
            let length = deliveries.lengths.entry(notification.queue.clone()).or_default();
            *length += 1;
            let over = *length > bound;
            if let (true, Some(&QueueState::Waiting(at))) = (over, deliveries.states.get(&notification.queue)) {
                // A queue waiting for a retry is over its bound now, not at its next attempt.
                deliveries.waiting.remove(&(at, notification.queue.clone()));
                deliveries.states.remove(&notification.queue);
            }
            deliveries.mark_ready(&notification.queue);
        }
        drop(deliveries);
        self.dispatch.notify_one();
    }

    fn health_verdict(&self, url: &str, now: i64) -> Verdict {
        let mut health = lock(&self.health);
        // Endpoints come and go with subscriptions: forget those idle for a whole window, and all of them
        // in the unlikely case that more are busy at once (the slow-endpoint rule then starts afresh).
        if health.len() > HEALTH_ENTRIES {
            health.retain(|_, counters| !counters.is_stale(now));
            if health.len() > HEALTH_ENTRIES {
                health.clear();
            }
        }
        health.entry(endpoint(url)).or_default().verdict(now)
    }

    fn record_delivery(&self, url: &str, now: i64, elapsed: Duration) {
        lock(&self.health).entry(endpoint(url)).or_default().record(now, elapsed);
    }
}

/// A changeNotificationCollection item for a lifecycle event.
pub(crate) fn lifecycle_notification(
    record: &SubscriptionRecord,
    event: &str,
    now: Timestamp,
) -> Option<NewNotification> {
    let url = record.lifecycle_notification_url.clone()?;
    let mut item = Map::new();
    item.insert("lifecycleEvent".into(), event.into());
    item.insert("subscriptionId".into(), record.id.clone().into());
    item.insert("subscriptionExpirationDateTime".into(), format_instant(Timestamp(record.expiration)).into());
    if let Some(state) = &record.client_state {
        item.insert("clientState".into(), state.clone().into());
    }
    item.insert("resource".into(), record.resource.clone().into());
    item.insert("tenantId".into(), record.tenant_id.clone().into());
    item.insert("organizationId".into(), record.tenant_id.clone().into());
    Some(NewNotification {
        queue: record.lifecycle_queue(),
        url,
        created_at: now.as_millis(),
        item: Value::Object(item).to_string(),
        resource_data: None,
    })
}

/// How one delivery attempt ended.
enum Attempt {
    /// Sent (or dropped on purpose); the queue may hold more.
    Progress,
    /// Nothing queued.
    Empty,
    /// Try again at this instant.
    RetryAt(i64),
}

const TIMER_BATCH: usize = 512;
/// Endpoints whose slow-delivery counters are kept before idle ones are forgotten.
const HEALTH_ENTRIES: usize = 4096;
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

impl AppState {
    fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    /// Loads stored subscriptions and queues, then starts the scheduler and the dispatcher. Call once,
    /// inside the runtime, before serving.
    pub fn start_notifications(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, StoreError> {
        let store = &self.inner.store;
        for stored in store.subscriptions()? {
            match SubscriptionRecord::decode(&stored.body) {
                Ok(record) => {
                    self.notifier().register(record);
                }
                Err(reason) => tracing::error!(subscription = %stored.id, %reason, "stored subscription is corrupt"),
            }
        }
        let lengths = store.queue_lengths()?;
        {
            let mut deliveries = lock(&self.notifier().deliveries);
            for (queue, length) in lengths {
                deliveries.lengths.insert(queue.clone(), usize::try_from(length).unwrap_or(usize::MAX));
                deliveries.mark_ready(&queue);
            }
        }
        let scheduler = tokio::spawn(self.clone().run_scheduler());
        let dispatcher = tokio::spawn(self.clone().run_dispatcher());
        self.notifier().dispatch.notify_one();
        self.inner.ready.store(true, Ordering::SeqCst);
        Ok(vec![scheduler, dispatcher])
    }

    /// Stops cleanly: stops the timers and the dispatcher (`background`, from
    /// [`AppState::start_notifications`]), lets deliveries in flight finish (each has the notification
    /// timeout; one that does not finish is delivered again after a restart), and flushes the store. Call
    /// once requests are drained.
    pub async fn shutdown(&self, background: Vec<tokio::task::JoinHandle<()>>) {
        for task in &background {
            task.abort();
        }
        let within = self.notifier().config.delivery_timeout + std::time::Duration::from_secs(1);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let in_flight = lock(&self.notifier().deliveries)
                .states
                .values()
                .filter(|state| matches!(state, QueueState::InFlight { .. }))
                .count();
            if in_flight == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    in_flight,
                    "deliveries still in flight at shutdown; they are sent again after a restart"
                );
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let inner = self.inner.clone();
        match crate::handlers::blocking(move || Ok(inner.store.flush()?)).await {
            Ok(()) => tracing::info!("store flushed"),
            Err(error) => tracing::error!(%error, "flushing the store at shutdown failed"),
        }
    }

    fn put_subscription(
        &self,
        record: &SubscriptionRecord,
        notifications: &[NewNotification],
    ) -> Result<(), StoreError> {
        let stored =
            StoredSubscription { id: record.id.clone(), tenant_id: record.tenant_id.clone(), body: record.encode() };
        self.inner.store.put_subscription(&stored, notifications)
    }

    /// Stores and activates a new subscription, unless its application already has `limit` in the tenant.
    pub(crate) fn create_subscription(&self, record: SubscriptionRecord, limit: usize) -> Result<(), ApiError> {
        let notifier = self.notifier();
        let _writes = lock(&notifier.writes);
        if notifier.subscriptions_of(&record.tenant_id, &record.application_id).len() >= limit {
            return Err(ApiError::SubscriptionLimit(limit));
        }
        self.put_subscription(&record, &[])?;
        notifier.register(record);
        Ok(())
    }

    /// Changes the current record of subscription `id` with `change`, stores it with the notifications
    /// `change` returns (one transaction), and activates it. `None` when the subscription is gone.
    pub(crate) fn update_subscription(
        &self,
        id: &str,
        change: impl FnOnce(&mut SubscriptionRecord) -> Result<Vec<NewNotification>, ApiError>,
    ) -> Result<Option<SubscriptionRecord>, ApiError> {
        let notifier = self.notifier();
        let _writes = lock(&notifier.writes);
        let Some(current) = notifier.subscription(id) else {
            return Ok(None);
        };
        let mut record = current.record.clone();
        let notifications = change(&mut record)?;
        self.put_subscription(&record, &notifications)?;
        notifier.register(record.clone());
        notifier.queued(&notifications);
        Ok(Some(record))
    }

    /// Reports the time-driven changes of every user whose timer is due, a batch at a time.
    fn run_due_timers(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        loop {
            let now = inner.clock.now();
            let keys = inner.store.due_users(now.as_millis(), TIMER_BATCH)?;
            if keys.is_empty() {
                return Ok(());
            }
            let started = std::time::Instant::now();
            let (queued, skipped, changed) = inner.locks.write_many(&keys, || {
                let now = inner.clock.now();
                let watchers: HashMap<&UserKey, Vec<Arc<Active>>> =
                    keys.iter().map(|key| (key, inner.notifier.watchers(key))).collect();
                let mut queued = Vec::new();
                let watched = inner.feed.is_watched();
                let mut changed = HashSet::new();
                let skipped = inner.store.update_many(&keys, &mut |key, facts, due| {
                    let watching = watchers.get(key).map(Vec::as_slice).unwrap_or_default();
                    let changes = Notifier::changes(facts, due, now, None);
                    let mut effects = Notifier::effects(watching, key, &changes, now, facts);
                    effects.timer_only = true;
                    queued.extend(effects.notifications.iter().cloned());
                    if watched && !changes.is_empty() {
                        changed.insert(key.clone());
                    }
                    Some(effects)
                })?;
                Ok::<_, StoreError>((queued, skipped, changed))
            })?;
            inner.feed.publish(changed);
            inner.metrics.store("timer_pass", started.elapsed());
            for key in &skipped {
                tracing::error!(tenant = %key.tenant_id, user = %key.user_id, "stored presence is corrupt; its timer was cleared");
            }
            inner.notifier.queued(&queued);
        }
    }

    /// Sends `reauthorizationRequired` and removes expired subscriptions, as their timers fall due.
    fn run_subscription_timers(&self) -> Result<(), StoreError> {
        let notifier = self.notifier();
        loop {
            let now = self.inner.clock.now();
            let due = {
                let mut timers = lock(&notifier.subscription_timers);
                match timers.first() {
                    Some((at, _)) if *at <= now.as_millis() => timers.pop_first(),
                    _ => None,
                }
            };
            let Some((_, id)) = due else {
                return Ok(());
            };
            let Some(active) = notifier.subscription(&id) else {
                continue;
            };
            let record = &active.record;
            if now.as_millis() >= record.expiration {
                if self.remove_subscription(&record.id, Some("subscriptionRemoved"), now)? {
                    tracing::info!(subscription = %record.id, "subscription expired and was removed");
                }
            } else if !record.reauthorization_sent
                && now.as_millis() >= reauthorization_at(record.renewed_at, record.expiration)
            {
                // Checked again on the current record: a renewal may have come in meanwhile.
                let result = self.update_subscription(&record.id, |record| {
                    let due = !record.reauthorization_sent
                        && now.as_millis() >= reauthorization_at(record.renewed_at, record.expiration);
                    record.reauthorization_sent |= due;
                    Ok(due
                        .then(|| lifecycle_notification(record, "reauthorizationRequired", now))
                        .flatten()
                        .into_iter()
                        .collect())
                });
                if let Err(error) = result {
                    tracing::error!(%error, subscription = %record.id, "reauthorizationRequired not queued");
                }
            } else {
                notifier.schedule_subscription(record);
            }
        }
    }

    /// Deletes subscription `id` with its queued notifications; `event` (if any) goes to its lifecycle URL.
    /// Returns whether it existed.
    pub(crate) fn remove_subscription(
        &self,
        id: &str,
        event: Option<&str>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let notifier = self.notifier();
        let _writes = lock(&notifier.writes);
        let Some(active) = notifier.subscription(id) else {
            return Ok(false);
        };
        let record = &active.record;
        let farewell: Vec<NewNotification> =
            event.and_then(|event| lifecycle_notification(record, event, now)).into_iter().collect();
        let lifecycle_queue = record.lifecycle_queue();
        let mut queues = vec![record.queue()];
        if farewell.is_empty() {
            queues.push(&lifecycle_queue);
        }
        // Gone from memory before the farewell can be delivered (the dispatcher may read the lifecycle queue
        // as soon as the store commits), so that whoever gets `subscriptionRemoved` finds it gone.
        notifier.unregister(&record.id);
        let existed = match self.inner.store.remove_subscription(&record.id, &queues, &farewell) {
            Ok(existed) => existed,
            Err(error) => {
                notifier.register(record.clone());
                return Err(error);
            }
        };
        notifier.queued(&farewell);
        Ok(existed)
    }

    /// The earliest instant any timer (user, subscription, retry) falls due.
    fn next_wake(&self) -> Result<Option<i64>, StoreError> {
        let notifier = self.notifier();
        let user = self.inner.store.next_due()?;
        let subscription = lock(&notifier.subscription_timers).first().map(|(at, _)| *at);
        let retry = lock(&notifier.deliveries).waiting.first().map(|(at, _)| *at);
        Ok([user, subscription, retry].into_iter().flatten().min())
    }

    /// Moves queues whose retry time has come back to ready.
    fn release_waiting(&self) {
        let now = self.inner.clock.now().as_millis();
        let mut deliveries = lock(&self.notifier().deliveries);
        let mut released = false;
        while let Some((at, queue)) = deliveries.waiting.first().cloned() {
            if at > now {
                break;
            }
            deliveries.waiting.pop_first();
            if deliveries.states.get(&queue) == Some(&QueueState::Waiting(at)) {
                deliveries.states.insert(queue.clone(), QueueState::Ready);
                deliveries.ready.push_back(queue);
                released = true;
            }
        }
        drop(deliveries);
        if released {
            self.notifier().dispatch.notify_one();
        }
    }

    async fn run_scheduler(self) {
        loop {
            self.notifier().planned_wake.store(i64::MAX, Ordering::SeqCst);
            let state = self.clone();
            let next = tokio::task::spawn_blocking(move || {
                state.run_due_timers()?;
                state.run_subscription_timers()?;
                state.release_waiting();
                state.next_wake()
            })
            .await;
            let next = match next {
                Ok(Ok(next)) => next,
                Ok(Err(error)) => {
                    tracing::error!(%error, "timers: store failure; retrying in a second");
                    Some(self.inner.clock.now().as_millis() + 1000)
                }
                Err(error) => {
                    tracing::error!(%error, "timers: task failed; retrying in a second");
                    Some(self.inner.clock.now().as_millis() + 1000)
                }
            };
            let now = self.inner.clock.now().as_millis();
            self.notifier().planned_wake.store(next.unwrap_or(i64::MAX - 1), Ordering::SeqCst);
            let sleep = next
                .map(|at| Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
                .unwrap_or(LONGEST_SLEEP)
                .min(LONGEST_SLEEP);
            if sleep.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.notifier().wake.notified() => {}
            }
        }
    }

    async fn run_dispatcher(self) {
        let notifier = self.notifier();
        loop {
            let next = lock(&notifier.deliveries).ready.pop_front();
            let Some(queue) = next else {
                notifier.dispatch.notified().await;
                continue;
            };
            let Ok(permit) = notifier.slots.clone().acquire_owned().await else {
                return;
            };
            lock(&notifier.deliveries).states.insert(queue.clone(), QueueState::InFlight { again: false });
            let state = self.clone();
            tokio::spawn(async move {
                // The attempt runs as a task of its own so that, should it panic, the queue is still
                // released (and retried) rather than left in flight forever.
                let attempt = {
                    let (state, queue) = (state.clone(), queue.clone());
                    tokio::spawn(async move { state.deliver(&queue).await }).await
                };
                drop(permit);
                let attempt = attempt.unwrap_or_else(|error| {
                    tracing::error!(%error, queue, "delivery task failed; retrying later");
                    Ok(Attempt::RetryAt(state.inner.clock.now().as_millis().saturating_add(as_millis(retry_delay(1)))))
                });
                state.finish(&queue, attempt);
            });
        }
    }

    fn finish(&self, queue: &str, attempt: Result<Attempt, StoreError>) {
        let notifier = self.notifier();
        let attempt = attempt.unwrap_or_else(|error| {
            tracing::error!(%error, queue, "delivery: store failure");
            Attempt::RetryAt(self.inner.clock.now().as_millis() + 1000)
        });
        let mut deliveries = lock(&notifier.deliveries);
        let again = matches!(deliveries.states.get(queue), Some(QueueState::InFlight { again: true }));
        match attempt {
            Attempt::Progress => {
                deliveries.attempts.remove(queue);
                deliveries.states.insert(queue.to_owned(), QueueState::Ready);
                deliveries.ready.push_back(queue.to_owned());
            }
            Attempt::Empty if again => {
                deliveries.states.insert(queue.to_owned(), QueueState::Ready);
                deliveries.ready.push_back(queue.to_owned());
            }
            Attempt::Empty => {
                deliveries.states.remove(queue);
                deliveries.attempts.remove(queue);
                deliveries.lengths.remove(queue);
            }
            Attempt::RetryAt(at) => {
                deliveries.states.insert(queue.to_owned(), QueueState::Waiting(at));
                deliveries.waiting.insert((at, queue.to_owned()));
            }
        }
        drop(deliveries);
        notifier.dispatch.notify_one();
        notifier.wake();
    }

    async fn store_call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&AppState) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || work(&state)).await.unwrap_or_else(|error| {
            Err(StoreError::Corrupt {
                tenant_id: String::new(),
                user_id: String::new(),
                reason: format!("storage task failed: {error}"),
            })
        })
    }

    /// Drops queued notifications of `queue` (all of them, or those older than `before`), and tells the
    /// subscriber with a `missed` lifecycle event.
    async fn drop_queued(&self, queue: &str, older_than: Option<i64>, why: &str) -> Result<(), StoreError> {
        let (owner, lifecycle) = queue_owner(queue);
        // The `missed` event is queued in the transaction of the first removal, so that a crash cannot
        // drop notifications without telling the subscriber.
        let missed: Vec<NewNotification> = match (lifecycle, self.notifier().subscription(owner)) {
            (false, Some(active)) => {
                lifecycle_notification(&active.record, "missed", self.inner.clock.now()).into_iter().collect()
            }
            _ => Vec::new(),
        };
        let queue_name = queue.to_owned();
        let told = missed.clone();
        let dropped = self
            .store_call(move |state| {
                let mut dropped = 0usize;
                let mut missed = missed;
                loop {
                    let head = state.inner.store.queue_head(&queue_name, 500)?;
                    let ids: Vec<i64> = head
                        .iter()
                        .take_while(|row| older_than.is_none_or(|limit| row.created_at < limit))
                        .map(|row| row.id)
                        .collect();
                    if ids.is_empty() {
                        return Ok(dropped);
                    }
                    state.inner.store.acknowledge(&ids, &std::mem::take(&mut missed))?;
                    dropped += ids.len();
                    if ids.len() < head.len() {
                        return Ok(dropped);
                    }
                }
            })
            .await?;
        if let Some(length) = lock(&self.notifier().deliveries).lengths.get_mut(queue) {
            *length = length.saturating_sub(dropped);
        }
        self.inner.metrics.dropped(dropped);
        tracing::warn!(queue, dropped, why, "notifications dropped");
        if dropped > 0 {
            self.notifier().queued(&told);
        }
        Ok(())
    }

    /// One delivery attempt for `queue`.
    async fn deliver(&self, queue: &str) -> Result<Attempt, StoreError> {
        let notifier = self.notifier();
        let config = &notifier.config;
        let over_bound = lock(&notifier.deliveries)
            .lengths
            .get(queue)
            .is_some_and(|length| *length > config.max_queued_per_subscription);
        if over_bound {
            self.drop_queued(queue, None, "the subscription's queue exceeded its bound").await?;
            return Ok(Attempt::Progress);
        }
        let queue_name = queue.to_owned();
        let limit = config.max_batch.max(1);
        let head = self.store_call(move |state| state.inner.store.queue_head(&queue_name, limit)).await?;
        let Some(first) = head.first() else {
            return Ok(Attempt::Empty);
        };
        let now = self.inner.clock.now();
        let window_start = now.as_millis().saturating_sub(as_millis(config.retry_window));
        if first.created_at < window_start {
            self.drop_queued(queue, Some(window_start), "not delivered within the retry window").await?;
            return Ok(Attempt::Progress);
        }
        let (owner, lifecycle) = queue_owner(queue);
        let active = notifier.subscription(owner);
        if !lifecycle && active.is_none() {
            let ids: Vec<i64> = head.iter().map(|row| row.id).collect();
            self.store_call(move |state| state.inner.store.acknowledge(&ids, &[])).await?;
            return Ok(Attempt::Progress);
        }
        // Change notifications go to the subscription's current URL (a renewal may have changed it);
        // lifecycle notifications to the URL they were queued for (their subscription may be gone).
        let url = match (&active, lifecycle) {
            (Some(active), false) => active.record.notification_url.clone(),
            _ => first.url.clone(),
        };
        match notifier.health_verdict(&url, now.as_millis()) {
            Verdict::Healthy => {}
            Verdict::Delayed => {
                let delayed_until = first.created_at.saturating_add(as_millis(SLOW_ENDPOINT_DELAY));
                if now.as_millis() < delayed_until {
                    return Ok(Attempt::RetryAt(delayed_until));
                }
            }
            Verdict::Dropping => {
                self.drop_queued(queue, None, "the endpoint is too slow (15% or more of deliveries)").await?;
                return Ok(Attempt::Progress);
            }
        }
        let batch: Vec<&QueuedNotification> =
            if lifecycle { head.iter().take_while(|row| row.url == url).collect() } else { head.iter().collect() };
        let body = self.collection(active.as_deref(), &batch);
        let started = tokio::time::Instant::now();
        // The URL was checked when the subscription was made; checked again in case the policy changed
        // since (a literal address never reaches the resolver, which checks names).
        let posted = match check_url(&url, config.limits.targets) {
            Ok(_) => match &notifier.webhooks {
                Ok(webhooks) => webhooks.post(&url, body, config.delivery_timeout).await,
                Err(reason) => Posted::Failed(reason.clone()),
            },
            Err(refused) => Posted::Failed(refused.to_string()),
        };
        let elapsed = started.elapsed();
        // A timeout is a slow delivery; a refused connection is a failure, not slowness.
        let slow = if matches!(posted, Posted::TimedOut) { elapsed.max(config.delivery_timeout) } else { elapsed };
        notifier.record_delivery(&url, self.inner.clock.now().as_millis(), slow);
        let outcome = match &posted {
            Posted::Status(status) if (200..300).contains(status) => DeliveryOutcome::Delivered,
            Posted::Status(_) => DeliveryOutcome::Rejected,
            Posted::TimedOut => DeliveryOutcome::TimedOut,
            Posted::Failed(_) => DeliveryOutcome::Failed,
        };
        self.inner.metrics.delivery(outcome, batch.len());
        match posted {
            Posted::Status(status) if (200..300).contains(&status) => {
                let ids: Vec<i64> = batch.iter().map(|row| row.id).collect();
                let delivered = ids.len();
                self.store_call(move |state| state.inner.store.acknowledge(&ids, &[])).await?;
                if let Some(length) = lock(&notifier.deliveries).lengths.get_mut(queue) {
                    *length = length.saturating_sub(delivered);
                }
                tracing::debug!(queue, delivered, ?elapsed, "notifications delivered");
                Ok(Attempt::Progress)
            }
            other => {
                let attempt = {
                    let mut deliveries = lock(&notifier.deliveries);
                    let attempts = deliveries.attempts.entry(queue.to_owned()).or_default();
                    *attempts = attempts.saturating_add(1);
                    *attempts
                };
                let delay = retry_delay(attempt);
                let outcome = match other {
                    Posted::Status(status) => format!("answered {status}"),
                    Posted::TimedOut => "no answer in time".to_owned(),
                    Posted::Failed(reason) => reason,
                };
                tracing::warn!(queue, %url, outcome, attempt, retry_in = ?delay, "notification delivery failed");
                // Counted from the attempt's start, so the schedule does not drift with slow endpoints.
                Ok(Attempt::RetryAt(now.as_millis().saturating_add(as_millis(delay))))
            }
        }
    }

    /// The changeNotificationCollection for a batch: items brought up to date with the subscription
    /// (expiry, clientState), rich content sealed for its certificate, and validation tokens.
    fn collection(&self, active: Option<&Active>, batch: &[&QueuedNotification]) -> Vec<u8> {
        let mut rng = rand::thread_rng();
        let mut value = Vec::with_capacity(batch.len());
        let mut rich = false;
        for row in batch {
            let Ok(Value::Object(mut item)) = serde_json::from_str::<Value>(&row.item) else {
                continue;
            };
            if let (Some(active), false) = (active, item.contains_key("lifecycleEvent")) {
                let record = &active.record;
                item.insert(
                    "subscriptionExpirationDateTime".into(),
                    format_instant(Timestamp(record.expiration)).into(),
                );
                if let Some(state) = &record.client_state {
                    item.insert("clientState".into(), state.clone().into());
                }
                if let (Some(data), Some(certificate), Some(id)) =
                    (&row.resource_data, &active.certificate, &record.encryption_certificate_id)
                {
                    let Ok(sealed) = seal(data.as_bytes(), certificate, id, &mut rng) else {
                        tracing::error!(subscription = %record.id, "rich notification could not be sealed");
                        continue;
                    };
                    item.insert(
                        "encryptedContent".into(),
                        json!({
                            "data": sealed.data,
                            "dataSignature": sealed.data_signature,
                            "dataKey": sealed.data_key,
                            "encryptionCertificateId": sealed.encryption_certificate_id,
                            "encryptionCertificateThumbprint": sealed.encryption_certificate_thumbprint,
                        }),
                    );
                    rich = true;
                }
            }
            value.push(Value::Object(item));
        }
        let mut body = Map::new();
        body.insert("value".into(), Value::Array(value));
        if let (true, Some(active)) = (rich, active) {
            let issued = crate::clock::system_now().as_millis() / 1000;
            let token =
                self.inner.issuer.validation_token(&active.record.tenant_id, &active.record.application_id, issued);
            body.insert("validationTokens".into(), json!([token]));
        }
        Value::Object(body).to_string().into_bytes()
    }
}
