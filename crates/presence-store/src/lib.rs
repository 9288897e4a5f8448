//! Where presence facts live: the store interface and its embedded SQLite backend.
//!
//! The interface ([`PresenceStore`]) is deliberately small: read one user, read many users, and an atomic
//! read-modify-write of one user. Everything presence means is decided by `presence-core`; a backend only
//! keeps [`UserFacts`] per `(tenant, user)` and guarantees that
//! - an update is atomic per user: no two updates of the same user interleave;
//! - an update returns only once the new facts are durable (after SIGKILL or power loss they are there).
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

/// A backend that keeps presence facts.
///
/// Methods block: async callers run them on a blocking thread. The closure given to
/// [`PresenceStore::update`] may run more than once (a distributed backend retries on conflict), so it must
/// compute its result from its argument alone.
pub trait PresenceStore: Send + Sync + 'static {
    /// The facts of one user, or `None` when nothing was ever stored.
    fn get(&self, key: &UserKey) -> Result<Option<UserFacts>, StoreError>;

    /// The facts of several users, in the order of `keys`.
    fn get_many(&self, keys: &[UserKey]) -> Result<Vec<Option<UserFacts>>, StoreError>;

    /// Atomically reads the user's facts (the default when none), lets `apply` change them, and stores the
    /// result durably if `apply` returns `true`. Returns whether anything was written.
    fn update(&self, key: &UserKey, apply: &mut dyn FnMut(&mut UserFacts) -> bool) -> Result<bool, StoreError>;
}
