#![recursion_limit = "256"]

//! The Microsoft Graph presence API over HTTP, and nothing else: routes, the error envelope, Graph's wire
//! types, the handlers, `$batch`, the OpenAPI documents, throttling, the connection loop and TLS, and the
//! board's page and event stream.
//!
//! Every request under `/v1.0` and `/beta` goes through one path ([`router`]): the envelope middleware gives
//! it a request id; [`route::resolve`] turns method and path into a [`route::Endpoint`]; the bearer token is
//! verified into a caller; the handlers authorise the caller, decode the body into a validated core command
//! or subscription request, and hand it to the engine (`presence-service`). Errors of every layer become
//! one [`error::ApiError`], rendered as Graph's error envelope in one place.
//!
//! This crate holds no presence rule (that is `presence-core`), runs no timers and keeps no presence state
//! (that is `presence-service`).

mod action;
mod auth;
pub mod batch;
mod board;
mod body;
mod envelope;
pub mod error;
mod handlers;
mod metrics;
pub mod openapi;
mod ops;
pub mod route;
mod router;
pub mod server;
mod state;
mod subscriptions;
pub mod throttle;
mod timezone;
pub mod tls;
mod token;
pub mod trust;
mod users;
mod wire;

pub use action::decode_action;
pub use handlers::MAX_IDS_PER_REQUEST;
pub use router::router;
pub use server::{serve, ConnectionLimits};
pub use state::{keep_trust_keys_fresh, ApiConfig, AppState};
pub use throttle::{share_throttling, ThrottleConfig};
pub use trust::{DocumentSource, TrustKeys};
pub use wire::encode_presences;
