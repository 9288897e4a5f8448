//! What the engine needs of an HTTP client for subscriber endpoints: the validation handshake and a POST.
//!
//! The real client (TLS, the SSRF-checking resolver, no redirects) is `presence-webhook`; tests may give
//! the engine any other implementation.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use url::Url;

/// The future a [`Webhooks`] method returns.
pub type WebhookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a POST to an endpoint came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posted {
    /// The endpoint answered with this status.
    Status(u16),
    /// No answer within the timeout.
    TimedOut,
    /// No answer: a connection or TLS failure, or a refused target; why.
    Failed(String),
}

/// A client for subscriber endpoints.
pub trait Webhooks: Send + Sync + 'static {
    /// Graph's validation handshake with `url` within `timeout`; `Err` says why it failed, in words for
    /// the subscriber.
    fn validate<'a>(&'a self, url: &'a Url, timeout: Duration) -> WebhookFuture<'a, Result<(), String>>;

    /// POSTs a JSON notification body to `url`, waiting at most `timeout` for the answer's head.
    fn post<'a>(&'a self, url: &'a str, body: Vec<u8>, timeout: Duration) -> WebhookFuture<'a, Posted>;
}
