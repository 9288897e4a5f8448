//! Reading a request: its body (bounded in size and time), its content type, its JSON object, and its
//! query options.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::BodyLimits;

/// Reads the whole body, at most `limits.max_bytes` within `limits.read_timeout`.
pub(crate) async fn read_body(limits: BodyLimits, body: Body) -> Result<Bytes, ApiError> {
    let read = tokio::time::timeout(limits.read_timeout, axum::body::to_bytes(body, limits.max_bytes))
        .await
        .map_err(|_| ApiError::RequestTimeout(limits.read_timeout.as_secs()))?;
    read.map_err(|error| {
        let too_large =
            std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(limits.max_bytes)
        } else {
            ApiError::BadRequest("The request body could not be read.".into())
        }
    })
}

/// The request's Content-Type, if it is readable text.
pub(crate) fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok())
}

/// True when the Content-Type's media type is `application/json` (parameters such as charset allowed).
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"))
}

/// The body as a JSON object. An empty body (no bytes) is `{}` unless `needs_parameters`.
///
/// `content_type` is the request's Content-Type; a non-empty body must be `application/json` and a JSON
/// object (whitespace alone is not).
pub(crate) fn json_object(
    content_type: Option<&str>,
    body: &[u8],
    needs_parameters: bool,
) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return if needs_parameters { Err(ApiError::EmptyPayload) } else { Ok(Map::new()) };
    }
    if !is_json(content_type) {
        return Err(ApiError::InvalidJson);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ApiError::BadRequest("The request body must be a JSON object.".into())),
        Err(_) => Err(ApiError::InvalidJson),
    }
}

/// A query option by name, ignoring case (`$filter`, `$select`, ...).
pub(crate) fn query_option<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}
