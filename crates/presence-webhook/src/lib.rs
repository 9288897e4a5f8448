//! The HTTP client that talks to subscribers: the validation handshake and notification POSTs, as the
//! engine's [`presence_service::Webhooks`].
//!
//! Every connection goes through [`PolicyResolver`], which resolves the host name and keeps only the
//! addresses the [`TargetPolicy`] accepts, so a public name that resolves to a loopback or private address
//! is refused like the address itself (URLs with literal addresses were checked when the subscription was
//! made). Redirects are not followed, no proxy is used, and certificates are checked against the
//! platform's roots plus any configured extra roots.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use presence_notify::target::{check_address, TargetPolicy};
use presence_service::{Posted, WebhookFuture, Webhooks};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use rustls::pki_types::CertificateDer;
use url::Url;

/// How host names are looked up: the system's resolver ([`system_lookup`]), or one a test gives.
pub type Lookup =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> + Send + Sync>;

/// The system's resolver.
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(
            async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|address| address.ip()).collect()) },
        )
    })
}

/// Resolves names and drops the addresses the policy refuses.
struct PolicyResolver {
    policy: TargetPolicy,
    lookup: Lookup,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses = lookup(host.clone()).await?;
            let allowed: Vec<SocketAddr> = addresses
                .into_iter()
                .filter(|address| check_address(*address, policy).is_ok())
                .map(|address| SocketAddr::new(address, 0))
                .collect();
            if allowed.is_empty() {
                // One message whether the name has no address or only refused ones, so that the answer
                // does not tell which internal names exist.
                return Err(format!("'{host}' has no address that notifications may be sent to").into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// A client for subscriber endpoints.
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl WebhookClient {
    /// A client under `policy`, trusting the platform's roots and `extra_roots` (DER). Fails when no root
    /// certificate can be loaded, saying why.
    pub fn new(policy: TargetPolicy, extra_roots: &[Vec<u8>]) -> Result<Self, String> {
        Self::with_lookup(policy, extra_roots, system_lookup())
    }

    /// [`WebhookClient::new`] with host names looked up by `lookup` (a test's own resolver).
    pub fn with_lookup(policy: TargetPolicy, extra_roots: &[Vec<u8>], lookup: Lookup) -> Result<Self, String> {
        let roots = extra_roots.iter().map(|der| CertificateDer::from(der.clone())).collect();
        let tls = client_config(roots)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .dns_resolver(Arc::new(PolicyResolver { policy, lookup }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!policy.allow_http)
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("presenced/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| describe(&error))?;
        Ok(WebhookClient { client })
    }

    /// Graph's validation handshake: POST `{url}?validationToken=...` and expect `200` with the token as
    /// the body (a trailing line break tolerated) within `timeout`.
    pub async fn validate(&self, url: &Url, timeout: Duration) -> Result<(), String> {
        let token = format!(
            "Validation: Testing client application reachability for subscription Request-Id: {}",
            uuid::Uuid::new_v4()
        );
        let mut target = url.clone();
        target.query_pairs_mut().append_pair("validationToken", &token);
        let request = self
            .client
            .post(target)
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .timeout(timeout)
            .send();
        let response = request.await.map_err(|error| {
            if error.is_timeout() {
                format!("The endpoint {url} did not answer within {} seconds.", timeout.as_secs())
            } else {
                format!("The endpoint {url} could not be reached: {}.", describe(&error))
            }
        })?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("The endpoint {url} answered {status} instead of 200 OK."));
        }
        // Read at most a little more than the token: an endpoint cannot make the server buffer more.
        let limit = token.len() + 3;
        let mut response = response;
        let mut body = Vec::with_capacity(limit);
        let read = async {
            while let Some(chunk) = response.chunk().await? {
                body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]);
                if body.len() >= limit {
                    break;
                }
            }
            Ok::<_, reqwest::Error>(())
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| format!("The endpoint {url} did not send its answer within {} seconds.", timeout.as_secs()))?
            .map_err(|error| format!("The endpoint {url} failed while answering: {}.", describe(&error)))?;
        // The token itself; a trailing line break (which some frameworks add) is tolerated.
        let answer = body.strip_suffix(b"\n").map(|rest| rest.strip_suffix(b"\r").unwrap_or(rest)).unwrap_or(&body);
        if answer != token.as_bytes() {
            return Err(format!("The endpoint {url} did not echo the validationToken as the plain-text body."));
        }
        Ok(())
    }

    /// POSTs a JSON notification body, waiting at most `timeout` for the answer's head.
    pub async fn post(&self, url: &str, body: Vec<u8>, timeout: Duration) -> Posted {
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body)
            .timeout(timeout)
            .send();
        match request.await {
            Ok(response) => Posted::Status(response.status().as_u16()),
            Err(error) if error.is_timeout() => Posted::TimedOut,
            Err(error) => Posted::Failed(describe(&error)),
        }
    }
}

impl Webhooks for WebhookClient {
    fn validate<'a>(&'a self, url: &'a Url, timeout: Duration) -> WebhookFuture<'a, Result<(), String>> {
        Box::pin(WebhookClient::validate(self, url, timeout))
    }

    fn post<'a>(&'a self, url: &'a str, body: Vec<u8>, timeout: Duration) -> WebhookFuture<'a, Posted> {
        Box::pin(WebhookClient::post(self, url, body, timeout))
    }
}

/// A TLS client configuration trusting the platform's root certificates and `extra_roots` (webhook
/// deliveries, and the command-line client).
pub fn client_config(extra_roots: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
        .map_err(|error| format!("cannot load the trusted root certificates: {error}"))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}
