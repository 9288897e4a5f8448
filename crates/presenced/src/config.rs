//! The configuration: one documented struct, read from a TOML file, overridden by `PRESENCED_*`
//! environment variables, overridden by command-line flags, and validated at start-up.
//!
//! Every key is listed once, in [`SETTINGS`], with its default and its documentation. The example file
//! (`presenced config example`, checked in as `presenced.example.toml`, and the built-in default
//! configuration) is generated from that list, and a missing key takes the default from it, so the
//! documentation and the behaviour cannot drift.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use presence_api::{ApiConfig, ConnectionLimits, DocumentSource, ThrottleConfig, TrustKeys};
use presence_auth::{Directory, Tenant, Trust, TrustConfig};
use presence_notify::subscription::SubscriptionLimits;
use presence_notify::target::TargetPolicy;
use presence_service::ServiceConfig;
use serde::Deserialize;

/// One configuration key.
pub struct Setting {
    /// The key, in the file; `PRESENCED_` and the key in upper case in the environment.
    pub key: &'static str,
    /// The default as a TOML value; `None` when unset by default.
    pub default: Option<&'static str>,
    /// For a key unset by default, a value shown (commented out) in the example file.
    pub example: Option<&'static str>,
    /// The documentation: comment lines written above the key in the example file.
    pub doc: &'static str,
}

const fn set(key: &'static str, default: &'static str, doc: &'static str) -> Setting {
    Setting { key, default: Some(default), example: None, doc }
}

const fn unset(key: &'static str, example: &'static str, doc: &'static str) -> Setting {
    Setting { key, default: None, example: Some(example), doc }
}

/// Every configuration key, in the order of the example file.
pub const SETTINGS: &[Setting] = &[
    set("listen", "\"127.0.0.1:8080\"", "Address and port to listen on."),
    set(
        "data_dir",
        "\"presenced-data\"",
        "Directory holding all state: the SQLite database and the token-signing key. Created if missing.",
    ),
    set(
        "store",
        "\"sqlite\"",
        "Where presence, subscriptions and queued notifications live: \"sqlite\" (a database file in data_dir,\n\
         for one process) or \"redis\" (a Redis Cluster shared by any number of presenced nodes; see redis_urls).",
    ),
    unset(
        "signing_key_file",
        "\"/etc/presenced/signing-key.pem\"",
        "The token-signing key (PKCS#8 PEM), created if missing. Default: signing-key.pem in data_dir. Nodes\n\
         sharing a Redis store must share the key, so that a token one node issued is accepted by all.",
    ),
    set(
        "redis_urls",
        "[]",
        "Redis Cluster seed nodes, for store = \"redis\": [\"redis://host:port\", ...], or rediss:// for TLS\n\
         (with the system's roots, or redis_ca_file's). The cluster must run with appendonly yes and\n\
         appendfsync always (see the README's deployment guide).",
    ),
    unset("redis_username", "\"presenced\"", "The Redis ACL user and password, if the cluster requires them."),
    unset("redis_password", "\"secret\"", ""),
    unset("redis_ca_file", "\"/etc/presenced/redis-ca.pem\"", "Extra root certificates (PEM) for rediss:// nodes."),
    set(
        "redis_key_prefix",
        "\"pd:\"",
        "The prefix of every key presenced writes, so that several deployments can share a cluster.",
    ),
    set(
        "redis_wait_replicas",
        "1",
        "Durability of a write on Redis: it is acknowledged once its primary has it in its AOF and this many\n\
         replicas have it too (WAIT), within redis_wait_timeout_ms; else the request fails with 503 and\n\
         Retry-After. 0 acknowledges on the primary's AOF alone (a failover may lose the last writes).",
    ),
    set("redis_wait_timeout_ms", "1000", ""),
    set(
        "trust_refresh_minutes",
        "60",
        "How often the keys of the trusted identity providers ([[trust]] below) are fetched again. A token\n\
         naming a key not held also makes them be fetched (at most every 30 s); an unreachable provider\n\
         leaves the last good keys in place.",
    ),
    unset(
        "tls_cert_file",
        "\"/etc/presenced/cert.pem\"",
        "TLS: a PEM certificate chain and a PEM private key. With both set the server speaks HTTPS only (HTTP/2\n\
         and HTTP/1.1); without them, plain HTTP. (`--tls-cert`, `--tls-key`.)",
    ),
    unset("tls_key_file", "\"/etc/presenced/key.pem\"", ""),
    unset(
        "public_url",
        "\"http://127.0.0.1:8080\"",
        "The URL clients use to reach this server (used in @odata.context and the OpenID metadata).\n\
         Default: http://{listen}, or https://{listen} with TLS.",
    ),
    set(
        "issuer",
        "\"https://login.presenced.local\"",
        "Base of the token issuer: tokens carry iss = \"{issuer}/{tenant id}/v2.0\", the way Entra ID's carry\n\
         \"https://login.microsoftonline.com/{tenant id}/v2.0\". It names the issuer, it is not fetched, so it does\n\
         not change with the listening address: `presenced token` and the server agree whatever port is used.",
    ),
    set("max_body_bytes", "262144", "Largest request body accepted, in bytes."),
    set(
        "max_connections",
        "4096",
        "Connection limits: most connections served at once (more wait to be accepted), time to send a complete\n\
         HTTP/1 request head, time without a byte read or written before a connection is closed (a silent client,\n\
         an idle keep-alive or HTTP/2 connection, a client that stops reading), largest request head in bytes\n\
         (larger gets 431), time to send the body once the head arrived (slower gets 408), and how long in-flight\n\
         requests may take to finish at shutdown.",
    ),
    set("header_read_timeout_seconds", "30", ""),
    set("idle_timeout_seconds", "60", ""),
    set("max_header_bytes", "65536", ""),
    set("body_read_timeout_seconds", "30", ""),
    set("drain_timeout_seconds", "10", ""),
    set(
        "throttle_limit",
        "10000",
        "Throttling of presence operations, per application and tenant (Graph: 10,000 requests per 30 seconds).\n\
         Over the limit a request gets 429 with Retry-After. 0 disables throttling.",
    ),
    set("throttle_window_seconds", "30", ""),
    set(
        "subscription_max_lifetime_minutes",
        "60",
        "Change notifications (POST /subscriptions). Longest lifetime a subscription may ask for, in minutes: Graph\n\
         allows 60 for presence; more is this server's extension.",
    ),
    set(
        "notification_allow_http",
        "false",
        "Where notifications may go. By default only https:// URLs on public addresses: no plain HTTP, and no\n\
         loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local, CGNAT or other internal address,\n\
         also when a public-looking name resolves to one. Allow them only for local development.",
    ),
    set("notification_allow_internal", "false", ""),
    unset(
        "notification_ca_file",
        "\"/etc/presenced/webhook-ca.pem\"",
        "A PEM file of extra root certificates to trust for notification endpoints (beside the system's roots),\n\
         e.g. a local development CA.",
    ),
    set(
        "notification_timeout_seconds",
        "3",
        "A subscriber has notification_timeout_seconds to answer a notification with 2xx (Graph: 3) and\n\
         validation_timeout_seconds to answer the validation handshake (Graph: 10). Undelivered notifications are\n\
         retried (10 s, 30 s, 1, 2, 5 minutes, then every 10 minutes) for notification_retry_minutes (Graph: 4\n\
         hours), then dropped with a `missed` lifecycle event.",
    ),
    set("validation_timeout_seconds", "10", ""),
    set("notification_retry_minutes", "240", ""),
    set(
        "max_subscriptions_per_app",
        "1000",
        "Bounds per subscriber: subscriptions per application and tenant, and notifications queued per subscription\n\
         (beyond it the queue is dropped with a `missed` lifecycle event). Notifications per POST, and POSTs in\n\
         flight at once.",
    ),
    set("max_queued_notifications", "10000", ""),
    set("notification_batch_size", "100", ""),
    set("max_concurrent_deliveries", "64", ""),
    set(
        "log_format",
        "\"human\"",
        "Logs go to standard output: \"human\" (readable lines) or \"json\" (one JSON object a line). Every line\n\
         of a request carries its request id. log_level is a tracing filter: a level (error, warn, info, debug,\n\
         trace) or directives such as \"info,presenced::access=warn\" (presenced::access is the line per request).\n\
         RUST_LOG, when set, wins over log_level.",
    ),
    set("log_level", "\"info\"", ""),
    set(
        "metrics",
        "true",
        "Serve Prometheus metrics (OpenMetrics text) at /metrics. /healthz (the process is up) and /readyz (the\n\
         store answers and recovery is done) are always served.",
    ),
    set(
        "board",
        "true",
        "Serve the live presence board at /board: a page listing a tenant's users with their presence, updated as\n\
         it changes. It signs in with a token and reads through the same API and permissions as any client.",
    ),
    set(
        "test_clock",
        "false",
        "Serve /_test/clock and drive presence time from a clock that only moves when told to. Never in production.",
    ),
];

