//! The change feed: every user whose presence changed visibly, published once the change is durable, for
//! live listeners (the board's event stream).
//!
//! Entries are users' keys only: a listener reads the presence when it shows it, so a slow listener pins
//! little, and one that falls more than [`FEED_CAPACITY`] behind is told it lagged. The feed carries the
//! changes this process makes (its writes and the timers it claims) and, while anyone listens and the store
//! is shared by several processes, the changes the store says the others made (read every quarter of a
//! second; a change made here may then come twice, which a listener that re-reads does not mind).

use std::sync::Arc;
use std::time::Duration;

use presence_store::UserKey;
use tokio::sync::broadcast;

use crate::Service;

/// Changes buffered for slow listeners.
const FEED_CAPACITY: usize = 4096;
/// How often the store is asked for the other processes' changes, while anyone listens.
const OTHERS_INTERVAL: Duration = Duration::from_millis(250);
/// Changes read per ask.
const OTHERS_BATCH: usize = 1024;

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

impl Service {
    /// Publishes the changes other processes of a shared store made, while anyone listens; ends when the
    /// store serves one process.
    pub(crate) async fn run_change_follower(self: Arc<Self>) {
        let mut cursor: Option<String> = None;
        loop {
            tokio::time::sleep(OTHERS_INTERVAL).await;
            if !self.feed.is_followed() {
                // Nobody to tell: start from the changes of the moment someone listens again.
                cursor = None;
                continue;
            }
            let from = cursor.clone();
            let read =
                self.blocking(move |service| Ok(service.store.changed_users(from.as_deref(), OTHERS_BATCH)?)).await;
            match read {
                Ok(None) => return,
                Ok(Some(changed)) => {
                    self.feed.publish(changed.users);
                    cursor = Some(changed.cursor);
                }
                Err(error) => tracing::warn!(%error, "change feed: the other processes' changes could not be read"),
            }
        }
    }
}
