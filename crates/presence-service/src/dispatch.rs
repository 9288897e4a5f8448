//! Delivery: from queued notifications to POSTs on subscriber endpoints.
//!
//! How a change reaches a subscriber:
//! 1. A write, or a user's timer, runs under the user's lock: every time-driven change owed up to now and
//!    the command's own change become one notification per change and watching subscription
//!    ([`effects`]), written by the store atomically with the facts and the user's next timer. So a change is
//!    never lost between commit and delivery, and never reported twice.
//! 2. After the commit, the queues that grew are marked ready ([`Service::queued`]); the dispatcher starts
//!    one delivery per ready queue (at most one at a time per queue, so a subscriber gets a user's changes in
//!    order), up to `max_concurrent_deliveries` at once, so a slow subscriber holds only its own queue.
//! 3. A delivery POSTs up to `max_batch` queued notifications in one `changeNotificationCollection` and
//!    acknowledges them in the store on a 2xx answer. Otherwise the queue waits and retries
//!    ([`retry_delay`]); notifications older than the retry window, beyond the queue's bound, or for an
//!    endpoint that is too slow are dropped, always with a `missed` lifecycle event.
//!
//! A queue is delivered by one process at a time: the holder of its lease in the store
//! ([`presence_store::PresenceStore::lease_queue`]), taken at each attempt and kept through a retry's
//! wait. A process that queued notifications but finds the lease held elsewhere leaves them to the
//! holder; a holder that finds its queue empty releases the lease and looks once more, so notifications
//! queued by another process just before the release are not stranded. A periodic sweep of the store's
//! queues picks up the queues of a process that died (once its leases end). The states of queues (ready,
//! in flight, waiting), attempt counts and endpoint health are the delivering process's own.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_core::{next_change, Presence, Timestamp, UserFacts};
use presence_notify::delivery::{retry_delay, EndpointHealth, Verdict, SLOW_ENDPOINT_DELAY};
use presence_notify::render::{self, Current, LifecycleEvent, Queued};
use presence_notify::target::check_url;
use presence_store::{Effects, NewNotification, QueueId, QueueKind, QueuedNotification, StoreError, UserKey};
use tokio::sync::{Notify, Semaphore};

use crate::metrics::DeliveryOutcome;
use crate::registry::Active;
use crate::webhooks::Posted;
use crate::{Service, ServiceConfig, ServiceError};

/// Endpoints whose slow-delivery counters are kept before idle ones are forgotten.
const HEALTH_ENTRIES: usize = 4096;
/// Notifications moved per relay call.
const RELAY_BATCH: usize = 4096;
/// How long a delivery lease outlasts the attempt (or the retry wait) it is taken for.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The endpoint a URL belongs to, for the slow-endpoint rule: its origin, so that varying the path or the
/// query string does not start new counters.
fn endpoint(url: &str) -> String {
    url::Url::parse(url).map(|url| url.origin().ascii_serialization()).unwrap_or_else(|_| url.to_owned())
}

/// What a user's write or timer stores besides the facts: one notification per change and watcher, and the
/// user's next timer, from the facts as they are now.
pub(crate) fn effects(
    watchers: &[Arc<Active>],
    key: &UserKey,
    changes: &[Presence],
    now: Timestamp,
    facts_after: &UserFacts,
) -> Effects {
    let due_at = next_change(facts_after, now).map(|at| at.as_millis());
    let mut notifications = Vec::with_capacity(watchers.len() * changes.len());
    for active in watchers {
        let record = &active.record;
        for presence in changes {
            let rendered = render::change_item(record, &key.tenant_id, &key.user_id, presence);
            notifications.push(NewNotification {
                queue: QueueId::changes(record.id.clone()),
                url: record.notification_url.clone(),
                created_at: now.as_millis(),
                item: rendered.item,
                resource_data: rendered.resource_data,
            });
        }
    }
    Effects { due_at, notifications, timer_only: false, visible: !changes.is_empty() }
}

