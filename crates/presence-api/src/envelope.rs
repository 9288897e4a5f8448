//! Request ids on every response, and the Graph error envelope on every error.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorInfo;

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

pub(crate) async fn envelope(mut request: Request, next: Next) -> Response {
    let ids = RequestIds::new(request.headers().get(&CLIENT_REQUEST_ID).and_then(|value| value.to_str().ok()));
    request.extensions_mut().insert(ids.clone());
    let mut response = next.run(request).await;
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
