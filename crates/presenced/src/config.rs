//! The configuration file: one documented struct, read from TOML, overridden by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use presence_auth::{Directory, Tenant};
use serde::Deserialize;

/// The built-in default configuration (a demo tenant), also shipped as `presenced.example.toml`.
pub(crate) const DEFAULT_CONFIG: &str = include_str!("../../../presenced.example.toml");

/// Everything presenced reads from its configuration file. See `presenced.example.toml` for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Address and port to listen on.
    pub(crate) listen: SocketAddr,
    /// Directory holding the database and the signing key.
    pub(crate) data_dir: PathBuf,
    /// URL clients reach the server at; default `http://{listen}`.
    pub(crate) public_url: Option<String>,
    /// PEM certificate chain for TLS.
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS.
    pub(crate) tls_key_file: Option<PathBuf>,
    /// Base of the token issuer.
    pub(crate) issuer: String,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub(crate) max_body_bytes: usize,
    /// Most connections served at once.
    #[serde(default = "default_max_connections")]
    pub(crate) max_connections: usize,
    /// Seconds a client has to send a request head; also the keep-alive idle limit.
    #[serde(default = "default_thirty")]
    pub(crate) header_read_timeout_seconds: u64,
    /// Largest request head in bytes.
    #[serde(default = "default_max_header_bytes")]
    pub(crate) max_header_bytes: usize,
    /// Seconds a client has to send a request body.
    #[serde(default = "default_thirty")]
    pub(crate) body_read_timeout_seconds: u64,
    /// Seconds without a byte read or written after which a connection is closed.
    #[serde(default = "default_idle_timeout_seconds")]
    pub(crate) idle_timeout_seconds: u64,
    /// Seconds in-flight requests get at shutdown.
    #[serde(default = "default_drain_timeout_seconds")]
    pub(crate) drain_timeout_seconds: u64,
    /// Presence requests allowed per window, application and tenant; 0 disables throttling.
    #[serde(default = "default_throttle_limit")]
    pub(crate) throttle_limit: u32,
    /// The throttling window in seconds.
    #[serde(default = "default_throttle_window_seconds")]
    pub(crate) throttle_window_seconds: u64,
    /// Serve the test clock.
    #[serde(default)]
    pub(crate) test_clock: bool,
    /// Longest subscription lifetime a create or renewal may ask for, in minutes (Graph: 60).
    #[serde(default = "default_subscription_max_lifetime_minutes")]
    pub(crate) subscription_max_lifetime_minutes: u64,
    /// Accept `http://` notification URLs (local development only).
    #[serde(default)]
    pub(crate) notification_allow_http: bool,
    /// Accept notification URLs on loopback, private, link-local and other internal addresses.
    #[serde(default)]
    pub(crate) notification_allow_internal: bool,
    /// PEM file of extra root certificates trusted for notification endpoints.
    pub(crate) notification_ca_file: Option<PathBuf>,
    /// Seconds a subscriber has to answer a notification (Graph: 3).
    #[serde(default = "default_notification_timeout_seconds")]
    pub(crate) notification_timeout_seconds: u64,
    /// Seconds a subscriber has to answer the validation handshake (Graph: 10).
    #[serde(default = "default_validation_timeout_seconds")]
    pub(crate) validation_timeout_seconds: u64,
    /// Minutes undelivered notifications are retried before being dropped (Graph: 240).
    #[serde(default = "default_notification_retry_minutes")]
    pub(crate) notification_retry_minutes: u64,
    /// Most subscriptions per application and tenant.
    #[serde(default = "default_max_subscriptions_per_app")]
    pub(crate) max_subscriptions_per_app: usize,
    /// Most notifications queued for one subscription.
    #[serde(default = "default_max_queued_notifications")]
    pub(crate) max_queued_notifications: usize,
    /// Most notifications in one POST.
    #[serde(default = "default_notification_batch_size")]
    pub(crate) notification_batch_size: usize,
    /// Most notification POSTs in flight at once.
    #[serde(default = "default_max_concurrent_deliveries")]
    pub(crate) max_concurrent_deliveries: usize,
    /// Tenants with their users and apps.
    #[serde(default)]
    pub(crate) tenants: Vec<Tenant>,
}

fn default_max_body_bytes() -> usize {
    256 * 1024
}

fn default_max_connections() -> usize {
    4096
}

