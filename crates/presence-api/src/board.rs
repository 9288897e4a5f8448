//! The live presence board: a page served at `/board` that lists a tenant's users with their presence, and
//! the stream of presence changes it listens to, `/board/events` (server-sent events).
//!
//! The page reads through the Graph API like any client (`GET /users`, `getPresencesByUserId`) with the
//! token its user signs in with; the stream takes the same token and permission as reading many presences,
//! and carries each visible change of the caller's tenant (writes and timer-driven fades and expiries) as
//! the presence JSON a GET would return.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::{self, Stream};
use presence_auth::{authorize, Operation, Target};
use presence_service::ChangeFeed;
use tokio::sync::broadcast;

use crate::auth::{authenticate, bearer_token};
use crate::error::ApiError;
use crate::state::AppState;
use crate::trust::BoardSignIn;
use crate::wire::PresenceJson;

/// Streams one application of a tenant may hold open at once; more get `429`.
const MAX_STREAMS_PER_APP: usize = 64;

/// How often an open stream checks that its token is still accepted (it also ends when the token expires).
const TOKEN_CHECK: Duration = Duration::from_secs(30);

/// One open stream, counted in the state's open streams until dropped.
struct StreamSlot {
    state: AppState,
    owner: (String, String),
}

impl StreamSlot {
    /// Counts a new stream of `owner`, unless it has [`MAX_STREAMS_PER_APP`] already.
    fn open(state: &AppState, owner: (String, String)) -> Option<StreamSlot> {
        let mut streams = state.inner.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = streams.entry(owner.clone()).or_default();
        if *open >= MAX_STREAMS_PER_APP {
            return None;
        }
        *open += 1;
        Some(StreamSlot { state: state.clone(), owner })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.state.inner.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(open) = streams.get_mut(&self.owner) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.owner);
            }
        }
    }
}

/// The providers the board signs in with, when trusts name a board client.
fn sign_ins(state: &AppState) -> Vec<BoardSignIn> {
    state.inner.trust_keys.as_ref().map(|keys| keys.board_sign_ins()).unwrap_or_default()
}

/// The page: plain HTML, CSS and JavaScript, served from the binary. It may connect to this server and to
/// the token endpoints of the providers it signs in with, nowhere else.
pub(crate) async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.inner.serve_board {
        return Err(ApiError::NotFound);
    }
    let mut connect = vec!["'self'".to_owned()];
    connect.extend(state.inner.trust_keys.as_ref().map(|keys| keys.board_origins()).unwrap_or_default());
    let policy = format!(
        "default-src 'self'; connect-src {}; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        connect.join(" ")
    );
    let mut response = Html(include_str!("board.html")).into_response();
    let policy = HeaderValue::from_str(&policy).map_err(|error| ApiError::Internal(error.to_string()))?;
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, policy);
    Ok(response)
}

/// The providers the page offers to sign in with: `{"providers": [...]}`, each with its endpoints, the
/// board's client id and the scopes to ask for (none without trusts that name a board client).
pub(crate) async fn sign_in(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.inner.serve_board {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(serde_json::json!({ "providers": sign_ins(&state) })).into_response())
}

/// The stream of the caller's tenant's presence changes: `ready` first, then `presence` events carrying the
/// presence JSON a GET returns, and `resync` when changes were missed (the page then reloads every presence). It ends when the
/// token expires and when the server shuts down.
pub(crate) async fn events(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !state.inner.serve_board {
        return Err(ApiError::NotFound);
    }
    let caller = authenticate(&state, &headers).await?;
    authorize(&caller, Operation::ReadManyPresences, Target::Many)?;
    let token = bearer_token(&headers)?.to_owned();
    let (_, refused_from) = state.inner.verifier.verify_until(&token)?;
    let slot = StreamSlot::open(&state, (caller.tenant_id.clone(), caller.app_id.clone()))
        .ok_or(ApiError::Throttled(TOKEN_CHECK.as_secs()))?;
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let lifetime = Duration::from_secs(u64::try_from(refused_from).unwrap_or(0)).saturating_sub(since_epoch);
    let listener = Listener {
        expiry: Box::pin(tokio::time::sleep(lifetime)),
        receiver: state.service().follow_changes(),
        stopping: state.inner.stopping.subscribe(),
        check: tokio::time::interval_at(tokio::time::Instant::now() + TOKEN_CHECK, TOKEN_CHECK),
        state,
        caller,
        token,
        greeted: false,
        _slot: slot,
    };
    Ok(sse(stream::unfold(listener, |mut listener| async move {
        let event = listener.next().await?;
        Some((Ok::<_, Infallible>(event), listener))
    })))
}

/// The state of one open stream.
struct Listener {
    receiver: ChangeFeed,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Ends the stream when its token is no longer accepted.
    expiry: Pin<Box<tokio::time::Sleep>>,
    /// Ends it earlier if the token is refused before (its trust's key was withdrawn).
    check: tokio::time::Interval,
    state: AppState,
    caller: presence_auth::Caller,
    token: String,
    /// Whether the first event (`ready`) was sent: it gets the response's head to the client at once.
    greeted: bool,
    _slot: StreamSlot,
}

impl Listener {
    /// The next event to send, or `None` to end the stream.
    async fn next(&mut self) -> Option<Event> {
        if !self.greeted {
            self.greeted = true;
            return Some(Event::default().event("ready").data("{}"));
        }
        loop {
            let received = tokio::select! {
                received = self.receiver.recv() => received,
                // The server is shutting down: end the stream, so the drain does not wait for it.
                _ = self.stopping.wait_for(|stopping| *stopping) => return None,
                () = &mut self.expiry => return None,
                _ = self.check.tick() => {
                    if self.state.inner.verifier.verify(&self.token).is_err() {
                        return None;
                    }
                    continue;
                }
            };
            match received {
                Ok(key) if key.tenant_id == self.caller.tenant_id => {
                    // The presence now, read like a GET (the change may be superseded already: fine).
                    let Ok(presence) = self.state.service().read((*key).clone()).await else {
                        continue;
                    };
                    let json = PresenceJson::known(&key.user_id, presence, false, None);
                    return Some(Event::default().event("presence").data(serde_json::to_string(&json).ok()?));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some(Event::default().event("resync").data("{}"))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
