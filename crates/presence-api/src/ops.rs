//! The endpoints beside the Graph API: health and readiness, metrics, the issuer's OpenID metadata and
//! keys, the OpenAPI documents, and the test clock.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use presence_core::Timestamp;
use serde_json::{json, Value};

use crate::body::{content_type, json_object, read_body};
use crate::error::ApiError;
use crate::state::AppState;
use crate::wire::format_instant;

/// Longest test-clock step accepted: ten years.
const MAX_CLOCK_STEP_SECONDS: f64 = 10.0 * 366.0 * 86_400.0;

/// The answer to a method a fixed route does not serve: `405` with the methods it does.
pub(crate) async fn get_only() -> ApiError {
    ApiError::MethodNotAllowed("GET")
}

/// As [`get_only`], for a route served only with POST.
pub(crate) async fn post_only() -> ApiError {
    ApiError::MethodNotAllowed("POST")
}

/// The process is up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve: stored subscriptions and queues are loaded, the trusted providers' keys were fetched
/// once, and the store answers.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let service = state.service();
    let ready = service.is_ready() && state.inner.trust_keys_fetched.load(std::sync::atomic::Ordering::Acquire);
    let store = service.ping().await;
    let (status, body) = match (ready, store) {
        (true, Ok(())) => (StatusCode::OK, json!({ "status": "ready" })),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "starting" })),
        (true, Err(error)) => {
            tracing::error!(%error, "readiness: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "store unavailable" }))
        }
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics (OpenMetrics text), when enabled.
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.inner.serve_metrics {
        return Err(ApiError::NotFound);
    }
    let metrics = &state.inner.metrics;
    let _one_at_a_time = metrics.scrape.lock().await;
    let service = state.service();
    let stats = service.store_stats().await?;
    let counts = service.counts();
    let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    if let Some(stats) = stats {
        metrics.users.set(gauge(stats.users));
        metrics.live_sessions.set(gauge(stats.live_sessions));
        metrics.pending_timers.set(gauge(stats.pending_timers));
    }
    metrics.subscriptions.set(gauge(counts.subscriptions as u64));
    metrics.delivery_queues.set(gauge(counts.queues as u64));
    metrics.queued_notifications.set(gauge(counts.queued as u64));
    let mut response = metrics.encode().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    Ok(response)
}

fn openid_document(state: &AppState, tenant: &str) -> Value {
    let public = state.public_url();
    json!({
        "issuer": presence_auth::issuer::issuer_for(&state.inner.issuer_base, tenant),
        "jwks_uri": format!("{public}/discovery/v2.0/keys"),
        "token_endpoint": format!("{public}/{tenant}/oauth2/v2.0/token"),
        // No interactive sign-in here; MSAL requires the endpoint to be named.
        "authorization_endpoint": format!("{public}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["pairwise"],
        "tenant_region_scope": null,
    })
}

pub(crate) async fn openid_common(State(state): State<AppState>) -> Json<Value> {
    Json(openid_document(&state, "{tenantid}"))
}

pub(crate) async fn openid_tenant(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = state.inner.directory.tenant(&tenant).ok_or(ApiError::NotFound)?;
    Ok(Json(openid_document(&state, &tenant.id)))
}

pub(crate) async fn openapi_document(Path(document): Path<String>) -> Result<Json<Value>, ApiError> {
    match document.as_str() {
        "v1.0.json" => Ok(Json(crate::openapi::document("v1.0"))),
        "beta.json" => Ok(Json(crate::openapi::document("beta"))),
        _ => Err(ApiError::NotFound),
    }
}

pub(crate) async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.inner.signing_key.jwks())
}

fn clock_json(now: Timestamp) -> Json<Value> {
    Json(json!({ "now": format_instant(now), "epochMilliseconds": now.as_millis() }))
}

pub(crate) async fn clock_read(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let clock = state.inner.test_clock.as_ref().ok_or(ApiError::NotFound)?;
    Ok(clock_json(presence_service::Clock::now(clock.as_ref())))
}

pub(crate) async fn clock_advance(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let clock = state.inner.test_clock.as_ref().ok_or(ApiError::NotFound)?;
    let body = read_body(state.inner.body, body).await?;
    let object = json_object(content_type(&headers), &body, true)?;
    let seconds = match object.get("seconds") {
        Some(Value::Number(number)) => number.as_f64().unwrap_or(-1.0),
        _ => return Err(ApiError::BadRequest("The parameter 'seconds' is required and must be a number.".into())),
    };
    if !(0.0..=MAX_CLOCK_STEP_SECONDS).contains(&seconds) {
        return Err(ApiError::BadRequest(format!("'seconds' must be between 0 and {MAX_CLOCK_STEP_SECONDS}.")));
    }
    let now = clock.advance((seconds * 1000.0).round() as i64);
    state.service().clock_moved();
    // The other processes of a shared store follow.
    state.service().share_test_clock(clock.clone()).await?;
    tracing::warn!(seconds, now = %format_instant(now), "test clock advanced");
    Ok(clock_json(now))
}
