//! What the tests and benchmarks of presenced share, so that no suite keeps a copy of its own:
//! - [`directory`]: the test tenants, users and applications, the signing key, and token minting;
//! - [`settings`]: the configuration users get by default, with overrides, from the binary's one settings
//!   table;
//! - [`server`]: a real router over a real engine and SQLite store in a temporary directory, in process;
//! - [`receiver`]: a real HTTPS webhook receiver with its own test CA;
//! - [`provider`]: a mock identity provider (discovery, JWKS) over HTTPS, and its tokens;
//! - [`binary`]: starting the real `presenced` binary and calling it over HTTP;
//! - [`deployment`]: several real binaries on one real Redis Cluster;
//! - [`powercut`]: a FUSE file system that loses what was not synced, for power-cut tests;
//! - [`free_port`].
//!
//! Test support only: nothing here ships.

#![allow(missing_docs, unreachable_pub)]

pub mod binary;
pub mod deployment;
pub mod directory;
pub mod powercut;
pub mod provider;
pub mod receiver;
pub mod server;

pub use directory::*;
pub use server::{Reply, Server};

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// The configuration presenced runs with by default (the built-in example, without its demo directory's
/// effect on tests), with `overrides` applied as `--set KEY=VALUE` would apply them.
pub fn settings(overrides: &[&str]) -> presenced::Config {
    let overrides: Vec<String> = overrides.iter().map(|text| (*text).to_owned()).collect();
    presenced::Config::load(None, std::iter::empty(), &overrides).expect("a valid configuration")
}

/// A test CA and a certificate it issued for 127.0.0.1 and localhost, as a server's TLS configuration.
pub struct TlsIdentity {
    /// The CA certificate, DER and PEM.
    pub ca_der: Vec<u8>,
    pub ca_pem: String,
    /// The CA certificate in a file (`ca.pem` in `dir`), for settings that name one.
    pub ca_file: std::path::PathBuf,
    pub server_config: std::sync::Arc<rustls::ServerConfig>,
    pub dir: tempfile::TempDir,
}

impl TlsIdentity {
    /// A new CA and certificate.
    #[allow(clippy::new_without_default)] // Each call makes new keys: not a default.
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "presenced test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file, ca_file) =
            (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
        std::fs::write(&cert_file, leaf.pem()).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let server_config = presence_api::tls::server_config(&cert_file, &key_file).unwrap();
        TlsIdentity { ca_der: ca.der().to_vec(), ca_pem: ca.pem(), ca_file, server_config, dir }
    }
}
