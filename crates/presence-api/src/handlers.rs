//! The request handlers: from a resolved endpoint and a verified caller to a Graph response.

use std::collections::HashSet;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use presence_auth::{authorize, AuthError, Caller, Operation, Target};
use presence_core::command::Change;
use presence_core::{evaluate, Command, Timestamp, UserFacts};
use presence_store::UserKey;
use serde_json::{json, Value};

use crate::action::{decode_action, json_object};
use crate::envelope::envelope;
use crate::error::ApiError;
use crate::route::{resolve, Action, Endpoint, PresencePath, UserPath};
use crate::wire::{format_instant, CollectionJson, PresenceJson, UserJson, ODATA_JSON, PRESENCE_PROPERTIES};
use crate::AppState;

/// Most ids one getPresencesByUserId call (or one `$filter=id in (...)`) may name.
pub const MAX_IDS_PER_REQUEST: usize = 650;

/// Users per page of `GET /users`, by default and at most (Graph's).
const DEFAULT_USERS_PAGE: usize = 100;
const MAX_USERS_PAGE: usize = 999;

/// Longest test-clock step accepted: ten years.
const MAX_CLOCK_STEP_SECONDS: f64 = 10.0 * 366.0 * 86_400.0;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(openid_common).fallback(method_not_allowed))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(openid_tenant).fallback(method_not_allowed))
        .route("/discovery/v2.0/keys", get(jwks).fallback(method_not_allowed))
        .route("/openapi/{document}", get(openapi_document).fallback(method_not_allowed))
        .route("/_test/clock", get(clock_read).fallback(method_not_allowed))
        .route("/_test/clock/advance", post(clock_advance).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route("/board", get(crate::board::page).fallback(method_not_allowed))
        .route("/board/events", get(crate::board::events).fallback(method_not_allowed))
        .fallback(graph)
        .layer(middleware::from_fn_with_state(state.clone(), envelope))
        .with_state(state)
}

/// The process is up.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve: stored subscriptions and queues are loaded and the store answers.
async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.inner.ready.load(std::sync::atomic::Ordering::SeqCst);
    let inner = state.inner.clone();
    let store = blocking(move || inner.store.ping().map_err(ApiError::from)).await;
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
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.inner.config.metrics {
        return Err(ApiError::NotFound);
    }
    let _one_at_a_time = state.inner.metrics.scrape.lock().await;
    let inner = state.inner.clone();
    let stats = blocking(move || Ok(inner.store.stats(inner.clock.now().as_millis())?)).await?;
    let metrics = &state.inner.metrics;
    let (subscriptions, queues, queued) = state.inner.notifier.counts();
    let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    metrics.users.set(gauge(stats.users));
    metrics.live_sessions.set(gauge(stats.live_sessions));
    metrics.pending_timers.set(gauge(stats.pending_timers));
    metrics.subscriptions.set(gauge(subscriptions as u64));
    metrics.delivery_queues.set(gauge(queues as u64));
    metrics.queued_notifications.set(gauge(queued as u64));
    let mut response = metrics.encode().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    Ok(response)
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Everything that is not the issuer's metadata or the test clock: the Graph API under `/v1.0` and `/beta`
/// (the version segment matched case-insensitively), else `404`.
async fn graph(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let first = uri.path().trim_start_matches('/').split('/').next().unwrap_or_default();
    let version = if first.eq_ignore_ascii_case("v1.0") {
        "v1.0"
    } else if first.eq_ignore_ascii_case("beta") {
        "beta"
    } else {
        return ApiError::NotFound.into_response();
    };
    let mut route = "graph_unresolved";
    let mut response = match serve(&state, version, method, &uri, &headers, body, &mut route).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.extensions_mut().insert(RouteLabel(route));
    response
}

/// The route a Graph request resolved to, for metrics and logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteLabel(pub(crate) &'static str);

