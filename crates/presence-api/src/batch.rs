//! JSON batching (`POST /$batch`), as presence-spec.md section 8 describes.
//!
//! A batch is parsed and checked whole first (at most 20 requests, ids unique ignoring case, known and
//! acyclic `dependsOn`, a Content-Type for every body); any fault there is a `400` for the whole batch. Then
//! each inner request is sent through the same router as any other request, with the batch's bearer token,
//! so it is authenticated, authorised and throttled on its own. Each request starts as soon as its own
//! dependencies are done, independent ones concurrently; a request whose dependency failed gets `424`.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{Map, Value};
use tower::ServiceExt;

use crate::body::is_json;
use crate::envelope::{error_json, RequestIds};
use crate::error::ApiError;

/// Most requests one batch may hold.
pub const MAX_BATCH_REQUESTS: usize = 20;

/// Largest inner response body copied into the batch response.
const MAX_INNER_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// One inner request, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    /// The caller's id for the request.
    pub id: String,
    /// The method.
    pub method: Method,
    /// The URL as given.
    pub url: String,
    /// Headers given for the request.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Value>,
    /// Indices (into the batch) of the requests this one depends on.
    pub depends_on: Vec<usize>,
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// Parses and checks a batch body.
pub fn parse_batch(body: &[u8]) -> Result<Vec<BatchRequest>, ApiError> {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return Err(ApiError::InvalidJson);
    };
    let Some(Value::Array(requests)) = object.get("requests") else {
        return Err(malformed("Invalid batch payload format: 'requests' must be an array."));
    };
    if requests.is_empty() || requests.len() > MAX_BATCH_REQUESTS {
        return Err(malformed(format!(
            "The batch holds {} requests; it must hold between 1 and {MAX_BATCH_REQUESTS}.",
            requests.len()
        )));
    }
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for (index, request) in requests.iter().enumerate() {
        let id = match request.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return Err(malformed(format!("Request {index} of the batch needs a non-empty string 'id'."))),
        };
        if index_of.insert(id.to_lowercase(), index).is_some() {
            return Err(malformed(format!("The batch has more than one request with id '{id}'.")));
        }
    }
    let mut parsed = Vec::with_capacity(requests.len());
    for request in requests {
        let Value::Object(request) = request else {
            return Err(malformed("Every request of a batch must be an object."));
        };
        parsed.push(parse_request(request, &index_of)?);
    }
    check_acyclic(&parsed)?;
    Ok(parsed)
}

