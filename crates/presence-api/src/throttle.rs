//! Throttling of presence operations per application and tenant, as Graph's service limits describe.
//!
//! One fixed window per `(tenant, app)`: at most `limit` requests per `window`; the request over the limit
//! gets `429` with `Retry-After` set to the seconds left in the window. A getPresencesByUserId call counts
//! once; each inner request of a `$batch` counts on its own. Time is Tokio's monotonic clock, so tests can
//! pause and advance it. The map holds one entry per pair that called, and pairs come from the configured
//! directory, so it is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The throttling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Requests allowed per window and `(tenant, app)`; `0` disables throttling.
    pub limit: u32,
    /// The window.
    pub window: Duration,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    used: u32,
}

/// The per-`(tenant, app)` counters.
#[derive(Debug)]
pub(crate) struct Throttle {
    config: ThrottleConfig,
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig) -> Self {
        Throttle { config, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one request of `app` in `tenant`; `Err(seconds)` when it is over the limit.
    pub(crate) fn admit(&self, tenant_id: &str, app_id: &str) -> Result<(), u64> {
        if self.config.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window =
            windows.entry((tenant_id.to_owned(), app_id.to_owned())).or_insert(Window { started: now, used: 0 });
        if now.duration_since(window.started) >= self.config.window {
            *window = Window { started: now, used: 0 };
        }
        if window.used >= self.config.limit {
            let left = self.config.window.saturating_sub(now.duration_since(window.started));
            let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Err(seconds.max(1));
        }
        window.used += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_admits_its_limit_then_says_how_long_to_wait() {
        let throttle = Throttle::new(ThrottleConfig { limit: 3, window: Duration::from_secs(30) });
        for _ in 0..3 {
            assert_eq!(throttle.admit("t", "a"), Ok(()));
        }
        assert_eq!(throttle.admit("t", "a"), Err(30));
        assert_eq!(throttle.admit("t", "b"), Ok(()), "another app has its own budget");
        assert_eq!(throttle.admit("u", "a"), Ok(()), "the same app in another tenant too");
        tokio::time::advance(Duration::from_millis(10_500)).await;
        assert_eq!(throttle.admit("t", "a"), Err(20));
        tokio::time::advance(Duration::from_millis(19_500)).await;
        assert_eq!(throttle.admit("t", "a"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_limit_disables_throttling() {
        let throttle = Throttle::new(ThrottleConfig { limit: 0, window: Duration::from_secs(1) });
        for _ in 0..100 {
            assert_eq!(throttle.admit("t", "a"), Ok(()));
        }
    }
}
