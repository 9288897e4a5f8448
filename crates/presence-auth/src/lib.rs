//! Who is calling and what they may do: the directory, tokens, and the permission table.
//!
//! - [`directory`]: tenants with their users and registered applications, from configuration;
//! - [`keys`] and [`issuer`]: the server's own RS256 signing key (created in the data directory), its JWKS,
//!   and minting of application and delegated tokens shaped like Entra ID v2 access tokens;
//! - [`verify`]: checking a bearer token (signature, expiry, not-before, issuer, audience, tenant, app, user)
//!   into a [`Caller`];
//! - [`permissions`]: the Graph permission table of each presence operation, delegated versus application;
//! - [`trust`]: trusted identity providers (Entra ID, any OpenID Connect issuer), their configuration, keys
//!   and claims.
//!
//! This crate never touches presence state, HTTP types or the store. Token times are checked against the
//! real clock (a test clock that moves presence forward must not expire tokens).

pub mod directory;
pub mod issuer;
pub mod keys;
pub mod permissions;
pub mod trust;
pub mod verify;

pub use directory::{
    new_client_secret, secret_sha256, App, Directory, DirectoryError, DirectoryTenant, Tenant, User, UserRef,
};
pub use issuer::{Issuer, TokenRequest};
pub use keys::{SigningKey, KEY_FILE};
pub use permissions::{authorize, Operation, Target};
pub use trust::{KeySet, KeySource, Trust, TrustConfig, TrustKind, TrustUsers};
pub use verify::{AuthError, Caller, CallerKind, Verifier};

/// The tenant id of personal Microsoft accounts, refused by every presence API.
pub const CONSUMER_TENANT_ID: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Audiences accepted for Graph tokens: the resource URI and the Graph application id.
pub const GRAPH_AUDIENCES: [&str; 2] = ["https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"];

/// True when `text` is a GUID in the 8-4-4-4-12 hexadecimal form (any case).
pub fn is_guid(text: &str) -> bool {
    guid_value(text).is_some()
}

/// The value of a GUID in its hyphenated form (either case), `None` for anything else.
pub fn guid_value(text: &str) -> Option<u128> {
    (text.len() == 36).then(|| uuid::Uuid::try_parse(text).ok()).flatten().map(|guid| guid.as_u128())
}