/// The start of the example file.
const EXAMPLE_HEADER: &str = "\
# presenced configuration, as printed by `presenced config example`. It is also the built-in default:
# `presenced` uses it when no --config is given. Copy it, edit it, and pass it with `--config FILE`.
# Every key may be left out (it then takes the value shown here), set in the environment as PRESENCED_ and
# the key in upper case (PRESENCED_LISTEN=0.0.0.0:8080), or set on the command line with --set KEY=VALUE.
# The command line wins over the environment, which wins over the file.
";

/// The demo directory of the example file.
const EXAMPLE_TENANTS: &str = include_str!("demo-tenants.toml");

/// The documented example file: every key with its default, and the demo directory.
pub fn example_file() -> String {
    let mut text = EXAMPLE_HEADER.to_owned();
    for setting in SETTINGS {
        if !setting.doc.is_empty() {
            text.push('\n');
            for line in setting.doc.lines() {
                let _ = writeln!(text, "# {}", line.trim_start());
            }
        }
        match (setting.default, setting.example) {
            (Some(default), _) => {
                let _ = writeln!(text, "{} = {default}", setting.key);
            }
            (None, example) => {
                let _ = writeln!(text, "# {} = {}", setting.key, example.unwrap_or("\"\""));
            }
        }
    }
    text.push('\n');
    text.push_str(EXAMPLE_TRUSTS);
    text.push('\n');
    text.push_str(EXAMPLE_TENANTS);
    text
}

