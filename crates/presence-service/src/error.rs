//! The engine's one error type. The HTTP layer maps each variant onto Graph's error envelope.

use presence_core::CommandError;
use presence_notify::subscription::SubscriptionError;
use presence_store::StoreError;

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The presence command was refused (the caller's fault).
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The store failed (a server fault).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A subscription request broke a rule (the caller's fault).
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// A subscription names a user who is not a user of the subscriber's tenant.
    #[error("The user '{0}' was not found.")]
    UnknownUser(String),
    /// A notification endpoint failed the validation handshake.
    #[error("{0}")]
    SubscriptionValidation(String),
    /// No such subscription.
    #[error("The subscription '{0}' was not found.")]
    SubscriptionNotFound(String),
    /// The application has as many subscriptions in its tenant as allowed.
    #[error("The application already has {0} subscriptions in this tenant, the most allowed; delete or let some expire first.")]
    SubscriptionLimit(usize),
    /// There is no client for subscriber endpoints (no trusted root certificates).
    #[error(
        "change notifications are unavailable: {0} (install the system's CA certificates or set notification_ca_file)"
    )]
    NotificationsUnavailable(String),
    /// The engine failed in a way that is not the store's (a task panicked, the writer stopped).
    #[error("{0}")]
    Internal(String),
}
