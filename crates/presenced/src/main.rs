//! presenced: a self-hostable presence server speaking the Microsoft Graph presence API.
//!
//! The binary only parses flags, loads the configuration, and starts what the library wires (the SQLite
//! store, the engine, the HTTP layer). `presenced token` mints tokens from the same key; `presenced
//! presence` is the command-line client.

mod client;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use presence_auth::{Issuer, SigningKey, TokenRequest};
use presence_service::ManualClock;
use presence_store::{PresenceStore, SqliteStore};
use presence_store_redis::RedisStore;
use presenced::config::{self, Config};

/// mimalloc rather than the system's allocator: it gives the memory freed after parsing a large
/// configuration back to the system, where glibc's malloc kept it resident (docs/performance.md,
/// "mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "presenced", version, about = "A Microsoft Graph presence server")]
struct Cli {
    /// Configuration file (TOML); the built-in demo configuration when absent.
    #[arg(long, global = true, env = "PRESENCED_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory; overrides `data_dir` of the configuration.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Set a configuration key, overriding the file and the environment (repeatable): `--set
    /// throttle_limit=0`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    shorthands: Shorthands,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Shorthands for `--set` of common keys. They go through the same validation as every key and show in
/// `presenced config show`.
#[derive(Args)]
struct Shorthands {
    /// Address to listen on: `--set listen=...`.
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Public URL: `--set public_url=...`.
    #[arg(long, global = true)]
    public_url: Option<String>,
    /// PEM certificate chain, to serve HTTPS: `--set tls_cert_file=...`.
    #[arg(long, global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`: `--set tls_key_file=...`.
    #[arg(long, global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Enable the test clock (`/_test/clock`): `--set test_clock=true`. Never in production.
    #[arg(long, global = true)]
    test_clock: bool,
}

/// A TOML string value.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

impl Cli {
    /// The `--set` overrides, the shorthands first (so an explicit `--set` of the same key wins).
    fn overrides(&self) -> Vec<String> {
        let shorthands = &self.shorthands;
        let mut flags = Vec::new();
        if let Some(data_dir) = &self.data_dir {
            flags.push(format!("data_dir={}", toml_string(&data_dir.display().to_string())));
        }
        if let Some(listen) = shorthands.listen {
            flags.push(format!("listen={}", toml_string(&listen.to_string())));
        }
        if let Some(url) = &shorthands.public_url {
            flags.push(format!("public_url={}", toml_string(url)));
        }
        if let (Some(cert), Some(key)) = (&shorthands.tls_cert, &shorthands.tls_key) {
            flags.push(format!("tls_cert_file={}", toml_string(&cert.display().to_string())));
            flags.push(format!("tls_key_file={}", toml_string(&key.display().to_string())));
        }
        if shorthands.test_clock {
            flags.push("test_clock=true".to_owned());
        }
        flags.extend(self.set.iter().cloned());
        flags
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a signed access token for a configured tenant, application and (optionally) user.
    Token(TokenArgs),
    /// The configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Read and change presence on a server: get, set, clear, prefer, status.
    Presence(client::PresenceArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the documented example configuration (every key with its default, and a demo directory).
    Example,
    /// Print the configuration in effect: the file with the environment and flags applied.
    Show,
    /// Print a new client secret for the token endpoint, and the line that registers it with an
    /// application ([[tenants.apps]] clientSecretSha256): the configuration keeps only the hash.
    NewSecret,
    /// Print the user or application id a trust maps a claim value to (a value that is not a GUID becomes
    /// a stable GUID of that trust), for the directory's [[tenants.users]] and [[tenants.apps]].
    TrustId(TrustIdArgs),
}

#[derive(Args)]
struct TrustIdArgs {
    /// The trust's name.
    trust: String,
    /// The value of the trust's user claim (`sub` by default).
    #[arg(long, conflicts_with = "app", required_unless_present = "app")]
    user: Option<String>,
    /// The value of the trust's application claim (`azp` by default).
    #[arg(long)]
    app: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// Tenant id; default: the first configured tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Application client id or display name; default: the tenant's first application.
    #[arg(long)]
    app: Option<String>,
    /// User object id or userPrincipalName: mint a delegated token for this user. Without it, an
    /// application token.
    #[arg(long)]
    user: Option<String>,
    /// Delegated scopes, space-separated (with --user).
    #[arg(long, default_value = "Presence.Read.All Presence.ReadWrite")]
    scopes: String,
    /// Application roles, space-separated (without --user).
    #[arg(long, default_value = "Presence.ReadWrite.All")]
    roles: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    lifetime: i64,
}

impl Default for TokenArgs {
    /// An application token of the first tenant's first application, as `presenced token` gives.
    fn default() -> Self {
        TokenArgs {
            tenant: None,
            app: None,
            user: None,
            scopes: "Presence.Read.All Presence.ReadWrite".into(),
            roles: "Presence.ReadWrite.All".into(),
            lifetime: 3600,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let flags = cli.overrides();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config(ConfigCommand::Example) = command {
        print!("{}", config::example_file());
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref(), std::env::vars(), &flags)?;
    match command {
        Command::Serve => serve(config),
        Command::Token(args) => {
            println!("{}", mint(&config, &args)?);
            Ok(())
        }
        Command::Presence(args) => {
            let url = config.public_url();
            client::run(args, url, || mint(&config, &TokenArgs::default()))
        }
        Command::Config(ConfigCommand::Show) => {
            // Validated like a start (above), then shown as merged.
            let (text, _, _) = Config::effective(cli.config.as_deref(), std::env::vars(), &flags)?;
            print!("{text}");
            Ok(())
        }
        Command::Config(ConfigCommand::Example) => Ok(()),
        Command::Config(ConfigCommand::NewSecret) => {
            let (secret, hash) = presence_auth::new_client_secret();
            println!("client secret (shown once): {secret}");
            println!("clientSecretSha256 = [\"{hash}\"]");
            Ok(())
        }
        Command::Config(ConfigCommand::TrustId(args)) => {
            let trusts = config.trusts().map_err(|error| anyhow::anyhow!("invalid configuration: {error}"))?;
            let trust = trusts
                .iter()
                .find(|trust| trust.name() == args.trust)
                .ok_or_else(|| anyhow::anyhow!("no [[trust]] is named {:?}", args.trust))?;
            match (&args.user, &args.app) {
                (Some(user), _) => println!("{}", trust.user_id(user)),
                (None, Some(app)) => println!("{}", trust.app_id(app)),
                (None, None) => anyhow::bail!("--user or --app"),
            }
            Ok(())
        }
    }
}

fn open_key(config: &Config) -> anyhow::Result<SigningKey> {
    let path = config.signing_key_path();
    if let Some(directory) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        create_dir_durably(directory).with_context(|| format!("creating directory {}", directory.display()))?;
    }
    Ok(SigningKey::load_or_create_file(&path)?)
}

/// Creates `directory` and its missing parents, each one durably: a directory's name is an entry of its
/// parent, so the parent is fsynced after it (without that a power cut may forget the new data directory,
/// and the key and database in it, although their own bytes were synced).
fn create_dir_durably(directory: &Path) -> std::io::Result<()> {
    if directory.is_dir() {
        return Ok(());
    }
    let parent = directory.parent().filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durably(parent)?;
    }
    match std::fs::create_dir(directory) {
        // Created here, or by another process just now: either way the entry is synced before use.
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()
}

/// Opens the store the configuration names.
fn open_store(config: &Config) -> anyhow::Result<Arc<dyn PresenceStore>> {
    Ok(match config.store {
        config::StoreKind::Sqlite => {
            create_dir_durably(&config.data_dir)
                .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
            Arc::new(
                SqliteStore::open(&config.data_dir)
                    .with_context(|| format!("opening the store in {}", config.data_dir.display()))?,
            )
        }
        config::StoreKind::Redis => Arc::new(
            RedisStore::open(&config.redis_config())
                .with_context(|| format!("opening the Redis store at {}", config.redis_urls.join(", ")))?,
        ),
    })
}

fn serve(mut config: Config) -> anyhow::Result<()> {
    init_logs(&config)?;
    for name in &config.ignored_variables {
        tracing::warn!(variable = %name, "ignoring an environment variable that names no configuration key");
    }
    let tls = config.tls()?;
    let directory = Arc::new(config.take_directory()?);
    let key = open_key(&config)?;
    let store = open_store(&config)?;
    let test_clock = config.test_clock.then(|| {
        tracing::warn!("TEST CLOCK ENABLED: presence time stands still and /_test/clock can move it. Never use this in production.");
        Arc::new(ManualClock::new(presence_service::system_now()))
    });
    let assembled = presenced::assemble(&config, directory, store, key, test_clock.clone())?;
    let (service, state) = (assembled.service, assembled.state);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let workers = service.spawn_workers().context("loading subscriptions and queued notifications")?;
        if let Some(clock) = test_clock {
            follow_test_clock(service.clone(), clock);
        }
        // With several processes on the store, throttling budgets are the deployment's.
        tokio::spawn(presence_api::share_throttling(state.clone()));
        // The trusted providers' keys: fetched now, then every trust_refresh_minutes.
        tokio::spawn(presence_api::keep_trust_keys_fresh(
            state.clone(),
            std::time::Duration::from_secs(config.trust_refresh_minutes * 60),
        ));
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let address = listener.local_addr()?;
        let public = config.public_url();
        // The banner is for people; JSON logs are for machines, and stay one object a line.
        if config.log_format == config::LogFormat::Human {
            let data = match config.store {
                config::StoreKind::Sqlite => config.data_dir.display().to_string(),
                config::StoreKind::Redis => format!("the Redis Cluster at {}", config.redis_urls.join(", ")),
            };
            println!("presenced listening on {address}, reachable as {public} (data in {data})");
            println!("Graph API: {public}/v1.0 and {public}/beta");
            if config.board {
                println!("Presence board: {public}/board");
            }
            println!("Get a token:  cargo run --release -- token            (application, Presence.ReadWrite.All)");
            println!("              cargo run --release -- token --user adele@contoso.example   (delegated)");
        }
        tracing::info!(%address, "listening");
        let signal = {
            let state = state.clone();
            async move {
                shutdown_signal().await;
                tracing::info!("shutting down: draining requests");
                state.begin_shutdown();
            }
        };
        presence_api::serve(listener, presence_api::router(state), config.connection_limits(), tls, signal).await;
        service.shutdown(workers).await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Keeps this process's test clock with the one its store shares with other processes (a Redis
/// Cluster): it starts at the shared instant, and follows any other process that moves it, within a tenth
/// of a second. A store serving one process shares nothing, and the follower stops.
fn follow_test_clock(service: Arc<presence_service::Service>, clock: Arc<ManualClock>) {
    tokio::spawn(async move {
        loop {
            match service.share_test_clock(clock.clone()).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(error) => tracing::warn!(%error, "test clock: the shared instant could not be read"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });
}

/// Logs to standard output: human-readable or one JSON object a line, at `log_level` (`RUST_LOG`, when
/// set, wins). Each line of a request carries its request id (the `request` span).
fn init_logs(config: &Config) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => tracing_subscriber::EnvFilter::try_new(&directives)
            .map_err(|error| anyhow::anyhow!("invalid RUST_LOG {directives:?}: {error}"))?,
        Err(_) => config.log_filter()?,
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        config::LogFormat::Human => logs.init(),
        config::LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}

/// A token signed by the local issuer (the key in the data directory).
fn mint(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    let directory = config.directory()?;
    let tenant = match &args.tenant {
        Some(id) => directory.tenant(id).with_context(|| format!("tenant '{id}' is not configured"))?,
        None => {
            config.tenants.first().and_then(|tenant| directory.tenant(&tenant.id)).context("no tenant is configured")?
        }
    };
    let app = match &args.app {
        Some(wanted) => tenant
            .apps
            .iter()
            .find(|app| app.id.eq_ignore_ascii_case(wanted) || app.display_name.eq_ignore_ascii_case(wanted))
            .with_context(|| format!("application '{wanted}' is not registered in tenant {}", tenant.id))?,
        None => tenant.apps.first().with_context(|| format!("tenant {} has no application", tenant.id))?,
    };
    let user = match &args.user {
        Some(wanted) => Some(
            directory
                .user_by_id_or_upn(&tenant.id, wanted)
                .with_context(|| format!("user '{wanted}' is not in tenant {}", tenant.id))?,
        ),
        None => None,
    };
    let permissions = if user.is_some() { &args.scopes } else { &args.roles };
    let issued_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let issuer = Issuer::new(open_key(config)?, &config.issuer_base());
    let token = issuer.mint(&TokenRequest {
        tenant_id: tenant.id.clone(),
        app_id: app.id.clone(),
        user_id: user.map(|user| user.id()),
        permissions: permissions.split_whitespace().map(str::to_owned).collect(),
        issued_at,
        lifetime_seconds: args.lifetime,
    });
    Ok(token)
}
