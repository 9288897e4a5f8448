//! The floor for the HTTP load benchmark: the work any server of these requests cannot avoid, on the same
//! tokio/axum/hyper stack and connection loop as presenced, and nothing else. Each request's bearer token
//! is verified (RS256, by presenced's own verifier: once, then from its cache), its body parsed with serde
//! into the shapes presenced accepts, and its answer serialised per request with serde, of the shape and
//! size presenced gives (an Offline presence for every id asked for). No store, no presence logic, no
//! locks of its own. Whatever presenced costs beyond this server is the cost of presenced itself.
//!
//! `floor --config presenced.toml --listen 127.0.0.1:9090` (see `bench/http-load.sh`): the configuration
//! gives the directory, the issuer and the signing key (in the data directory) tokens are checked against.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use presence_auth::{SigningKey, Verifier};
use serde::{Deserialize, Serialize};

/// The allocator presenced uses: the floor runs on the same stack.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ODATA_JSON: &str = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false";

#[derive(Clone)]
struct Floor {
    verifier: Verifier,
    public_url: Arc<str>,
}

/// A setPresence body, as presenced accepts it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "parsed as presenced parses it, not used")]
struct SetPresence {
    session_id: String,
    availability: String,
    activity: String,
    expiration_duration: Option<String>,
}

/// A getPresencesByUserId body.
#[derive(Deserialize)]
struct Ids {
    ids: Vec<String>,
}

/// `microsoft.graph.presence`, as presenced writes an untouched user's (no status message: no property).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Presence<'a> {
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    context: Option<String>,
    id: &'a str,
    availability: &'static str,
    activity: &'static str,
    out_of_office_settings: OutOfOffice,
    sequence_number: &'static str,
    work_location: WorkLocation,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutOfOffice {
    message: Option<()>,
    is_out_of_office: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkLocation {
    work_location_type: &'static str,
    source: &'static str,
    place_id: Option<()>,
}

#[derive(Serialize)]
struct Collection<'a> {
    #[serde(rename = "@odata.context")]
    context: String,
    value: Vec<Presence<'a>>,
}

fn offline(id: &str, context: Option<String>) -> Presence<'_> {
    Presence {
        context,
        id,
        availability: "Offline",
        activity: "Offline",
        out_of_office_settings: OutOfOffice { message: None, is_out_of_office: false },
        sequence_number: "00000000000000000000",
        work_location: WorkLocation { work_location_type: "unspecified", source: "none", place_id: None },
    }
}

impl Floor {
    /// Whether the request carries a token the verifier accepts.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        token.is_some_and(|token| self.verifier.verify(token).is_ok())
    }
}

fn json(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, ODATA_JSON)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn get_presence(State(floor): State<Floor>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if !floor.admits(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let context = format!("{}/v1.0/$metadata#users('{id}')/presence/$entity", floor.public_url);
    json(&offline(&id, Some(context)))
}

async fn set_presence(State(floor): State<Floor>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !floor.admits(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<SetPresence>(&body) {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn get_many(State(floor): State<Floor>, headers: HeaderMap, body: Bytes) -> Response {
    if !floor.admits(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(ids) = serde_json::from_slice::<Ids>(&body) else { return StatusCode::BAD_REQUEST.into_response() };
    json(&Collection {
        context: format!("{}/v1.0/$metadata#Collection(microsoft.graph.presence)", floor.public_url),
        value: ids.ids.iter().map(|id| offline(id, None)).collect(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut config) = ("127.0.0.1:9090".to_owned(), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDRESS"),
            "--config" => config = Some(PathBuf::from(args.next().expect("--config FILE"))),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let config = presenced::Config::load(config.as_deref(), std::iter::empty(), &[])?;
    let key = SigningKey::load_or_create_file(&config.signing_key_path())?;
    let verifier = Verifier::new(&key, &config.issuer_base(), Arc::new(config.directory()?));
    let floor = Floor { verifier, public_url: config.public_url().into() };
    let router = Router::new()
        .route("/v1.0/users/{id}/presence", get(get_presence))
        .route("/v1.0/users/{id}/presence/setPresence", post(set_presence))
        .route("/v1.0/communications/getPresencesByUserId", post(get_many))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("floor listening on {}", listener.local_addr()?);
    presence_api::serve(listener, router, config.connection_limits(), None, std::future::pending()).await;
    Ok(())
}
