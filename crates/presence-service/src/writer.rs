//! The write combiner: requests hand their writes to one writer thread, which applies the writes of
//! distinct users that are waiting in one transaction.
//!
//! Why: a write is acknowledged only once it is durable. Done one request at a time, each write costs a
//! blocking thread, a transaction, a commit and a wait for the fsync, and the threads hand the single
//! writer connection to each other. Here a burst of writes costs one transaction, one commit and one
//! fsync, the request waits on a channel rather than on a thread, and each user's writes still apply in
//! the order they arrived (a user with a write in the batch being built waits for the next batch).

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Weak;

use presence_core::{Presence, Timestamp, UserFacts};
use presence_store::{NewNotification, UserKey};
use tokio::sync::{mpsc, oneshot};

use crate::{Service, ServiceError};

/// The most writes one transaction applies.
const MAX_BATCH: usize = 256;
/// Writes waiting in the channel before senders wait for room.
const CHANNEL_CAPACITY: usize = 1024;

/// A queued write, with the answer to send back once it is durable (or has failed).
trait Job: Send {
    fn key(&self) -> &UserKey;
    /// Changes the facts at `now`; returns the presence to notify when it changed visibly.
    fn apply(&mut self, facts: &mut UserFacts, now: Timestamp) -> Result<Option<Presence>, ServiceError>;
    /// Answers the request: `Ok` once the write is durable.
    fn finish(self: Box<Self>, outcome: Result<(), ServiceError>);
}

struct Pending<T, F> {
    key: UserKey,
    apply: F,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, ServiceError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnMut(&mut UserFacts, Timestamp) -> Result<(T, Option<Presence>), ServiceError> + Send,
{
    fn key(&self) -> &UserKey {
        &self.key
    }

    fn apply(&mut self, facts: &mut UserFacts, now: Timestamp) -> Result<Option<Presence>, ServiceError> {
        let (value, visible) = (self.apply)(facts, now)?;
        self.value = Some(value);
        Ok(visible)
    }

    fn finish(self: Box<Self>, outcome: Result<(), ServiceError>) {
        let value = self.value;
        let result = outcome
            .and_then(|()| value.ok_or_else(|| ServiceError::Internal("the store did not run the update".into())));
        // The request may have gone away (client disconnected); the write stands all the same.
        let _ = self.reply.send(result);
    }
}

/// The sending side, held by the shared state; the writer thread ends when it is dropped.
pub(crate) struct Writer {
    sender: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread for `service`, held weakly so that dropping the service stops the thread.
    pub(crate) fn start(service: Weak<Service>) -> Writer {
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let spawned = std::thread::Builder::new().name("presence-writer".into()).spawn(move || run(&service, receiver));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the writer thread; writes will fail");
        }
        Writer { sender }
    }
}

