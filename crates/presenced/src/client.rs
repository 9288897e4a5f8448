//! `presenced presence ...`: a command-line client of the presence API, against any presenced (or Graph)
//! URL. It takes a token, or mints one from the local issuer (the configuration's data directory), and
//! prints readable output, or the JSON answers with `--json`.

use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args)]
pub(crate) struct PresenceArgs {
    /// Server URL; default: the configuration's public URL.
    #[arg(long, env = "PRESENCED_URL")]
    url: Option<String>,
    /// Bearer token; default: an application token (Presence.ReadWrite.All) minted from the local issuer.
    #[arg(long, env = "PRESENCED_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of extra root certificates to trust (a server with a self-signed certificate).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Print the server's JSON answers instead of readable output.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    action: PresenceAction,
}

#[derive(Subcommand)]
enum PresenceAction {
    /// Show a user's presence.
    Get {
        /// User object id or userPrincipalName.
        user: String,
    },
    /// Set the presence of a session (setPresence).
    Set {
        /// User object id or userPrincipalName.
        user: String,
        /// Availability, e.g. Available, Busy, DoNotDisturb, Away.
        availability: String,
        /// Activity, e.g. Available, InACall, InAConferenceCall, Presenting, Away.
        activity: String,
        /// Session id; default: the token's application id.
        #[arg(long)]
        session: Option<String>,
        /// How long the session lives without a refresh (ISO 8601 duration, 5 minutes to 4 hours).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Remove a session's presence (clearPresence).
    Clear {
        /// User object id or userPrincipalName.
        user: String,
        /// Session id; default: the token's application id.
        #[arg(long)]
        session: Option<String>,
    },
    /// Set the user's preferred presence (setUserPreferredPresence), or clear it with --clear.
    Prefer {
        /// User object id or userPrincipalName.
        user: String,
        /// Availability, e.g. Busy.
        #[arg(required_unless_present = "clear")]
        availability: Option<String>,
        /// Activity, e.g. Busy.
        #[arg(required_unless_present = "clear")]
        activity: Option<String>,
        /// How long the preference lasts (ISO 8601 duration); default: Graph's (1 day).
        #[arg(long)]
        expires: Option<String>,
        /// Clear the preferred presence (clearUserPreferredPresence).
        #[arg(long, conflicts_with_all = ["availability", "activity", "expires"])]
        clear: bool,
    },
    /// Set the user's status message (setStatusMessage), or clear it with --clear.
    Status {
        /// User object id or userPrincipalName.
        user: String,
        /// The message text.
        #[arg(required_unless_present = "clear")]
        message: Option<String>,
        /// When the message expires (local date and time, e.g. 2026-12-01T17:00:00).
        #[arg(long)]
        expires: Option<String>,
        /// The time zone of --expires.
        #[arg(long, default_value = "UTC", requires = "expires")]
        time_zone: String,
        /// Clear the status message.
        #[arg(long, conflicts_with_all = ["message", "expires"])]
        clear: bool,
    },
}

/// Runs the command. `default_url` and `mint` supply what `--url` and `--token` leave out.
pub(crate) fn run(
    args: PresenceArgs,
    default_url: String,
    mint: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let token = match args.token {
        Some(token) => token,
        None => mint().context("minting a token from the local issuer (or pass --token)")?,
    };
    let base = format!("{}/v1.0", args.url.unwrap_or(default_url).trim_end_matches('/'));
    let client = Client::new(base, token, args.ca_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let user = match &args.action {
            PresenceAction::Get { user }
            | PresenceAction::Set { user, .. }
            | PresenceAction::Clear { user, .. }
            | PresenceAction::Prefer { user, .. }
            | PresenceAction::Status { user, .. } => client.user_id(user).await?,
        };
        let user = segment(&user);
        let (action, body) = match args.action {
            PresenceAction::Get { .. } => (None, Value::Null),
            PresenceAction::Set { availability, activity, session, expires, .. } => {
                let mut body = json!({
                    "sessionId": session.unwrap_or_else(|| client.app_id()),
                    "availability": availability,
                    "activity": activity,
                });
                if let Some(expires) = expires {
                    body["expirationDuration"] = expires.into();
                }
                (Some("setPresence"), body)
            }
            PresenceAction::Clear { session, .. } => {
                (Some("clearPresence"), json!({ "sessionId": session.unwrap_or_else(|| client.app_id()) }))
            }
            PresenceAction::Prefer { clear: true, .. } => (Some("clearUserPreferredPresence"), json!({})),
            PresenceAction::Prefer { availability, activity, expires, .. } => {
                let mut body = json!({ "availability": availability, "activity": activity });
                if let Some(expires) = expires {
                    body["expirationDuration"] = expires.into();
                }
                (Some("setUserPreferredPresence"), body)
            }
            PresenceAction::Status { clear: true, .. } => (
                Some("setStatusMessage"),
                json!({ "statusMessage": { "message": { "content": "", "contentType": "text" } } }),
            ),
            PresenceAction::Status { message, expires, time_zone, .. } => {
                let mut status =
                    json!({ "message": { "content": message.unwrap_or_default(), "contentType": "text" } });
                if let Some(expires) = expires {
                    status["expiryDateTime"] = json!({ "dateTime": expires, "timeZone": time_zone });
                }
                (Some("setStatusMessage"), json!({ "statusMessage": status }))
            }
        };
        if let Some(action) = action {
            let answer =
                client.send(reqwest::Method::POST, &format!("/users/{user}/presence/{action}"), Some(body)).await?;
            if args.json && !answer.is_null() {
                println!("{answer:#}");
            }
        }
        let presence = client.send(reqwest::Method::GET, &format!("/users/{user}/presence"), None).await?;
        if args.json {
            println!("{presence:#}");
        } else {
            print!("{}", readable(&presence));
        }
        anyhow::Ok(())
    })
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(base: String, token: String, ca_file: Option<PathBuf>) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject as _;
        let roots = match ca_file {
            None => Vec::new(),
            Some(path) => rustls::pki_types::CertificateDer::pem_file_iter(&path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|error| anyhow::anyhow!("--ca-file {}: {error}", path.display()))?,
        };
        let tls = presence_webhook::client_config(roots).map_err(anyhow::Error::msg)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("presenced-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, base, token })
    }

