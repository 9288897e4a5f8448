//! The live presence board: a page served at `/board` that lists a tenant's users with their presence, and
//! the stream of presence changes it listens to, `/board/events` (server-sent events).
//!
//! The page reads through the Graph API like any client (`GET /users`, `getPresencesByUserId`) with the
//! token its user signs in with; the stream takes the same token and permission as reading many presences,
//! and carries each visible change of the caller's tenant (writes and timer-driven fades and expiries) as
//! the presence JSON a GET would return.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::{self, Stream};
use presence_auth::{authorize, Operation, Target};
use presence_core::Presence;
use presence_store::UserKey;
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::wire::PresenceJson;
use crate::AppState;

/// Changes buffered for slow listeners; a listener that falls further behind is told to reload.
const FEED_CAPACITY: usize = 4096;

/// One user's presence after a change.
#[derive(Debug)]
pub(crate) struct Changed {
    key: UserKey,
    presence: Presence,
}

/// Every visible change, as it becomes durable, for the board's listeners.
pub(crate) struct Feed {
    sender: broadcast::Sender<Arc<Changed>>,
}

impl Feed {
    pub(crate) fn new() -> Self {
        Feed { sender: broadcast::channel(FEED_CAPACITY).0 }
    }

    /// Whether anyone listens (so that writers skip collecting changes when no one does).
    pub(crate) fn is_watched(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Sends the latest presence of each changed user.
    pub(crate) fn publish(&self, changes: impl IntoIterator<Item = (UserKey, Presence)>) {
        for (key, presence) in changes {
            // No listener is not an error: the change is simply not shown anywhere.
            let _ = self.sender.send(Arc::new(Changed { key, presence }));
        }
    }
}

/// The page: plain HTML, CSS and JavaScript, served from the binary.
pub(crate) async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.inner.config.board {
        return Err(ApiError::NotFound);
    }
    let mut response = Html(include_str!("board.html")).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"),
    );
    Ok(response)
}

/// The stream of the caller's tenant's presence changes: `presence` events carrying the presence JSON,
/// and `resync` when changes were missed (the page then reloads every presence).
pub(crate) async fn events(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !state.inner.config.board {
        return Err(ApiError::NotFound);
    }
    let caller = crate::handlers::authenticate(&state, &headers)?;
    authorize(&caller, Operation::ReadManyPresences, Target::Many)?;
    let receiver = state.inner.feed.sender.subscribe();
    let stopping = state.inner.stopping.subscribe();
    let tenant = caller.tenant_id.clone();
    let events = stream::unfold((receiver, stopping, tenant), |(mut receiver, mut stopping, tenant)| async move {
        loop {
            let received = tokio::select! {
                received = receiver.recv() => received,
                // The server is shutting down: end the stream, so the drain does not wait for it.
                _ = stopping.wait_for(|stopping| *stopping) => return None,
            };
            let event = match received {
                Ok(changed) if changed.key.tenant_id == tenant => {
                    let json = PresenceJson::known(&changed.key.user_id, changed.presence.clone(), false, None);
                    let data = serde_json::to_string(&json).unwrap_or_default();
                    Event::default().event("presence").data(data)
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok::<_, Infallible>(event), (receiver, stopping, tenant)));
        }
    });
    Ok(sse(events))
}

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
