//! The test directory: two tenants (Contoso with two users and two applications, Fabrikam with one of
//! each), the signing key, and tokens of any caller.

use std::sync::OnceLock;

use presence_auth::{Directory, Issuer, SigningKey, Tenant, TokenRequest};
use serde_json::json;

pub const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
pub const OTHER_TENANT: &str = "6f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
pub const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
pub const APP2: &str = "1b1f2e6d-9073-4e40-8e63-4c2d4c1e6f22";
pub const OTHER_APP: &str = "2c2f3e7d-9073-4e40-8e63-4c2d4c1e6f33";
/// The client secret of [`APP`] (granted Presence.ReadWrite.All) at the token endpoint.
pub const APP_SECRET: &str = "dialler-test-secret-0123456789abcdefghij";
/// The client secret of [`APP2`] (granted no application permission).
pub const APP2_SECRET: &str = "busy-light-test-secret-0123456789abcdefg";
pub const ADELE: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
pub const ALEX: &str = "5e9a1c7b-8d44-4b0e-a3f2-6c1d2e3f4a5b";
pub const STRANGER: &str = "c3d4e5f6-a7b8-4c9d-8e0f-2a3b4c5d6e7f";
pub const ISSUER: &str = "https://login.presenced.test";
/// 2026-09-01T10:00:00Z.
pub const START: i64 = 1_788_256_800_000;

/// One signing key for the whole test process (RSA key generation is slow).
pub fn signing_key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate).clone()
}

/// Contoso and Fabrikam.
pub fn directory() -> Directory {
    let tenants: Vec<Tenant> = serde_json::from_value(json!([
        { "id": TENANT, "displayName": "Contoso",
          "users": [
            { "id": ADELE, "userPrincipalName": "adele@contoso.example", "displayName": "Adele Vance" },
            { "id": ALEX, "userPrincipalName": "alex@contoso.example", "displayName": "Alex Wilber" }],
          "apps": [
            { "id": APP, "displayName": "Dialler", "clientSecretSha256": [presence_auth::secret_sha256(APP_SECRET)],
              "applicationPermissions": ["Presence.ReadWrite.All"] },
            { "id": APP2, "displayName": "Busy light", "clientSecretSha256": [presence_auth::secret_sha256(APP2_SECRET)] }] },
        { "id": OTHER_TENANT, "displayName": "Fabrikam",
          "users": [{ "id": STRANGER, "userPrincipalName": "sam@fabrikam.example", "displayName": "Sam" }],
          "apps": [{ "id": OTHER_APP, "displayName": "Fabrikam app" }] }
    ]))
    .expect("the test directory parses");
    Directory::new(tenants).expect("the test directory is valid")
}

/// A token of `app` in `tenant`, delegated for `user` (with `permissions` as scopes) or an application
/// token (with `permissions` as roles), valid for an hour from now, signed by [`signing_key`] as
/// [`ISSUER`].
pub fn mint(tenant: &str, app: &str, user: Option<&str>, permissions: &[&str]) -> String {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after the epoch").as_secs() as i64;
    Issuer::new(signing_key(), ISSUER).mint(&TokenRequest {
        tenant_id: tenant.into(),
        app_id: app.into(),
        user_id: user.map(str::to_owned),
        permissions: permissions.iter().map(|permission| permission.to_string()).collect(),
        issued_at: now,
        lifetime_seconds: 3600,
    })
}
