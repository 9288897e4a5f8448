//! The router: the fixed routes (metadata, health, metrics, board, test clock), and the Graph API under
//! `/v1.0` and `/beta`, where one request goes from path to endpoint to caller to handler.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use presence_auth::{authorize, Operation, Target};
use serde_json::Value;

use crate::auth::authenticate;
use crate::body::{content_type, json_object, query_option, read_body};
use crate::envelope::envelope;
use crate::error::ApiError;
use crate::handlers::{parse_id_filter, Context};
use crate::ops::{get_only, post_only};
use crate::route::{resolve, Endpoint, RouteLabel};
use crate::state::AppState;

/// The complete router: the Graph API, the issuer's metadata, operations endpoints and (when enabled) the
/// test clock and the board.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(crate::ops::openid_common).fallback(get_only))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(crate::ops::openid_tenant).fallback(get_only))
        .route("/discovery/v2.0/keys", get(crate::ops::jwks).fallback(get_only))
        .route("/{tenant}/oauth2/v2.0/token", post(crate::token::token).fallback(post_only))
        .route("/openapi/{document}", get(crate::ops::openapi_document).fallback(get_only))
        .route("/_test/clock", get(crate::ops::clock_read).fallback(get_only))
        .route("/_test/clock/advance", post(crate::ops::clock_advance).fallback(post_only))
        .route("/healthz", get(crate::ops::healthz).fallback(get_only))
        .route("/readyz", get(crate::ops::readyz).fallback(get_only))
        .route("/metrics", get(crate::ops::metrics).fallback(get_only))
        .route("/board", get(crate::board::page).fallback(get_only))
        .route("/board/events", get(crate::board::events).fallback(get_only))
        .route("/board/sign-in", get(crate::board::sign_in).fallback(get_only))
        .fallback(graph)
        .layer(middleware::from_fn_with_state(state.clone(), envelope))
        .with_state(state)
}

/// Everything that is not a fixed route: the Graph API under `/v1.0` and `/beta` (the version segment
/// matched case-insensitively), else `404`.
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

/// A getPresencesByUserId body as most arrive: an object whose `ids` is an array of strings. The ids are
/// borrowed from the body unless they hold escapes.
#[derive(serde::Deserialize)]
struct ManyIds<'a> {
    #[serde(borrow)]
    ids: Vec<Id<'a>>,
}

#[derive(serde::Deserialize)]
struct Id<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// The ids a getPresencesByUserId body names. A body that is not as most are (no `ids`, the wrong types,
/// `ids` twice, not JSON) is read again as a JSON value, for the error that says what is wrong with it (or,
/// for `ids` given twice, for the last of them, as any JSON object's duplicate member is read).
fn many_ids<'a>(content_type: Option<&str>, body: &'a [u8]) -> Result<Vec<Id<'a>>, ApiError> {
    // An array at the top would deserialise into the struct too (as its fields in order): only objects.
    if body.trim_ascii_start().first() == Some(&b'{') && crate::body::is_json(content_type) {
        if let Ok(many) = serde_json::from_slice::<ManyIds<'a>>(body) {
            return Ok(many.ids);
        }
    }
    let object = json_object(content_type, body, true)?;
    match object.get("ids") {
        None | Some(Value::Null) => Err(ApiError::BadRequest("The parameter 'ids' is required.".into())),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| match id {
                Value::String(id) => Ok(Id(std::borrow::Cow::Owned(id.clone()))),
                _ => Err(ApiError::BadRequest("Every member of 'ids' must be a string.".into())),
            })
            .collect(),
        Some(_) => Err(ApiError::BadRequest("The parameter 'ids' must be an array of strings.".into())),
    }
}

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
    let caller = authenticate(state, headers).await?;
    let query = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| ApiError::BadRequest("The query string is malformed.".into()))?
        .0;
    let body = read_body(state.inner.body, body).await?;
    if !matches!(endpoint, Endpoint::GetUser(_) | Endpoint::Batch) {
        state.inner.throttle.admit(&caller.tenant_id, &caller.app_id).map_err(|retry_after| {
            state.inner.metrics.throttled();
            ApiError::Throttled(retry_after)
        })?;
    }
    let context = Context { state, version, caller: &caller, query: &query };
    match endpoint {
        Endpoint::Batch => crate::batch::run(router(state.clone()), state.public_url(), version, headers, &body).await,
        Endpoint::GetPresence(path) => context.get_presence(&path).await,
        Endpoint::PresenceAction(path, action) => context.presence_action(&path, action, headers, &body).await,
        Endpoint::GetPresencesByUserId => {
            authorize(&caller, Operation::ReadManyPresences, Target::Many)?;
            let ids = many_ids(content_type(headers), &body)?;
            let ids: Vec<&str> = ids.iter().map(|id| id.0.as_ref()).collect();
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
        Endpoint::GetUser(path) => context.get_user(&path).await,
        Endpoint::ListUsers => context.list_users().await,
        endpoint @ (Endpoint::Subscriptions | Endpoint::Subscription(_) | Endpoint::Reauthorize(_)) => {
            crate::subscriptions::handle(state, version, &caller, endpoint, &method, content_type(headers), &body).await
        }
    }
}
