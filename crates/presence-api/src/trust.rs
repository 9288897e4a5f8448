//! The signing keys of the trusted identity providers: fetched at start-up, again on a schedule, and again
//! (once, for every request waiting on it, and not more often than [`MIN_REFETCH`]) when a token names a
//! key not held. A provider that cannot be reached leaves the last good keys in place. An OpenID Connect
//! provider's discovery document also gives the endpoints the board signs in with.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presence_auth::{KeySet, KeySource, Trust, Verifier};
use serde::Serialize;
use serde_json::Value;

/// The shortest time between two fetches of a trust's keys caused by tokens naming unknown keys (the
/// start-up and scheduled fetches do not count): a stream of tokens naming made-up keys cannot make
/// presenced hammer the provider.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);

/// A provider's document, once fetched.
pub type DocumentFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'a>>;

/// Fetches a provider's JSON documents (discovery, JWKS) over HTTPS; bounded in time and size by the
/// implementation.
pub trait DocumentSource: Send + Sync {
    /// The JSON document at `url`.
    fn get_json<'a>(&'a self, url: &'a str) -> DocumentFuture<'a>;
}

/// The trusts and how their keys are fetched.
pub struct TrustKeys {
    trusts: Vec<Arc<Trust>>,
    sources: Vec<Arc<dyn DocumentSource>>,
    /// Per trust, per key set (an Entra tenant, or `""`): held while those keys are fetched (the single
    /// flight), with when they were last fetched.
    flights: Vec<HashMap<String, tokio::sync::Mutex<Flight>>>,
    /// Per trust, the authorization and token endpoints its discovery document named last.
    endpoints: Vec<Mutex<Option<(String, String)>>>,
}

/// A provider the board signs in with (the authorization-code flow with PKCE, in the browser).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoardSignIn {
    /// The trust's name.
    pub name: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where the board exchanges the code for tokens (from the browser, so the provider allows the board's
    /// origin).
    pub token_endpoint: String,
    /// The board's public client at the provider.
    pub client_id: String,
    /// The scopes asked for.
    pub scopes: Vec<String>,
}

/// When a key set was last fetched.
#[derive(Default)]
struct Flight {
    /// When the last fetch of any kind ended.
    ended: Option<Instant>,
    /// When the last fetch caused by an unknown key began.
    refetched: Option<Instant>,
}

impl std::fmt::Debug for TrustKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.trusts.iter().map(|trust| trust.name())).finish()
    }
}

/// The origin of an `https://` URL whose host is a DNS name or an IP address (nothing a Content-Security-
/// Policy would read as more than one origin), as `https://host[:port]`.
pub(crate) fn https_origin(url: &str) -> Option<String> {
    let uri = url.parse::<axum::http::Uri>().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let authority = uri.authority()?.as_str();
    if authority.contains('@') {
        return None;
    }
    let host = uri.host()?;
    let plain = |host: &str| {
        !host.is_empty() && host.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-')
    };
    let bracketed = host
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok());
    if !plain(host) && !bracketed {
        return None;
    }
    Some(match uri.port_u16() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    })
}

impl TrustKeys {
    /// `trusts`, each with the source its documents are fetched from.
    pub fn new(trusts: Vec<(Arc<Trust>, Arc<dyn DocumentSource>)>) -> Self {
        let flights = trusts
            .iter()
            .map(|(trust, _)| {
                trust.key_sources().into_iter().map(|source| (source.slot, tokio::sync::Mutex::default())).collect()
            })
            .collect();
        let endpoints = trusts.iter().map(|_| Mutex::default()).collect();
        let (trusts, sources) = trusts.into_iter().unzip();
        TrustKeys { trusts, sources, flights, endpoints }
    }