/// The commented-out `[[trust]]` examples of the example file.
const EXAMPLE_TRUSTS: &str = "\
# Trusted identity providers: their tokens are accepted beside the local issuer's (see the README's
# \"Trusted identity providers\"). Entra ID, for tenants configured below:
# [[trust]]
# name = \"contoso-entra\"
# kind = \"entra\"
# versions = [\"2.0\"]                      # \"1.0\" also accepts https://sts.windows.net/{tid}/ tokens
# audiences = [\"api://presence.contoso.com\", \"8d6f0c1e-0000-4000-8000-000000000001\"]
# tenants = [\"5f1d3c2a-7b6e-4d8f-9a01-23456789abcd\"]
#
# Any OpenID Connect provider (Keycloak, Okta, Auth0, Dex), for one tenant:
# [[trust]]
# name = \"keycloak\"
# kind = \"oidc\"
# issuer = \"https://sso.example.org/realms/staff\"   # exact; the discovery document must agree
# audiences = [\"presenced\"]
# tenant = \"5f1d3c2a-7b6e-4d8f-9a01-23456789abcd\"
# user_claim = \"sub\"                        # not a GUID: mapped to one (presenced trust-id)
# app_claim = \"azp\"
# scope_claim = \"scope\"
# role_claim = \"realm_access.roles\"         # a dotted path into the claims
# app_only_claim = \"client_id\"              # present: the application's own token
# ca_file = \"/etc/presenced/sso-ca.pem\"      # more roots for the provider's HTTPS
# algorithms = [\"RS256\"]
# max_lifetime_minutes = 1440
# users = \"auto\"                            # add users its tokens name (default \"listed\": configured only)
# board_client_id = \"presence-board\"        # the board signs in through it (a public client)
# [trust.permissions]                       # optional: the provider's names -> Graph's
# \"presence:read\" = \"Presence.Read\"
";

/// Everything presenced reads from its configuration. [`SETTINGS`] documents each key and gives its
/// default; the loader fills those in before this is deserialised, so no default is repeated here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // Each key is documented once, in SETTINGS (and so in the example file).
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: StoreKind,
    pub signing_key_file: Option<PathBuf>,
    pub redis_urls: Vec<String>,
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    pub redis_ca_file: Option<PathBuf>,
    pub redis_key_prefix: String,
    pub redis_wait_replicas: u32,
    pub redis_wait_timeout_ms: u64,
    pub trust_refresh_minutes: u64,
    pub public_url: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub issuer: String,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout_seconds: u64,
    pub max_header_bytes: usize,
    pub body_read_timeout_seconds: u64,
    pub idle_timeout_seconds: u64,
    pub drain_timeout_seconds: u64,
    pub throttle_limit: u32,
    pub throttle_window_seconds: u64,
    pub test_clock: bool,
    pub subscription_max_lifetime_minutes: u64,
    pub notification_allow_http: bool,
    pub notification_allow_internal: bool,
    pub notification_ca_file: Option<PathBuf>,
    pub notification_timeout_seconds: u64,
    pub validation_timeout_seconds: u64,
    pub notification_retry_minutes: u64,
    pub max_subscriptions_per_app: usize,
    pub max_queued_notifications: usize,
    pub notification_batch_size: usize,
    pub max_concurrent_deliveries: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub metrics: bool,
    pub board: bool,
    /// `PRESENCED_*` environment variables that name no key: reported at start-up.
    #[serde(skip)]
    pub ignored_variables: Vec<String>,
    /// Tenants with their users and apps.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// Trusted identity providers (`[[trust]]`), whose tokens are accepted beside the local issuer's.
    #[serde(default)]
    pub trust: Vec<TrustConfig>,
}

/// Which backend keeps the state.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// One SQLite file in the data directory, for one process.
    Sqlite,
    /// A Redis Cluster, shared by several processes.
    Redis,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object a line.
    Json,
}

/// An override's value: TOML when it parses as a TOML value (`8080`, `true`, `"x"`), else the text itself.
fn override_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("value = {raw}"))
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Fills in the defaults of keys `table` lacks, then applies the `PRESENCED_*` variables of `environment`
/// and the `KEY=VALUE` overrides of `flags`; returns the variables that name no key.
fn merge(
    table: &mut toml::Table,
    environment: impl IntoIterator<Item = (String, String)>,
    flags: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut ignored = Vec::new();
    for setting in SETTINGS {
        if let Some(default) = setting.default {
            if !table.contains_key(setting.key) {
                table.insert(setting.key.to_owned(), override_value(default));
            }
        }
    }
    for (name, raw) in environment {
        let Some(key) = name.strip_prefix("PRESENCED_") else { continue };
        if ENVIRONMENT_FLAGS.contains(&name.as_str()) {
            continue;
        }
        let key = key.to_ascii_lowercase();
        if raw.is_empty() {
            // Set but empty (`PRESENCED_PUBLIC_URL=`) is taken as unset, as shells and unit files mean it.
            continue;
        }
        if setting(&key).is_none() {
            // The environment is shared with other tools (test harnesses set PRESENCED_BIN): an unknown
            // variable is reported at start-up, not refused.
            ignored.push(name);
            continue;
        }
        table.insert(key, override_value(&raw));
    }
    for flag in flags {
        let Some((key, raw)) = flag.split_once('=') else {
            anyhow::bail!("invalid configuration: --set {flag}: expected KEY=VALUE");
        };
        let key = key.trim();
        if setting(key).is_none() {
            anyhow::bail!("invalid configuration: --set {flag}: {key} is not a configuration key");
        }
        table.insert(key.to_owned(), override_value(raw.trim()));
    }
    Ok(ignored)
}

/// Where a configuration came from, once the environment and the flags are merged into it.
fn applied(origin: &str) -> String {
    format!("{origin} with PRESENCED_* variables and --set flags applied")
}

