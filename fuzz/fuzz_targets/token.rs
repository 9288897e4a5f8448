//! Verifying any bearer token never panics, and nothing but a token signed by the server's key is accepted.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use presence_auth::{Directory, SigningKey, Verifier};

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let tenants = serde_json::from_value(serde_json::json!([{
            "id": "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd", "displayName": "Fuzz",
            "users": [{ "id": "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11", "userPrincipalName": "a@x", "displayName": "A" }],
            "apps": [{ "id": "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11", "displayName": "App" }]
        }]))
        .unwrap();
        Verifier::new(&SigningKey::generate(), "https://issuer", Arc::new(Directory::new(tenants).unwrap()))
    })
}

fuzz_target!(|token: &str| {
    assert!(verifier().verify(token).is_err(), "an unsigned token was accepted");
});
