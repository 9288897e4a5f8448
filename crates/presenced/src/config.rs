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
        let ranges: [(&str, u64, u64, u64); 7] = [
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
