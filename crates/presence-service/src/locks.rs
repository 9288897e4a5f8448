//! Per-user exclusion between reads and writes, so that versions are never reused.
//!
//! Why: a read evaluates stored facts at "now". If it read the facts just before a concurrent write
//! committed, but its "now" were later than the instant the write was stamped with, it could show a
//! timer-driven change (say a fade, version N+1) that the write then also stamps N+1 for a different
//! presence. So a write takes its instant while holding its user's lock exclusively, and a read takes its
//! instant and its facts while holding the lock shared: every read is wholly before or wholly after each
//! write of the same user. Users are spread over a fixed number of stripes (bounded memory); several
//! stripes are always locked in ascending order, so there is no deadlock between the writer thread (a batch
//! of writes, see `writer`), a timer that catches up many users at once, and reads. These locks are taken
//! on blocking threads or briefly inline, never across an `.await`.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use std::sync::RwLock;

use presence_store::UserKey;

const STRIPES: usize = 1024;

/// The stripes.
#[derive(Debug)]
pub(crate) struct UserLocks {
    stripes: Box<[RwLock<()>]>,
}

impl UserLocks {
    pub(crate) fn new() -> Self {
        UserLocks { stripes: (0..STRIPES).map(|_| RwLock::new(())).collect() }
    }

    fn stripe(key: &UserKey) -> usize {
        (FixedState::default().hash_one(key) % STRIPES as u64) as usize
    }

    /// The stripes of `keys`, ascending, each once: the order in which several are always taken.
    fn stripes_of(keys: &[UserKey]) -> Vec<usize> {
        let mut stripes: Vec<usize> = keys.iter().map(Self::stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
    }

    /// Runs `work` with the stripes of all `keys` held exclusively (taken in ascending order).
    pub(crate) fn write_many<R>(&self, keys: &[UserKey], work: impl FnOnce() -> R) -> R {
        let _guards: Vec<_> = Self::stripes_of(keys)
            .into_iter()
            .map(|stripe| self.stripes[stripe].write().unwrap_or_else(|poisoned| poisoned.into_inner()))
            .collect();
        work()
    }

    /// Runs `work` with the stripes of all `keys` held shared, if none of them is held exclusively now;
    /// `None` (without running `work`) otherwise. For async callers that must not wait on a writer.
    pub(crate) fn try_read<R>(&self, keys: &[UserKey], work: impl FnOnce() -> R) -> Option<R> {
        let _guards = Self::stripes_of(keys)
            .into_iter()
            .map(|stripe| self.stripes[stripe].try_read().ok())
            .collect::<Option<Vec<_>>>()?;
        Some(work())
    }

    /// Runs `work` with the stripes of all `keys` held shared.
    pub(crate) fn read<R>(&self, keys: &[UserKey], work: impl FnOnce() -> R) -> R {
        let _guards: Vec<_> = Self::stripes_of(keys)
            .into_iter()
            .map(|stripe| self.stripes[stripe].read().unwrap_or_else(|poisoned| poisoned.into_inner()))
            .collect();
        work()
    }
}