fn parse_request(request: &Map<String, Value>, index_of: &HashMap<String, usize>) -> Result<BatchRequest, ApiError> {
    let id = request.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let method = match request.get("method") {
        Some(Value::String(method)) => match method.to_ascii_uppercase().as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PATCH" => Method::PATCH,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            _ => return Err(malformed(format!("Request '{id}' has an unsupported method '{method}'."))),
        },
        _ => return Err(malformed(format!("Request '{id}' needs a string 'method'."))),
    };
    let url = match request.get("url") {
        Some(Value::String(url)) if !url.is_empty() => url.clone(),
        _ => return Err(malformed(format!("Request '{id}' needs a string 'url'."))),
    };
    let headers = match request.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(headers)) => headers
            .iter()
            .map(|(name, value)| match value {
                Value::String(value) => Ok((name.clone(), value.clone())),
                _ => Err(malformed(format!("Header '{name}' of request '{id}' must be a string."))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed(format!("The headers of request '{id}' must be an object."))),
    };
    let body = match request.get("body") {
        None | Some(Value::Null) => None,
        Some(body) => Some(body.clone()),
    };
    if body.is_some() && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
        return Err(malformed(format!("Request '{id}' has a body but no Content-Type header.")));
    }
    // The official Python SDK (msgraph-core) writes `depends_on`; Graph documents `dependsOn`.
    let depends_on = match request.get("dependsOn").or_else(|| request.get("depends_on")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|dependency| {
                let name =
                    dependency.as_str().ok_or_else(|| malformed(format!("dependsOn of '{id}' must list ids.")))?;
                match index_of.get(&name.to_lowercase()) {
                    Some(index) if !name.eq_ignore_ascii_case(&id) => Ok(*index),
                    _ => Err(malformed(format!(
                        "Request '{id}' depends on '{name}', which is not another request of the batch."
                    ))),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(malformed(format!("dependsOn of '{id}' must be an array."))),
    };
    Ok(BatchRequest { id, method, url, headers, body, depends_on })
}

fn check_acyclic(requests: &[BatchRequest]) -> Result<(), ApiError> {
    let mut done = vec![false; requests.len()];
    for _ in 0..requests.len() {
        let mut progressed = false;
        for (index, request) in requests.iter().enumerate() {
            if !done[index] && request.depends_on.iter().all(|dependency| done[*dependency]) {
                done[index] = true;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    if done.iter().all(|done| *done) {
        Ok(())
    } else {
        Err(malformed("The dependsOn references of the batch form a cycle."))
    }
}

/// The router path (`/v1.0/...`) an inner URL names, or why it cannot be served.
fn inner_path(url: &str, version: &str, public_url: &str) -> Result<String, String> {
    let relative = if url.starts_with("http://") || url.starts_with("https://") {
        let public = public_url.trim_end_matches('/');
        match url.get(..public.len()) {
            Some(prefix) if prefix.eq_ignore_ascii_case(public) => &url[public.len()..],
            _ => return Err(format!("The absolute URL '{url}' does not point to this server ({public}).")),
        }
    } else {
        url
    };
    let relative = relative.trim_start_matches('/');
    let first = relative.split(['/', '?']).next().unwrap_or_default();
    let path = if first.eq_ignore_ascii_case("v1.0") || first.eq_ignore_ascii_case("beta") {
        format!("/{}{}", first.to_ascii_lowercase(), &relative[first.len()..])
    } else {
        format!("/{version}/{relative}")
    };
    // The router decodes %XX and skips empty segments; so must this check.
    let first_resource = path
        .split('?')
        .next()
        .unwrap_or_default()
        .split('/')
        .filter(|segment| !segment.is_empty())
        .nth(1)
        .map(|segment| percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned());
    if first_resource.is_some_and(|segment| segment.eq_ignore_ascii_case("$batch")) {
        return Err("A batch cannot contain another batch.".into());
    }
    Ok(path)
}

struct Outcome {
    status: StatusCode,
    headers: Map<String, Value>,
    body: Option<Value>,
}

impl Outcome {
    fn succeeded(&self) -> bool {
        self.status.is_success()
    }

    fn error(status: StatusCode, code: &'static str, message: String, ids: &RequestIds) -> Self {
        let mut headers = Map::new();
        headers.insert("Content-Type".into(), Value::String("application/json".into()));
        Outcome { status, headers, body: Some(error_json(code, &message, ids)) }
    }
}

async fn run_one(router: Router, request: BatchRequest, path: String, authorization: Option<HeaderValue>) -> Outcome {
    let mut builder = Request::builder().method(request.method).uri(path.as_str());
    for (name, value) in &request.headers {
        if ["authorization", "host", "content-length"].iter().any(|skip| name.eq_ignore_ascii_case(skip)) {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(authorization) = authorization {
        builder = builder.header(header::AUTHORIZATION, authorization);
    }
    let body = match request.body {
        None => Body::empty(),
        Some(Value::String(text)) => Body::from(text),
        Some(json) => Body::from(json.to_string()),
    };
    let ids = RequestIds::new(None);
    let inner = match builder.body(body) {
        Ok(inner) => inner,
        Err(error) => {
            return Outcome::error(StatusCode::BAD_REQUEST, "BadRequest", format!("Invalid request: {error}."), &ids)
        }
    };
    let response = match router.oneshot(inner).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status();
    let mut headers = Map::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER, header::CACHE_CONTROL, header::LOCATION] {
        if let Some(value) = response.headers().get(&name).and_then(|value| value.to_str().ok()) {
            headers.insert(display_name(&name), Value::String(value.to_owned()));
        }
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let bytes = axum::body::to_bytes(response.into_body(), MAX_INNER_RESPONSE_BYTES).await.unwrap_or_default();
    let body = if bytes.is_empty() {
        None
    } else if is_json {
        serde_json::from_slice(&bytes).ok()
    } else {
        Some(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Outcome { status, headers, body }
}

fn display_name(name: &header::HeaderName) -> String {
    match name.as_str() {
        "content-type" => "Content-Type".into(),
        "retry-after" => "Retry-After".into(),
        "cache-control" => "Cache-Control".into(),
        "location" => "Location".into(),
        other => other.into(),
    }
}

/// Runs a batch through `router` (the router the batch itself came through) and renders its response;
/// absolute URLs must start with `public_url`.
pub(crate) async fn run(
    router: Router,
    public_url: &str,
    version: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(ApiError::EmptyPayload);
    }
    if !is_json(headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok())) {
        return Err(ApiError::InvalidJson);
    }
    let requests = parse_batch(body)?;
    let authorization = headers.get(header::AUTHORIZATION).cloned();
    let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|_| None).collect();
    let mut started = vec![false; requests.len()];
    let mut running = tokio::task::JoinSet::new();
    loop {
        // Start (or settle) every request whose dependencies are all done; settling one with a 424 or 400 can
        // make others ready, so repeat until nothing changes.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for (index, request) in requests.iter().enumerate() {
                if started[index] || !request.depends_on.iter().all(|dependency| outcomes[*dependency].is_some()) {
                    continue;
                }
                started[index] = true;
                progressed = true;
                let failed = request
                    .depends_on
                    .iter()
                    .find(|dependency| outcomes[**dependency].as_ref().is_some_and(|outcome| !outcome.succeeded()));
                if let Some(failed) = failed {
                    let message = format!("The request depends on request '{}', which failed.", requests[*failed].id);
                    let ids = RequestIds::new(None);
                    outcomes[index] =
                        Some(Outcome::error(StatusCode::FAILED_DEPENDENCY, "FailedDependency", message, &ids));
                    continue;
                }
                match inner_path(&request.url, version, public_url) {
                    Ok(path) => {
                        let (router, request, authorization) = (router.clone(), request.clone(), authorization.clone());
                        running.spawn(async move { (index, run_one(router, request, path, authorization).await) });
                    }
                    Err(message) => {
                        let ids = RequestIds::new(None);
                        outcomes[index] = Some(Outcome::error(StatusCode::BAD_REQUEST, "BadRequest", message, &ids));
                    }
                }
            }
        }
        // Then wait for the next running request to finish (not for the whole wave).
        match running.join_next().await {
            Some(joined) => {
                let (index, outcome) =
                    joined.map_err(|error| ApiError::Internal(format!("batch request failed: {error}")))?;
                outcomes[index] = Some(outcome);
            }
            None => break,
        }
    }
    let responses: Vec<Value> = requests
        .iter()
        .zip(outcomes)
        .map(|(request, outcome)| {
            let outcome = outcome.expect("every request has an outcome once the loop ends");
            let mut response = Map::new();
            response.insert("id".into(), Value::String(request.id.clone()));
            response.insert("status".into(), Value::from(outcome.status.as_u16()));
            response.insert("headers".into(), Value::Object(outcome.headers));
            if let Some(body) = outcome.body {
                response.insert("body".into(), body);
            }
            Value::Object(response)
        })
        .collect();
    let body = serde_json::json!({ "responses": responses });
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_urls_resolve_relative_versioned_and_absolute() {
        let check = |url: &str, expected: Result<&str, &str>| {
            let got = inner_path(url, "v1.0", "http://presenced.test");
            match expected {
                Ok(path) => assert_eq!(got.as_deref(), Ok(path), "{url}"),
                Err(fragment) => assert!(got.as_ref().unwrap_err().contains(fragment), "{url}: {got:?}"),
            }
        };
        check("/users/x/presence", Ok("/v1.0/users/x/presence"));
        check("users/x/presence", Ok("/v1.0/users/x/presence"));
        check("/beta/users/x/presence", Ok("/beta/users/x/presence"));
        check("/V1.0/me/presence?$select=activity", Ok("/v1.0/me/presence?$select=activity"));
        check("http://presenced.test/v1.0/me/presence", Ok("/v1.0/me/presence"));
        check("https://graph.microsoft.com/v1.0/me/presence", Err("does not point to this server"));
        check("/$batch", Err("another batch"));
        check("/v1.0/$BATCH", Err("another batch"));
        check("/%24batch", Err("another batch"));
        check("/v1.0//$batch", Err("another batch"));
        check("//beta/%24BATCH?x=1", Err("another batch"));
    }

    #[test]
    fn malformed_batches_are_refused_whole() {
        let check = |body: &str, fragment: &str| {
            let message = parse_batch(body.as_bytes()).unwrap_err().to_string();
            assert!(message.contains(fragment), "{body}: {message}");
        };
        check("{", "Unable to read JSON");
        check("{}", "'requests' must be an array");
        check(r#"{"requests":[]}"#, "between 1 and 20");
        let many: Vec<String> =
            (0..21).map(|i| format!(r#"{{"id":"{i}","method":"GET","url":"/me/presence"}}"#)).collect();
        check(&format!(r#"{{"requests":[{}]}}"#, many.join(",")), "between 1 and 20");
        check(
            r#"{"requests":[{"id":"a","method":"GET","url":"/me"},{"id":"A","method":"GET","url":"/me"}]}"#,
            "more than one",
        );
        check(r#"{"requests":[{"method":"GET","url":"/me"}]}"#, "'id'");
        check(r#"{"requests":[{"id":"1","method":"TRACE","url":"/me"}]}"#, "unsupported method");
        check(r#"{"requests":[{"id":"1","method":"GET"}]}"#, "'url'");
        check(r#"{"requests":[{"id":"1","method":"POST","url":"/me","body":{}}]}"#, "Content-Type");
        check(r#"{"requests":[{"id":"1","method":"GET","url":"/me","dependsOn":["2"]}]}"#, "not another request");
        check(r#"{"requests":[{"id":"1","method":"GET","url":"/me","dependsOn":["1"]}]}"#, "not another request");
        check(
            r#"{"requests":[{"id":"1","method":"GET","url":"/me","dependsOn":["2"]},{"id":"2","method":"GET","url":"/me","dependsOn":["1"]}]}"#,
            "cycle",
        );
        check(r#"{"requests":[{"id":"1","method":"GET","url":"/me","headers":{"a":1}}]}"#, "must be a string");
    }

    #[test]
    fn a_valid_batch_parses_with_dependency_indices() {
        let body = r#"{"requests":[
            {"id":"1","method":"get","url":"/me/presence"},
            {"id":"2","method":"POST","url":"/me/presence/setPresence","headers":{"Content-Type":"application/json"},"body":{"a":1},"dependsOn":["1"]}]}"#;
        let batch = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(batch[0].method, Method::GET);
        assert_eq!(batch[1].depends_on, vec![0]);
        assert_eq!(batch[1].body, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn the_python_sdk_spelling_of_depends_on_is_understood() {
        let body = r#"{"requests":[
            {"id":"set","method":"GET","url":"/me/presence","depends_on":[]},
            {"id":"get","method":"GET","url":"/me/presence","depends_on":["set"]}]}"#;
        assert_eq!(parse_batch(body.as_bytes()).unwrap()[1].depends_on, vec![0]);
    }
}