fn default_thirty() -> u64 {
    30
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_idle_timeout_seconds() -> u64 {
    60
}

fn default_drain_timeout_seconds() -> u64 {
    10
}

fn default_throttle_limit() -> u32 {
    10_000
}

fn default_throttle_window_seconds() -> u64 {
    30
}

fn default_subscription_max_lifetime_minutes() -> u64 {
    60
}

fn default_notification_timeout_seconds() -> u64 {
    3
}

fn default_validation_timeout_seconds() -> u64 {
    10
}

fn default_notification_retry_minutes() -> u64 {
    240
}

fn default_max_subscriptions_per_app() -> usize {
    1000
}

fn default_max_queued_notifications() -> usize {
    10_000
}

fn default_notification_batch_size() -> usize {
    100
}

fn default_max_concurrent_deliveries() -> usize {
    64
}

impl Config {
    /// Reads `path`, or the built-in default when `None`.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (text, origin) = match path {
            Some(path) => (
                std::fs::read_to_string(path).with_context(|| format!("reading configuration {}", path.display()))?,
                path.display().to_string(),
            ),
            None => (DEFAULT_CONFIG.to_owned(), "the built-in default configuration".to_owned()),
        };
        let config: Config = toml::from_str(&text).with_context(|| format!("invalid configuration in {origin}"))?;
        if !(1024..=64 * 1024 * 1024).contains(&config.max_body_bytes) {
            anyhow::bail!(
                "invalid configuration in {origin}: max_body_bytes = {} must be between 1024 and 67108864",
                config.max_body_bytes
            );
        }
        let ranges: [(&str, u64, u64, u64); 15] = [
            ("subscription_max_lifetime_minutes", config.subscription_max_lifetime_minutes, 1, 525_600),
            ("notification_timeout_seconds", config.notification_timeout_seconds, 1, 60),
            ("validation_timeout_seconds", config.validation_timeout_seconds, 1, 60),
            ("notification_retry_minutes", config.notification_retry_minutes, 0, 7 * 24 * 60),
            ("max_subscriptions_per_app", config.max_subscriptions_per_app as u64, 1, 1_000_000),
            ("max_queued_notifications", config.max_queued_notifications as u64, 1, 10_000_000),
            ("notification_batch_size", config.notification_batch_size as u64, 1, 1000),
            ("max_concurrent_deliveries", config.max_concurrent_deliveries as u64, 1, 10_000),
            ("idle_timeout_seconds", config.idle_timeout_seconds, 1, 86_400),
            ("max_connections", config.max_connections as u64, 1, 1_000_000),
            ("header_read_timeout_seconds", config.header_read_timeout_seconds, 1, 3600),
            ("max_header_bytes", config.max_header_bytes as u64, 8192, 1024 * 1024),
            ("body_read_timeout_seconds", config.body_read_timeout_seconds, 1, 3600),
            ("drain_timeout_seconds", config.drain_timeout_seconds, 0, 3600),
            ("throttle_window_seconds", config.throttle_window_seconds, 1, 86_400),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                anyhow::bail!("invalid configuration in {origin}: {key} = {value} must be between {min} and {max}");
            }
        }
        Ok(config)
    }

    /// The settings of change notifications.
    pub(crate) fn notifications(&self) -> anyhow::Result<presence_api::NotifyConfig> {
        use rustls::pki_types::pem::PemObject;
        let extra_roots = match &self.notification_ca_file {
            None => Vec::new(),
            Some(path) => rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| anyhow::anyhow!("notification_ca_file {}: {error}", path.display()))?
                .into_iter()
                .map(|certificate| certificate.to_vec())
                .collect(),
        };
        Ok(presence_api::NotifyConfig {
            limits: presence_notify::subscription::SubscriptionLimits {
                max_lifetime: std::time::Duration::from_secs(self.subscription_max_lifetime_minutes * 60),
                targets: presence_notify::target::TargetPolicy {
                    allow_http: self.notification_allow_http,
                    allow_internal: self.notification_allow_internal,
                },
            },
            extra_roots,
            delivery_timeout: std::time::Duration::from_secs(self.notification_timeout_seconds),
            validation_timeout: std::time::Duration::from_secs(self.validation_timeout_seconds),
            retry_window: std::time::Duration::from_secs(self.notification_retry_minutes * 60),
            max_subscriptions_per_app: self.max_subscriptions_per_app,
            max_queued_per_subscription: self.max_queued_notifications,
            max_batch: self.notification_batch_size,
            max_concurrent_deliveries: self.max_concurrent_deliveries,
        })
    }

    /// The public URL, defaulting to `http://{listen}` (`https://` with TLS).
    pub(crate) fn public_url(&self) -> String {
        let scheme = if self.tls_cert_file.is_some() { "https" } else { "http" };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The TLS configuration, when both files are configured.
    pub(crate) fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(presence_api::tls::server_config(cert, key)?)),
            _ => anyhow::bail!("invalid configuration: tls_cert_file and tls_key_file must be set together"),
        }
    }

    /// The issuer base, without a trailing slash.
    pub(crate) fn issuer_base(&self) -> String {
        self.issuer.trim_end_matches('/').to_owned()
    }

    /// The directory, validated.
    pub(crate) fn directory(&self) -> anyhow::Result<Directory> {
        Directory::new(self.tenants.clone()).context("invalid configuration: tenants")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_configuration_is_valid() {
        let config = Config::load(None).unwrap();
        assert_eq!(config.public_url(), "http://127.0.0.1:8080");
        assert_eq!(config.issuer_base(), "https://login.presenced.local");
        assert!(!config.test_clock);
        let directory = config.directory().unwrap();
        assert_eq!(directory.tenants().count(), 1);
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\nissuer = \"https://i\"\nlisen = 3\n")
            .unwrap();
        let error = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(error.contains("lisen"), "{error}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        let text = "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\nissuer = \"https://i\"\nmax_header_bytes = 10\n";
        std::fs::write(&path, text).unwrap();
        let error = format!("{:#}", Config::load(Some(&path)).unwrap_err());
        assert!(error.contains("max_header_bytes = 10"), "{error}");
    }
}
