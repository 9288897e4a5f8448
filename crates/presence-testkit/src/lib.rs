//! What the tests and benchmarks of presenced share, so that no suite keeps a copy of its own:
//! - [`directory`]: the test tenants, users and applications, the signing key, and token minting;
//! - [`settings`]: the configuration users get by default, with overrides, from the binary's one settings
//!   table;
//! - [`server`]: a real router over a real engine and SQLite store in a temporary directory, in process;
//! - [`receiver`]: a real HTTPS webhook receiver with its own test CA;
//! - [`binary`]: starting the real `presenced` binary and calling it over HTTP;
//! - [`deployment`]: several real binaries on one real Redis Cluster;
//! - [`free_port`].
//!
//! Test support only: nothing here ships.

#![allow(missing_docs, unreachable_pub)]

pub mod binary;
pub mod deployment;
pub mod directory;
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
