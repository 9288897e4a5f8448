//! The one error type of the HTTP layer, and its mapping to Graph's status codes and error codes.
//!
//! Handlers return [`ApiError`]; its [`IntoResponse`] sets the status and attaches an [`ErrorInfo`]; the
//! envelope middleware renders the body with the request's ids. So every error, whatever layer it came
//! from, leaves the server as `{"error":{"code","message","innerError":{...}}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use presence_auth::AuthError;
use presence_core::CommandError;
use presence_service::ServiceError;
use presence_store::StoreError;

/// An error of a request, from any layer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication or authorisation failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The presence engine refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A malformed or invalid request, with the message to show.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON, or the content type is not JSON.
    #[error("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")]
    InvalidJson,
    /// An action that needs parameters got an empty body.
    #[error("Empty Payload. JSON content expected.")]
    EmptyPayload,
    /// The body is larger than the configured limit.
    #[error("The request body exceeds the limit of {0} bytes.")]
    PayloadTooLarge(usize),
    /// A path segment that names nothing.
    #[error("Resource not found for the segment '{0}'.")]
    UnknownSegment(String),
    /// A known path with a method it does not support; the methods it does support, for the `Allow`
    /// header (RFC 9110, 15.5.6).
    #[error("Specified HTTP method is not allowed for the request target.")]
    MethodNotAllowed(&'static str),
    /// A presence path with something other than a user object id.
    #[error(
        "The user id '{0}' is not valid: presence requires the user's object id (a GUID), not a user principal name."
    )]
    UserIdRequired(String),
    /// A user id that is not a user of the caller's tenant (presence paths).
    #[error("The user '{0}' was not found.")]
    UserNotFound(String),
    /// A directory object that does not exist (`/users/{id}`).
    #[error("Resource '{0}' does not exist or one of its queried reference-property objects are not present.")]
    ResourceNotFound(String),
    /// Nothing is served at this path.
    #[error("The requested resource was not found.")]
    NotFound,
    /// The body did not arrive in time.
    #[error("The request body did not arrive within {0} seconds.")]
    RequestTimeout(u64),
    /// Over the throttling limit; retry after this many seconds.
    #[error("Too many requests. Retry after {0} seconds.")]
    Throttled(u64),
    /// A subscription request broke a rule.
    #[error(transparent)]
    Subscription(#[from] presence_notify::subscription::SubscriptionError),
    /// A notification endpoint failed the validation handshake.
    #[error("Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request. {0}")]
    SubscriptionValidation(String),
    /// No subscription of this id is visible to the caller.
    #[error("The subscription '{0}' was not found.")]
    SubscriptionNotFound(String),
    /// The caller has as many subscriptions as allowed.
    #[error("The application already has {0} subscriptions in this tenant, the most allowed; delete or let some expire first.")]
    SubscriptionLimit(usize),
    /// The server failed.
    #[error("{0}")]
    Internal(String),
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Command(error) => ApiError::Command(error),
            ServiceError::Store(error) => ApiError::Store(error),
            ServiceError::Subscription(error) => ApiError::Subscription(error),
            ServiceError::UnknownUser(id) => ApiError::UserNotFound(id),
            ServiceError::SubscriptionValidation(reason) => ApiError::SubscriptionValidation(reason),
            ServiceError::SubscriptionNotFound(id) => ApiError::SubscriptionNotFound(id),
            ServiceError::SubscriptionLimit(limit) => ApiError::SubscriptionLimit(limit),
            unavailable @ ServiceError::NotificationsUnavailable(_) => ApiError::Internal(unavailable.to_string()),
            ServiceError::Internal(reason) => ApiError::Internal(reason),
        }
    }
}

/// What a `503` for a store that cannot acknowledge writes asks clients to wait, in seconds: about a
/// Redis Cluster's failover time.
const STORE_RETRY_AFTER_SECONDS: u32 = 5;

/// What the envelope middleware needs to render an error body.
#[derive(Debug, Clone)]
pub(crate) struct ErrorInfo {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    /// The HTTP status and Graph error code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Auth(error) => match error {
                AuthError::MissingToken | AuthError::InvalidToken(_) | AuthError::UnknownKey { .. } => {
                    (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken")
                }
                AuthError::OtherUser(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
                AuthError::PersonalAccount | AuthError::MeRequiresDelegated => (StatusCode::BAD_REQUEST, "BadRequest"),
                AuthError::MissingScope => (StatusCode::FORBIDDEN, "Authorization_RequestDenied"),
                AuthError::MissingRole(_) | AuthError::ApplicationNotSupported => (StatusCode::FORBIDDEN, "Forbidden"),
            },
            ApiError::Command(CommandError::SessionNotFound(_)) => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::Command(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Store(StoreError::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, "serviceNotAvailable"),
            ApiError::Store(_) | ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "generalException"),
            ApiError::BadRequest(_)
            | ApiError::InvalidJson
            | ApiError::EmptyPayload
            | ApiError::UnknownSegment(_)
            | ApiError::UserIdRequired(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "Request_BadRequest"),
            ApiError::UserNotFound(_) | ApiError::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::ResourceNotFound(_) => (StatusCode::NOT_FOUND, "Request_ResourceNotFound"),
            ApiError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ApiError::Subscription(_) => (StatusCode::BAD_REQUEST, "ValidationError"),
            ApiError::SubscriptionValidation(_) => (StatusCode::BAD_REQUEST, "InvalidRequest"),
            ApiError::SubscriptionNotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            ApiError::SubscriptionLimit(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Store(error @ StoreError::Unavailable(_)) => {
                tracing::warn!(%error, "store unavailable");
                "Presence storage cannot accept writes for now; retry after the interval in Retry-After.".to_owned()
            }
            ApiError::Store(error) => {
                tracing::error!(%error, "store failure");
                "An internal error occurred while accessing presence storage.".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = status.into_response();
        if code == "InvalidAuthenticationToken" {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"presenced\", error=\"invalid_token\""),
            );
        }
        match self {
            ApiError::Throttled(seconds) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            ApiError::Store(StoreError::Unavailable(_)) => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(STORE_RETRY_AFTER_SECONDS));
            }
            ApiError::MethodNotAllowed(allowed) => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorInfo { code, message });
        response
    }
}
