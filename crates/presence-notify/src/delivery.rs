//! Delivery rules without I/O: the retry schedule, Graph's slow-endpoint rule, and when a subscription is
//! told to reauthorize.
//!
//! - A delivery that gets no 2xx within the timeout (3 seconds) is retried after [`retry_delay`]: 10 s,
//!   30 s, 1, 2 and 5 minutes, then every 10 minutes, until the oldest notification of the attempt is older
//!   than the retry window (4 hours by default); then the queue's notifications are dropped and a `missed`
//!   lifecycle event is sent.
//! - [`EndpointHealth`] is Graph's slow-endpoint rule (presence-spec.md 7.6): a delivery taking more than
//!   2,900 ms is slow; once an endpoint has had 100 deliveries in the current 10-minute window, a slow
//!   share of 10% or more delays its deliveries by 10 minutes, and 15% or more drops them.
//! - [`reauthorization_at`]: `reauthorizationRequired` goes out 10 minutes before expiry, or half-way
//!   through a subscription that lives less than 20 minutes.

use std::time::Duration;

use crate::subscription::Millis;

/// The delay before retry number `attempt` (1 for the first retry).
pub fn retry_delay(attempt: u32) -> Duration {
    const SCHEDULE: [u64; 5] = [10, 30, 60, 120, 300];
    let index = attempt.saturating_sub(1) as usize;
    Duration::from_secs(SCHEDULE.get(index).copied().unwrap_or(600))
}

/// A delivery slower than this counts as slow.
pub const SLOW_DELIVERY: Duration = Duration::from_millis(2_900);
/// How long the slow-endpoint counters run before they reset.
pub const HEALTH_WINDOW: Duration = Duration::from_secs(600);
/// How long deliveries to a flagged endpoint are delayed.
pub const SLOW_ENDPOINT_DELAY: Duration = Duration::from_secs(600);
/// Deliveries an endpoint must have had in the window before it can be flagged.
const HEALTH_SAMPLE: u32 = 100;

/// How an endpoint is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver as usual.
    Healthy,
    /// At least 10% of deliveries were slow: delay deliveries by [`SLOW_ENDPOINT_DELAY`].
    Delayed,
    /// At least 15% were slow: drop notifications for this endpoint until the window resets.
    Dropping,
}

/// The slow-delivery counters of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EndpointHealth {
    window_start: Millis,
    deliveries: u32,
    slow: u32,
}

impl EndpointHealth {
    fn roll(&mut self, now: Millis) {
        let window = i64::try_from(HEALTH_WINDOW.as_millis()).unwrap_or(i64::MAX);
        if now >= self.window_start.saturating_add(window) || now < self.window_start {
            *self = EndpointHealth { window_start: now, deliveries: 0, slow: 0 };
        }
    }

    /// Counts one delivery that took `elapsed` (a timeout counts as slow).
    pub fn record(&mut self, now: Millis, elapsed: Duration) {
        self.roll(now);
        self.deliveries = self.deliveries.saturating_add(1);
        if elapsed > SLOW_DELIVERY {
            self.slow = self.slow.saturating_add(1);
        }
    }

    /// True when the counters have not been touched for a whole window (the entry can be forgotten).
    pub fn is_stale(&self, now: Millis) -> bool {
        let window = i64::try_from(HEALTH_WINDOW.as_millis()).unwrap_or(i64::MAX);
        now >= self.window_start.saturating_add(window)
    }

    /// How the endpoint is to be treated at `now`.
    pub fn verdict(&mut self, now: Millis) -> Verdict {
        self.roll(now);
        if self.deliveries < HEALTH_SAMPLE {
            return Verdict::Healthy;
        }
        let share = u64::from(self.slow) * 100 / u64::from(self.deliveries);
        match share {
            15.. => Verdict::Dropping,
            10.. => Verdict::Delayed,
            _ => Verdict::Healthy,
        }
    }
}

/// When a subscription valid from `since` until `expiration` is sent `reauthorizationRequired`.
pub fn reauthorization_at(since: Millis, expiration: Millis) -> Millis {
    const LEAD: Millis = 10 * 60 * 1000;
    let lifetime = expiration.saturating_sub(since).max(0);
    expiration.saturating_sub(LEAD.min(lifetime / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_every_ten_minutes() {
        let delays: Vec<u64> = (1..=8).map(|attempt| retry_delay(attempt).as_secs()).collect();
        assert_eq!(delays, [10, 30, 60, 120, 300, 600, 600, 600]);
        assert_eq!(retry_delay(u32::MAX).as_secs(), 600);
    }

    #[test]
    fn slow_endpoints_are_delayed_then_dropped_and_forgiven_after_the_window() {
        let fast = Duration::from_millis(50);
        let slow = Duration::from_millis(2_901);
        let mut health = EndpointHealth::default();
        for _ in 0..90 {
            health.record(0, fast);
        }
        for _ in 0..9 {
            health.record(0, slow);
        }
        assert_eq!(health.verdict(0), Verdict::Healthy, "99 deliveries are not yet a sample");
        health.record(0, slow);
        assert_eq!(health.verdict(0), Verdict::Delayed, "10 of 100 slow");
        for _ in 0..8 {
            health.record(0, slow);
        }
        assert_eq!(health.verdict(0), Verdict::Dropping, "18 of 108 slow");
        assert_eq!(health.verdict(600_000), Verdict::Healthy, "the counters reset every 10 minutes");
        health.record(600_001, Duration::from_millis(2_900));
        assert_eq!(health.slow, 0, "2,900 ms itself is not slow");
    }

    #[test]
    fn reauthorization_is_asked_ten_minutes_before_expiry_or_half_way() {
        let minute = 60_000;
        assert_eq!(reauthorization_at(0, 60 * minute), 50 * minute);
        assert_eq!(reauthorization_at(0, 10 * minute), 5 * minute);
        assert_eq!(reauthorization_at(5 * minute, 4 * minute), 4 * minute, "an expiry in the past: at once");
    }
}
