//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.
//!
//! The HTTP layer's counters and histograms are updated where things happen (the envelope middleware for
//! requests, the router for throttling); the engine registers its own (store operations, deliveries) in
//! the same registry. Gauges of state (users, live sessions, pending timers, subscriptions, queued
//! notifications) are read from the engine when scraped.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric, and the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    throttled: Counter,
    pub(crate) directory_users: Gauge,
    pub(crate) users: Gauge,
    pub(crate) live_sessions: Gauge,
    pub(crate) pending_timers: Gauge,
    pub(crate) queued_notifications: Gauge,
    pub(crate) delivery_queues: Gauge,
    pub(crate) subscriptions: Gauge,
    /// One scrape reads the store at a time: concurrent scrapes wait rather than scan in parallel.
    pub(crate) scrape: tokio::sync::Mutex<()>,
}

impl Metrics {
    pub(crate) fn new(service: &presence_service::Service) -> Self {
        let mut registry = Registry::with_prefix("presenced");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, by route and status", requests.clone());
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(seconds_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by route",
            request_seconds.clone(),
        );
        service.register_metrics(&mut registry);
        let throttled = Counter::default();
        registry.register("throttled_requests", "Requests refused with 429 by throttling", throttled.clone());
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let directory_users = gauge(&mut registry, "directory_users", "Users in the configured directory");
        let users = gauge(&mut registry, "users", "Users with stored presence");
        let live_sessions = gauge(&mut registry, "live_sessions", "Presence sessions not yet expired");
        let pending_timers =
            gauge(&mut registry, "pending_timers", "Users whose presence will change by itself (a timer)");
        let queued_notifications =
            gauge(&mut registry, "queued_notifications", "Notifications queued for delivery, all queues");
        let delivery_queues = gauge(&mut registry, "delivery_queues", "Delivery queues with notifications waiting");
        let subscriptions = gauge(&mut registry, "subscriptions", "Active subscriptions");
        Metrics {
            registry,
            requests,
            request_seconds,
            throttled,
            directory_users,
            users,
            live_sessions,
            pending_timers,
            queued_notifications,
            delivery_queues,
            subscriptions,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
        self.request_seconds.get_or_create(&RouteLabels { route }).observe(elapsed.as_secs_f64());
    }

    pub(crate) fn throttled(&self) {
        self.throttled.inc();
    }

    /// The exposition text.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}