/// One Graph request, start to end.
async fn serve(
    state: &AppState,
    version: &'static str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    route: &mut &'static str,
) -> Result<Response, ApiError> {
    let raw_path = uri.path().trim_start_matches('/');
    let raw_path = raw_path.get(version.len()..).unwrap_or_default();
    let segments = raw_path
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| ApiError::BadRequest(format!("The path segment '{segment}' is not valid UTF-8.")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let segments: Vec<&str> = segments.iter().map(|segment| segment.as_ref()).collect();
    let endpoint = resolve(&method, &segments)?;
    *route = endpoint.label();
    let caller = authenticate(state, headers)?;
    let query = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| ApiError::BadRequest("The query string is malformed.".into()))?
        .0;
    let body = read_body(state, body).await?;
    if !matches!(endpoint, Endpoint::GetUser(_) | Endpoint::Batch) {
        state.inner.throttle.admit(&caller.tenant_id, &caller.app_id).map_err(|retry_after| {
            state.inner.metrics.throttled();
            ApiError::Throttled(retry_after)
        })?;
    }
    let context = Context { state, version, caller: &caller, query: &query };
    match endpoint {
        Endpoint::Batch => crate::batch::run(state, version, headers, &body).await,
        Endpoint::GetPresence(path) => context.get_presence(&path).await,
        Endpoint::PresenceAction(path, action) => context.presence_action(&path, action, headers, &body).await,
        Endpoint::GetPresencesByUserId => {
            authorize(&caller, Operation::ReadManyPresences, Target::Many)?;
            let object = json_object(content_type(headers), &body, true)?;
            let ids = match object.get("ids") {
                None | Some(Value::Null) => {
                    return Err(ApiError::BadRequest("The parameter 'ids' is required.".into()))
                }
                Some(Value::Array(ids)) => ids
                    .iter()
                    .map(|id| match id {
                        Value::String(id) => Ok(id.as_str()),
                        _ => Err(ApiError::BadRequest("Every member of 'ids' must be a string.".into())),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err(ApiError::BadRequest("The parameter 'ids' must be an array of strings.".into())),
            };
            let context_url =
                format!("{}/{version}/$metadata#Collection(microsoft.graph.presence)", state.public_url());
            context.many_presences(&ids, context_url).await
        }
        Endpoint::ListPresences => {
            authorize(&caller, Operation::ReadManyPresences, Target::Many)?;
            let filter = query_option(&query, "$filter").ok_or_else(|| {
                ApiError::BadRequest(
                    "Listing every presence is not supported; use $filter=id in ('id1','id2') or getPresencesByUserId."
                        .into(),
                )
            })?;
            let ids = parse_id_filter(filter)?;
            let context_url = format!("{}/{version}/$metadata#communications/presences", state.public_url());
            context.many_presences(&ids, context_url).await
        }
        Endpoint::GetUser(path) => context.get_user(&path),
        Endpoint::ListUsers => context.list_users(),
        endpoint @ (Endpoint::Subscriptions | Endpoint::Subscription(_) | Endpoint::Reauthorize(_)) => {
            crate::subscriptions::handle(state, version, &caller, endpoint, &method, content_type(headers), &body).await
        }
    }
}

impl AppState {
    pub(crate) fn public_url(&self) -> &str {
        self.inner.config.public_url.trim_end_matches('/')
    }

    /// The stored facts of `keys` and the instant to evaluate them at, read with no write of those users in
    /// between (see `consistency`).
    pub(crate) async fn read_facts(&self, keys: Vec<UserKey>) -> Result<(Vec<Option<UserFacts>>, Timestamp), ApiError> {
        // Fast path: when no writer holds these users and a reader connection is free, the read (a few
        // index lookups) runs right here; a hand-off to a blocking thread would cost more than the read.
        let inner = &self.inner;
        let started = std::time::Instant::now();
        let inline = inner.locks.try_read(&keys, || {
            let now = inner.clock.now();
            inner.store.try_get_many(&keys).map(|facts| facts.map(|facts| (facts, now)))
        });
        if let Some(Some(result)) = inline {
            inner.metrics.store("read", started.elapsed());
            return Ok(result?);
        }
        let inner = self.inner.clone();
        let result = blocking(move || {
            inner.locks.read(&keys, || {
                let now = inner.clock.now();
                let facts = match keys.as_slice() {
                    [one] => vec![inner.store.get(one)?],
                    many => inner.store.get_many(many)?,
                };
                Ok((facts, now))
            })
        })
        .await;
        self.inner.metrics.store("read", started.elapsed());
        result
    }

    /// Applies `command` to the user's facts at the current instant, taken under the user's lock, with the
    /// notifications it causes; returns once that is durable.
    async fn apply(&self, key: UserKey, command: Command) -> Result<Change, ApiError> {
        self.write(key, move |facts, now| {
            let change = command.apply(facts, now)?;
            let visible = change.is_visible().then(|| change.after.clone());
            Ok((change, visible))
        })
        .await
    }
}

pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(state.inner.verifier.verify(bearer_token(headers)?)?)
}

/// The token of the `Authorization: Bearer` header (empty when there is none to verify).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthError::MissingToken.into());
    };
    let value = value.to_str().map_err(|_| AuthError::InvalidToken("IDX14100: JWT is not well formed.".into()))?;
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        None if value.is_empty() || value.eq_ignore_ascii_case("bearer") => Ok(""),
        _ => Err(AuthError::InvalidToken("The Authorization header must use the Bearer scheme.".into()).into()),
    }
}

