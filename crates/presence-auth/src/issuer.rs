//! Minting tokens with the server's own key, shaped like Entra ID v2 access tokens for Microsoft Graph.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::keys::SigningKey;

/// What a token should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id of the application the token is for.
    pub app_id: String,
    /// The signed-in user's object id for a delegated token; `None` for an application token.
    pub user_id: Option<String>,
    /// Delegated scopes (`scp`) or application roles (`roles`), depending on `user_id`.
    pub permissions: Vec<String>,
    /// Issued-at, seconds since the Unix epoch.
    pub issued_at: i64,
    /// Lifetime in seconds.
    pub lifetime_seconds: i64,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'static str,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    tid: &'a str,
    oid: &'a str,
    sub: &'a str,
    azp: &'a str,
    appid: &'a str,
    idtyp: &'static str,
    ver: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [String]>,
}

/// The application id Microsoft Graph's change-tracking service uses in the `validationTokens` of rich
/// notifications (`appid` and `azp`); receivers check for it, so ours carry it too.
pub const CHANGE_TRACKING_APP_ID: &str = "0bf30f3b-4a52-48df-9a82-234910c4a086";

/// How long a notification's validation token is valid.
pub const VALIDATION_TOKEN_LIFETIME_SECONDS: i64 = 3600;

#[derive(Serialize)]
struct ValidationClaims<'a> {
    aud: &'a str,
    iss: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    tid: &'a str,
    azp: &'static str,
    appid: &'static str,
    ver: &'static str,
}

/// Issues tokens signed with the server's key.
#[derive(Clone)]
pub struct Issuer {
    key: SigningKey,
    encoding_key: EncodingKey,
    issuer_base: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("issuer_base", &self.issuer_base).field("key", &self.key).finish()
    }
}

/// The issuer (`iss`) of tokens for `tenant_id`, like Entra's `https://login.microsoftonline.com/{tid}/v2.0`.
pub fn issuer_for(issuer_base: &str, tenant_id: &str) -> String {
    format!("{}/{}/v2.0", issuer_base.trim_end_matches('/'), tenant_id)
}

impl Issuer {
    /// An issuer with `key`, issuing as `{issuer_base}/{tenant}/v2.0`.
    pub fn new(key: SigningKey, issuer_base: &str) -> Self {
        let encoding_key = EncodingKey::from_rsa_pem(key.pem().as_bytes()).expect("a loaded signing key is valid PEM");
        Issuer { key, encoding_key, issuer_base: issuer_base.trim_end_matches('/').to_owned() }
    }

    /// A signed token for `request`.
    pub fn mint(&self, request: &TokenRequest) -> String {
        let (oid, idtyp) = match &request.user_id {
            Some(user_id) => (user_id.as_str(), "user"),
            None => (request.app_id.as_str(), "app"),
        };
        let claims = Claims {
            aud: crate::GRAPH_AUDIENCES[1],
            iss: issuer_for(&self.issuer_base, &request.tenant_id),
            iat: request.issued_at,
            nbf: request.issued_at,
            exp: request.issued_at.saturating_add(request.lifetime_seconds),
            tid: &request.tenant_id,
            oid,
            sub: oid,
            azp: &request.app_id,
            appid: &request.app_id,
            idtyp,
            ver: "2.0",
            scp: request.user_id.as_ref().map(|_| request.permissions.join(" ")),
            roles: request.user_id.is_none().then_some(request.permissions.as_slice()),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key.kid().to_owned());
        encode(&header, &claims, &self.encoding_key).expect("RS256 signing with a valid key")
    }

    /// A `validationTokens` entry for rich notifications of `tenant_id` delivered to the application
    /// `audience`: issued by this server's issuer for the tenant, with Graph's change-tracking application
    /// as `appid`/`azp`, valid for an hour from `issued_at` (seconds since the epoch).
    pub fn validation_token(&self, tenant_id: &str, audience: &str, issued_at: i64) -> String {
        let claims = ValidationClaims {
            aud: audience,
            iss: issuer_for(&self.issuer_base, tenant_id),
            iat: issued_at,
            nbf: issued_at,
            exp: issued_at.saturating_add(VALIDATION_TOKEN_LIFETIME_SECONDS),
            tid: tenant_id,
            azp: CHANGE_TRACKING_APP_ID,
            appid: CHANGE_TRACKING_APP_ID,
            ver: "2.0",
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.key.kid().to_owned());
        encode(&header, &claims, &self.encoding_key).expect("RS256 signing with a valid key")
    }
}
