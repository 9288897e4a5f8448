//! Instants as plain numbers, so that time is always an argument and never read here.

use std::time::Duration;

/// An instant: milliseconds since the Unix epoch, UTC.
///
/// The engine only ever compares and adds instants, so a signed integer is all it needs; conversion to
/// calendar dates happens at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Milliseconds in one day.
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl Timestamp {
    /// The instant from a count of milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant moved forward by `duration`, saturating at the end of representable time.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// The first UTC midnight strictly after this instant.
    pub fn next_utc_midnight(self) -> Self {
        Timestamp(self.0.div_euclid(DAY_MS).saturating_add(1).saturating_mul(DAY_MS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_midnight_is_strictly_after() {
        assert_eq!(Timestamp(0).next_utc_midnight(), Timestamp(DAY_MS));
        assert_eq!(Timestamp(DAY_MS - 1).next_utc_midnight(), Timestamp(DAY_MS));
        assert_eq!(Timestamp(DAY_MS).next_utc_midnight(), Timestamp(2 * DAY_MS));
        assert_eq!(Timestamp(-1).next_utc_midnight(), Timestamp(0));
    }

    #[test]
    fn add_saturates() {
        assert_eq!(Timestamp(i64::MAX - 1).saturating_add(Duration::from_secs(10)), Timestamp(i64::MAX));
        assert_eq!(Timestamp(1000).saturating_add(Duration::from_millis(500)), Timestamp(1500));
    }
}
