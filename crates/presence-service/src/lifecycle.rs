//! Subscriptions over their life: creation (rules, the validation handshake, the per-application limit),
//! renewal, deletion, `reauthorizationRequired`, expiry, and learning of subscriptions other processes
//! changed.
//!
//! Every change is one atomic change of the stored subscription (the store checks the limit and applies
//! changes to the current record), then a copy into the registry under its lock (see `registry`). So a
//! renewal cannot be lost to a concurrent timer, a deleted subscription cannot come back, and when several
//! processes run the same timer, its effect (one `reauthorizationRequired`, one removal) happens once.

use std::sync::Arc;
use std::time::Duration;

use presence_core::Timestamp;
use presence_notify::delivery::reauthorization_at;
use presence_notify::record::SubscriptionRecord;
use presence_notify::render::LifecycleEvent;
use presence_notify::resource::format_instant;
use presence_notify::subscription::{check_expiration, SubscriptionError, SubscriptionLimits, SubscriptionRequest};
use presence_notify::target::check_url;
use presence_store::{NewNotification, StoreError, StoredSubscription};

use crate::dispatch::lifecycle_notification;
use crate::registry::{Active, Changing};
use crate::{Service, ServiceConfig, ServiceError};

/// How often the registry reads the store's change log for subscriptions other processes changed.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// How often (in follower rounds) the store's queues are swept for queues no process is delivering (a
/// process that died may have left some; their leases decide who delivers them).
const SWEEP_ROUNDS: u64 = 5;

/// The settings of subscription lifecycle.
pub(crate) struct Settings {
    pub(crate) limits: SubscriptionLimits,
    validation_timeout: Duration,
    max_per_app: usize,
}

impl Settings {
    pub(crate) fn new(config: &ServiceConfig) -> Self {
        Settings {
            limits: config.limits,
            validation_timeout: config.validation_timeout,
            max_per_app: config.max_subscriptions_per_app,
        }
    }
}

/// Who makes a subscription: an application of a tenant, for itself or for a signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The tenant.
    pub tenant_id: String,
    /// The application's client id.
    pub application_id: String,
    /// The signed-in user of a delegated subscription.
    pub user_id: Option<String>,
}

/// What a renewal changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// A new `expirationDateTime`.
    pub expiration: Option<i64>,
    /// A new `notificationUrl`.
    pub notification_url: Option<String>,
}

/// Why a subscription is removed.
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// Its owner deleted it.
    Delete,
    /// It expired by this instant.
    Expire(Timestamp),
}

/// The instant a subscription's timer falls due: its `reauthorizationRequired` or its expiry.
fn timer_of(record: &SubscriptionRecord) -> i64 {
    if record.reauthorization_sent || record.lifecycle_notification_url.is_none() {
        record.expiration
    } else {
        reauthorization_at(record.renewed_at, record.expiration)
    }
}

fn stored(record: &SubscriptionRecord) -> StoredSubscription {
    StoredSubscription {
        id: record.id.clone(),
        tenant_id: record.tenant_id.clone(),
        application_id: record.application_id.clone(),
        version: 0,
        body: record.encode(),
    }
}

fn decode(stored: &StoredSubscription) -> Result<SubscriptionRecord, StoreError> {
    SubscriptionRecord::decode(&stored.body)
        .map_err(|reason| StoreError::Corrupt { record: format!("subscription {}", stored.id), reason })
}

impl Service {
    /// Subscription `id` (an id in lower case), as this process knows it or, if it does not, as the store
    /// has it (made by another process a moment ago).
    pub async fn subscription(self: &Arc<Self>, id: &str) -> Result<Option<SubscriptionRecord>, ServiceError> {
        let active = match self.registry.get(id) {
            Some(active) => Some(active),
            None => self.stored_subscription(id).await?,
        };
        Ok(active.map(|active| active.record.clone()))
    }

