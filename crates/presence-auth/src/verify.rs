//! Turning a bearer token into a [`Caller`]: signature, times, issuer, audience, tenant, app and user.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::directory::Directory;
use crate::issuer::issuer_for;
use crate::keys::SigningKey;

/// Why a caller was refused. The HTTP layer maps each variant to Graph's status and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("Access token is empty.")]
    MissingToken,
    /// A token that fails validation.
    #[error("{0}")]
    InvalidToken(String),
    /// A personal Microsoft account token.
    #[error("Personal Microsoft accounts are not supported for presence.")]
    PersonalAccount,
    /// `/me` with an application token.
    #[error("/me request is only valid with delegated authentication flow.")]
    MeRequiresDelegated,
    /// An application token without the role the operation needs.
    #[error("Insufficient privileges to complete the operation. Required application permission: {0}.")]
    MissingRole(&'static str),
    /// A delegated token without the scope the operation needs.
    #[error("Insufficient privileges to complete the operation.")]
    MissingScope,
    /// A delegated caller writing someone else's presence.
    #[error("Cannot set the presence of another user. Authenticated user: {0}")]
    OtherUser(String),
    /// An application token on an operation that supports delegated permissions only.
    #[error("This operation does not support application permissions; use a delegated token.")]
    ApplicationNotSupported,
}

/// The application or user behind a request, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's tenant (lowercase).
    pub tenant_id: String,
    /// The client id of the calling application (lowercase).
    pub app_id: String,
    /// Delegated or application.
    pub kind: CallerKind,
}

/// How the caller is authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A user signed in to an application.
    Delegated {
        /// The user's object id (lowercase).
        user_id: String,
        /// The delegated scopes (`scp`).
        scopes: Vec<String>,
    },
    /// An application acting as itself.
    Application {
        /// The application roles (`roles`).
        roles: Vec<String>,
    },
}

impl Caller {
    /// The signed-in user for a delegated caller.
    pub fn user_id(&self) -> Option<&str> {
        match &self.kind {
            CallerKind::Delegated { user_id, .. } => Some(user_id),
            CallerKind::Application { .. } => None,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    tid: Option<String>,
    oid: Option<String>,
    appid: Option<String>,
    azp: Option<String>,
    scp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    idtyp: Option<String>,
}

/// Verifies tokens issued by this server's key.
#[derive(Clone)]
pub struct Verifier {
    decoding_key: DecodingKey,
    validation: Validation,
    issuer_base: String,
    directory: Arc<Directory>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuer_base", &self.issuer_base).finish_non_exhaustive()
    }
}

fn invalid(message: &str) -> AuthError {
    AuthError::InvalidToken(message.to_owned())
}

impl Verifier {
    /// A verifier for tokens signed by `key` and issued as `{issuer_base}/{tenant}/v2.0`.
    pub fn new(key: &SigningKey, issuer_base: &str, directory: Arc<Directory>) -> Self {
        let decoding_key =
            DecodingKey::from_rsa_components(key.modulus(), key.exponent()).expect("a loaded key has valid components");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&crate::GRAPH_AUDIENCES);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 60;
        Verifier { decoding_key, validation, issuer_base: issuer_base.trim_end_matches('/').to_owned(), directory }
    }

    /// Verifies `token` (without the `Bearer ` prefix) against the real clock.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let data =
            decode::<Claims>(token, &self.decoding_key, &self.validation).map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                    invalid("Access token has expired or is not yet valid.")
                }
                ErrorKind::InvalidAudience => invalid("Access token validation failure. Invalid audience."),
                ErrorKind::InvalidSignature => invalid("Access token validation failure. Invalid signature."),
                ErrorKind::InvalidAlgorithm => {
                    invalid("Access token validation failure. Unsupported signing algorithm.")
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::InvalidToken(format!("Access token validation failure. Missing claim '{claim}'."))
                }
                _ => invalid("IDX14100: JWT is not well formed."),
            })?;
        let claims = data.claims;
        let tenant_id = claims.tid.ok_or_else(|| invalid("Access token validation failure. Missing claim 'tid'."))?;
        let tenant_id = tenant_id.to_ascii_lowercase();
        if tenant_id == crate::CONSUMER_TENANT_ID {
            return Err(AuthError::PersonalAccount);
        }
        if claims.iss != issuer_for(&self.issuer_base, &tenant_id) {
            return Err(invalid("Access token validation failure. Invalid issuer."));
        }
        if self.directory.tenant(&tenant_id).is_none() {
            return Err(invalid("Access token validation failure. Unknown tenant."));
        }
        let app_id = claims
            .azp
            .or(claims.appid)
            .ok_or_else(|| invalid("Access token validation failure. Missing claim 'azp'."))?
            .to_ascii_lowercase();
        if self.directory.app(&tenant_id, &app_id).is_none() {
            return Err(invalid("Access token validation failure. The application is not registered in the tenant."));
        }
        let delegated = match claims.idtyp.as_deref() {
            Some("user") => true,
            Some("app") => false,
            Some(_) => return Err(invalid("Access token validation failure. Invalid 'idtyp'.")),
            None if claims.scp.is_some() => true,
            None if !claims.roles.is_empty() => false,
            None => return Err(invalid("Access token validation failure. The token has neither 'scp' nor 'roles'.")),
        };
        let kind = if delegated {
            let user_id = claims
                .oid
                .ok_or_else(|| invalid("Access token validation failure. Missing claim 'oid'."))?
                .to_ascii_lowercase();
            if self.directory.user_by_id(&tenant_id, &user_id).is_none() {
                return Err(invalid("Access token validation failure. The user does not exist in the tenant."));
            }
            let scopes = claims.scp.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
            CallerKind::Delegated { user_id, scopes }
        } else {
            CallerKind::Application { roles: claims.roles }
        };
        Ok(Caller { tenant_id, app_id, kind })
    }
}
