//! Change notifications for presence, without I/O: what a subscription may ask for, where a notification
//! may go, what a notification says, how a rich notification is sealed, how a subscription is kept, and
//! when deliveries are retried. The engine that runs them (timers, queues, delivery) is `presence-service`;
//! the subscriptions API is `presence-api`; the HTTP client for subscriber endpoints is `presence-webhook`.
//!
//! - [`subscription`]: what a presence subscription may ask for (resource, change type, lifetime, client
//!   state, certificate, URLs);
//! - [`target`]: which `notificationUrl`s are acceptable (HTTPS unless configured otherwise; no loopback,
//!   private, link-local or other internal addresses unless configured otherwise), so that a subscriber
//!   cannot make the server send requests into its own network;
//! - [`record`]: a subscription as stored;
//! - [`render`]: the items of change and lifecycle notifications, and the collection a POST carries;
//! - [`resource`]: Graph's JSON of a presence, shared by the HTTP API's reads and rich notifications;
//! - [`delivery`]: the retry schedule, Graph's slow-endpoint rule, and when to ask for reauthorization;
//! - [`encryption`]: rich-notification content sealed as Graph seals it (a fresh AES-256 key per item,
//!   AES-256-CBC with PKCS#7 and the key's first 16 bytes as IV, HMAC-SHA256 over the ciphertext, the key
//!   wrapped with RSA-OAEP (SHA-1) under the subscriber's certificate, the certificate's SHA-1 thumbprint).
//!
//! This crate does no I/O: resolving host names and sending requests belong to the delivery layer, which
//! checks every resolved address with [`target::check_address`] before connecting.

pub mod delivery;
pub mod encryption;
pub mod record;
pub mod render;
pub mod resource;
pub mod subscription;
pub mod target;
