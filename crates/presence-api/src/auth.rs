//! From a request's `Authorization` header to a verified caller.

use axum::http::{header, HeaderMap};
use presence_auth::{AuthError, Caller};

use crate::error::ApiError;
use crate::state::AppState;

/// The caller the request's bearer token names, verified.
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
