//! Where presence facts live: the store contract that every backend keeps, and the embedded SQLite backend.
//!
//! The contract is [`PresenceStore`]. It is written so that a backend without cross-key transactions (a
//! Redis Cluster, say) can keep every promise, and several processes can share one store:
//! - **Per-user atomicity.** An update of one user is atomic; a many-user update may commit user by user and
//!   answers per user. Update closures may run more than once (a backend retries on a version conflict), so
//!   they compute their result from their arguments alone.
//! - **Versions in the record.** A user's record carries a version that every write increases, and the
//!   facts carry the presence's sequence stamp, so sequence numbers stay monotonic whichever process writes.
//! - **Claimed timers.** A due timer is *claimed* for a lease: two claimers never hold the same user at once;
//!   a claim that is not followed by a write expires and the user can be claimed again. Firing twice is
//!   harmless, because the catch-up write reads the record's own `due_at` under per-user atomicity.
//! - **A transactional outbox.** The notifications an update causes are durable atomically with the user's
//!   facts. Moving them to their subscription queues may be a second step ([`PresenceStore::relay`]), which
//!   is idempotent: a replay enqueues nothing twice. Queue positions and acknowledgements are per queue.
//! - **One deliverer per queue.** A queue is delivered by the holder of its lease
//!   ([`PresenceStore::lease_queue`]), so its notifications go out in order and once whichever process
//!   queued them.
//! - **Subscriptions in the store.** Creation counts against a per-application limit atomically; a change is
//!   atomic per subscription; every change is written to a change log that other processes follow
//!   ([`PresenceStore::subscription_changes`]).
//! - **Order of visibility.** Queue positions and change-log cursors become visible in increasing order:
//!   a reader that has seen one never later sees a smaller one appear (a follower may keep a cursor).
//! - **Durability.** A write returns only once it is durable (for SQLite: after an fsync; after SIGKILL or a
//!   power cut everything acknowledged is there).
//!
//! What only one backend needs is not a duty of every backend: non-blocking reads from memory
//! ([`PresenceStore::get_many_now`]), monitoring counts ([`PresenceStore::stats`]) and a tidy-up at shutdown
//! ([`PresenceStore::close`]) are optional, with defaults; SQLite's checkpoints and commit counters are
//! [`SqliteStore`]'s own API.
//!
//! Every backend passes the same conformance suite ([`conformance`], behind the `conformance` feature).
//!
//! This crate must not interpret facts beyond storing them, read the clock, or know about HTTP or tokens.

pub mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
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

impl UserKey {
    /// The key of `user_id` in `tenant_id`.
    pub fn new(tenant_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        UserKey { tenant_id: tenant_id.into(), user_id: user_id.into() }
    }
}

/// A user's stored record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRecord {
    /// The facts presence is computed from (with the sequence stamp).
    pub facts: UserFacts,
    /// The first instant whose time-driven change has not been reported yet (the user's timer).
    pub due_at: Option<i64>,
    /// Increases with every write of the record (1 after the first).
    pub version: u64,
}

/// Why the store could not do what was asked. Every variant is a server fault, never the caller's.
///
/// The messages are backend-neutral text, so the error can be cloned and handed to every user of a
/// many-user update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (a database error, an I/O error, a lost connection).
    #[error("the store failed: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored record {record} is corrupt: {reason}")]
    Corrupt {
        /// Which record (`tenant/user`, or `subscription id`).
        record: String,
        /// What was wrong.
        reason: String,
    },
    /// The store's lock was poisoned by a panic in another thread.
    #[error("the store is unavailable after an internal panic")]
    Poisoned,
    /// The store cannot acknowledge writes for now (a replicated backend with too few replicas in reach):
    /// the write is not acknowledged, and the caller may retry later.
    #[error("the store cannot acknowledge writes for now: {0}")]
    Unavailable(String),
}

/// Which of a subscription's two delivery queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueKind {
    /// Its change notifications, delivered to its current `notificationUrl`.
    Changes,
    /// Its lifecycle notifications, delivered to the URL each was queued for.
    Lifecycle,
}

/// A delivery queue: one of a subscription's two queues.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId {
    /// The subscription the queue belongs to.
    pub subscription_id: String,
    /// Which of its queues.
    pub kind: QueueKind,
}

impl QueueId {
    /// The change-notification queue of `subscription_id`.
    pub fn changes(subscription_id: impl Into<String>) -> Self {
        QueueId { subscription_id: subscription_id.into(), kind: QueueKind::Changes }
    }

    /// The lifecycle queue of `subscription_id`.
    pub fn lifecycle(subscription_id: impl Into<String>) -> Self {
        QueueId { subscription_id: subscription_id.into(), kind: QueueKind::Lifecycle }
    }
}