    /// The origins the board may connect to for its sign-in: each board trust's token endpoint, and an
    /// OpenID Connect trust's issuer (where its token endpoint is, before its discovery document is read).
    pub fn board_origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = self
            .trusts
            .iter()
            .filter(|trust| trust.config.board_client_id.is_some())
            .filter_map(|trust| trust.config.issuer.as_deref().and_then(https_origin))
            .chain(self.board_sign_ins().iter().filter_map(|sign_in| https_origin(&sign_in.token_endpoint)))
            .collect();
        origins.sort();
        origins.dedup();
        origins
    }

    /// The providers the board can sign in with now: each trust with a `board_client_id`, once its
    /// endpoints are known (an Entra trust's at once, an OpenID Connect one's from its discovery document).
    pub fn board_sign_ins(&self) -> Vec<BoardSignIn> {
        self.trusts
            .iter()
            .zip(&self.endpoints)
            .filter_map(|(trust, discovered)| {
                let client_id = trust.config.board_client_id.clone()?;
                let (authorization_endpoint, token_endpoint) = trust
                    .entra_sign_in_endpoints()
                    .or_else(|| discovered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())?;
                Some(BoardSignIn {
                    name: trust.name().to_owned(),
                    authorization_endpoint,
                    token_endpoint,
                    client_id,
                    scopes: trust.board_scopes(),
                })
            })
            .collect()
    }

    /// The trusts.
    pub fn trusts(&self) -> &[Arc<Trust>] {
        &self.trusts
    }

    /// Fetches one key set of trust `index` and puts it in place; a fetch that fails, or finds no usable
    /// key, leaves the last good keys. When keys changed, `verifier` forgets the tokens it verified.
    async fn fetch(&self, index: usize, source: &KeySource, verifier: &Verifier) -> Result<(), String> {
        let trust = &self.trusts[index];
        let keys =
            self.fetch_source(index, source).await.map_err(|error| format!("trust {:?}: {error}", trust.name()))?;
        if keys.is_empty() {
            return Err(format!("trust {:?}: the provider's JWKS holds no usable key", trust.name()));
        }
        if trust.set_keys(&source.slot, keys) {
            verifier.forget_verified();
        }
        Ok(())
    }

    async fn fetch_source(&self, index: usize, source: &KeySource) -> Result<KeySet, String> {
        let documents = &self.sources[index];
        let jwks_uri = match (&source.jwks_uri, &source.discovery) {
            (Some(uri), _) => uri.clone(),
            (None, Some(discovery)) => {
                let document = documents.get_json(discovery).await?;
                let issuer = document.get("issuer").and_then(Value::as_str);
                if issuer != source.issuer.as_deref() {
                    return Err(format!("{discovery} names the issuer {issuer:?}, not {:?}", source.issuer));
                }
                let uri = document
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{discovery} names no jwks_uri"))?;
                if !uri.starts_with("https://") {
                    return Err(format!("{discovery} names a jwks_uri that is not https: {uri}"));
                }
                // Only plain https URLs: the token endpoint's origin goes into the board's CSP.
                let endpoint =
                    |name: &str| document.get(name).and_then(Value::as_str).filter(|url| https_origin(url).is_some());
                if let (Some(authorization), Some(token)) =
                    (endpoint("authorization_endpoint"), endpoint("token_endpoint"))
                {
                    *self.endpoints[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((authorization.to_owned(), token.to_owned()));
                }
                uri.to_owned()
            }
            (None, None) => return Err("no discovery document and no jwks_uri".into()),
        };
        let jwks = documents.get_json(&jwks_uri).await?;
        KeySet::from_jwks(&jwks, self.trusts[index].algorithms()).map_err(|error| format!("{jwks_uri}: {error}"))
    }

    /// Fetches every trust's keys now (start-up and the schedule), one key set at a time, logging what
    /// failed.
    pub async fn fetch_all(&self, verifier: &Verifier) {
        for (index, trust) in self.trusts.iter().enumerate() {
            for source in trust.key_sources() {
                let Some(flight) = self.flights[index].get(&source.slot) else { continue };
                let mut flight = flight.lock().await;
                match self.fetch(index, &source, verifier).await {
                    Ok(()) => {
                        tracing::info!(trust = trust.name(), slot = %source.slot, "trusted provider's keys fetched")
                    }
                    Err(error) => {
                        tracing::warn!(%error, "trusted provider's keys not fetched; the last good ones stay");
                    }
                }
                flight.ended = Some(Instant::now());
            }
        }
    }

    /// After a token of trust `name` named a key not held in key set `slot`: fetches that key set again,
    /// unless a fetch of it is under way (then waits for it and uses its keys) or another unknown key
    /// caused one less than [`MIN_REFETCH`] ago. Answers whether keys may have changed since the token was
    /// checked.
    pub async fn refetch_for_unknown_key(&self, name: &str, slot: &str, verifier: &Verifier) -> bool {
        let Some(index) = self.trusts.iter().position(|trust| trust.name() == name) else { return false };
        let Some(flight) = self.flights[index].get(slot) else { return false };
        let Some(source) = self.trusts[index].key_sources().into_iter().find(|source| source.slot == slot) else {
            return false;
        };
        let began = Instant::now();
        let mut flight = flight.lock().await;
        // A fetch ended while this request waited: its keys are the freshest there are.
        if flight.ended.is_some_and(|ended| ended >= began) {
            return true;
        }
        if flight.refetched.is_some_and(|refetched| refetched.elapsed() < MIN_REFETCH) {
            return false;
        }
        flight.refetched = Some(Instant::now());
        if let Err(error) = self.fetch(index, &source, verifier).await {
            tracing::warn!(%error, "trusted provider's keys not fetched; the last good ones stay");
        }
        flight.ended = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use presence_auth::{Directory, SigningKey, TrustConfig};
    use serde_json::json;

    use super::*;

    const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";

    /// A provider whose JWKS answers are held until released, counting the fetches.
    struct Held {
        fetches: AtomicUsize,
        release: tokio::sync::watch::Sender<bool>,
        key: SigningKey,
    }

    impl DocumentSource for Held {
        fn get_json<'a>(&'a self, _url: &'a str) -> DocumentFuture<'a> {
            Box::pin(async move {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                let _ = self.release.subscribe().wait_for(|released| *released).await;
                Ok(
                    json!({ "keys": [{ "kty": "RSA", "kid": "k1", "n": self.key.modulus(), "e": self.key.exponent() }] }),
                )
            })
        }
    }

    #[test]
    fn only_plain_https_origins_reach_the_board_s_policy() {
        assert_eq!(https_origin("https://sso.example.org/realms/a/token").as_deref(), Some("https://sso.example.org"));
        assert_eq!(https_origin("https://127.0.0.1:8443/t").as_deref(), Some("https://127.0.0.1:8443"));
        assert_eq!(https_origin("https://[::1]:8443/t").as_deref(), Some("https://[::1]:8443"));
        for bad in [
            "http://sso.example.org/token",
            "https://x;script-src/t",
            "https://*/t",
            "https://a,b/t",
            "https://user@sso.example.org/t",
            "https://sso.example.org'/t",
            "not a url",
            "https:///t",
        ] {
            assert_eq!(https_origin(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn requests_waiting_on_one_unknown_key_share_one_fetch() {
        let config: TrustConfig = serde_json::from_value(json!({
            "name": "entra", "kind": "entra", "audiences": ["api://presence"], "tenants": [TENANT],
        }))
        .unwrap();
        let trust = Arc::new(Trust::new(config, |tenant| tenant == TENANT).unwrap());
        let source = Arc::new(Held {
            fetches: AtomicUsize::new(0),
            release: tokio::sync::watch::Sender::new(false),
            key: SigningKey::generate(),
        });
        let keys = Arc::new(TrustKeys::new(vec![(trust, source.clone() as Arc<dyn DocumentSource>)]));
        let key = SigningKey::generate();
        let verifier =
            Arc::new(Verifier::new(&key, "https://issuer.test", Arc::new(Directory::new(Vec::new()).unwrap())));
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let (keys, verifier) = (keys.clone(), verifier.clone());
                tokio::spawn(async move { keys.refetch_for_unknown_key("entra", TENANT, &verifier).await })
            })
            .collect();
        tokio::task::yield_now().await;
        source.release.send_replace(true);
        for request in waiting {
            assert!(request.await.unwrap(), "every waiting request checks its token again");
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1, "one fetch for all");
    }
}