/// A lifecycle notification of `active`'s subscription, if it has a lifecycle URL.
pub(crate) fn lifecycle_notification(
    record: &presence_notify::record::SubscriptionRecord,
    event: LifecycleEvent,
    now: Timestamp,
) -> Option<NewNotification> {
    let (url, item) = render::lifecycle_item(record, event)?;
    Some(NewNotification {
        queue: QueueId::lifecycle(record.id.clone()),
        url,
        created_at: now.as_millis(),
        item,
        resource_data: None,
    })
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
struct Queues {
    states: HashMap<QueueId, QueueState>,
    ready: VecDeque<QueueId>,
    waiting: BTreeSet<(i64, QueueId)>,
    attempts: HashMap<QueueId, u32>,
    lengths: HashMap<QueueId, usize>,
}

impl Queues {
    fn mark_ready(&mut self, queue: &QueueId) {
        match self.states.get_mut(queue) {
            None => {
                self.states.insert(queue.clone(), QueueState::Ready);
                self.ready.push_back(queue.clone());
            }
            Some(QueueState::InFlight { again }) => *again = true,
            Some(QueueState::Ready | QueueState::Waiting(_)) => {}
        }
    }
}

/// The delivery side of the engine: queue states, endpoint health, and the dispatcher's wake-up.
pub(crate) struct Dispatch {
    delivery_timeout: Duration,
    retry_window: Duration,
    max_queued: usize,
    max_batch: usize,
    queues: Mutex<Queues>,
    health: Mutex<HashMap<String, EndpointHealth>>,
    dispatch: Notify,
    slots: Arc<Semaphore>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Dispatch {
    pub(crate) fn new(config: &ServiceConfig) -> Self {
        Dispatch {
            delivery_timeout: config.delivery_timeout,
            retry_window: config.retry_window,
            max_queued: config.max_queued_per_subscription,
            max_batch: config.max_batch.max(1),
            queues: Mutex::default(),
            health: Mutex::default(),
            dispatch: Notify::new(),
            slots: Arc::new(Semaphore::new(config.max_concurrent_deliveries.max(1))),
        }
    }

    /// Wakes the dispatcher.
    pub(crate) fn kick(&self) {
        self.dispatch.notify_one();
    }

    /// Queues with notifications waiting, and how many notifications.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let queues = lock(&self.queues);
        (queues.lengths.values().filter(|length| **length > 0).count(), queues.lengths.values().sum())
    }

    /// The earliest retry.
    pub(crate) fn next_retry(&self) -> Option<i64> {
        lock(&self.queues).waiting.first().map(|(at, _)| *at)
    }

    /// Forgets the queue lengths of a removed subscription.
    pub(crate) fn forget(&self, subscription_id: &str) {
        lock(&self.queues).lengths.remove(&QueueId::changes(subscription_id));
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

    fn subtract(&self, queue: &QueueId, delivered: usize) {
        if let Some(length) = lock(&self.queues).lengths.get_mut(queue) {
            *length = length.saturating_sub(delivered);
        }
    }
}

/// How one delivery attempt ended.
enum Attempt {
    /// Sent (or dropped on purpose); the queue may hold more.
    Progress,
    /// Nothing queued.
    Empty,
    /// Another process holds the queue's lease and delivers it.
    HeldElsewhere,
    /// Try again at this instant.
    RetryAt(i64),
}

impl Service {
    /// Records newly queued notifications and marks their queues ready; queues over their bound are marked
    /// too, and their delivery drops what is beyond it.
    pub(crate) fn queued(&self, notifications: &[NewNotification]) {
        if notifications.is_empty() {
            return;
        }
        let dispatch = &self.deliveries;
        let mut queues = lock(&dispatch.queues);
        for notification in notifications {
            let length = queues.lengths.entry(notification.queue.clone()).or_default();
            *length += 1;
            let over = *length > dispatch.max_queued;
            if let (true, Some(&QueueState::Waiting(at))) = (over, queues.states.get(&notification.queue)) {
                // A queue waiting for a retry is over its bound now, not at its next attempt.
                queues.waiting.remove(&(at, notification.queue.clone()));
                queues.states.remove(&notification.queue);
            }
            queues.mark_ready(&notification.queue);
        }
        drop(queues);
        dispatch.kick();
    }

    /// Moves notifications the store staged with user updates to their queues, and marks those ready.
    pub(crate) fn relay_staged(&self) -> Result<(), StoreError> {
        loop {
            let grown = self.store.relay(RELAY_BATCH)?;
            if grown.is_empty() {
                return Ok(());
            }
            let mut queues = lock(&self.deliveries.queues);
            for queue in &grown {
                queues.mark_ready(queue);
            }
            drop(queues);
            self.deliveries.kick();
        }
    }

    /// Moves queues whose retry time has come back to ready.
    pub(crate) fn release_waiting(&self) {
        let now = self.clock.now().as_millis();
        let mut queues = lock(&self.deliveries.queues);
        let mut released = false;
        while let Some((at, queue)) = queues.waiting.first().cloned() {
            if at > now {
                break;
            }
            queues.waiting.pop_first();
            if queues.states.get(&queue) == Some(&QueueState::Waiting(at)) {
                queues.states.insert(queue.clone(), QueueState::Ready);
                queues.ready.push_back(queue);
                released = true;
            }
        }
        drop(queues);
        if released {
            self.deliveries.kick();
        }
    }

    /// Waits (bounded by the delivery timeout) for deliveries in flight to finish, at shutdown.
    pub(crate) async fn finish_deliveries(&self) {
        let within = self.deliveries.delivery_timeout + Duration::from_secs(1);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let in_flight = lock(&self.deliveries.queues)
                .states
                .values()
                .filter(|state| matches!(state, QueueState::InFlight { .. }))
                .count();
            if in_flight == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    in_flight,
                    "deliveries still in flight at shutdown; they are sent again after a restart"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The dispatcher: starts a delivery for each ready queue, within the concurrency bound.
    pub(crate) async fn run_dispatcher(self: Arc<Self>) {
        loop {
            let next = lock(&self.deliveries.queues).ready.pop_front();
            let Some(queue) = next else {
                self.deliveries.dispatch.notified().await;
                continue;
            };
            let Ok(permit) = self.deliveries.slots.clone().acquire_owned().await else {
                return;
            };
            lock(&self.deliveries.queues).states.insert(queue.clone(), QueueState::InFlight { again: false });
            let service = self.clone();
            tokio::spawn(async move {
                // The attempt runs as a task of its own so that, should it panic, the queue is still
                // released (and retried) rather than left in flight forever.
                let attempt = {
                    let (service, queue) = (service.clone(), queue.clone());
                    tokio::spawn(async move { service.deliver(&queue).await }).await
                };
                drop(permit);
                let attempt = attempt.unwrap_or_else(|error| {
                    tracing::error!(%error, ?queue, "delivery task failed; retrying later");
                    Ok(Attempt::RetryAt(service.clock.now().as_millis().saturating_add(millis(retry_delay(1)))))
                });
                service.finish(&queue, attempt);
            });
        }
    }

    fn finish(&self, queue: &QueueId, attempt: Result<Attempt, ServiceError>) {
        let attempt = attempt.unwrap_or_else(|error| {
            tracing::error!(%error, ?queue, "delivery: store failure");
            Attempt::RetryAt(self.clock.now().as_millis() + 1000)
        });
        let mut queues = lock(&self.deliveries.queues);
        let again = matches!(queues.states.get(queue), Some(QueueState::InFlight { again: true }));
        match attempt {
            Attempt::Progress => {
                queues.attempts.remove(queue);
                queues.states.insert(queue.clone(), QueueState::Ready);
                queues.ready.push_back(queue.clone());
            }
            Attempt::Empty | Attempt::HeldElsewhere if again => {
                queues.states.insert(queue.clone(), QueueState::Ready);
                queues.ready.push_back(queue.clone());
            }
            Attempt::HeldElsewhere => {
                // The holder delivers the queue and keeps its own count and attempts.
                queues.states.remove(queue);
                queues.lengths.remove(queue);
                queues.attempts.remove(queue);
            }
            Attempt::Empty => {
                queues.states.remove(queue);
                queues.attempts.remove(queue);
                queues.lengths.remove(queue);
            }
            Attempt::RetryAt(_)
                if queues.lengths.get(queue).is_some_and(|length| *length > self.deliveries.max_queued) =>
            {
                // Notifications queued while the attempt was in flight passed the bound: it is dropped now,
                // not at the retry.
                queues.states.insert(queue.clone(), QueueState::Ready);
                queues.ready.push_back(queue.clone());
            }
            Attempt::RetryAt(at) => {
                queues.states.insert(queue.clone(), QueueState::Waiting(at));
                queues.waiting.insert((at, queue.clone()));
            }
        }
        drop(queues);
        self.deliveries.kick();
        self.timers.wake();
    }

    /// Drops queued notifications of `queue` (all of them, or those older than `older_than`), and tells
    /// the subscriber with a `missed` lifecycle event, queued in the same step as the first removal so that
    /// a crash cannot drop notifications without telling.
    async fn drop_queued(
        self: &Arc<Self>,
        queue: &QueueId,
        older_than: Option<i64>,
        why: &str,
    ) -> Result<(), ServiceError> {
        let missed: Vec<NewNotification> = match (queue.kind, self.registry.get(&queue.subscription_id)) {
            (QueueKind::Changes, Some(active)) => {
                lifecycle_notification(&active.record, LifecycleEvent::Missed, self.clock.now()).into_iter().collect()
            }
            _ => Vec::new(),
        };
        let told = missed.clone();
        let target = queue.clone();
        let dropped = self
            .blocking(move |service| {
                let mut dropped = 0usize;
                let mut missed = missed;
                loop {
                    let head = service.store.queue_head(&target, 500)?;
                    let positions: Vec<u64> = head
                        .iter()
                        .take_while(|row| older_than.is_none_or(|limit| row.created_at < limit))
                        .map(|row| row.position)
                        .collect();
                    if positions.is_empty() {
                        return Ok(dropped);
                    }
                    service.store.acknowledge(&target, &positions, &std::mem::take(&mut missed))?;
                    dropped += positions.len();
                    if positions.len() < head.len() {
                        return Ok(dropped);
                    }
                }
            })
            .await?;
        self.deliveries.subtract(queue, dropped);
        self.metrics.dropped(dropped);
        tracing::warn!(?queue, dropped, why, "notifications dropped");
        if dropped > 0 {
            self.queued(&told);
        }
        Ok(())
    }

    /// Takes or renews this process's delivery lease of `queue` until `until`.
    async fn lease(self: &Arc<Self>, queue: &QueueId, until: i64) -> Result<bool, ServiceError> {
        let (target, now) = (queue.clone(), self.clock.now().as_millis());
        self.blocking(move |service| Ok(service.store.lease_queue(&target, &service.node, now, until)?)).await
    }

    /// One delivery attempt for `queue`, under its lease.
    async fn deliver(self: &Arc<Self>, queue: &QueueId) -> Result<Attempt, ServiceError> {
        let lease_until =
            self.clock.now().as_millis().saturating_add(millis(self.deliveries.delivery_timeout + LEASE_MARGIN));
        if !self.lease(queue, lease_until).await? {
            return Ok(Attempt::HeldElsewhere);
        }
        let attempt = self.attempt(queue).await?;
        match attempt {
            Attempt::RetryAt(at) => {
                // The lease is kept through the wait, so that no other process retries before it.
                self.lease(queue, at.saturating_add(millis(LEASE_MARGIN))).await?;
            }
            Attempt::Empty => {
                // Released, then one more look: what another process queued before it found the lease
                // held is seen here.
                let target = queue.clone();
                let more = self
                    .blocking(move |service| {
                        service.store.release_queue(&target, &service.node)?;
                        Ok(!service.store.queue_head(&target, 1)?.is_empty())
                    })
                    .await?;
                if more {
                    return Ok(Attempt::Progress);
                }
            }
            Attempt::Progress | Attempt::HeldElsewhere => {}
        }
        Ok(attempt)
    }

    /// Marks every queue the store holds notifications for ready, with its length, unless this process is
    /// delivering it already (ready, in flight or waiting for a retry: its own count and schedule stand). A
    /// process that died may have left queues behind; their leases decide who delivers them.
    pub(crate) fn sweep_queues(&self) -> Result<(), StoreError> {
        let lengths = self.store.queue_lengths()?;
        let mut queues = lock(&self.deliveries.queues);
        for (queue, length) in lengths {
            if queues.states.contains_key(&queue) {
                continue;
            }
            queues.lengths.insert(queue.clone(), usize::try_from(length).unwrap_or(usize::MAX));
            queues.mark_ready(&queue);
        }
        drop(queues);
        self.deliveries.kick();
        Ok(())
    }

    /// The attempt itself: drop what must go, else POST the queue's head.
    async fn attempt(self: &Arc<Self>, queue: &QueueId) -> Result<Attempt, ServiceError> {
        let dispatch = &self.deliveries;
        let over_bound = lock(&dispatch.queues).lengths.get(queue).is_some_and(|length| *length > dispatch.max_queued);
        if over_bound {
            self.drop_queued(queue, None, "the subscription's queue exceeded its bound").await?;
            return Ok(Attempt::Progress);
        }
        let target = queue.clone();
        let limit = dispatch.max_batch;
        let head = self
            .blocking(move |service| {
                // Notifications a backend staged with their users' updates reach their queues first.
                service.relay_staged()?;
                Ok(service.store.queue_head(&target, limit)?)
            })
            .await?;
        let Some(first) = head.first() else {
            return Ok(Attempt::Empty);
        };
        let now = self.clock.now();
        let window_start = now.as_millis().saturating_sub(millis(dispatch.retry_window));
        if first.created_at < window_start {
            self.drop_queued(queue, Some(window_start), "not delivered within the retry window").await?;
            return Ok(Attempt::Progress);
        }
        let lifecycle = queue.kind == QueueKind::Lifecycle;
        let active = match self.registry.get(&queue.subscription_id) {
            Some(active) => Some(active),
            // Not known here: perhaps made by another process a moment ago. The store decides.
            None if !lifecycle => self.stored_subscription(&queue.subscription_id).await?,
            None => None,
        };
        if !lifecycle && active.is_none() {
            let positions: Vec<u64> = head.iter().map(|row| row.position).collect();
            let target = queue.clone();
            self.blocking(move |service| Ok(service.store.acknowledge(&target, &positions, &[])?)).await?;
            return Ok(Attempt::Progress);
        }
        // Change notifications go to the subscription's current URL (a renewal may have changed it);
        // lifecycle notifications to the URL they were queued for (their subscription may be gone).
        let url = match (&active, lifecycle) {
            (Some(active), false) => active.record.notification_url.clone(),
            _ => first.url.clone(),
        };
        match dispatch.health_verdict(&url, now.as_millis()) {
            Verdict::Healthy => {}
            Verdict::Delayed => {
                let delayed_until = first.created_at.saturating_add(millis(SLOW_ENDPOINT_DELAY));
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
        let timeout = dispatch.delivery_timeout;
        let posted = match check_url(&url, self.lifecycle.limits.targets) {
            Ok(_) => match &self.webhooks {
                Ok(webhooks) => webhooks.post(&url, body, timeout).await,
                Err(reason) => Posted::Failed(reason.clone()),
            },
            Err(refused) => Posted::Failed(refused.to_string()),
        };
        let elapsed = started.elapsed();
        // A timeout is a slow delivery; a refused connection is a failure, not slowness.
        let slow = if matches!(posted, Posted::TimedOut) { elapsed.max(timeout) } else { elapsed };
        dispatch.record_delivery(&url, self.clock.now().as_millis(), slow);
        let outcome = match &posted {
            Posted::Status(status) if (200..300).contains(status) => DeliveryOutcome::Delivered,
            Posted::Status(_) => DeliveryOutcome::Rejected,
            Posted::TimedOut => DeliveryOutcome::TimedOut,
            Posted::Failed(_) => DeliveryOutcome::Failed,
        };
        self.metrics.delivery(outcome, batch.len());
        match posted {
            Posted::Status(status) if (200..300).contains(&status) => {
                let positions: Vec<u64> = batch.iter().map(|row| row.position).collect();
                let delivered = positions.len();
                let target = queue.clone();
                self.blocking(move |service| Ok(service.store.acknowledge(&target, &positions, &[])?)).await?;
                dispatch.subtract(queue, delivered);
                tracing::debug!(?queue, delivered, ?elapsed, "notifications delivered");
                Ok(Attempt::Progress)
            }
            other => {
                let attempt = {
                    let mut queues = lock(&dispatch.queues);
                    let attempts = queues.attempts.entry(queue.clone()).or_default();
                    *attempts = attempts.saturating_add(1);
                    *attempts
                };
                let delay = retry_delay(attempt);
                let outcome = match other {
                    Posted::Status(status) => format!("answered {status}"),
                    Posted::TimedOut => "no answer in time".to_owned(),
                    Posted::Failed(reason) => reason,
                };
                tracing::warn!(?queue, %url, outcome, attempt, retry_in = ?delay, "notification delivery failed");
                // Counted from the attempt's start, so the schedule does not drift with slow endpoints.
                Ok(Attempt::RetryAt(now.as_millis().saturating_add(millis(delay))))
            }
        }
    }

    /// The body of a POST for `batch`: items brought up to date with the subscription, rich content sealed
    /// for its certificate, and validation tokens.
    fn collection(&self, active: Option<&Active>, batch: &[&QueuedNotification]) -> Vec<u8> {
        let queued: Vec<Queued<'_>> =
            batch.iter().map(|row| Queued { item: &row.item, resource_data: row.resource_data.as_deref() }).collect();
        let current =
            active.map(|active| Current { subscription: &active.record, certificate: active.certificate.as_ref() });
        let token = |record: &presence_notify::record::SubscriptionRecord| {
            let issued = crate::clock::system_now().as_millis() / 1000;
            self.issuer.validation_token(&record.tenant_id, &record.application_id, issued)
        };
        let collection = render::collection(&queued, current, token, &mut rand::thread_rng());
        if collection.left_out > 0 {
            tracing::error!(left_out = collection.left_out, "notification items could not be read or sealed");
        }
        collection.body
    }
}
