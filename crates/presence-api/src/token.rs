//! The local issuer's token endpoint, `POST /{tenant}/oauth2/v2.0/token`: the OAuth 2.0 client credentials
//! grant, answered as Entra ID's v2.0 endpoint answers it, so that Microsoft's own libraries
//! (`azure-identity`, MSAL) get tokens from presenced unmodified.
//!
//! The client authenticates with a secret, in the form (`client_secret`) or HTTP Basic; the directory keeps
//! only each secret's SHA-256. The scope must be Graph's `.default`, and the token carries the application
//! permissions the directory grants the application (`applicationPermissions`) as `roles`. Errors are
//! OAuth 2.0 JSON (`error`, `error_description` with Entra's `AADSTS` code, `error_codes`), never Graph's
//! envelope.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use presence_auth::TokenRequest;
use serde_json::json;

use crate::body::read_body;
use crate::state::AppState;

/// How long a token of this endpoint lives, in seconds (Entra's usual answer).
const LIFETIME_SECONDS: i64 = 3599;
/// The scopes a client-credentials request may ask for: Graph's `.default`.
const SCOPES: [&str; 2] = ["https://graph.microsoft.com/.default", "00000003-0000-0000-c000-000000000000/.default"];

/// An OAuth 2.0 error as Entra ID words it.
fn refuse(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
    });
    no_store((status, Json(body)).into_response())
}

fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    response.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The client id and secret of HTTP Basic authentication, when the request carries it.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    let unescape =
        |text: &str| percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|text| text.into_owned());
    Some((unescape(id)?, unescape(secret)?))
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be form-encoded (application/x-www-form-urlencoded).",
        );
    }
    let Ok(bytes) = read_body(state.inner.body, body).await else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 900144, "The request body could not be read.");
    };
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 900144, "The request body is not form-encoded.");
    };
    let field = |name: &str| form.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let Some(tenant) = state.inner.directory.tenant(&tenant) else {
        return refuse(StatusCode::BAD_REQUEST, "invalid_request", 90002, &format!("Tenant '{tenant}' not found."));
    };
    match field("grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            )
        }
        None => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        }
    }
    let (client_id, secret) = match (basic_credentials(&headers), field("client_id"), field("client_secret")) {
        (Some(credentials), _, _) => credentials,
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        (None, None, _) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        }
        (None, Some(_), None) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        }
    };
    let Some(app) = tenant.apps.iter().find(|app| app.id.eq_ignore_ascii_case(&client_id)) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{}'.", tenant.id),
        );
    };
    if !app.accepts_secret(&secret) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", app.id),
        );
    }
    let scopes: Vec<&str> = field("scope").unwrap_or_default().split_whitespace().collect();
    if scopes.len() != 1 || !SCOPES.iter().any(|scope| scope.eq_ignore_ascii_case(scopes[0])) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI): https://graph.microsoft.com/.default.",
        );
    }
    let issued_at = jiff::Timestamp::now().as_second();
    let access_token = state.service().issuer().mint(&TokenRequest {
        tenant_id: tenant.id.clone(),
        app_id: app.id.clone(),
        user_id: None,
        permissions: app.application_permissions.clone(),
        issued_at,
        lifetime_seconds: LIFETIME_SECONDS,
    });
    no_store(
        Json(json!({
            "token_type": "Bearer",
            "expires_in": LIFETIME_SECONDS,
            "ext_expires_in": LIFETIME_SECONDS,
            "access_token": access_token,
        }))
        .into_response(),
    )
}
