//! The change feed: every user whose presence changed visibly, published once the change is durable, for
//! live listeners (the board's event stream).
//!
//! Entries are users' keys only: a listener reads the presence when it shows it, so a slow listener pins
//! little, and one that falls more than [`FEED_CAPACITY`] behind is told it lagged. The feed carries the
//! changes this process makes (its writes and the timers it claims); a listener that must see every
//! change of a store shared by several processes resynchronises by reading, as it does after a lag.

use std::sync::Arc;

use presence_store::UserKey;
use tokio::sync::broadcast;

/// Changes buffered for slow listeners.
const FEED_CAPACITY: usize = 4096;

/// A listener's end of the feed: `recv` gives the next changed user, or `Lagged` when changes were missed.
pub type ChangeFeed = broadcast::Receiver<Arc<UserKey>>;

pub(crate) struct Feed {
    sender: broadcast::Sender<Arc<UserKey>>,
}

impl Feed {
    pub(crate) fn new() -> Self {
        Feed { sender: broadcast::channel(FEED_CAPACITY).0 }
    }

    /// Whether anyone listens (so that writers skip collecting changes when no one does).
    pub(crate) fn is_followed(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Announces the users whose presence changed.
    pub(crate) fn publish(&self, changed: impl IntoIterator<Item = UserKey>) {
        for key in changed {
            // No listener is not an error: the change is simply not shown anywhere.
            let _ = self.sender.send(Arc::new(key));
        }
    }

    pub(crate) fn follow(&self) -> ChangeFeed {
        self.sender.subscribe()
    }
}