/// A notification to queue. The store keeps notifications in the order they were queued, per queue; it
/// does not look inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// The delivery queue.
    pub queue: QueueId,
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
    /// Its position in its queue: increasing in the order notifications were queued. Positions of
    /// different queues are unrelated.
    pub position: u64,
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
    /// are written, and the version.
    pub timer_only: bool,
    /// The update changed the user's presence visibly: a backend of several processes records it for
    /// [`PresenceStore::changed_users`].
    pub visible: bool,
}

/// Users whose presence changed, and where to read on from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangedUsers {
    /// The users, in the order of their changes per user (a user may come more than once).
    pub users: Vec<UserKey>,
    /// The cursor to ask from next time.
    pub cursor: String,
}

/// How an update of one user ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// The closure returned effects; they are durable, and the record has this version now.
    Written {
        /// The record's version after the write.
        version: u64,
    },
    /// The closure returned `None`: nothing was written.
    Declined,
}

impl Updated {
    /// True when something was written.
    pub fn is_written(self) -> bool {
        matches!(self, Updated::Written { .. })
    }
}

/// A stored subscription: its identity, its owner, its version, and a body the store does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The subscription id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// The application that created it (the per-application limit counts these).
    pub application_id: String,
    /// Increases with every write of the subscription (1 once created).
    pub version: u64,
    /// The subscription's record, encoded by its owner.
    pub body: String,
}

/// A user added to a tenant's directory while running (seen in a valid token of a trust that adds its
/// users), beside the users the configuration lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// Object id (a lowercase GUID).
    pub id: String,
    /// Sign-in name; looked up without regard to case.
    pub user_principal_name: String,
    /// Display name.
    pub display_name: String,
}

impl DirectoryUser {
    /// The form a user principal name is looked up by.
    pub fn upn_key(user_principal_name: &str) -> String {
        user_principal_name.to_lowercase()
    }
}

/// Subscriptions changed since a cursor of the change log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscriptionChanges {
    /// The ids of subscriptions created, changed or removed, each once (read each to learn which).
    pub ids: Vec<String>,
    /// The cursor to ask from next time.
    pub cursor: u64,
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

/// An amount to add to a counter that every process of a store shares (a request count of a throttling
/// window, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCount {
    /// The counter's name (it names its window, if it has one).
    pub name: String,
    /// What to add (0 reads it).
    pub add: u64,
    /// How long the counter must be kept after this addition, in milliseconds.
    pub keep_for_ms: u64,
}

/// The closure of a single-user update: given the facts (the default when none) and the user's `due_at`,
/// it changes the facts and returns what to write with them, or `None` to write nothing.
pub type UpdateFn<'a> = dyn FnMut(&mut UserFacts, Option<i64>) -> Option<Effects> + 'a;

/// The closure of a many-user update: as [`UpdateFn`], with the user's key.
pub type UpdateManyFn<'a> = dyn FnMut(&UserKey, &mut UserFacts, Option<i64>) -> Option<Effects> + 'a;

/// The closure of a subscription update: changes the body of the current record and returns the
/// notifications to queue with it, or `None` to write nothing.
pub type SubscriptionFn<'a> = dyn FnMut(&mut StoredSubscription) -> Option<Vec<NewNotification>> + 'a;

/// The closure of a subscription removal: given the current record, the last notifications to queue with
/// the removal, or `None` to keep the subscription after all (it was renewed meanwhile, say).
pub type FarewellFn<'a> = dyn FnMut(&StoredSubscription) -> Option<Vec<NewNotification>> + 'a;

/// The records [`PresenceStore::get_many_async`] reads, once awaited.
pub type RecordsFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Option<UserRecord>>, StoreError>> + Send + 'a>>;

