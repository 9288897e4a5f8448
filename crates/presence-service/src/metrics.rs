//! The engine's metrics: store operation times, notification POSTs by outcome, and notifications
//! delivered and dropped. They are registered into the HTTP layer's registry, which serves them.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// What a POST of notifications came to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DeliveryOutcome {
    /// Answered 2xx.
    Delivered,
    /// Answered something else.
    Rejected,
    /// No answer in time.
    TimedOut,
    /// Not sent, or the connection failed.
    Failed,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub(crate) struct ServiceMetrics {
    store_seconds: Family<OperationLabels, Histogram>,
    deliveries: Family<OutcomeLabels, Counter>,
    delivered: Counter,
    dropped: Counter,
}

impl ServiceMetrics {
    pub(crate) fn new() -> Self {
        ServiceMetrics {
            store_seconds: Family::new_with_constructor(seconds_histogram as fn() -> _),
            deliveries: Family::default(),
            delivered: Counter::default(),
            dropped: Counter::default(),
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "store_operation_duration_seconds",
            "Time of store operations, durability included (write_batch, read, timer_pass)",
            self.store_seconds.clone(),
        );
        registry.register(
            "notification_posts",
            "Notification POSTs, by outcome (delivered, rejected, timed_out, failed)",
            self.deliveries.clone(),
        );
        registry.register("notifications_delivered", "Notifications delivered (2xx)", self.delivered.clone());
        registry.register(
            "notifications_dropped",
            "Notifications dropped (retry window over, queue bound, or a too slow endpoint)",
            self.dropped.clone(),
        );
    }

    pub(crate) fn store(&self, operation: &'static str, elapsed: Duration) {
        self.store_seconds.get_or_create(&OperationLabels { operation }).observe(elapsed.as_secs_f64());
    }

    /// One POST of `items` notifications.
    pub(crate) fn delivery(&self, outcome: DeliveryOutcome, items: usize) {
        let outcome_label = match outcome {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Rejected => "rejected",
            DeliveryOutcome::TimedOut => "timed_out",
            DeliveryOutcome::Failed => "failed",
        };
        self.deliveries.get_or_create(&OutcomeLabels { outcome: outcome_label }).inc();
        if let DeliveryOutcome::Delivered = outcome {
            self.delivered.inc_by(items as u64);
        }
    }

    pub(crate) fn dropped(&self, items: usize) {
        self.dropped.inc_by(items as u64);
    }
}
