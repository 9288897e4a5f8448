//! Fetching a trusted provider's discovery document and JWKS: HTTPS only, the platform's roots and the
//! trust's `ca_file`, no redirect followed, no proxy, bounded in time and size.

use std::time::Duration;

use presence_api::trust::{DocumentFuture, DocumentSource};
use rustls::pki_types::CertificateDer;

/// The longest a provider's document may be.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// How long a fetch may take, connection included: a request that waits on a fetch waits no longer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A provider's documents, over HTTPS.
pub struct HttpsDocuments {
    client: reqwest::Client,
}

impl HttpsDocuments {
    /// A fetcher trusting the platform's roots and `extra_roots`.
    pub fn new(extra_roots: Vec<CertificateDer<'static>>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(presence_webhook::client_config(extra_roots)?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("presenced/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(HttpsDocuments { client })
    }

    async fn fetch(&self, url: &str) -> Result<serde_json::Value, String> {
        let failed = |error: reqwest::Error| format!("{url}: {error}");
        let mut response = self.client.get(url).send().await.map_err(failed)?;
        if !response.status().is_success() {
            return Err(format!("{url}: answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|error| format!("{url}: not JSON: {error}"))
    }
}

impl DocumentSource for HttpsDocuments {
    fn get_json<'a>(&'a self, url: &'a str) -> DocumentFuture<'a> {
        Box::pin(self.fetch(url))
    }
}