/// The configuration's text and where it came from.
fn read_text(path: Option<&Path>) -> anyhow::Result<(String, String)> {
    Ok(match path {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("reading configuration {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (example_file(), "the built-in default configuration".to_owned()),
    })
}

fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

/// Environment variables that are not configuration keys: the file, and the command-line client's URL and
/// token.
const ENVIRONMENT_FLAGS: [&str; 3] = ["PRESENCED_CONFIG", "PRESENCED_URL", "PRESENCED_TOKEN"];

impl Config {
    /// Reads `path` (the built-in default when `None`), fills in the defaults of missing keys, applies the
    /// `PRESENCED_*` variables of `environment` and then the `KEY=VALUE` overrides of `flags`, and
    /// validates the result. Every error names the key and the value.
    pub fn load(
        path: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> anyhow::Result<Self> {
        let environment: Vec<(String, String)> = environment.into_iter().collect();
        let (text, origin) = read_text(path)?;
        // The fast way: the tenants (the directory, nearly all of a large file) are deserialised from
        // the parsed document directly, which holds borrowed strings, and only the small rest goes
        // through the table the overrides are merged into. A `toml::Table` of 1,000,000 users took
        // about 5.4 s to build, and this 3.0 s. Only a configuration that this cannot read is read again
        // the slow way, for an error that quotes the offending line.
        let (mut config, ignored, origin) = match Self::read_fast(&text, environment.clone(), flags) {
            Ok((config, ignored)) => (config, ignored, applied(&origin)),
            Err(_) => {
                // The configuration in effect as text, parsed as a whole: its error quotes the line.
                let (merged, origin, ignored) = Self::merged(&text, origin, environment, flags)?;
                let effective = toml::to_string(&merged).context("re-encoding the configuration")?;
                let config = toml::from_str(&effective).with_context(|| format!("invalid configuration ({origin})"))?;
                (config, ignored, origin)
            }
        };
        config.validate(&origin)?;
        config.ignored_variables = ignored;
        Ok(config)
    }

    /// The configuration in effect, as TOML (`presenced config show`), where it came from, and the
    /// `PRESENCED_*` variables that name no key (ignored).
    pub fn effective(
        path: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> anyhow::Result<(String, String, Vec<String>)> {
        let (table, origin, ignored) = Self::effective_table(path, environment, flags)?;
        Ok((toml::to_string(&table).context("re-encoding the configuration")?, origin, ignored))
    }

    /// [`Config::effective`] as the merged table.
    fn effective_table(
        path: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> anyhow::Result<(toml::Table, String, Vec<String>)> {
        let (text, origin) = read_text(path)?;
        Self::merged(&text, origin, environment, flags)
    }

    /// `text` parsed and merged with the defaults, `environment` and `flags`.
    fn merged(
        text: &str,
        origin: String,
        environment: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> anyhow::Result<(toml::Table, String, Vec<String>)> {
        let mut table: toml::Table =
            toml::from_str(text).with_context(|| format!("invalid configuration in {origin}"))?;
        let ignored = merge(&mut table, environment, flags)?;
        Ok((table, applied(&origin), ignored))
    }

    /// The configuration read from `text` with its tenants deserialised from the parsed document, or
    /// an error without detail (the caller reads the text again for one).
    fn read_fast(
        text: &str,
        environment: impl IntoIterator<Item = (String, String)>,
        flags: &[String],
    ) -> anyhow::Result<(Self, Vec<String>)> {
        /// The one key read from the parsed document directly.
        #[derive(Deserialize)]
        struct Tenants {
            tenants: Vec<Tenant>,
        }
        let mut document = toml::de::DeTable::parse(text)?;
        let span = document.span();
        let tenants = document.get_mut().remove("tenants");
        let mut table = toml::Table::deserialize(toml::de::Deserializer::from(document))?;
        let ignored = merge(&mut table, environment, flags)?;
        let mut config: Self = table.try_into()?;
        if let Some(tenants) = tenants {
            let mut only = toml::de::DeTable::new();
            only.insert(toml::Spanned::new(0..0, "tenants".into()), tenants);
            config.tenants =
                Tenants::deserialize(toml::de::Deserializer::from(toml::Spanned::new(span, only)))?.tenants;
        }
        Ok((config, ignored))
    }

    /// Checks the ranges of numeric keys.
    fn validate(&self, origin: &str) -> anyhow::Result<()> {
        let config = self;
        self.log_filter()?;
        if !(1024..=64 * 1024 * 1024).contains(&config.max_body_bytes) {
            anyhow::bail!(
                "invalid configuration in {origin}: max_body_bytes = {} must be between 1024 and 67108864",
                config.max_body_bytes
            );
        }
        let ranges: [(&str, u64, u64, u64); 16] = [
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
            ("trust_refresh_minutes", config.trust_refresh_minutes, 1, 1_440),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                anyhow::bail!("invalid configuration in {origin}: {key} = {value} must be between {min} and {max}");
            }
        }
        self.trusts().map_err(|error| anyhow::anyhow!("invalid configuration in {origin}: {error}"))?;
        self.validate_redis(origin)
    }

    /// The trusts, validated against the tenants; names are unique.
    pub fn trusts(&self) -> Result<Vec<Trust>, String> {
        let mut names = std::collections::HashSet::new();
        let tenants: std::collections::HashSet<String> =
            self.tenants.iter().map(|tenant| tenant.id.to_ascii_lowercase()).collect();
        self.trust
            .iter()
            .map(|config| {
                if !names.insert(config.name.clone()) {
                    return Err(format!("trust {:?}: another trust has that name", config.name));
                }
                Trust::new(config.clone(), |tenant| tenants.contains(tenant))
            })
            .collect()
    }

    /// The trusts with their documents' fetchers (each trusting its `ca_file`), when there are any.
    pub fn trust_keys(&self) -> anyhow::Result<Option<Arc<TrustKeys>>> {
        let trusts = self.trusts().map_err(|error| anyhow::anyhow!("invalid configuration: {error}"))?;
        if trusts.is_empty() {
            return Ok(None);
        }
        let mut with_sources = Vec::new();
        for trust in trusts {
            let roots = match &trust.config.ca_file {
                Some(path) => {
                    <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_file_iter(path)
                        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                        .map_err(|error| {
                            anyhow::anyhow!("trust {:?}: ca_file {}: {error}", trust.name(), path.display())
                        })?
                }
                None => Vec::new(),
            };
            let documents = crate::documents::HttpsDocuments::new(roots)
                .map_err(|error| anyhow::anyhow!("trust {:?}: {error}", trust.name()))?;
            with_sources.push((Arc::new(trust), Arc::new(documents) as Arc<dyn DocumentSource>));
        }
        Ok(Some(Arc::new(TrustKeys::new(with_sources))))
    }

    fn validate_redis(&self, origin: &str) -> anyhow::Result<()> {
        if self.store == StoreKind::Redis && self.redis_urls.is_empty() {
            anyhow::bail!(
                "invalid configuration in {origin}: store = \"redis\" needs redis_urls (the cluster's seed nodes)"
            );
        }
        for url in &self.redis_urls {
            let parsed = url::Url::parse(url)
                .map_err(|error| anyhow::anyhow!("invalid configuration in {origin}: redis_urls: {url:?}: {error}"))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host_str().is_none() {
                anyhow::bail!(
                    "invalid configuration in {origin}: redis_urls: {url:?} must be redis://host:port or rediss://host:port"
                );
            }
        }
        if self.redis_ca_file.is_some() && !self.redis_urls.iter().all(|url| url.starts_with("rediss://")) {
            anyhow::bail!("invalid configuration in {origin}: redis_ca_file is for rediss:// URLs only");
        }
        if self.redis_key_prefix.contains(['{', '}']) {
            anyhow::bail!(
                "invalid configuration in {origin}: redis_key_prefix = {:?} must not contain '{{' or '}}' (hash tags)",
                self.redis_key_prefix
            );
        }
        if !(1..=60_000).contains(&self.redis_wait_timeout_ms) {
            anyhow::bail!(
                "invalid configuration in {origin}: redis_wait_timeout_ms = {} must be between 1 and 60000",
                self.redis_wait_timeout_ms
            );
        }
        Ok(())
    }

    /// Where the token-signing key is kept.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file.clone().unwrap_or_else(|| self.data_dir.join(presence_auth::KEY_FILE))
    }

    /// The Redis backend's settings.
    pub fn redis_config(&self) -> presence_store_redis::RedisConfig {
        presence_store_redis::RedisConfig {
            urls: self.redis_urls.clone(),
            username: self.redis_username.clone(),
            password: self.redis_password.clone(),
            ca_file: self.redis_ca_file.clone(),
            key_prefix: self.redis_key_prefix.clone(),
            wait_replicas: self.redis_wait_replicas,
            wait_timeout: Duration::from_millis(self.redis_wait_timeout_ms),
        }
    }

    /// The log filter of `log_level`.
    pub fn log_filter(&self) -> anyhow::Result<tracing_subscriber::EnvFilter> {
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|error| anyhow::anyhow!("invalid configuration: log_level = {:?}: {error}", self.log_level))
    }

    /// The engine's settings.
    pub fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            limits: SubscriptionLimits {
                max_lifetime: Duration::from_secs(self.subscription_max_lifetime_minutes * 60),
                targets: self.target_policy(),
            },
            delivery_timeout: Duration::from_secs(self.notification_timeout_seconds),
            validation_timeout: Duration::from_secs(self.validation_timeout_seconds),
            retry_window: Duration::from_secs(self.notification_retry_minutes * 60),
            max_subscriptions_per_app: self.max_subscriptions_per_app,
            max_queued_per_subscription: self.max_queued_notifications,
            max_batch: self.notification_batch_size,
            max_concurrent_deliveries: self.max_concurrent_deliveries,
        }
    }

    /// Where notifications may go.
    pub fn target_policy(&self) -> TargetPolicy {
        TargetPolicy { allow_http: self.notification_allow_http, allow_internal: self.notification_allow_internal }
    }

    /// The extra root certificates (DER) of `notification_ca_file`.
    pub fn notification_roots(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        use rustls::pki_types::pem::PemObject;
        let Some(path) = &self.notification_ca_file else {
            return Ok(Vec::new());
        };
        Ok(rustls::pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .map_err(|error| anyhow::anyhow!("notification_ca_file {}: {error}", path.display()))?
            .into_iter()
            .map(|certificate| certificate.to_vec())
            .collect())
    }

    /// The HTTP layer's settings (the trusted providers' fetchers made).
    pub fn api_config(&self) -> anyhow::Result<ApiConfig> {
        Ok(ApiConfig {
            public_url: self.public_url(),
            issuer_base: self.issuer_base(),
            max_body_bytes: self.max_body_bytes,
            body_read_timeout: Duration::from_secs(self.body_read_timeout_seconds),
            throttle: ThrottleConfig {
                limit: self.throttle_limit,
                window: Duration::from_secs(self.throttle_window_seconds),
            },
            metrics: self.metrics,
            board: self.board,
            trust_keys: self.trust_keys()?,
        })
    }

    /// The connection loop's limits.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            max_header_bytes: self.max_header_bytes,
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            drain_timeout: Duration::from_secs(self.drain_timeout_seconds),
        }
    }

    /// The public URL, defaulting to `http://{listen}` (`https://` with TLS).
    pub fn public_url(&self) -> String {
        let scheme = if self.tls_cert_file.is_some() { "https" } else { "http" };
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The TLS configuration, when both files are configured.
    pub fn tls(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(presence_api::tls::server_config(cert, key)?)),
            _ => anyhow::bail!("invalid configuration: tls_cert_file and tls_key_file must be set together"),
        }
    }

    /// The issuer base, without a trailing slash.
    pub fn issuer_base(&self) -> String {
        self.issuer.trim_end_matches('/').to_owned()
    }

    /// The directory, validated.
    pub fn directory(&self) -> anyhow::Result<Directory> {
        Directory::new(self.tenants.clone()).context("invalid configuration: tenants")
    }

    /// The directory, validated, with the users moved into it: the configuration keeps its tenants and
    /// apps but no longer their users, which a server would otherwise hold twice for as long as it runs
    /// (about 200 bytes a user).
    pub fn take_directory(&mut self) -> anyhow::Result<Directory> {
        let tenants = self
            .tenants
            .iter_mut()
            .map(|tenant| {
                let users = std::mem::take(&mut tenant.users);
                Tenant { users, ..tenant.clone() }
            })
            .collect();
        Directory::new(tenants).context("invalid configuration: tenants")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_overrides() -> Vec<(String, String)> {
        Vec::new()
    }

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("presenced.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn error_of(result: anyhow::Result<Config>) -> String {
        format!("{:#}", result.unwrap_err())
    }

    #[test]
    fn the_default_configuration_is_valid() {
        let config = Config::load(None, no_overrides(), &[]).unwrap();
        assert_eq!(config.public_url(), "http://127.0.0.1:8080");
        assert_eq!(config.issuer_base(), "https://login.presenced.local");
        assert!(!config.test_clock);
        let directory = config.directory().unwrap();
        assert_eq!(directory.tenants().count(), 1);
    }

    #[test]
    fn the_served_directory_takes_the_users_and_leaves_tenants_and_apps() {
        let tenant = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
        let user = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";
        let app = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
        let (_dir, path) = write(&format!(
            "[[tenants]]\nid = \"{tenant}\"\ndisplayName = \"C\"\n\
             [[tenants.users]]\nid = \"{user}\"\nuserPrincipalName = \"adele@c.example\"\ndisplayName = \"Adele\"\n\
             [[tenants.apps]]\nid = \"{app}\"\ndisplayName = \"App\"\n"
        ));
        let mut config = Config::load(Some(&path), no_overrides(), &[]).unwrap();
        let directory = config.take_directory().unwrap();
        assert_eq!(directory.user_by_id(tenant, user).map(|user| user.display_name), Some("Adele"));
        assert!(directory.app(tenant, app).is_some());
        assert!(config.tenants[0].users.is_empty(), "the users moved, not copied");
        assert_eq!((config.tenants[0].id.as_str(), config.tenants[0].apps.len()), (tenant, 1), "the rest stays");
    }

    #[test]
    fn a_trust_is_validated_at_load_and_named_in_the_error() {
        let tenant = "[[tenants]]\nid = \"5f1d3c2a-7b6e-4d8f-9a01-23456789abcd\"\ndisplayName = \"C\"\n";
        let trust = |audience: &str, tenant_id: &str| {
            format!(
                "{tenant}[[trust]]\nname = \"entra\"\nkind = \"entra\"\naudiences = [\"{audience}\"]\ntenants = [\"{tenant_id}\"]\n"
            )
        };
        let (_dir, path) = write(&trust("api://presence", "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd"));
        assert_eq!(Config::load(Some(&path), no_overrides(), &[]).unwrap().trusts().unwrap().len(), 1);
        let (_dir, path) = write(&trust("https://graph.microsoft.com", "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd"));
        let error = error_of(Config::load(Some(&path), no_overrides(), &[]));
        assert!(error.contains("trust \"entra\"") && error.contains("Graph"), "{error}");
        let (_dir, path) = write(&trust("api://presence", "11111111-1111-4111-8111-111111111111"));
        let error = error_of(Config::load(Some(&path), no_overrides(), &[]));
        assert!(error.contains("not a configured tenant"), "{error}");
        let twice = format!(
            "{}{}",
            trust("api://a", "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd"),
            &trust("api://b", "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd")[tenant.len()..]
        );
        let (_dir, path) = write(&twice);
        let error = error_of(Config::load(Some(&path), no_overrides(), &[]));
        assert!(error.contains("another trust has that name"), "{error}");
    }

    #[test]
    fn the_checked_in_example_is_the_generated_one() {
        let checked_in = include_str!("../../../presenced.example.toml");
        assert!(
            checked_in == example_file(),
            "presenced.example.toml is stale: regenerate it with `cargo run -- config example > presenced.example.toml`"
        );
    }

    /// The README's trust examples are a valid configuration, and the Keycloak realm in docs/ is the one
    /// its `keycloak` trust describes: realm, audience, permission names, the board's public client.
    #[test]
    fn the_readme_s_trusts_are_valid_and_the_keycloak_realm_fits_its_trust() {
        #[derive(Deserialize)]
        struct Trusts {
            trust: Vec<TrustConfig>,
        }
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("\n```").next())
            .find(|block| block.contains("name = \"keycloak\""))
            .expect("the README's trust examples");
        let trusts: Trusts = toml::from_str(block).unwrap();
        let tenant = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";
        for trust in &trusts.trust {
            Trust::new(trust.clone(), |known| known == tenant).unwrap();
        }
        let keycloak = trusts.trust.iter().find(|trust| trust.name == "keycloak").unwrap();

        let realm: serde_json::Value = serde_json::from_str(include_str!("../../../docs/keycloak-realm.json")).unwrap();
        let issuer = keycloak.issuer.as_deref().unwrap();
        assert!(issuer.ends_with(&format!("/realms/{}", realm["realm"].as_str().unwrap())), "{issuer}");
        let list = |value: &serde_json::Value| -> Vec<String> {
            value.as_array().map_or_else(Vec::new, |items| {
                items.iter().filter_map(|item| item.as_str().map(str::to_owned)).collect()
            })
        };
        let scopes = realm["clientScopes"].as_array().unwrap();
        let audiences: Vec<&str> = scopes
            .iter()
            .flat_map(|scope| scope["protocolMappers"].as_array().into_iter().flatten())
            .filter(|mapper| mapper["protocolMapper"] == "oidc-audience-mapper")
            .filter_map(|mapper| mapper["config"]["included.custom.audience"].as_str())
            .collect();
        assert!(audiences.iter().all(|audience| keycloak.audiences.iter().any(|ours| ours == audience)));
        assert!(!audiences.is_empty(), "an audience mapper puts presenced's audience in the tokens");
        let scope_names: Vec<&str> = scopes.iter().filter_map(|scope| scope["name"].as_str()).collect();
        let roles: Vec<&str> =
            realm["roles"]["realm"].as_array().unwrap().iter().filter_map(|role| role["name"].as_str()).collect();
        for name in keycloak.permissions.as_ref().unwrap().keys() {
            assert!(scope_names.contains(&name.as_str()) || roles.contains(&name.as_str()), "{name} is in the realm");
        }
        let client = |id: &str| {
            realm["clients"].as_array().unwrap().iter().find(|client| client["clientId"] == id).cloned().unwrap()
        };
        let board = client(keycloak.board_client_id.as_deref().unwrap());
        assert_eq!(board["publicClient"], true);
        assert_eq!(board["standardFlowEnabled"], true);
        assert_eq!(board["attributes"]["pkce.code.challenge.method"], "S256");
        assert!(list(&board["redirectUris"]).iter().all(|uri| uri.ends_with("/board")));
        let granted = list(&board["defaultClientScopes"]);
        for scope in keycloak.board_scopes.iter().filter(|scope| *scope != "openid") {
            assert!(granted.contains(scope), "the board's client may ask for {scope}");
        }
        assert!(granted.iter().any(|scope| scope == "presenced-audience"), "the board's tokens are for presenced");
        let app = client("presence-app");
        assert_eq!(app["serviceAccountsEnabled"], true);
        // Every scope a client names is defined in the realm (an import that defines client scopes gets no
        // built-in ones), and the scopes give the claims the trust reads.
        let mappers_of = |client: &serde_json::Value| -> Vec<serde_json::Value> {
            let mut named = list(&client["defaultClientScopes"]);
            named.extend(list(&client["optionalClientScopes"]));
            named
                .iter()
                .flat_map(|name| {
                    let scope = scopes.iter().find(|scope| scope["name"] == name.as_str());
                    assert!(scope.is_some(), "{} names the undefined client scope {name}", client["clientId"]);
                    scope.unwrap()["protocolMappers"].as_array().cloned().unwrap_or_default()
                })
                .collect()
        };
        let claim = |mappers: &[serde_json::Value], kind: &str| -> Vec<String> {
            mappers
                .iter()
                .filter(|mapper| mapper["protocolMapper"] == kind)
                .map(|mapper| mapper["config"]["claim.name"].as_str().unwrap_or("sub").to_owned())
                .collect()
        };
        let board_mappers = mappers_of(&board);
        assert_eq!(claim(&board_mappers, "oidc-sub-mapper"), ["sub"], "the board's users have a sub");
        let app_mappers = mappers_of(&app);
        assert_eq!(claim(&app_mappers, "oidc-sub-mapper"), ["sub"]);
        assert_eq!(
            claim(&app_mappers, "oidc-usermodel-realm-role-mapper"),
            [keycloak.role_claim.clone().unwrap()],
            "realm roles where the trust reads them"
        );
        assert_eq!(
            claim(&app_mappers, "oidc-usersessionmodel-note-mapper"),
            [keycloak.app_only_claim.clone().unwrap()],
            "a service account's tokens carry the trust's app_only_claim"
        );
        let service_account = realm["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|user| user["serviceAccountClientId"] == "presence-app")
            .unwrap();
        assert!(list(&service_account["realmRoles"]).iter().any(|role| role == "presence-admin"));
    }

    #[test]
    fn every_key_is_documented_and_every_default_is_valid() {
        let readme = include_str!("../../../README.md");
        for setting in SETTINGS {
            assert!(example_file().contains(&format!("{} = ", setting.key)), "{}", setting.key);
            assert!(
                readme.contains(&format!("| `{}`", setting.key)) || readme.contains(&format!(", `{}` |", setting.key)),
                "README's configuration table lacks {}",
                setting.key
            );
        }
        let (_dir, path) = write("");
        let config = Config::load(Some(&path), no_overrides(), &[]).unwrap();
        assert_eq!(config.max_body_bytes, 262_144);
        assert_eq!(config.notification_batch_size, 100);
        assert!(config.tenants.is_empty(), "a file without tenants has none");
    }

    #[test]
    fn the_environment_overrides_the_file_and_flags_override_the_environment() {
        let (_dir, path) = write("listen = \"127.0.0.1:1000\"\nthrottle_limit = 5\nmax_body_bytes = 4096\n");
        let environment = vec![
            ("PRESENCED_LISTEN".to_owned(), "0.0.0.0:2000".to_owned()),
            ("PRESENCED_THROTTLE_LIMIT".to_owned(), "7".to_owned()),
            ("PRESENCED_CONFIG".to_owned(), "ignored: it names the file".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let flags = ["throttle_limit=9".to_owned(), "test_clock = true".to_owned()];
        let environment =
            environment.into_iter().chain([("PRESENCED_PUBLIC_URL".to_owned(), String::new())]).collect::<Vec<_>>();
        let config = Config::load(Some(&path), environment, &flags).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:2000", "environment over file");
        assert_eq!(config.throttle_limit, 9, "flag over environment");
        assert_eq!(config.max_body_bytes, 4096, "file over default");
        assert!(config.test_clock);
        assert_eq!(config.public_url, None, "an empty variable is unset");
    }

    #[test]
    fn bad_keys_and_values_are_named_wherever_they_come_from() {
        let (_dir, path) = write("listen = \"127.0.0.1:1\"\nlisen = 3\n");
        assert!(error_of(Config::load(Some(&path), no_overrides(), &[])).contains("lisen"));
        let (_dir, path) = write("max_header_bytes = 10\n");
        assert!(error_of(Config::load(Some(&path), no_overrides(), &[])).contains("max_header_bytes = 10"));
        // A bad user is read again as text, so its error quotes the line too.
        let (_dir, path) = write(
            "[[tenants]]\nid = \"t\"\ndisplayName = \"C\"\n[[tenants.users]]\nid = \"u\"\ndisplayNam = \"Adele\"\n",
        );
        let error = error_of(Config::load(Some(&path), no_overrides(), &[]));
        assert!(error.contains("unknown field `displayNam`") && error.contains("| displayNam = \"Adele\""), "{error}");
        let (_dir, path) = write("");
        let bad_type = vec![("PRESENCED_MAX_BODY_BYTES".to_owned(), "lots".to_owned())];
        let error = error_of(Config::load(Some(&path), bad_type, &[]));
        assert!(error.contains("max_body_bytes") && error.contains("lots"), "{error}");
        let unknown = vec![("PRESENCED_LISEN".to_owned(), "x".to_owned())];
        let config = Config::load(Some(&path), unknown, &[]).unwrap();
        assert_eq!(config.ignored_variables, ["PRESENCED_LISEN"], "reported at start-up, not applied");
        let error = error_of(Config::load(Some(&path), no_overrides(), &["lisen=1".to_owned()]));
        assert!(error.contains("lisen"), "{error}");
        let error = error_of(Config::load(Some(&path), no_overrides(), &["listen".to_owned()]));
        assert!(error.contains("KEY=VALUE"), "{error}");
        let error = error_of(Config::load(Some(&path), no_overrides(), &["listen=nowhere".to_owned()]));
        assert!(error.contains("listen") && error.contains("nowhere"), "{error}");
        let error = error_of(Config::load(Some(&path), no_overrides(), &["log_format=xml".to_owned()]));
        assert!(error.contains("log_format") && error.contains("xml"), "{error}");
        let error = error_of(Config::load(Some(&path), no_overrides(), &["log_level=info,[".to_owned()]));
        assert!(error.contains("log_level"), "{error}");
    }

    #[test]
    fn redis_settings_are_checked_before_anything_connects() {
        let load = |flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(|flag| (*flag).to_owned()).collect();
            Config::load(None, no_overrides(), &flags)
        };
        let error = error_of(load(&["store=redis"]));
        assert!(error.contains("redis_urls"), "{error}");
        let error = error_of(load(&["store=redis", r#"redis_urls=["http://127.0.0.1:7000"]"#]));
        assert!(error.contains("http://127.0.0.1:7000"), "{error}");
        let error = error_of(load(&["store=redis", r#"redis_urls=["redis://"]"#]));
        assert!(error.contains("redis_urls"), "{error}");
        let error =
            error_of(load(&["store=redis", r#"redis_urls=["redis://127.0.0.1:7000"]"#, "redis_key_prefix=\"a{b}\""]));
        assert!(error.contains("redis_key_prefix"), "{error}");
        let error = error_of(load(&[r#"redis_urls=["redis://127.0.0.1:7000"]"#, "redis_ca_file=\"/etc/ca.pem\""]));
        assert!(error.contains("redis_ca_file"), "{error}");
        let error = error_of(load(&["redis_wait_timeout_ms=0"]));
        assert!(error.contains("redis_wait_timeout_ms"), "{error}");
        let error = error_of(load(&["store=postgres"]));
        assert!(error.contains("store") && error.contains("postgres"), "{error}");
        let config = load(&[
            "store=redis",
            r#"redis_urls=["rediss://cache.example.org:6380"]"#,
            "redis_ca_file=\"/etc/ca.pem\"",
        ])
        .unwrap();
        assert_eq!(config.store, StoreKind::Redis);
        let redis = config.redis_config();
        assert_eq!((redis.key_prefix.as_str(), redis.wait_replicas), ("pd:", 1));
        assert_eq!(redis.wait_timeout, Duration::from_secs(1));
        assert_eq!(config.signing_key_path(), config.data_dir.join("signing-key.pem"));
    }
}
