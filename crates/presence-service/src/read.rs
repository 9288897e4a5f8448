//! Reads: users' stored facts and the instant to evaluate them at, taken with no write of those users in
//! between (see `locks`), evaluated into the presences a reader sees.

use std::sync::Arc;

use presence_core::{evaluate, Presence, Timestamp, UserFacts};
use presence_store::{StoreError, UserKey, UserRecord};

use crate::{Service, ServiceError};

impl Service {
    /// The presence of one user now (a user never written reads as the default presence).
    pub async fn read(self: &Arc<Self>, key: UserKey) -> Result<Presence, ServiceError> {
        let mut presences = self.read_many(vec![key]).await?;
        Ok(presences.pop().unwrap_or_else(|| evaluate(&UserFacts::default(), self.clock.now())))
    }

    /// The presences of several users now, in the order of `keys`, all evaluated at one instant.
    pub async fn read_many(self: &Arc<Self>, keys: Vec<UserKey>) -> Result<Vec<Presence>, ServiceError> {
        // Fast path: when no writer holds these users and the store can answer without blocking, the read
        // (lookups in memory) runs right here, as a hand-off to a blocking thread would cost more than the
        // read; and each record is evaluated where the store keeps it, not copied out first (a copy of a
        // user's sessions costs more than their evaluation).
        let started = std::time::Instant::now();
        let inline = self.locks.try_read(&keys, || {
            let now = self.clock.now();
            let default = UserFacts::default();
            let mut presences: Vec<Option<Presence>> = keys.iter().map(|_| None).collect();
            let mut visit = |position: usize, record: Option<&UserRecord>| {
                if let Some(slot) = presences.get_mut(position) {
                    *slot = Some(evaluate(record.map_or(&default, |record| &record.facts), now));
                }
            };
            let visited = self.store.visit_many_now(&keys, &mut visit);
            visited.map(|result| result.map(|()| presences))
        });
        if let Some(Some(result)) = inline {
            self.metrics.store("read", started.elapsed());
            return result?.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
                ServiceError::from(StoreError::Backend("the store left out a record it was asked for".into()))
            });
        }
        let (records, now) = self.read_records(keys).await?;
        let default = UserFacts::default();
        Ok(records
            .iter()
            .map(|record| evaluate(record.as_ref().map_or(&default, |record| &record.facts), now))
            .collect())
    }

    /// The stored records of `keys` and the instant to evaluate them at, read with no write of those users
    /// in between, where the fast path of [`Service::read_many`] could not read them.
    async fn read_records(
        self: &Arc<Self>,
        keys: Vec<UserKey>,
    ) -> Result<(Vec<Option<UserRecord>>, Timestamp), ServiceError> {
        let started = std::time::Instant::now();
        // A store read over the network is awaited here, and the instant taken once it answered: a write of
        // these users that it reflects was then made at or before that instant. (No local lock: writes on
        // other nodes take none either, and each record is read whole.)
        if let Some(read) = self.store.get_many_async(&keys) {
            let records = read.await;
            let now = self.clock.now();
            self.metrics.store("read", started.elapsed());
            return Ok((records?, now));
        }
        let result = self
            .blocking(move |service| {
                service.locks.read(&keys, || {
                    let now = service.clock.now();
                    let records = match keys.as_slice() {
                        [one] => vec![service.store.get(one)?],
                        many => service.store.get_many(many)?,
                    };
                    Ok((records, now))
                })
            })
            .await;
        self.metrics.store("read", started.elapsed());
        result
    }
}