    /// The application id the token was issued to (its `appid` or `azp` claim, read without verifying).
    fn app_id(&self) -> String {
        let claims = self
            .token
            .split('.')
            .nth(1)
            .and_then(|payload| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok())
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .unwrap_or(Value::Null);
        claims["appid"].as_str().or_else(|| claims["azp"].as_str()).unwrap_or_default().to_owned()
    }

    /// A user's object id: the argument when it is one, else looked up by userPrincipalName.
    async fn user_id(&self, user: &str) -> anyhow::Result<String> {
        if presence_auth::is_guid(user) {
            return Ok(user.to_owned());
        }
        let found = self.send(reqwest::Method::GET, &format!("/users/{}", segment(user)), None).await?;
        found["id"].as_str().map(str::to_owned).with_context(|| format!("the server did not give {user}'s id"))
    }

    /// One request; a non-2xx answer becomes an error carrying Graph's code and message.
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let error = &value["error"];
            anyhow::bail!(
                "{status}: {} {}",
                error["code"].as_str().unwrap_or("(no code)"),
                error["message"].as_str().unwrap_or(&text)
            );
        }
        Ok(value)
    }
}

/// `text` as one URL path segment (a guest's userPrincipalName holds `#`).
fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A presence as a few aligned lines.
fn readable(presence: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    let mut lines = vec![
        ("user", text(&presence["id"])),
        ("availability", text(&presence["availability"])),
        ("activity", text(&presence["activity"])),
    ];
    let message = &presence["statusMessage"];
    if message.is_object() {
        let mut shown = format!("\"{}\"", text(&message["message"]["content"]));
        if let Some(expiry) = message["expiryDateTime"]["dateTime"].as_str() {
            shown.push_str(&format!(" until {expiry} {}", text(&message["expiryDateTime"]["timeZone"])));
        }
        lines.push(("status message", shown));
    }
    let location = &presence["workLocation"];
    if let Some(kind) = location["workLocationType"].as_str().filter(|kind| *kind != "unspecified") {
        lines.push(("work location", format!("{kind} ({})", text(&location["source"]))));
    }
    lines.push(("sequence number", text(&presence["sequenceNumber"])));
    lines.into_iter().map(|(name, value)| format!("{name:<16}{value}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_one_path_segment() {
        assert_eq!(segment("a_b.com#EXT#@t.example"), "a%5Fb%2Ecom%23EXT%23%40t%2Eexample");
    }

    #[test]
    fn a_presence_reads_as_aligned_lines() {
        let presence = json!({
            "id": "u1", "availability": "Busy", "activity": "InACall",
            "statusMessage": { "message": { "content": "On a call", "contentType": "text" },
                               "expiryDateTime": { "dateTime": "2026-12-01T17:00:00.0000000", "timeZone": "UTC" } },
            "workLocation": { "workLocationType": "office", "source": "manual", "placeId": null },
            "sequenceNumber": "00000000000000000007",
        });
        assert_eq!(
            readable(&presence),
            "user            u1\navailability    Busy\nactivity        InACall\n\
             status message  \"On a call\" until 2026-12-01T17:00:00.0000000 UTC\n\
             work location   office (manual)\nsequence number 00000000000000000007\n"
        );
    }
}
