//! Timers: users' presence timers, subscriptions' lifecycle timers, and delivery retries, run by one loop.
//!
//! Users' timers live in the store (an instant per user with a pending time-driven change), so nothing
//! scans all users and nothing is lost with a process: the loop *claims* the due users for a lease
//! ([`CLAIM_LEASE`]), so that processes sharing a store never catch up the same user at once, and catches
//! them up in batches: every change owed since the user's `due_at` is reported once, in order, and the
//! write sets the next timer (ending the claim). A claim whose write never comes (the process died) expires
//! and the user is claimed again; catching up twice is harmless because the second write finds the
//! `due_at` the first one moved.
//!
//! Subscriptions' timers (`reauthorizationRequired`, expiry) are kept in memory, rebuilt from the registry;
//! every process sharing a store runs them, and the store's atomic subscription changes make each take
//! effect once. The loop sleeps until the earliest timer of any kind, woken early by a write that sets an
//! earlier one, a subscription change, a retry falling due, or the test clock.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_core::{due_changes, Presence, Timestamp, UserFacts};
use presence_store::{StoreError, UserKey};
use tokio::sync::Notify;

use crate::dispatch::effects;
use crate::Service;

/// Users caught up per store call.
const TIMER_BATCH: usize = 512;
/// How long a claim on a due user lasts before another claimer may take it.
pub(crate) const CLAIM_LEASE: Duration = Duration::from_secs(30);
/// The longest the loop sleeps without looking.
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The visible changes a user's write or timer brings: those owed since its `due` (if that passed by
/// `now`), in order, then the write's own `visible` change.
pub(crate) fn owed_changes(
    facts_before: &UserFacts,
    due: Option<i64>,
    now: Timestamp,
    visible: Option<Presence>,
) -> Vec<Presence> {
    let (mut changes, _) = due_changes(facts_before, due.map(Timestamp), now);
    changes.extend(visible);
    changes
}

/// The in-memory side of the timers.
pub(crate) struct Timers {
    /// Subscriptions' next lifecycle instants.
    subscriptions: Mutex<BTreeSet<(i64, String)>>,
    wake: Notify,
    /// The instant the loop sleeps until; `i64::MAX` while it is working out the next one, so that any
    /// timer set meanwhile wakes it.
    planned_wake: AtomicI64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { subscriptions: Mutex::default(), wake: Notify::new(), planned_wake: AtomicI64::new(i64::MAX) }
    }
}

impl Timers {
    fn subscriptions(&self) -> std::sync::MutexGuard<'_, BTreeSet<(i64, String)>> {
        self.subscriptions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the loop: a timer may have moved earlier, or the clock moved.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the loop if a user's timer now falls before its planned wake-up.
    pub(crate) fn timer_set(&self, due_at: Option<i64>) {
        if due_at.is_some_and(|at| at < self.planned_wake.load(Ordering::SeqCst)) {
            self.wake();
        }
    }

    /// Sets subscription `id`'s timer to `at` (replacing any).
    pub(crate) fn schedule(&self, id: &str, at: i64) {
        let mut timers = self.subscriptions();
        timers.retain(|(_, timer)| timer != id);
        timers.insert((at, id.to_owned()));
        drop(timers);
        self.wake();
    }

    /// Drops subscription `id`'s timer.
    pub(crate) fn unschedule(&self, id: &str) {
        self.subscriptions().retain(|(_, timer)| timer != id);
    }

    /// The subscription whose timer fell due by `now`, earliest first (taken off the timers).
    pub(crate) fn pop_due(&self, now: i64) -> Option<String> {
        let mut timers = self.subscriptions();
        match timers.first() {
            Some((at, _)) if *at <= now => timers.pop_first().map(|(_, id)| id),
            _ => None,
        }
    }

    fn first(&self) -> Option<i64> {
        self.subscriptions().first().map(|(at, _)| *at)
    }
}