    /// Subscription `id` as the store has it now, copied into the registry first.
    pub(crate) async fn stored_subscription(self: &Arc<Self>, id: &str) -> Result<Option<Arc<Active>>, ServiceError> {
        let id = id.to_owned();
        self.blocking(move |service| {
            let changing = service.registry.changing();
            service.refresh(&changing, &id)?;
            Ok(service.registry.get(&id))
        })
        .await
    }

    /// The subscriptions of an application in a tenant, by id.
    pub fn subscriptions_of(&self, tenant_id: &str, application_id: &str) -> Vec<SubscriptionRecord> {
        self.registry.of(tenant_id, application_id).iter().map(|active| active.record.clone()).collect()
    }

    /// Creates a subscription: checks `request` against the rules at the current instant, checks that
    /// every watched id names a user (`users_exist` answers which of the ids do) and that the application
    /// is below its limit, runs the
    /// validation handshake with the notification and lifecycle URLs, then stores it (checking the limit
    /// again, atomically) and makes it live.
    pub async fn create_subscription(
        self: &Arc<Self>,
        subscriber: Subscriber,
        request: &SubscriptionRequest,
        latest_supported_tls_version: String,
        users_exist: impl AsyncFnOnce(Vec<String>) -> Result<Vec<bool>, ServiceError>,
    ) -> Result<SubscriptionRecord, ServiceError> {
        let now = self.clock.now();
        let valid = request.validate(now.as_millis(), &self.lifecycle.limits)?;
        let user_ids = valid.watched.ids().to_vec();
        let exist = users_exist(user_ids.clone()).await?;
        if let Some((unknown, _)) = user_ids.iter().zip(exist).find(|(_, exists)| !exists) {
            return Err(ServiceError::UnknownUser(unknown.clone()));
        }
        let limit = self.lifecycle.max_per_app;
        if self.registry.of(&subscriber.tenant_id, &subscriber.application_id).len() >= limit {
            return Err(ServiceError::SubscriptionLimit(limit));
        }
        let webhooks =
            self.webhooks.as_ref().map_err(|reason| ServiceError::NotificationsUnavailable(reason.clone()))?;
        let timeout = self.lifecycle.validation_timeout;
        webhooks.validate(&valid.notification_url, timeout).await.map_err(ServiceError::SubscriptionValidation)?;
        if let Some(url) = &valid.lifecycle_notification_url {
            webhooks.validate(url, timeout).await.map_err(ServiceError::SubscriptionValidation)?;
        }
        let include_resource_data = request.include_resource_data;
        let record = SubscriptionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: subscriber.tenant_id,
            application_id: subscriber.application_id,
            user_id: subscriber.user_id,
            resource: request.resource.clone().unwrap_or_default(),
            user_ids,
            notification_url: valid.notification_url.to_string(),
            lifecycle_notification_url: valid.lifecycle_notification_url.as_ref().map(ToString::to_string),
            renewed_at: now.as_millis(),
            expiration: valid.expiration,
            client_state: valid.client_state.clone(),
            include_resource_data,
            encryption_certificate: request.encryption_certificate.clone().filter(|_| include_resource_data),
            encryption_certificate_id: request.encryption_certificate_id.clone().filter(|_| include_resource_data),
            latest_supported_tls_version,
            reauthorization_sent: false,
        };
        let created = record.clone();
        // The limit is checked again with the creation, since other creations ran during the handshakes.
        self.blocking(move |service| {
            let changing = service.registry.changing();
            if !service.store.create_subscription(&stored(&created), limit)? {
                return Err(ServiceError::SubscriptionLimit(limit));
            }
            service.make_live(&changing, created, 1);
            Ok(())
        })
        .await?;
        tracing::info!(subscription = %record.id, expiration = %format_instant(Timestamp(record.expiration)), "subscription created");
        Ok(record)
    }

    /// Renews subscription `id`: a new expiry (checked against the rules now, and again at the change) and
    /// a new notification URL (which must pass the validation handshake first). Applied to the record as it
    /// is at the change, or not at all if it was deleted or expired meanwhile.
    pub async fn renew_subscription(
        self: &Arc<Self>,
        id: &str,
        renewal: Renewal,
    ) -> Result<SubscriptionRecord, ServiceError> {
        let limits = self.lifecycle.limits;
        if let Some(expiration) = renewal.expiration {
            check_expiration(expiration, self.clock.now().as_millis(), &limits)?;
        }
        let new_url = match &renewal.notification_url {
            Some(url) => {
                let url = check_url(url, limits.targets)
                    .map_err(|reason| SubscriptionError::Target { which: "notificationUrl", reason })?;
                let webhooks =
                    self.webhooks.as_ref().map_err(|reason| ServiceError::NotificationsUnavailable(reason.clone()))?;
                webhooks
                    .validate(&url, self.lifecycle.validation_timeout)
                    .await
                    .map_err(ServiceError::SubscriptionValidation)?;
                Some(url.to_string())
            }
            None => None,
        };
        let expiration = renewal.expiration;
        let target = id.to_owned();
        let updated = self
            .blocking(move |service| {
                let now = service.clock.now();
                service.change_subscription(&target, |record| {
                    if let Some(expiration) = expiration {
                        check_expiration(expiration, now.as_millis(), &limits)?;
                        record.expiration = expiration;
                        record.renewed_at = now.as_millis();
                        record.reauthorization_sent = false;
                    }
                    if let Some(url) = &new_url {
                        record.notification_url.clone_from(url);
                    }
                    Ok(Some(Vec::new()))
                })
            })
            .await?;
        updated.ok_or_else(|| ServiceError::SubscriptionNotFound(id.to_owned()))
    }

    /// Reauthorizes subscription `id` (the caller's permissions were checked by its caller): it must exist
    /// in the store, whatever this process's copy says. The record does not change: this server sends one
    /// `reauthorizationRequired` per expiry and does not pause notifications meanwhile.
    pub async fn reauthorize_subscription(self: &Arc<Self>, id: &str) -> Result<SubscriptionRecord, ServiceError> {
        let found = self.stored_subscription(id).await?;
        found.map(|active| active.record.clone()).ok_or_else(|| ServiceError::SubscriptionNotFound(id.to_owned()))
    }

    /// Deletes subscription `id` with its queued notifications. Returns whether it existed.
    pub async fn delete_subscription(self: &Arc<Self>, id: &str) -> Result<bool, ServiceError> {
        let id = id.to_owned();
        self.blocking(move |service| Ok(service.remove_subscription(&id, Removal::Delete)?)).await
    }

    /// Copies `record` (at store version `version`) into the registry and sets its timer.
    fn make_live(&self, changing: &Changing<'_>, record: SubscriptionRecord, version: u64) {
        self.timers.schedule(&record.id, timer_of(&record));
        self.registry.insert(changing, Arc::new(Active::new(record, version)));
    }

    /// Takes subscription `id` out of the registry and its timers; returns what the registry had.
    fn make_dead(&self, changing: &Changing<'_>, id: &str) -> Option<Arc<Active>> {
        self.timers.unschedule(id);
        self.deliveries.forget(id);
        self.registry.remove(changing, id)
    }

    /// Copies subscription `id` as the store has it now into the registry.
    fn refresh(&self, changing: &Changing<'_>, id: &str) -> Result<(), StoreError> {
        match self.store.subscription(id)? {
            Some(stored) => {
                if self.registry.get(id).is_some_and(|active| active.version == stored.version) {
                    return Ok(());
                }
                match decode(&stored) {
                    Ok(record) => self.make_live(changing, record, stored.version),
                    Err(error) => {
                        tracing::error!(%error, "stored subscription is corrupt");
                        self.make_dead(changing, id);
                    }
                }
            }
            None => {
                self.make_dead(changing, id);
            }
        }
        Ok(())
    }

    /// Changes the current stored record of subscription `id` with `change`, which returns the
    /// notifications to queue with the change, or `None` for no change. Returns the record as it is after,
    /// or `None` when the subscription is gone.
    fn change_subscription(
        &self,
        id: &str,
        mut change: impl FnMut(&mut SubscriptionRecord) -> Result<Option<Vec<NewNotification>>, ServiceError>,
    ) -> Result<Option<SubscriptionRecord>, ServiceError> {
        let changing = self.registry.changing();
        let mut failure = None;
        let mut queued = None;
        let mut current = None;
        let result = self.store.update_subscription(id, &mut |stored| {
            failure = None;
            queued = None;
            let mut record = match decode(stored) {
                Ok(record) => record,
                Err(error) => {
                    failure = Some(ServiceError::Store(error));
                    return None;
                }
            };
            match change(&mut record) {
                Ok(Some(notifications)) => {
                    stored.body = record.encode();
                    queued = Some(notifications.clone());
                    current = Some(record);
                    Some(notifications)
                }
                Ok(None) => {
                    current = Some(record);
                    None
                }
                Err(error) => {
                    failure = Some(error);
                    None
                }
            }
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        let Some(stored) = result else {
            self.make_dead(&changing, id);
            return Ok(None);
        };
        let record = match current {
            Some(record) => record,
            None => decode(&stored)?,
        };
        self.make_live(&changing, record.clone(), stored.version);
        drop(changing);
        if let Some(notifications) = queued {
            self.queued(&notifications);
        }
        Ok(Some(record))
    }

    /// Removes subscription `id` with its queued notifications: deleted by its owner, or expired (then
    /// only if the stored record is still expired, and with `subscriptionRemoved` to its lifecycle URL).
    /// Returns whether it was removed.
    fn remove_subscription(&self, id: &str, removal: Removal) -> Result<bool, StoreError> {
        let changing = self.registry.changing();
        // Gone from memory before the farewell can be delivered (the dispatcher may read the lifecycle
        // queue as soon as the store commits), so that whoever gets `subscriptionRemoved` finds it gone.
        let was = self.make_dead(&changing, id);
        let mut farewell = Vec::new();
        let removed = self.store.remove_subscription(id, &mut |stored| {
            farewell = Vec::new();
            match removal {
                Removal::Delete => Some(Vec::new()),
                Removal::Expire(now) => {
                    // Checked on the stored record: a renewal (here or in another process) may have come in.
                    let record = decode(stored).ok()?;
                    if now.as_millis() < record.expiration {
                        return None;
                    }
                    farewell =
                        lifecycle_notification(&record, LifecycleEvent::SubscriptionRemoved, now).into_iter().collect();
                    Some(farewell.clone())
                }
            }
        });
        match removed {
            Ok(Some(_)) => {
                drop(changing);
                self.queued(&farewell);
                Ok(true)
            }
            Ok(None) => {
                // Gone already, or kept (renewed): the registry copies the store either way.
                self.refresh(&changing, id)?;
                Ok(false)
            }
            Err(error) => {
                // Not removed after all: back into the registry as the store has it, or as it was if the
                // store cannot be read either, with a timer that retries soon.
                if self.refresh(&changing, id).is_err() {
                    if let Some(active) = was {
                        let retry = self.clock.now().as_millis().saturating_add(1000);
                        self.timers.schedule(id, retry);
                        self.registry.insert(&changing, active);
                    }
                }
                Err(error)
            }
        }
    }

    /// Loads every stored subscription into the registry (at start-up, or when the change log no longer
    /// reaches back to this process's cursor).
    pub(crate) fn load_subscriptions(&self) -> Result<(), StoreError> {
        let mut changing = self.registry.changing();
        self.reload(&mut changing)
    }

    fn reload(&self, changing: &mut Changing<'_>) -> Result<(), StoreError> {
        let (all, cursor) = self.store.subscriptions()?;
        let mut live = Vec::with_capacity(all.len());
        for stored in &all {
            match decode(stored) {
                Ok(record) => live.push(Arc::new(Active::new(record, stored.version))),
                Err(error) => tracing::error!(%error, "stored subscription is corrupt"),
            }
        }
        for active in self.registry.all() {
            self.timers.unschedule(&active.record.id);
        }
        for active in &live {
            self.timers.schedule(&active.record.id, timer_of(&active.record));
        }
        self.registry.replace_all(changing, live);
        *changing.cursor = cursor;
        Ok(())
    }

    /// Copies into the registry what the store's change log says changed since the last look.
    fn follow_once(&self) -> Result<(), StoreError> {
        let mut changing = self.registry.changing();
        match self.store.subscription_changes(*changing.cursor)? {
            Some(changes) => {
                for id in &changes.ids {
                    self.refresh(&changing, id)?;
                }
                *changing.cursor = changes.cursor;
                Ok(())
            }
            None => self.reload(&mut changing),
        }
    }

    /// Follows the store's change log first if another process changed subscriptions since this one last
    /// read it, so that a write notifies every subscription made (anywhere) before it. A failure is logged
    /// and the write goes on with the subscriptions known.
    pub(crate) fn catch_up_subscriptions(&self) {
        let behind = match self.store.subscription_cursor() {
            Ok(Some(newest)) => newest > *self.registry.changing().cursor,
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(%error, "subscriptions: the change log's cursor could not be read");
                false
            }
        };
        if behind {
            if let Err(error) = self.follow_once() {
                tracing::warn!(%error, "subscriptions: reading the change log failed");
            }
        }
    }

    /// The follower: reads the store's change log and relays what the store staged (also what a process
    /// that died staged) every [`FOLLOW_INTERVAL`], and sweeps the store's queues every [`SWEEP_ROUNDS`]
    /// rounds.
    pub(crate) async fn run_follower(self: Arc<Self>) {
        for round in 1u64.. {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            if let Err(error) = self.blocking(|service| Ok(service.follow_once()?)).await {
                tracing::error!(%error, "subscriptions: reading the change log failed; retrying");
            }
            if let Err(error) = self.blocking(|service| Ok(service.relay_staged()?)).await {
                tracing::error!(%error, "delivery: relaying staged notifications failed; retrying");
            }
            if round % SWEEP_ROUNDS == 0 {
                if let Err(error) = self.blocking(|service| Ok(service.sweep_queues()?)).await {
                    tracing::error!(%error, "delivery: sweeping the store's queues failed; retrying");
                }
            }
        }
    }

    /// Sends `reauthorizationRequired` and removes expired subscriptions, as their timers fall due.
    pub(crate) fn run_subscription_timers(&self) -> Result<(), StoreError> {
        loop {
            let now = self.clock.now();
            let Some(id) = self.timers.pop_due(now.as_millis()) else {
                return Ok(());
            };
            let Some(active) = self.registry.get(&id) else {
                continue;
            };
            let record = &active.record;
            if now.as_millis() >= record.expiration {
                if self.remove_subscription(&record.id, Removal::Expire(now))? {
                    tracing::info!(subscription = %record.id, "subscription expired and was removed");
                }
            } else if !record.reauthorization_sent
                && now.as_millis() >= reauthorization_at(record.renewed_at, record.expiration)
            {
                // Checked again on the current record: a renewal may have come in meanwhile.
                let result = self.change_subscription(&record.id, |record| {
                    let due = !record.reauthorization_sent
                        && now.as_millis() >= reauthorization_at(record.renewed_at, record.expiration);
                    if !due {
                        return Ok(None);
                    }
                    record.reauthorization_sent = true;
                    Ok(Some(
                        lifecycle_notification(record, LifecycleEvent::ReauthorizationRequired, now)
                            .into_iter()
                            .collect(),
                    ))
                });
                if let Err(error) = result {
                    tracing::error!(%error, subscription = %record.id, "reauthorizationRequired not queued; retrying");
                    self.timers.schedule(&record.id, now.as_millis().saturating_add(1000));
                }
            } else {
                self.timers.schedule(&record.id, timer_of(record));
            }
        }
    }
}
