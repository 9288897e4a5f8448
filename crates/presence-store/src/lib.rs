//! Where presence facts live: the store interface and its embedded SQLite backend.
//!
//! The interface ([`PresenceStore`]) is deliberately small: read one user, read many users, an atomic
//! read-modify-write of one user (or of several in one transaction), users' timers, subscriptions, and
//! queues of notifications. Everything presence means is decided by `presence-core`; a backend keeps
//! [`UserFacts`] and a timer per `(tenant, user)`, subscriptions and queued notifications as opaque text,
//! and guarantees that
//! - an update is atomic per user: no two updates of the same user interleave;
//! - an update returns only once the new facts, the timer and the notifications it queued are durable
//!   together (after SIGKILL or power loss they are all there, or none is);
//! - queued notifications come back in the order they were queued.
//!
//! This crate must not interpret facts, read the clock, or know about HTTP or tokens.

mod codec;
mod sqlite;

pub use presence_core::UserFacts;
pub use sqlite::{SqliteStore, DATABASE_FILE};

/// The identity of one user's presence record: tenant id and user object id, both lowercase GUID text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    /// The tenant (directory) id.
    pub tenant_id: String,
    /// The user's object id.
    pub user_id: String,
}

/// Why the store could not do what was asked. Every variant is a server fault, never the caller's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// Making a commit durable failed.
    #[error("cannot make the database durable: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be decoded.
    #[error("stored presence record for {tenant_id}/{user_id} is corrupt: {reason}")]
    Corrupt {
        /// Tenant of the record.
        tenant_id: String,
        /// User of the record.
        user_id: String,
        /// What was wrong.
        reason: String,
    },
    /// The store's lock was poisoned by a panic in another thread.
    #[error("the store is unavailable after an internal panic")]
    Poisoned,
}

/// A notification to queue, in the same transaction as the write that caused it.
///
/// The store keeps queued notifications in the order they were queued, per `queue`; it does not look
/// inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The delivery queue: a subscription's id, or its lifecycle queue.
    pub queue: String,
    /// Where it is to be delivered.
    pub url: String,
    /// When it was queued (milliseconds since the epoch).
    pub created_at: i64,
    /// The notification item, ready to send but for encryption.
    pub item: String,
    /// The resource data to encrypt into the item, for rich notifications.
    pub resource_data: Option<String>,
}

/// A queued notification, as read back for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedNotification {
    /// Its position: increasing in the order notifications were queued.
    pub id: i64,
    /// Where it is to be delivered.
    pub url: String,
    /// When it was queued.
    pub created_at: i64,
    /// The notification item.
    pub item: String,
    /// The resource data, for rich notifications.
    pub resource_data: Option<String>,
}

/// What an update writes besides the facts: the user's timer and the notifications the update caused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// The next instant at which the user's presence changes by itself (the user's timer), if any.
    pub due_at: Option<i64>,
    /// Notifications to queue, atomically with the facts.
    pub notifications: Vec<NewNotification>,
    /// The closure did not change the facts (a timer catching up): only the timer and the notifications
    /// are written.
    pub timer_only: bool,
}

/// Counts for monitoring, at an instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Users with stored facts.
    pub users: u64,
    /// Sessions that have not expired at the instant.
    pub live_sessions: u64,
    /// Users with a timer (a change of presence pending).
    pub pending_timers: u64,
}

/// A stored subscription: its id, its tenant, and a body the store does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The subscription id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// The subscription's record, encoded by its owner.
    pub body: String,
}

/// The closure of a single-user update: given the facts (the default when none) and the user's timer, it
/// changes the facts and returns what to write with them, or `None` to write nothing.
pub type UpdateFn<'a> = dyn FnMut(&mut UserFacts, Option<i64>) -> Option<Effects> + 'a;

/// The closure of a many-user update: as [`UpdateFn`], with the user's key.
pub type UpdateManyFn<'a> = dyn FnMut(&UserKey, &mut UserFacts, Option<i64>) -> Option<Effects> + 'a;

/// A backend that keeps presence facts, users' timers, subscriptions and queued notifications.
///
/// Methods block: async callers run them on a blocking thread. The closures given to the update methods
/// may run more than once (a distributed backend retries on conflict), so they must compute their result
/// from their arguments alone.
pub trait PresenceStore: Send + Sync + 'static {
    /// The facts of one user, or `None` when nothing was ever stored.
    fn get(&self, key: &UserKey) -> Result<Option<UserFacts>, StoreError>;

    /// The facts of several users, in the order of `keys`.
    fn get_many(&self, keys: &[UserKey]) -> Result<Vec<Option<UserFacts>>, StoreError>;

    /// [`PresenceStore::get_many`] if it can be answered without waiting for a busy connection, else
    /// `None` (the caller then reads on a blocking thread). Lets async callers read inline when the store
    /// is free.
    fn try_get_many(&self, keys: &[UserKey]) -> Option<Result<Vec<Option<UserFacts>>, StoreError>> {
        let _ = keys;
        None
    }

    /// Atomically reads the user's facts and timer, lets `apply` change them, and stores the result, the
    /// new timer and the notifications durably if `apply` returns effects. Returns whether anything was
    /// written.
    fn update(&self, key: &UserKey, apply: &mut UpdateFn<'_>) -> Result<bool, StoreError>;

    /// [`PresenceStore::update`] for several users in one durable transaction. A user whose record cannot
    /// be decoded is skipped and its timer cleared, so that one corrupt record cannot stop everyone's
    /// timers; the skipped keys are returned.
    fn update_many(&self, keys: &[UserKey], apply: &mut UpdateManyFn<'_>) -> Result<Vec<UserKey>, StoreError>;

    /// Up to `limit` users whose timer is at or before `now`, earliest first.
    fn due_users(&self, now: i64, limit: usize) -> Result<Vec<UserKey>, StoreError>;

    /// The earliest timer of any user.
    fn next_due(&self) -> Result<Option<i64>, StoreError>;

    /// Every stored subscription.
    fn subscriptions(&self) -> Result<Vec<StoredSubscription>, StoreError>;

    /// Creates or replaces a subscription, and queues `notifications` in the same transaction.
    fn put_subscription(
        &self,
        subscription: &StoredSubscription,
        notifications: &[NewNotification],
    ) -> Result<(), StoreError>;

    /// Deletes a subscription and the notifications queued in `queues`, and queues `farewell` (its last
    /// lifecycle notifications) in the same transaction. Returns whether the subscription existed.
    fn remove_subscription(&self, id: &str, queues: &[&str], farewell: &[NewNotification]) -> Result<bool, StoreError>;

    /// Queues notifications that no user update caused (lifecycle events).
    fn enqueue(&self, notifications: &[NewNotification]) -> Result<(), StoreError>;

    /// The oldest `limit` notifications of `queue`, in order.
    fn queue_head(&self, queue: &str, limit: usize) -> Result<Vec<QueuedNotification>, StoreError>;

    /// Removes delivered (or dropped) notifications, and queues `notifications` in the same transaction.
    fn acknowledge(&self, ids: &[i64], notifications: &[NewNotification]) -> Result<(), StoreError>;

    /// Every queue with notifications waiting, and how many.
    fn queue_lengths(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Counts for monitoring at `now` (milliseconds since the epoch). May read every record: call it
    /// for a metrics scrape, not per request.
    fn stats(&self, now: i64) -> Result<StoreStats, StoreError>;

    /// Whether the store answers a trivial query (readiness).
    fn ping(&self) -> Result<(), StoreError>;

    /// Writes everything acknowledged into its final place (at shutdown).
    fn flush(&self) -> Result<(), StoreError>;
}
