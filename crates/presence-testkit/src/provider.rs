//! A mock identity provider over HTTPS (a test CA of its own): Entra ID's per-tenant JWKS
//! (`/{tenant}/discovery/v2.0/keys`) and a Keycloak realm's discovery document and JWKS
//! (`/realms/staff/...`), each with keys the test sets and may rotate; it can be taken down (every
//! request then answers `503`). Tokens of any shape are minted with [`Provider::mint`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use presence_auth::SigningKey;
use serde_json::{json, Value};

/// A key of the provider: its id and the RSA key.
#[derive(Clone)]
pub struct ProviderKey {
    pub kid: String,
    pub key: SigningKey,
}

impl ProviderKey {
    pub fn new(kid: &str) -> Self {
        ProviderKey { kid: kid.to_owned(), key: SigningKey::generate() }
    }

    fn jwk(&self) -> Value {
        json!({ "kty": "RSA", "use": "sig", "kid": self.kid, "n": self.key.modulus(), "e": self.key.exponent() })
    }
}

struct Shared {
    entra: Mutex<Vec<ProviderKey>>,
    keycloak: Mutex<Vec<ProviderKey>>,
    down: AtomicBool,
    /// While `true`, requests are counted and then wait for it to turn `false`.
    held: tokio::sync::watch::Sender<bool>,
    /// JWKS documents served.
    jwks_served: AtomicUsize,
    /// Requests of any kind, answered or not.
    requests: AtomicUsize,
    base: Mutex<String>,
}

pub struct Provider {
    /// `https://127.0.0.1:{port}`: the Entra authority, and the Keycloak host.
    pub base: String,
    /// The CA that issued the provider's certificate, in a file.
    pub ca_file: std::path::PathBuf,
    shared: Arc<Shared>,
    _identity: crate::TlsIdentity,
}

/// The Keycloak realm's path.
pub const REALM: &str = "/realms/staff";

async fn answer(shared: Arc<Shared>, uri: Uri) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let _ = shared.held.subscribe().wait_for(|held| !*held).await;
    if shared.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let base = shared.base.lock().unwrap().clone();
    let path = uri.path();
    let jwks = |keys: &Mutex<Vec<ProviderKey>>| {
        shared.jwks_served.fetch_add(1, Ordering::SeqCst);
        Json(json!({ "keys": keys.lock().unwrap().iter().map(ProviderKey::jwk).collect::<Vec<_>>() })).into_response()
    };
    if path == format!("{REALM}/.well-known/openid-configuration") {
        return Json(json!({ "issuer": format!("{base}{REALM}"), "jwks_uri": format!("{base}{REALM}/certs") }))
            .into_response();
    }
    if path == format!("{REALM}/certs") {
        return jwks(&shared.keycloak);
    }
    if path.ends_with("/discovery/v2.0/keys") {
        return jwks(&shared.entra);
    }
    StatusCode::NOT_FOUND.into_response()
}

impl Provider {
    /// Starts the provider with one Entra key and one Keycloak key.
    pub async fn start(entra: ProviderKey, keycloak: ProviderKey) -> Self {
        let identity = crate::TlsIdentity::new();
        let shared = Arc::new(Shared {
            entra: Mutex::new(vec![entra]),
            keycloak: Mutex::new(vec![keycloak]),
            down: AtomicBool::new(false),
            held: tokio::sync::watch::Sender::new(false),
            jwks_served: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            base: Mutex::default(),
        });
        let handler_shared = shared.clone();
        let router = Router::new().fallback(move |uri: Uri| answer(handler_shared.clone(), uri));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        shared.base.lock().unwrap().clone_from(&base);
        let limits = crate::settings(&[]).connection_limits();
        let tls = identity.server_config.clone();
        tokio::spawn(presence_api::serve(listener, router, limits, Some(tls), std::future::pending()));
        Provider { base, ca_file: identity.ca_file.clone(), shared, _identity: identity }
    }

    /// The Keycloak realm's issuer.
    pub fn realm_issuer(&self) -> String {
        format!("{}{REALM}", self.base)
    }

    /// Entra's v2.0 issuer for `tenant`.
    pub fn entra_issuer(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0", self.base)
    }

    /// Replaces the Entra keys served.
    pub fn set_entra_keys(&self, keys: Vec<ProviderKey>) {
        *self.shared.entra.lock().unwrap() = keys;
    }

    /// Takes the provider down (`true`: every request answers `503`) or up again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Holds every request's answer (`true`) until released (`false`).
    pub fn set_held(&self, held: bool) {
        self.shared.held.send_replace(held);
    }

    /// How many JWKS documents were served so far.
    pub fn jwks_served(&self) -> usize {
        self.shared.jwks_served.load(Ordering::SeqCst)
    }

    /// How many requests reached the provider so far, answered or not.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// A token of `claims` signed by `key` with RS256 under its `kid` (`header` adjusts the header).
    pub fn mint(key: &ProviderKey, claims: &Value, header: impl FnOnce(&mut Header)) -> String {
        let mut head = Header::new(Algorithm::RS256);
        head.kid = Some(key.kid.clone());
        header(&mut head);
        let encoding = EncodingKey::from_rsa_pem(key.key.pem().as_bytes()).unwrap();
        jsonwebtoken::encode(&head, claims, &encoding).unwrap()
    }
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
}
