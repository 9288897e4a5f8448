//! A real Redis Cluster for tests: 6 `redis-server` processes (3 primaries, 3 replicas, AOF fsynced on
//! every write) that `scripts/redis-cluster.sh` starts once per test binary and stops when that binary's
//! process is gone. Tests share it, each under a key prefix of its own ([`prefix`]).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::RedisConfig;

/// The cluster of this test binary (started on first use).
pub struct Cluster {
    /// Where the nodes keep their files (`N/` per node, `ports`, `urls`).
    pub dir: tempfile::TempDir,
    /// The seed URLs, one per node.
    pub urls: Vec<String>,
}

impl Cluster {
    /// The loopback ports of the nodes, node 1 first.
    pub fn ports(&self) -> Vec<u16> {
        self.urls.iter().filter_map(|url| url.rsplit(':').next()?.parse().ok()).collect()
    }

    /// The password of the ACL user `presenced` of a secure cluster.
    pub fn password(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("password"))
            .expect("a secure cluster's password")
            .trim()
            .to_owned()
    }

    /// The CA that signed a secure cluster's certificates (PEM).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("tls/ca.crt")
    }

    /// The node (1 to 6) listening on `port`.
    pub fn node_on(&self, port: u16) -> usize {
        self.ports().iter().position(|candidate| *candidate == port).expect("a port of the cluster") + 1
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, ...) to node `node`'s process.
    pub fn signal(&self, node: usize, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join(node.to_string()).join("redis.pid"))
            .expect("the node's pid file");
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.trim()).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} of node {node} failed");
    }

    /// Starts node `node` again (after it was killed), as a supervisor would: it rejoins the cluster.
    pub fn restart(&self, node: usize) {
        let status = Command::new("bash")
            .arg(script())
            .arg("restart")
            .arg(self.dir.path())
            .arg(node.to_string())
            .status()
            .expect("running scripts/redis-cluster.sh");
        assert!(status.success(), "node {node} did not start again");
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/redis-cluster.sh")
}

/// The cluster of this test binary, started by the first caller.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start(false))
}

/// A second cluster of this test binary, started by the first caller, that speaks TLS only (clients,
/// replication and bus) and takes only the ACL user `presenced` (see [`Cluster::password`],
/// [`Cluster::ca_file`]).
pub fn secure_cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| start(true))
}

fn start(secure: bool) -> Cluster {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut command = Command::new("bash");
    command.arg(script()).arg("start").arg(dir.path()).arg("--watch").arg(std::process::id().to_string());
    if secure {
        command.arg("--secure");
    }
    let output = command.output().expect("running scripts/redis-cluster.sh");
    assert!(output.status.success(), "the Redis Cluster did not start: {}", String::from_utf8_lossy(&output.stderr));
    let urls = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
    Cluster { dir, urls }
}

/// A key prefix no other caller in this process gets.
pub fn prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("t{}-{}:", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst))
}

/// The settings of a store on the cluster under a fresh prefix, durable on one replica.
pub fn config() -> RedisConfig {
    config_on(cluster())
}

fn config_on(cluster: &Cluster) -> RedisConfig {
    RedisConfig {
        urls: cluster.urls.clone(),
        username: None,
        password: None,
        ca_file: None,
        key_prefix: prefix(),
        wait_replicas: 1,
        wait_timeout: Duration::from_secs(5),
    }
}

/// The settings of a store on the secure cluster under a fresh prefix: TLS with its CA, as its ACL user.
pub fn secure_config() -> RedisConfig {
    let cluster = secure_cluster();
    RedisConfig {
        urls: cluster.urls.clone(),
        username: Some("presenced".into()),
        password: Some(cluster.password()),
        ca_file: Some(cluster.ca_file()),
        ..config_on(cluster)
    }
}