async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.inner.config.max_body_bytes;
    let timeout = state.inner.config.body_read_timeout;
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::RequestTimeout(timeout.as_secs()))?;
    read.map_err(|error| {
        let too_large =
            std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest("The request body could not be read.".into())
        }
    })
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok())
}

fn query_option<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}

/// `id in ('a','b')` → `["a", "b"]`.
fn parse_id_filter(filter: &str) -> Result<Vec<&str>, ApiError> {
    presence_notify::subscription::parse_id_in(filter).ok_or_else(|| {
        ApiError::BadRequest(format!("Invalid filter clause '{filter}': only id in ('id1','id2',...) is supported."))
    })
}

fn odata_json(body: &impl serde::Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|error| ApiError::Internal(error.to_string()))?;
    let mut response = (StatusCode::OK, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    response.headers_mut().insert("odata-version", HeaderValue::from_static("4.0"));
    Ok(response)
}

/// The store key of a user of the caller's tenant.
fn key(caller: &Caller, user_id: &str) -> UserKey {
    UserKey { tenant_id: caller.tenant_id.clone(), user_id: user_id.to_owned() }
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::Internal(format!("storage task failed: {error}")))?
}

struct Context<'a> {
    state: &'a AppState,
    version: &'static str,
    caller: &'a Caller,
    query: &'a [(String, String)],
}

