//! The subscription registry: the live subscriptions and whom each watches, in memory, so that a write
//! finds its user's watchers without a store call.
//!
//! The store is the truth; the registry is this process's view of it. Every change of the registry is a
//! copy of what the store holds, made while holding [`Registry::changes`]: after this process changed a
//! subscription in the store, and when the follower reads the store's change log (changes made by any
//! process). Holding that one lock across the store call and the copy means the last copy made of a
//! subscription is always of its latest stored state, so the view converges to the store, and a removal
//! made here cannot be undone by a follower that read the subscription a moment before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use presence_notify::encryption::EncryptionCertificate;
use presence_notify::record::SubscriptionRecord;
use presence_store::UserKey;

/// A live subscription: its record as stored, its store version, and its parsed certificate.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) record: SubscriptionRecord,
    pub(crate) version: u64,
    pub(crate) certificate: Option<EncryptionCertificate>,
}

impl Active {
    pub(crate) fn new(record: SubscriptionRecord, version: u64) -> Self {
        let certificate =
            record.encryption_certificate.as_deref().and_then(|text| EncryptionCertificate::from_base64(text).ok());
        Active { record, version, certificate }
    }
}

#[derive(Default)]
struct Index {
    subscriptions: HashMap<String, Arc<Active>>,
    watchers: HashMap<UserKey, Vec<String>>,
}

impl Index {
    fn insert(&mut self, active: Arc<Active>) {
        self.remove(&active.record.id);
        for user in &active.record.user_ids {
            let key = UserKey::new(active.record.tenant_id.clone(), user.clone());
            self.watchers.entry(key).or_default().push(active.record.id.clone());
        }
        self.subscriptions.insert(active.record.id.clone(), active);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Active>> {
        let active = self.subscriptions.remove(id)?;
        for user in &active.record.user_ids {
            let key = UserKey::new(active.record.tenant_id.clone(), user.clone());
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

/// Proof that [`Registry::changes`] is held: the registry changes only under it.
pub(crate) struct Changing<'a> {
    /// The cursor of the store's change log this view is current as of.
    pub(crate) cursor: MutexGuard<'a, u64>,
}

#[derive(Default)]
pub(crate) struct Registry {
    index: RwLock<Index>,
    /// Serialises changes of the registry with the store calls they copy; holds the change-log cursor.
    changes: Mutex<u64>,
}

impl Registry {
    /// Takes the lock under which the registry changes (a blocking wait: call it on a blocking thread).
    pub(crate) fn changing(&self) -> Changing<'_> {
        Changing { cursor: self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `active` live (new or changed).
    pub(crate) fn insert(&self, _changing: &Changing<'_>, active: Arc<Active>) {
        self.write().insert(active);
    }

    /// Takes subscription `id` out.
    pub(crate) fn remove(&self, _changing: &Changing<'_>, id: &str) -> Option<Arc<Active>> {
        self.write().remove(id)
    }

    /// Replaces every subscription (a reload from the store).
    pub(crate) fn replace_all(&self, _changing: &Changing<'_>, all: Vec<Arc<Active>>) {
        let mut index = Index::default();
        for active in all {
            index.insert(active);
        }
        *self.write() = index;
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Active>> {
        self.read().subscriptions.get(id).cloned()
    }

    /// The subscriptions of one application in one tenant, by id.
    pub(crate) fn of(&self, tenant_id: &str, application_id: &str) -> Vec<Arc<Active>> {
        let mut list: Vec<Arc<Active>> = self
            .read()
            .subscriptions
            .values()
            .filter(|active| active.record.tenant_id == tenant_id && active.record.application_id == application_id)
            .cloned()
            .collect();
        list.sort_by(|left, right| left.record.id.cmp(&right.record.id));
        list
    }

    /// The subscriptions watching `key`.
    pub(crate) fn watchers(&self, key: &UserKey) -> Vec<Arc<Active>> {
        let index = self.read();
        index
            .watchers
            .get(key)
            .map(|ids| ids.iter().filter_map(|id| index.subscriptions.get(id).cloned()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn count(&self) -> usize {
        self.read().subscriptions.len()
    }

    /// Every live subscription.
    pub(crate) fn all(&self) -> Vec<Arc<Active>> {
        self.read().subscriptions.values().cloned().collect()
    }
}
