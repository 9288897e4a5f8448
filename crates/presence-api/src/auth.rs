//! From a request's `Authorization` header to a verified caller.

use axum::http::{header, HeaderMap};
use presence_auth::{AuthError, Caller};

use crate::error::ApiError;
use crate::state::AppState;

/// The caller the request's bearer token names, verified. A token of a trusted provider signed with a key
/// not held makes the provider's keys be fetched again (see [`crate::trust`]), and is checked once more. A
/// user the token's trust adds to the directory is added (see [`crate::users`]).
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer_token(headers)?;
    let verifier = &state.inner.verifier;
    let caller = match verifier.verify(token) {
        Err(AuthError::UnknownKey { trust, slot }) => match &state.inner.trust_keys {
            Some(keys) if keys.refetch_for_unknown_key(&trust, &slot, verifier).await => verifier.verify(token)?,
            _ => return Err(AuthError::UnknownKey { trust, slot }.into()),
        },
        verified => verified?,
    };
    // A user their trust adds is in the directory before their first request is served.
    state.inner.users.admit(state.service(), &caller).await?;
    Ok(caller)
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
