//! Throttling of presence operations per application and tenant, as Graph's service limits describe.
//!
//! One fixed window per `(tenant, app)`: at most `limit` requests per `window`; the request over the limit
//! gets `429` with `Retry-After` set to the seconds left in the window. A getPresencesByUserId call counts
//! once; each inner request of a `$batch` counts on its own. Time is Tokio's monotonic clock, so tests can
//! pause and advance it. The map holds one entry per pair that called, and pairs come from the configured
//! directory, so it is bounded.
//!
//! When several processes share the store ([`Throttle::share`]), a pair's budget is the deployment's, not
//! the process's: windows are aligned on the wall clock (so every process means the same window), and each
//! process adds what it admitted to a counter in the store every tenth of a second and learns what the
//! others admitted. A process admits while its own count and the others' last known count are under the
//! limit, so the deployment may admit up to a tenth of a second of the other processes' traffic more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use presence_store::SharedCount;
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

/// A pair's window when the budget is shared with other processes.
#[derive(Debug, Default)]
struct SharedWindow {
    /// Which window (milliseconds since the epoch divided by the window's).
    index: u64,
    /// Requests this process admitted in it.
    used: u64,
    /// Of those, how many the store has.
    added: u64,
    /// Requests the other processes admitted in it, as last known.
    others: u64,
}

/// The per-`(tenant, app)` counters.
#[derive(Debug)]
pub(crate) struct Throttle {
    config: ThrottleConfig,
    windows: Mutex<HashMap<(String, String), Window>>,
    shared: AtomicBool,
    shared_windows: Mutex<HashMap<(String, String), SharedWindow>>,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

impl Throttle {
    pub(crate) fn new(config: ThrottleConfig) -> Self {
        Throttle {
            config,
            windows: Mutex::new(HashMap::new()),
            shared: AtomicBool::new(false),
            shared_windows: Mutex::new(HashMap::new()),
        }
    }

    fn window_millis(&self) -> u64 {
        u64::try_from(self.config.window.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Counts one request of `app` in `tenant`; `Err(seconds)` when it is over the limit.
    pub(crate) fn admit(&self, tenant_id: &str, app_id: &str) -> Result<(), u64> {
        if self.config.limit == 0 {
            return Ok(());
        }
        if self.shared.load(Ordering::SeqCst) {
            return self.admit_shared(tenant_id, app_id);
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

    fn admit_shared(&self, tenant_id: &str, app_id: &str) -> Result<(), u64> {
        let (now, length) = (now_millis(), self.window_millis());
        let index = now / length;
        let mut windows = self.shared_windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = windows.entry((tenant_id.to_owned(), app_id.to_owned())).or_default();
        if window.index != index {
            *window = SharedWindow { index, ..SharedWindow::default() };
        }
        if window.used + window.others >= u64::from(self.config.limit) {
            let left = (index + 1) * length - now;
            return Err(left.div_ceil(1000).max(1));
        }
        window.used += 1;
        Ok(())
    }

    /// From now on, counts per pair and window are shared through the store (several processes serve).
    pub(crate) fn share(&self) {
        self.shared.store(true, Ordering::SeqCst);
    }

    /// What to add to the shared counters: every pair's requests admitted here and not added yet, in its
    /// current window (an addition of 0 reads the others' count).
    pub(crate) fn unshared(&self) -> Vec<((String, String), u64, SharedCount)> {
        let (now, length) = (now_millis(), self.window_millis());
        let mut windows = self.shared_windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        windows.retain(|_, window| window.index == now / length);
        windows
            .iter_mut()
            .map(|((tenant, app), window)| {
                let add = window.used - window.added;
                window.added = window.used;
                let count = SharedCount {
                    name: format!("throttle:{tenant}/{app}:{length}:{}", window.index),
                    add,
                    keep_for_ms: 2 * length,
                };
                ((tenant.clone(), app.clone()), window.index, count)
            })
            .collect()
    }

    /// Takes the shared counters' totals after the additions of [`Throttle::unshared`].
    pub(crate) fn shared_totals(&self, added: &[((String, String), u64, SharedCount)], totals: &[u64]) {
        let mut windows = self.shared_windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for ((pair, index, _), total) in added.iter().zip(totals) {
            if let Some(window) = windows.get_mut(pair).filter(|window| window.index == *index) {
                window.others = total.saturating_sub(window.added);
            }
        }
    }
}

/// How often a process adds its counts to the shared counters and reads the others'.
const SHARE_INTERVAL: Duration = Duration::from_millis(100);

/// Shares `state`'s throttling budgets with the other processes of its store, every tenth of a second, as
/// long as the store shares counters; ends at once when it does not (it serves one process) or when
/// throttling is off.
pub async fn share_throttling(state: crate::AppState) {
    let throttle = &state.inner.throttle;
    if throttle.config.limit == 0 || !matches!(state.service().add_to_shared_counters(Vec::new()).await, Ok(Some(_))) {
        return;
    }
    throttle.share();
    loop {
        tokio::time::sleep(SHARE_INTERVAL).await;
        let added = throttle.unshared();
        if added.is_empty() {
            continue;
        }
        let counts = added.iter().map(|(_, _, count)| count.clone()).collect();
        match state.service().add_to_shared_counters(counts).await {
            Ok(Some(totals)) => throttle.shared_totals(&added, &totals),
            Ok(None) => return,
            Err(error) => tracing::warn!(%error, "throttling: the shared counts could not be updated"),
        }
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

    #[test]
    fn a_shared_budget_counts_what_the_other_processes_admitted() {
        let throttle = Throttle::new(ThrottleConfig { limit: 5, window: Duration::from_secs(86_400) });
        throttle.share();
        for _ in 0..2 {
            assert_eq!(throttle.admit("t", "a"), Ok(()));
        }
        let added = throttle.unshared();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].2.add, 2, "what was admitted here");
        assert!(added[0].2.name.starts_with("throttle:t/a:86400000:"), "{}", added[0].2.name);
        throttle.shared_totals(&added, &[4]); // two more elsewhere
        assert_eq!(throttle.admit("t", "a"), Ok(()), "2 here and 2 elsewhere of 5");
        assert!(throttle.admit("t", "a").is_err(), "3 here and 2 elsewhere");
        assert_eq!(throttle.unshared()[0].2.add, 1, "only what was not added before");
        assert_eq!(throttle.admit("u", "a"), Ok(()), "another tenant's budget is its own");
    }
}
