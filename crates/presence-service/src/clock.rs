//! Where the engine gets "now" for presence: the system clock, or a manual clock for tests.
//!
//! Only presence time comes from here. Token lifetimes are checked against the real clock in
//! `presence-auth`, so moving a test clock forward never expires the test's tokens.

use std::sync::atomic::{AtomicI64, Ordering};

use presence_core::Timestamp;

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock, made monotonic: if the system time steps back, this clock stands still
/// until the system time catches up, so presence never travels back in time (which would let two
/// different presences share a sequence number).
#[derive(Debug, Default)]
pub struct SystemClock {
    latest: AtomicI64,
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = system_now().as_millis();
        Timestamp(self.latest.fetch_max(now, Ordering::SeqCst).max(now))
    }
}

/// The operating system's clock as a [`Timestamp`].
pub fn system_now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
}

/// A clock that stands still until moved forward; it never moves back.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock { millis: AtomicI64::new(start.as_millis()) }
    }

    /// Moves the clock forward by `millis` (saturating) and returns the new instant.
    pub fn advance(&self, millis: i64) -> Timestamp {
        let step = millis.max(0);
        let previous =
            self.millis.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| Some(now.saturating_add(step)));
        Timestamp(previous.unwrap_or_default().saturating_add(step))
    }
}

impl ManualClock {
    /// Moves the clock forward to `instant`, if that is later; answers whether it moved.
    pub fn advance_to(&self, instant: Timestamp) -> bool {
        self.millis.fetch_max(instant.as_millis(), Ordering::SeqCst) < instant.as_millis()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_never_goes_back() {
        let clock = SystemClock { latest: AtomicI64::new(i64::MAX - 1) };
        assert_eq!(clock.now(), Timestamp(i64::MAX - 1), "a system time behind the latest reading is not used");
        let clock = SystemClock::default();
        let first = clock.now();
        assert!(clock.now() >= first);
    }

    #[test]
    fn manual_clock_moves_only_forward() {
        let clock = ManualClock::new(Timestamp(1000));
        assert_eq!(clock.now(), Timestamp(1000));
        assert_eq!(clock.advance(500), Timestamp(1500));
        assert_eq!(clock.advance(-100), Timestamp(1500));
        assert_eq!(clock.now(), Timestamp(1500));
    }
}
