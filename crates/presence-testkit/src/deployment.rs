//! Several real `presenced` processes on one real Redis Cluster (the test binary's, from
//! `presence_store_redis::testing`): one configuration file, one key prefix, one signing key, a data
//! directory per node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Method;
use presence_store_redis::testing;
use serde_json::{json, Value};

use crate::binary::{self, Running};
use crate::APP;

/// Nodes sharing one configuration file.
pub struct Deployment {
    binary: PathBuf,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    /// The key prefix of the deployment in the cluster.
    pub prefix: String,
}

impl Deployment {
    /// A deployment of `binary` on the test cluster under a fresh prefix; subscriber endpoints are
    /// trusted with `webhook_ca` (PEM) when given; with `test_clock`, every node's presence clock is a
    /// test clock (shared through the cluster), and subscriptions may live a day.
    pub fn new(binary: &Path, webhook_ca: Option<&str>, test_clock: bool) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let prefix = testing::prefix();
        let urls: Vec<String> = testing::cluster().urls.iter().map(|url| format!("{url:?}")).collect();
        let mut config = include_str!("../../../presenced.example.toml")
            .replace("store = \"sqlite\"", "store = \"redis\"")
            .replace("redis_urls = []", &format!("redis_urls = [{}]", urls.join(", ")))
            .replace("redis_key_prefix = \"pd:\"", &format!("redis_key_prefix = {prefix:?}"))
            .replace(
                "# signing_key_file = \"/etc/presenced/signing-key.pem\"",
                &format!("signing_key_file = {:?}", dir.path().join("signing-key.pem").to_str().unwrap()),
            );
        if let Some(ca) = webhook_ca {
            config = crate::receiver::trusting_receivers(&config, ca, dir.path());
        }
        if test_clock {
            config = config
                .replace("test_clock = false", "test_clock = true")
                .replace("subscription_max_lifetime_minutes = 60", "subscription_max_lifetime_minutes = 1440");
        }
        let path = dir.path().join("presenced.toml");
        std::fs::write(&path, config).unwrap();
        Deployment { binary: binary.to_owned(), dir, config: path, prefix }
    }

    fn global(&self, node: usize) -> Vec<String> {
        let data = self.dir.path().join(format!("node-{node}"));
        vec![
            "--config".into(),
            self.config.to_str().unwrap().into(),
            "--data-dir".into(),
            data.to_str().unwrap().into(),
        ]
    }

    /// Starts node `node` (its own data directory) and waits until it accepts connections.
    pub fn start(&self, node: usize) -> Running {
        self.start_with(node, &[])
    }

    /// [`Deployment::start`] with more global arguments (`--set KEY=VALUE`).
    pub fn start_with(&self, node: usize, extra: &[&str]) -> Running {
        let mut global = self.global(node);
        global.extend(extra.iter().map(|argument| (*argument).to_owned()));
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        binary::start(&self.binary, &global, Duration::from_secs(60))
    }

    /// A token minted on node `node`'s machine (`presenced token`).
    pub fn token(&self, node: usize, extra: &[&str]) -> String {
        let global = self.global(node);
        let global: Vec<&str> = global.iter().map(String::as_str).collect();
        binary::token(&self.binary, &global, extra)
    }

    /// The primaries' ports holding a key of this deployment that matches `pattern` (after the prefix).
    pub fn primaries_holding(&self, pattern: &str) -> Vec<u16> {
        testing::cluster()
            .ports()
            .into_iter()
            .filter(|port| {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
                let Ok(mut connection) = client.get_connection() else { return false };
                let Ok(role) = redis::cmd("ROLE").query::<Vec<redis::Value>>(&mut connection) else { return false };
                let primary = matches!(role.first(), Some(redis::Value::BulkString(role)) if role == b"master");
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}{pattern}", self.prefix))
                    .query(&mut connection)
                    .unwrap_or_default();
                primary && !keys.is_empty()
            })
            .collect()
    }
}

/// Calls `node` with a bearer token (unless empty) and a JSON body.
pub async fn call(node: &Running, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    binary::call(&binary::client(), &node.base, method, path, token, body.unwrap_or(Value::Null)).await
}

/// Sets `user`'s presence through the demo app's session for an hour on `node`: the status, or 0 when
/// the server did not answer.
pub async fn set_presence(node: &Running, token: &str, user: &str, availability: &str, activity: &str) -> u16 {
    let body =
        json!({ "sessionId": APP, "availability": availability, "activity": activity, "expirationDuration": "PT1H" });
    let path = format!("/v1.0/users/{user}/presence/setPresence");
    let Some((status, answer)) =
        binary::try_call(&binary::client(), &node.base, Method::POST, &path, token, body).await
    else {
        return 0;
    };
    assert!(status != 400, "{availability}/{activity}: {answer}");
    status
}