impl Service {
    /// Claims the users whose timer is due and reports their time-driven changes, a batch at a time.
    fn run_due_timers(&self) -> Result<(), StoreError> {
        loop {
            let now = self.clock.now();
            let lease_until = now.as_millis().saturating_add(millis(CLAIM_LEASE));
            let keys = self.store.claim_due(now.as_millis(), lease_until, TIMER_BATCH)?;
            if keys.is_empty() {
                return Ok(());
            }
            let started = std::time::Instant::now();
            self.catch_up_subscriptions();
            let followed = self.feed.is_followed();
            let mut queued = Vec::new();
            let mut changed: Vec<UserKey> = Vec::new();
            let results = self.locks.write_many(&keys, || {
                let now = self.clock.now();
                let watchers: Vec<_> = keys.iter().map(|key| self.registry.watchers(key)).collect();
                let positions: std::collections::HashMap<&UserKey, usize> =
                    keys.iter().enumerate().map(|(index, key)| (key, index)).collect();
                let mut notified: Vec<Vec<_>> = vec![Vec::new(); keys.len()];
                let mut visible = vec![false; keys.len()];
                let results = self.store.update_many(&keys, &mut |key, facts, due| {
                    let index = positions[key];
                    let changes = owed_changes(facts, due, now, None);
                    let mut effects = effects(&watchers[index], key, &changes, now, facts);
                    effects.timer_only = true;
                    notified[index].clone_from(&effects.notifications);
                    visible[index] = !changes.is_empty();
                    Some(effects)
                });
                for (index, result) in results.iter().enumerate() {
                    if result.is_ok() {
                        queued.append(&mut notified[index]);
                        if followed && visible[index] {
                            changed.push(keys[index].clone());
                        }
                    }
                }
                results
            });
            self.feed.publish(changed);
            self.metrics.store("timer_pass", started.elapsed());
            for error in results.into_iter().filter_map(Result::err) {
                // A user that failed keeps its claim until the lease ends, and is caught up then.
                tracing::error!(%error, "a user's timer could not be caught up");
            }
            self.queued(&queued);
        }
    }

    /// The earliest instant any timer (user, subscription, retry) falls due.
    fn next_wake(&self) -> Result<Option<i64>, StoreError> {
        let user = self.store.next_due()?;
        let subscription = self.timers.first();
        let retry = self.deliveries.next_retry();
        Ok([user, subscription, retry].into_iter().flatten().min())
    }

    /// The timer loop: runs whatever fell due, then sleeps until the next timer or a wake-up.
    pub(crate) async fn run_scheduler(self: Arc<Self>) {
        loop {
            self.timers.planned_wake.store(i64::MAX, Ordering::SeqCst);
            let next = self
                .blocking(|service| {
                    // Each stage runs whatever the others did: a failing one does not stop the rest, and
                    // the loop comes back in a second.
                    let stages = [
                        ("users' timers", service.run_due_timers()),
                        ("relaying staged notifications", service.relay_staged()),
                        ("subscriptions' timers", service.run_subscription_timers()),
                    ];
                    let mut retry = None;
                    for (stage, result) in stages {
                        if let Err(error) = result {
                            tracing::error!(%error, stage, "timers: a stage failed; retrying in a second");
                            retry = Some(service.clock.now().as_millis().saturating_add(1000));
                        }
                    }
                    service.release_waiting();
                    Ok(service.next_wake()?.into_iter().chain(retry).min())
                })
                .await;
            let next = next.unwrap_or_else(|error| {
                tracing::error!(%error, "timers: failure; retrying in a second");
                Some(self.clock.now().as_millis() + 1000)
            });
            let now = self.clock.now().as_millis();
            self.timers.planned_wake.store(next.unwrap_or(i64::MAX - 1), Ordering::SeqCst);
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
                () = self.timers.wake.notified() => {}
            }
        }
    }
}