/// A backend that keeps presence facts, users' timers, subscriptions and queued notifications.
///
/// Methods block: async callers run them on a blocking thread. Closures given to the update methods may
/// run more than once, so they must compute their result from their arguments alone; only the effects of
/// the last run are written.
pub trait PresenceStore: Send + Sync + 'static {
    /// The record of one user, or `None` when nothing was ever stored.
    fn get(&self, key: &UserKey) -> Result<Option<UserRecord>, StoreError>;

    /// The records of several users, in the order of `keys`.
    fn get_many(&self, keys: &[UserKey]) -> Result<Vec<Option<UserRecord>>, StoreError>;

    /// Optional: [`PresenceStore::get_many`] if it can be answered without waiting (from memory, or by a
    /// quick read that waits for no lock, connection or network), else `None` and the caller reads on a
    /// blocking thread. The default answers `None`.
    fn get_many_now(&self, keys: &[UserKey]) -> Option<Result<Vec<Option<UserRecord>>, StoreError>> {
        let _ = keys;
        None
    }

    /// Optional: [`PresenceStore::get_many_now`] without copying the records out: hands `visit` the record
    /// of each of `keys` where the store keeps it (with the key's position in `keys`; every position once,
    /// in no particular order), for a reader that only needs to look at them. Answers `None` where
    /// `get_many_now` would, and what was visited then is to be discarded, as it is after an error. The
    /// default visits what `get_many_now` returns.
    fn visit_many_now(
        &self,
        keys: &[UserKey],
        visit: &mut dyn FnMut(usize, Option<&UserRecord>),
    ) -> Option<Result<(), StoreError>> {
        Some(self.get_many_now(keys)?.map(|records| {
            for (position, record) in records.iter().enumerate() {
                visit(position, record.as_ref());
            }
        }))
    }

    /// Optional: [`PresenceStore::get_many`] as a future the caller awaits on its own async runtime, for a
    /// backend whose reads wait on the network (no blocking thread is taken, nor is its thread blocked).
    /// The future may be awaited on any tokio runtime with a timer. The default answers `None`, and the
    /// caller reads as [`PresenceStore::get_many_now`] says.
    fn get_many_async<'a>(&'a self, keys: &'a [UserKey]) -> Option<RecordsFuture<'a>> {
        let _ = keys;
        None
    }

    /// Atomically reads the user's facts and `due_at`, lets `apply` change them, and stores the result,
    /// the new timer and the notifications durably if `apply` returns effects.
    fn update(&self, key: &UserKey, apply: &mut UpdateFn<'_>) -> Result<Updated, StoreError>;

    /// [`PresenceStore::update`] for several distinct users, answered per user in the order of `keys`. The
    /// users may be committed one by one or together; a user whose record cannot be decoded answers
    /// [`StoreError::Corrupt`] and has its timer cleared, so that one corrupt record cannot stop everyone's
    /// timers.
    fn update_many(&self, keys: &[UserKey], apply: &mut UpdateManyFn<'_>) -> Vec<Result<Updated, StoreError>>;

    /// Claims up to `limit` users whose timer is at or before `now`, the earliest first, for a lease until
    /// `lease_until`: until then no other claim returns them. A write of the user (its catch-up) ends the
    /// claim by setting its next timer; a claim not followed by a write expires at `lease_until`, when the
    /// user is due again. Claims need not be durable: a lost claim only makes the user due again.
    fn claim_due(&self, now: i64, lease_until: i64, limit: usize) -> Result<Vec<UserKey>, StoreError>;

    /// The earliest timer of any user (a claimed user's timer is its lease's end).
    fn next_due(&self) -> Result<Option<i64>, StoreError>;

    /// Every stored subscription, and the change-log cursor they are current as of.
    fn subscriptions(&self) -> Result<(Vec<StoredSubscription>, u64), StoreError>;

    /// One subscription.
    fn subscription(&self, id: &str) -> Result<Option<StoredSubscription>, StoreError>;

    /// Stores a new subscription (its `version` is set to 1), unless its application already has `limit`
    /// subscriptions in its tenant; atomic with the count. Returns whether it was created.
    fn create_subscription(&self, subscription: &StoredSubscription, limit: usize) -> Result<bool, StoreError>;

    /// Atomically changes the current record of subscription `id` with `apply` and queues the notifications
    /// it returns with it. The id, tenant, application and version are the store's: changes to them are
    /// ignored. Returns the record as it is afterwards, or `None` when there is no such subscription.
    fn update_subscription(
        &self,
        id: &str,
        apply: &mut SubscriptionFn<'_>,
    ) -> Result<Option<StoredSubscription>, StoreError>;

    /// Atomically removes subscription `id` and its change-notification queue, and queues the farewell
    /// notifications `farewell` makes from the current record (into its lifecycle queue, which is removed
    /// too when there is no farewell); unless `farewell` answers `None`, which keeps the subscription.
    /// Returns the removed record, or `None` when there was none or it was kept.
    fn remove_subscription(
        &self,
        id: &str,
        farewell: &mut FarewellFn<'_>,
    ) -> Result<Option<StoredSubscription>, StoreError>;

    /// The subscriptions created, changed or removed after `since` (a cursor of the change log), or
    /// `None` when the log no longer reaches back that far (read [`PresenceStore::subscriptions`] again).
    fn subscription_changes(&self, since: u64) -> Result<Option<SubscriptionChanges>, StoreError>;

    /// Queues notifications that no user update caused (lifecycle events).
    fn enqueue(&self, notifications: &[NewNotification]) -> Result<(), StoreError>;

    /// Moves notifications staged with user updates to their queues, up to `limit` of them, and returns
    /// the queues that grew. Idempotent: running it again after a crash enqueues nothing twice. A backend
    /// that writes notifications to their queues with the update has nothing to move (the default).
    fn relay(&self, limit: usize) -> Result<Vec<QueueId>, StoreError> {
        let _ = limit;
        Ok(Vec::new())
    }

    /// The oldest `limit` notifications of `queue`, in order.
    fn queue_head(&self, queue: &QueueId, limit: usize) -> Result<Vec<QueuedNotification>, StoreError>;

    /// Removes delivered (or dropped) notifications of `queue` by position, and queues `notifications` in
    /// the same atomic step. Positions not in `queue` are ignored.
    fn acknowledge(
        &self,
        queue: &QueueId,
        positions: &[u64],
        notifications: &[NewNotification],
    ) -> Result<(), StoreError>;

    /// Every queue with notifications waiting, and how many.
    fn queue_lengths(&self) -> Result<Vec<(QueueId, u64)>, StoreError>;

    /// Takes, or renews, the delivery lease of `queue` for `holder` until `lease_until`: granted unless
    /// another holder's lease is unexpired at `now`. Returns whether `holder` holds it. Only the holder
    /// delivers the queue. Leases need not be durable (a lost lease only lets another holder take over).
    fn lease_queue(&self, queue: &QueueId, holder: &str, now: i64, lease_until: i64) -> Result<bool, StoreError>;

    /// Ends `holder`'s lease of `queue`, if it holds it.
    fn release_queue(&self, queue: &QueueId, holder: &str) -> Result<(), StoreError>;

    /// Adds `user` to `tenant_id`'s directory, or brings its names up to date; durable when it returns.
    /// Its previous user principal name no longer finds it; its new one does, unless another added user
    /// holds that name (the first to take a name keeps it until their own name changes, so a user cannot
    /// take over another's name).
    fn put_directory_user(&self, tenant_id: &str, user: &DirectoryUser) -> Result<(), StoreError>;

    /// The added users of `tenant_id` with these ids (lowercase GUIDs), in the order of `ids`: `None` for
    /// an id not added.
    fn directory_users(&self, tenant_id: &str, ids: &[String]) -> Result<Vec<Option<DirectoryUser>>, StoreError>;

    /// The added user of `tenant_id` whose user principal name is `upn` (compared as
    /// [`DirectoryUser::upn_key`]).
    fn directory_user_by_upn(&self, tenant_id: &str, upn: &str) -> Result<Option<DirectoryUser>, StoreError>;

    /// Up to `limit` added users of `tenant_id` in the order of their ids, those after `after` (an id) when
    /// given. A user added while a listing pages on appears in it if its id comes after the page it was
    /// added at; none appears twice.
    fn list_directory_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirectoryUser>, StoreError>;

    /// Whether the store answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;

    /// Optional: counts for monitoring at `now` (milliseconds since the epoch). May read every record: call
    /// it for a metrics scrape, not per request. The default answers `None` (not counted).
    fn stats(&self, now: i64) -> Result<Option<StoreStats>, StoreError> {
        let _ = now;
        Ok(None)
    }

    /// Optional: raises the test clock that every process of the store shares to at least `instant`
    /// (milliseconds since the epoch) and answers the shared instant, so that a test moving one process's
    /// clock moves them all. The default answers `None`: the backend serves one process, whose clock is
    /// the only one. Only servers running a test clock call it.
    fn share_test_clock(&self, instant: i64) -> Result<Option<i64>, StoreError> {
        let _ = instant;
        Ok(None)
    }

    /// Optional: the change log's newest cursor, read fresh, for a process that must know every
    /// subscription made before it writes (it follows the log up to there first). The default answers
    /// `None`: the backend serves one process, whose own registry is complete.
    fn subscription_cursor(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// Optional: the users whose presence any process changed visibly (updates whose effects were
    /// `visible`) after `cursor`, up to about `limit`, and the cursor to read on from; with no cursor, none
    /// and the cursor of now. A backend keeps a bounded recent history: a reader that falls far behind
    /// misses changes (it re-reads what it shows). The default answers `None`: the backend serves one
    /// process, whose changes it knows itself.
    fn changed_users(&self, cursor: Option<&str>, limit: usize) -> Result<Option<ChangedUsers>, StoreError> {
        let _ = (cursor, limit);
        Ok(None)
    }

    /// Optional: adds each of `counts` to its counter shared by every process of the store and answers
    /// the counters' totals, in order. Counters may be approximate under failures (an addition may be
    /// lost or, retried, counted twice); they are for throttling, not for facts. The default answers
    /// `None`: the backend serves one process, whose own counts are all there is.
    fn add_to_shared_counters(&self, counts: &[SharedCount]) -> Result<Option<Vec<u64>>, StoreError> {
        let _ = counts;
        Ok(None)
    }

    /// Optional: tidies up at shutdown, after the last write (SQLite moves its WAL into the database file).
    /// Everything acknowledged is durable without it.
    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