impl Context<'_> {
    /// The user id a presence path names, after checking the caller may perform `operation` on it.
    fn presence_user(&self, path: &PresencePath, operation: Operation) -> Result<String, ApiError> {
        let user_id = match path {
            PresencePath::Me => self.caller.user_id().ok_or(AuthError::MeRequiresDelegated)?.to_owned(),
            PresencePath::User(id) | PresencePath::Communications(id) => {
                if !presence_auth::is_guid(id) {
                    return Err(ApiError::UserIdRequired(id.clone()));
                }
                id.to_ascii_lowercase()
            }
        };
        authorize(self.caller, operation, Target::User(&user_id))?;
        if self.state.inner.directory.user_by_id(&self.caller.tenant_id, &user_id).is_none() {
            return Err(ApiError::UserNotFound(user_id));
        }
        Ok(user_id)
    }

    fn owner_view(&self, user_id: &str) -> bool {
        self.caller.user_id() == Some(user_id)
    }

    async fn get_presence(&self, path: &PresencePath) -> Result<Response, ApiError> {
        let user_id = self.presence_user(path, Operation::ReadPresence)?;
        let selected = self.selection()?;
        let (mut facts, now) = self.state.read_facts(vec![key(self.caller, &user_id)]).await?;
        let presence = evaluate(&facts.pop().flatten().unwrap_or_default(), now);
        let context = match path {
            PresencePath::Communications(_) => {
                format!("{}/{}/$metadata#communications/presences/$entity", self.state.public_url(), self.version)
            }
            _ => format!("{}/{}/$metadata#users('{user_id}')/presence/$entity", self.state.public_url(), self.version),
        };
        let json = PresenceJson::known(&user_id, presence, self.owner_view(&user_id), Some(context));
        match selected {
            None => odata_json(&json),
            Some(selected) => {
                let Ok(Value::Object(mut object)) = serde_json::to_value(&json) else {
                    return Err(ApiError::Internal("presence did not serialise to an object".into()));
                };
                object.retain(|name, _| name == "@odata.context" || name == "id" || selected.contains(name.as_str()));
                odata_json(&object)
            }
        }
    }

    /// The properties named by `$select`, if given.
    fn selection(&self) -> Result<Option<HashSet<&'static str>>, ApiError> {
        let Some(select) = query_option(self.query, "$select") else {
            return Ok(None);
        };
        select
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                PRESENCE_PROPERTIES.iter().copied().find(|known| known.eq_ignore_ascii_case(name)).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "Could not find a property named '{name}' on type 'microsoft.graph.presence'."
                    ))
                })
            })
            .collect::<Result<HashSet<_>, _>>()
            .map(Some)
    }

    async fn presence_action(
        &self,
        path: &PresencePath,
        action: Action,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let operation = if action.is_location() { Operation::WriteLocation } else { Operation::WritePresence };
        let user_id = self.presence_user(path, operation)?;
        let command = decode_action(action, &self.caller.app_id, content_type(headers), body)?;
        self.state.apply(key(self.caller, &user_id), command).await?;
        Ok(if action.is_location() { StatusCode::NO_CONTENT } else { StatusCode::OK }.into_response())
    }

    async fn many_presences(&self, ids: &[&str], context_url: String) -> Result<Response, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::BadRequest("At least one user id is required.".into()));
        }
        if ids.len() > MAX_IDS_PER_REQUEST {
            return Err(ApiError::BadRequest(format!(
                "Too many user ids: {} were given, at most {MAX_IDS_PER_REQUEST} are allowed.",
                ids.len()
            )));
        }
        let mut unique = Vec::with_capacity(ids.len());
        let mut seen = HashSet::with_capacity_and_hasher(ids.len(), foldhash::fast::RandomState::default());
        for id in ids {
            let Some(value) = presence_auth::guid_value(id) else {
                return Err(ApiError::UserIdRequired((*id).to_owned()));
            };
            if seen.insert(value) {
                unique.push(id.to_ascii_lowercase());
            }
        }
        let directory = &self.state.inner.directory;
        let known: Vec<&String> =
            unique.iter().filter(|id| directory.user_by_id(&self.caller.tenant_id, id).is_some()).collect();
        let keys: Vec<UserKey> = known.iter().map(|id| key(self.caller, id)).collect();
        let (stored, now) = self.state.read_facts(keys).await?;
        let mut stored = known.into_iter().zip(stored).peekable();
        let mut value = Vec::with_capacity(unique.len());
        for id in &unique {
            match stored.next_if(|(known_id, _)| *known_id == id) {
                Some((_, facts)) => {
                    let presence = evaluate(&facts.unwrap_or_default(), now);
                    value.push(PresenceJson::known(id, presence, self.owner_view(id), None));
                }
                None => value.push(PresenceJson::unknown(id)),
            }
        }
        odata_json(&CollectionJson { context: context_url, value })
    }

    /// The caller's tenant's users, in configuration order: `$top` of them (default 100, at most 999) from
    /// the `$skiptoken` offset, with `@odata.nextLink` while more remain.
    fn list_users(&self) -> Result<Response, ApiError> {
        authorize(self.caller, Operation::ListUsers, Target::Many)?;
        let top = match query_option(self.query, "$top") {
            None => DEFAULT_USERS_PAGE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|top| (1..=MAX_USERS_PAGE).contains(top))
                .ok_or_else(|| ApiError::BadRequest(format!("$top must be between 1 and {MAX_USERS_PAGE}.")))?,
        };
        let skip = match query_option(self.query, "$skiptoken") {
            None => 0,
            Some(text) => {
                text.parse::<usize>().map_err(|_| ApiError::BadRequest("The $skiptoken is not valid.".into()))?
            }
        };
        let users =
            self.state.inner.directory.tenant(&self.caller.tenant_id).map_or(&[][..], |tenant| &tenant.users[..]);
        let page: Vec<Value> = users
            .iter()
            .skip(skip)
            .take(top)
            .map(|user| {
                json!({ "id": user.id, "displayName": user.display_name, "userPrincipalName": user.user_principal_name })
            })
            .collect();
        let base = format!("{}/{}", self.state.public_url(), self.version);
        let mut body = json!({ "@odata.context": format!("{base}/$metadata#users"), "value": page });
        if skip.saturating_add(top) < users.len() {
            body["@odata.nextLink"] = format!("{base}/users?$top={top}&$skiptoken={}", skip + top).into();
        }
        odata_json(&body)
    }

    fn get_user(&self, path: &UserPath) -> Result<Response, ApiError> {
        let directory = &self.state.inner.directory;
        let user = match path {
            UserPath::Me => {
                let user_id = self.caller.user_id().ok_or(AuthError::MeRequiresDelegated)?;
                directory.user_by_id(&self.caller.tenant_id, user_id)
            }
            UserPath::IdOrUpn(id) => directory.user_by_id_or_upn(&self.caller.tenant_id, id),
        };
        let user = user.ok_or_else(|| {
            ApiError::ResourceNotFound(match path {
                UserPath::Me => "me".to_owned(),
                UserPath::IdOrUpn(id) => id.clone(),
            })
        })?;
        authorize(self.caller, Operation::ReadUser, Target::User(&user.id))?;
        odata_json(&UserJson {
            context: format!("{}/{}/$metadata#users/$entity", self.state.public_url(), self.version),
            id: &user.id,
            display_name: &user.display_name,
            user_principal_name: &user.user_principal_name,
        })
    }
}

