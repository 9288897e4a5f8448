//! Request ids on every response, and the Graph error envelope on every error.

use axum::body::Body;
use axum::extract::Request;
use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::error::ErrorInfo;
use crate::route::RouteLabel;
use crate::state::AppState;

/// The ids of one request: ours, and the client's (or ours again when the client sent none).
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    pub(crate) request_id: String,
    pub(crate) client_request_id: String,
}

impl RequestIds {
    /// A fresh request id, with the client's id when it is usable.
    pub(crate) fn new(client_request_id: Option<&str>) -> Self {
        let request_id = uuid::Uuid::new_v4().to_string();
        let client_request_id = client_request_id
            .filter(|value| !value.is_empty() && value.len() <= MAX_CLIENT_REQUEST_ID)
            .map_or_else(|| request_id.clone(), str::to_owned);
        RequestIds { request_id, client_request_id }
    }
}

/// Graph's error envelope.
pub(crate) fn error_json(code: &str, message: &str, ids: &RequestIds) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": ids.request_id,
                "client-request-id": ids.client_request_id,
            }
        }
    })
}

const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("client-request-id");

/// Longest `client-request-id` echoed; a longer one (never a GUID, which Graph asks for) is replaced by the
/// request id. The request head is bounded anyway; this keeps error bodies small.
const MAX_CLIENT_REQUEST_ID: usize = 1024;

/// Gives every request its ids, a tracing span carrying the request id (so every log line of the request
/// names it), the Graph error envelope on errors, an access log line, and its metrics.
pub(crate) async fn envelope(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let ids = RequestIds::new(request.headers().get(&CLIENT_REQUEST_ID).and_then(|value| value.to_str().ok()));
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let span = tracing::info_span!("request", request_id = %ids.request_id, %method, path = %request.uri().path());
    request.extensions_mut().insert(ids.clone());
    let mut response = next.run(request).instrument(span.clone()).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map(|label| label.0)
        .or_else(|| matched.as_deref().map(route_of_path))
        .unwrap_or("unmatched");
    let status = response.status();
    let elapsed = started.elapsed();
    state.inner.metrics.request(route, status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(target: "presenced::access", route, status = status.as_u16(), elapsed_ms = elapsed.as_secs_f64() * 1000.0, "answered");
    });
    if let Some(info) = response.extensions_mut().remove::<ErrorInfo>() {
        let body = error_json(info.code, &info.message, &ids);
        *response.body_mut() = Body::from(body.to_string());
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&ids.request_id) {
        headers.insert(REQUEST_ID, value);
    }
    if let Ok(value) = HeaderValue::from_str(&ids.client_request_id) {
        headers.insert(CLIENT_REQUEST_ID, value);
    }
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-cache"));
    response
}

/// The metrics label of a route served outside the Graph dispatch.
fn route_of_path(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/board" => "board",
        "/board/events" => "board_events",
        "/board/sign-in" => "board_sign_in",
        "/discovery/v2.0/keys" => "jwks",
        "/{tenant}/oauth2/v2.0/token" => "token",
        "/openapi/{document}" => "openapi",
        "/_test/clock" | "/_test/clock/advance" => "test_clock",
        _ if path.ends_with("openid-configuration") => "openid_configuration",
        _ => "other",
    }
}