fn run(service: &Weak<Service>, mut receiver: mpsc::Receiver<Box<dyn Job>>) {
    let mut waiting: VecDeque<Box<dyn Job>> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match receiver.blocking_recv() {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        while waiting.len() < CHANNEL_CAPACITY {
            match receiver.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        let batch = next_batch(&mut waiting);
        let Some(service) = service.upgrade() else {
            return;
        };
        // A panic fails this batch's requests (their answers are dropped), not every later write.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| service.write_batch(batch)));
    }
}

/// Takes from the front of `waiting` up to [`MAX_BATCH`] writes of distinct users. A write of a user
/// already in the batch stays, with every later one, for a later batch, so each user's order holds.
fn next_batch(waiting: &mut VecDeque<Box<dyn Job>>) -> Vec<Box<dyn Job>> {
    let mut batch = Vec::new();
    let mut users = HashSet::new();
    let mut rest = VecDeque::new();
    while let Some(job) = waiting.pop_front() {
        if batch.len() < MAX_BATCH && users.insert(job.key().clone()) {
            batch.push(job);
        } else {
            rest.push_back(job);
        }
    }
    *waiting = rest;
    batch
}

impl Service {
    /// Applies `apply` to the user's facts at the current instant, taken under the user's lock, queues the
    /// notifications it causes and moves the user's timer, atomically with the facts; returns once that
    /// is durable. `apply` returns its result and the presence to notify when it changed visibly.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        key: UserKey,
        apply: impl FnMut(&mut UserFacts, Timestamp) -> Result<(T, Option<Presence>), ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending { key, apply, value: None, reply });
        self.writer.sender.send(job).await.map_err(|_| ServiceError::Internal("the writer has stopped".into()))?;
        answer.await.map_err(|_| ServiceError::Internal("the write failed unexpectedly".into()))?
    }

    /// One store call for `jobs` (of distinct users), then each request's answer.
    fn write_batch(&self, mut jobs: Vec<Box<dyn Job>>) {
        let keys: Vec<UserKey> = jobs.iter().map(|job| job.key().clone()).collect();
        let positions: HashMap<&UserKey, usize> = keys.iter().enumerate().map(|(index, key)| (key, index)).collect();
        let mut outcomes: Vec<Option<Result<(), ServiceError>>> = keys.iter().map(|_| None).collect();
        let mut queued: Vec<Vec<NewNotification>> = vec![Vec::new(); keys.len()];
        let mut timers: Vec<Option<i64>> = vec![None; keys.len()];
        let followed = self.feed.is_followed();
        let mut changed = vec![false; keys.len()];
        let started = std::time::Instant::now();
        self.catch_up_subscriptions();
        let results = self.locks.write_many(&keys, || {
            let watchers: Vec<_> = keys.iter().map(|key| self.registry.watchers(key)).collect();
            let now = self.clock.now();
            self.store.update_many(&keys, &mut |key, facts, due| {
                let index = positions[key];
                let before = facts.clone();
                match jobs[index].apply(facts, now) {
                    Ok(visible) => {
                        let changes = crate::scheduler::owed_changes(&before, due, now, visible);
                        let effects = crate::dispatch::effects(&watchers[index], key, &changes, now, facts);
                        changed[index] = followed && !changes.is_empty();
                        queued[index].clone_from(&effects.notifications);
                        timers[index] = effects.due_at;
                        outcomes[index] = Some(Ok(()));
                        Some(effects)
                    }
                    Err(error) => {
                        queued[index].clear();
                        changed[index] = false;
                        timers[index] = None;
                        outcomes[index] = Some(Err(error));
                        None
                    }
                }
            })
        });
        self.metrics.store("write_batch", started.elapsed());
        for (index, result) in results.into_iter().enumerate() {
            if let Err(error) = result {
                if matches!(error, presence_store::StoreError::Corrupt { .. }) {
                    tracing::error!(%error, "stored presence is corrupt; its timer was cleared");
                } else {
                    tracing::error!(%error, "store failure");
                }
                changed[index] = false;
                queued[index].clear();
                timers[index] = None;
                outcomes[index] = Some(Err(ServiceError::Store(error)));
            }
        }
        self.queued(&queued.concat());
        self.feed.publish(keys.iter().zip(changed).filter(|(_, changed)| *changed).map(|(key, _)| key.clone()));
        self.timers.timer_set(timers.into_iter().flatten().min());
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            job.finish(
                outcome.unwrap_or_else(|| Err(ServiceError::Internal("the store did not run the update".into()))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A write that records, when answered, its user and its place in the arrival order.
    struct Probe {
        key: UserKey,
        arrival: usize,
        answered: Arc<Mutex<Vec<(String, usize)>>>,
    }

    impl Job for Probe {
        fn key(&self) -> &UserKey {
            &self.key
        }
        fn apply(&mut self, _: &mut UserFacts, _: Timestamp) -> Result<Option<Presence>, ServiceError> {
            Ok(None)
        }
        fn finish(self: Box<Self>, _: Result<(), ServiceError>) {
            self.answered.lock().unwrap().push((self.key.user_id.clone(), self.arrival));
        }
    }

    #[test]
    fn a_batch_holds_distinct_users_and_keeps_each_users_order() {
        let answered = Arc::new(Mutex::new(Vec::new()));
        let mut waiting: VecDeque<Box<dyn Job>> = ["a", "b", "a", "c", "b", "a"]
            .iter()
            .enumerate()
            .map(|(arrival, id)| {
                let key = UserKey { tenant_id: "t".into(), user_id: (*id).into() };
                Box::new(Probe { key, arrival, answered: answered.clone() }) as Box<dyn Job>
            })
            .collect();
        let mut sizes = Vec::new();
        loop {
            let batch = next_batch(&mut waiting);
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            batch.into_iter().for_each(|job| job.finish(Ok(())));
        }
        assert_eq!(sizes, [3, 2, 1]);
        let order: Vec<(String, usize)> = answered.lock().unwrap().clone();
        let expected = [("a", 0), ("b", 1), ("c", 3), ("a", 2), ("b", 4), ("a", 5)];
        assert_eq!(order, expected.map(|(id, arrival)| (id.to_owned(), arrival)));
    }
}