fn openid_document(state: &AppState, tenant: &str) -> Value {
    let public = state.public_url();
    serde_json::json!({
        "issuer": presence_auth::issuer::issuer_for(&state.inner.config.issuer_base, tenant),
        "jwks_uri": format!("{public}/discovery/v2.0/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["pairwise"],
        "tenant_region_scope": null,
    })
}

async fn openid_common(State(state): State<AppState>) -> Json<Value> {
    Json(openid_document(&state, "{tenantid}"))
}

async fn openid_tenant(State(state): State<AppState>, Path(tenant): Path<String>) -> Result<Json<Value>, ApiError> {
    let tenant = state.inner.directory.tenant(&tenant).ok_or(ApiError::NotFound)?;
    Ok(Json(openid_document(&state, &tenant.id)))
}

async fn openapi_document(Path(document): Path<String>) -> Result<Json<Value>, ApiError> {
    match document.as_str() {
        "v1.0.json" => Ok(Json(crate::openapi::document("v1.0"))),
        "beta.json" => Ok(Json(crate::openapi::document("beta"))),
        _ => Err(ApiError::NotFound),
    }
}

async fn jwks(State(state): State<AppState>) -> Json<Value> {
    Json(state.inner.signing_key.jwks())
}

fn clock_json(now: Timestamp) -> Json<Value> {
    Json(serde_json::json!({ "now": format_instant(now), "epochMilliseconds": now.as_millis() }))
}

async fn clock_read(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let clock = state.inner.test_clock.as_ref().ok_or(ApiError::NotFound)?;
    Ok(clock_json(crate::Clock::now(clock.as_ref())))
}

async fn clock_advance(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let clock = state.inner.test_clock.as_ref().ok_or(ApiError::NotFound)?;
    let body = read_body(&state, body).await?;
    let object = json_object(content_type(&headers), &body, true)?;
    let seconds = match object.get("seconds") {
        Some(Value::Number(number)) => number.as_f64().unwrap_or(-1.0),
        _ => return Err(ApiError::BadRequest("The parameter 'seconds' is required and must be a number.".into())),
    };
    if !(0.0..=MAX_CLOCK_STEP_SECONDS).contains(&seconds) {
        return Err(ApiError::BadRequest(format!("'seconds' must be between 0 and {MAX_CLOCK_STEP_SECONDS}.")));
    }
    let now = clock.advance((seconds * 1000.0).round() as i64);
    state.inner.notifier.wake();
    tracing::warn!(seconds, now = %format_instant(now), "test clock advanced");
    Ok(clock_json(now))
}
