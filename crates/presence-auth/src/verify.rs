//! Turning a bearer token into a [`Caller`]: signature, times, issuer, audience, tenant, app and user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::directory::Directory;
use crate::issuer::issuer_for;
use crate::keys::SigningKey;
use crate::trust::{claim_at, claim_strings, Trust, TrustKind, TrustUsers};

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
    /// A token of a trusted provider signed with a key not held (yet): the keys may be fetched again.
    #[error("Access token validation failure. Unknown signing key.")]
    UnknownKey {
        /// The trust's name.
        trust: String,
        /// Its key set the token's issuer names (an Entra tenant, or `""`).
        slot: String,
    },
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
    /// The user as their token names them, when the configuration does not list them and their trust adds
    /// its users (`users = "auto"`): to be added to the tenant's directory. A name the token does not give
    /// is empty.
    pub added: Option<crate::User>,
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
    exp: i64,
    nbf: i64,
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

/// Most verified tokens remembered at once.
const CACHE_CAPACITY: usize = 16_384;

/// A token that passed verification, with the window in which it stays valid.
#[derive(Debug, Clone)]
struct Verified {
    caller: Caller,
    not_before: i64,
    expires: i64,
}

/// Verifies tokens issued by this server's key.
///
/// Verifying an RS256 signature costs tens of microseconds, more than the rest of a request, and clients
/// send the same token for its whole lifetime. So a token that passed is remembered (up to
/// [`CACHE_CAPACITY`] tokens, keyed by the token itself) and, until its `exp` (with the same leeway), later
/// requests only look it up. Everything else the verification checks is fixed for the process's life (the
/// key, the issuer, the directory), so the remembered answer stays right. Failed tokens are not
/// remembered.
#[derive(Clone)]
pub struct Verifier {
    decoding_key: DecodingKey,
    validation: Validation,
    issuer_base: String,
    directory: Arc<Directory>,
    cache: Arc<Mutex<HashMap<Box<str>, Verified>>>,
    /// Moves on whenever trusted keys change: a verification that began before is not remembered.
    key_generation: Arc<std::sync::atomic::AtomicU64>,
    trusts: Vec<Arc<Trust>>,
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
        Verifier {
            decoding_key,
            validation,
            issuer_base: issuer_base.trim_end_matches('/').to_owned(),
            directory,
            cache: Arc::default(),
            key_generation: Arc::default(),
            trusts: Vec::new(),
        }
    }

    /// This verifier, also accepting the tokens of `trusts`.
    #[must_use]
    pub fn with_trusts(mut self, trusts: Vec<Arc<Trust>>) -> Self {
        self.trusts = trusts;
        self
    }

    /// Forgets every verified token (a trust's keys changed: a token of a dropped key must be refused).
    pub fn forget_verified(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.key_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.clear();
    }

    fn now() -> i64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
    }

    /// The remembered verification of `token`, if it is still valid at `now` (seconds).
    fn remembered(&self, token: &str, now: i64) -> Option<Verified> {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
        match cache.get(token) {
            Some(entry)
                if now < entry.expires.saturating_add(leeway) && now >= entry.not_before.saturating_sub(leeway) =>
            {
                Some(entry.clone())
            }
            Some(_) => {
                cache.remove(token);
                None
            }
            None => None,
        }
    }

    /// Remembers a token verified with the keys of `generation`, unless keys changed since.
    fn remember(&self, token: &str, verified: Verified, now: i64, generation: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.key_generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return;
        }
        if cache.len() >= CACHE_CAPACITY {
            let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
            cache.retain(|_, entry| now < entry.expires.saturating_add(leeway));
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(token.into(), verified);
    }

    /// Verifies `token` (without the `Bearer ` prefix) against the real clock.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        Ok(self.verified(token)?.caller)
    }

    /// Verifies `token` like [`verify`](Self::verify), and says until when it is accepted: the first second
    /// (since the epoch) at which it is refused, its `exp` plus the leeway.
    pub fn verify_until(&self, token: &str) -> Result<(Caller, i64), AuthError> {
        let verified = self.verified(token)?;
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
        Ok((verified.caller, verified.expires.saturating_add(leeway)))
    }

    fn verified(&self, token: &str) -> Result<Verified, AuthError> {
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let now = Self::now();
        if let Some(verified) = self.remembered(token, now) {
            return Ok(verified);
        }
        let generation = self.key_generation.load(std::sync::atomic::Ordering::SeqCst);
        let (caller, not_before, expires) = self.verify_signed(token)?;
        let verified = Verified { caller, not_before, expires };
        self.remember(token, verified.clone(), now, generation);
        Ok(verified)
    }

    /// The full verification: signature, times, issuer, audience, directory.
    fn verify_signed(&self, token: &str) -> Result<(Caller, i64, i64), AuthError> {
        if !self.trusts.is_empty() {
            // The unverified issuer only chooses whose keys verify the token; it is checked again below.
            let iss = jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
                .ok()
                .and_then(|claims| claims.get("iss").and_then(serde_json::Value::as_str).map(str::to_owned));
            if let Some(iss) = iss {
                if let Some((trust, slot)) =
                    self.trusts.iter().find_map(|trust| trust.issues(&iss).map(|slot| (trust, slot)))
                {
                    return self.verify_trusted(token, trust, &slot, &iss);
                }
            }
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
        Ok((Caller { tenant_id, app_id, kind, added: None }, claims.nbf, claims.exp))
    }

    /// Verifies a token that names `trust`'s issuer `iss` (key-set `slot`): algorithm, key, signature,
    /// issuer, audience, times and lifetime first, then who it names.
    fn verify_trusted(
        &self,
        token: &str,
        trust: &Trust,
        slot: &str,
        iss: &str,
    ) -> Result<(Caller, i64, i64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("IDX14100: JWT is not well formed."))?;
        if !trust.algorithms().contains(&header.alg) {
            return Err(invalid("Access token validation failure. Unsupported signing algorithm."));
        }
        let kid = header.kid.ok_or_else(|| invalid("Access token validation failure. Missing 'kid'."))?;
        let key = trust
            .verification_key(slot, &kid, header.alg, iss)
            .map_err(|reason| AuthError::InvalidToken(format!("Access token validation failure. {reason}.")))?
            .ok_or_else(|| AuthError::UnknownKey { trust: trust.name().to_owned(), slot: slot.to_owned() })?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&trust.config.audiences);
        validation.set_issuer(&[iss]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.validation.leeway;
        let data = decode::<serde_json::Value>(token, &key, &validation).map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                invalid("Access token has expired or is not yet valid.")
            }
            ErrorKind::InvalidAudience => invalid("Access token validation failure. Invalid audience."),
            ErrorKind::InvalidIssuer => invalid("Access token validation failure. Invalid issuer."),
            ErrorKind::InvalidSignature => invalid("Access token validation failure. Invalid signature."),
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::InvalidToken(format!("Access token validation failure. Missing claim '{claim}'."))
            }
            _ => invalid("IDX14100: JWT is not well formed."),
        })?;
        let claims = data.claims;
        let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
        let text = |path: &str| claim_at(&claims, path).and_then(serde_json::Value::as_str).map(str::to_owned);
        let expires = number("exp").ok_or_else(|| invalid("Access token validation failure. Missing claim 'exp'."))?;
        let started = number("nbf")
            .or_else(|| number("iat"))
            .ok_or_else(|| invalid("Access token validation failure. Missing claim 'iat'."))?;
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(0);
        if number("iat").is_some_and(|issued| issued > Self::now().saturating_add(leeway)) {
            return Err(invalid("Access token has expired or is not yet valid."));
        }
        if expires.saturating_sub(started) > trust.max_lifetime() {
            return Err(invalid("Access token validation failure. The token's lifetime is too long."));
        }
        let (tenant_id, app_id, app_only, user, scopes, roles) = match trust.config.kind {
            TrustKind::Entra => {
                let tenant = text("tid").map(|tid| tid.to_ascii_lowercase());
                if tenant.as_deref() != Some(slot) {
                    return Err(invalid("Access token validation failure. Invalid tenant."));
                }
                let scp = text("scp");
                let roles = claim_strings(claims.get("roles"));
                // Without `idtyp` (an optional claim), an application's own token is one whose subject is
                // its object id and that has no `scp`: a user's token with app roles but no scope has a
                // pairwise `sub`, and is not taken for the application's.
                let app_only = match text("idtyp").as_deref() {
                    Some("app") => true,
                    Some("user") => false,
                    Some(_) => return Err(invalid("Access token validation failure. Invalid 'idtyp'.")),
                    None if scp.is_some() => false,
                    None if !roles.is_empty() && text("sub").is_some() && text("sub") == text("oid") => true,
                    None => {
                        return Err(invalid(
                            "Access token validation failure. The token is neither a user's ('scp') nor an application's ('idtyp', or 'roles' with 'sub' equal to 'oid').",
                        ))
                    }
                };
                let app = text("azp").or_else(|| text("appid"));
                let user = text("oid").filter(|oid| crate::is_guid(oid));
                let scopes = scp.map(|scp| scp.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
                (slot.to_owned(), app.map(|app| app.to_ascii_lowercase()), app_only, user, scopes, roles)
            }
            TrustKind::Oidc => {
                let config = &trust.config;
                let tenant = config.tenant.clone().unwrap_or_default().to_ascii_lowercase();
                let app_only = config.app_only_claim.as_deref().is_some_and(|claim| claim_at(&claims, claim).is_some());
                let app = text(config.app_claim.as_deref().unwrap_or("azp")).map(|app| trust.app_id(&app));
                let user = text(config.user_claim.as_deref().unwrap_or("sub")).map(|user| trust.user_id(&user));
                let scopes = claim_strings(claim_at(&claims, config.scope_claim.as_deref().unwrap_or("scope")));
                let roles = claim_strings(claim_at(&claims, config.role_claim.as_deref().unwrap_or("roles")));
                (tenant, app, app_only, user, scopes, roles)
            }
        };
        if self.directory.tenant(&tenant_id).is_none() {
            return Err(invalid("Access token validation failure. Unknown tenant."));
        }
        let app_id =
            app_id.ok_or_else(|| invalid("Access token validation failure. Missing the application claim."))?;
        if self.directory.app(&tenant_id, &app_id).is_none() {
            return Err(invalid("Access token validation failure. The application is not registered in the tenant."));
        }
        let mut added = None;
        let kind = if app_only {
            CallerKind::Application { roles: trust.graph_permissions(roles) }
        } else {
            let user_id = user.ok_or_else(|| invalid("Access token validation failure. Missing the user claim."))?;
            if self.directory.user_by_id(&tenant_id, &user_id).is_none() {
                if trust.config.users != TrustUsers::Auto {
                    return Err(invalid("Access token validation failure. The user does not exist in the tenant."));
                }
                let email_verified = claims.get("email_verified").and_then(serde_json::Value::as_bool);
                added = Some(named_user(&user_id, &text, email_verified == Some(true)));
            }
            CallerKind::Delegated { user_id, scopes: trust.graph_permissions(scopes) }
        };
        Ok((Caller { tenant_id, app_id, kind, added }, started, expires))
    }
}

/// The longest name (in characters) taken from a token for an added user.
pub const MAX_NAME_CHARS: usize = 256;

/// The user `user_id` as their token's claims name them: the sign-in name from `preferred_username`
/// (Entra v2.0, OpenID Connect), `upn` or `unique_name` (Entra v1.0), or `email` when `email_verified`;
/// the display name from `name`. Names are trimmed and cut to [`MAX_NAME_CHARS`]; one the claims do not give
/// is empty.
fn named_user(user_id: &str, text: &dyn Fn(&str) -> Option<String>, email_verified: bool) -> crate::User {
    let name = |claims: &[&str]| {
        claims
            .iter()
            .find_map(|claim| {
                let value = text(claim)?;
                let value = value.trim();
                (!value.is_empty()).then(|| value.chars().take(MAX_NAME_CHARS).collect::<String>())
            })
            .unwrap_or_default()
    };
    let sign_in_claims: &[&str] = if email_verified {
        &["preferred_username", "upn", "unique_name", "email"]
    } else {
        &["preferred_username", "upn", "unique_name"]
    };
    crate::User { id: user_id.to_owned(), user_principal_name: name(sign_in_claims), display_name: name(&["name"]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Issuer, TokenRequest};

    #[test]
    fn an_added_user_is_named_from_the_first_claim_that_has_a_name() {
        const ID: &str = "0a000000-0000-4000-8000-00000000000a";
        let named = |claims: serde_json::Value, email_verified: bool| {
            let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
            let user = named_user(ID, &text, email_verified);
            (user.user_principal_name, user.display_name)
        };
        let pair = |upn: &str, name: &str| (upn.to_owned(), name.to_owned());
        assert_eq!(
            named(serde_json::json!({ "preferred_username": " bob@x.example ", "upn": "u", "name": "Bob" }), false),
            pair("bob@x.example", "Bob")
        );
        assert_eq!(
            named(serde_json::json!({ "preferred_username": "  ", "unique_name": "v1@x.example" }), false),
            pair("v1@x.example", ""),
            "a blank claim is passed over; no name claim: none"
        );
        let email = serde_json::json!({ "email": "ceo@x.example" });
        assert_eq!(named(email.clone(), false), pair("", ""), "an unverified email names nobody");
        assert_eq!(named(email, true), pair("ceo@x.example", ""));
        let long = "é".repeat(MAX_NAME_CHARS + 10);
        let (upn, name) = named(serde_json::json!({ "preferred_username": long, "name": long }), false);
        assert_eq!((upn.chars().count(), name.chars().count()), (MAX_NAME_CHARS, MAX_NAME_CHARS));
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires_and_failures_are_not() {
        const TENANT: &str = "2f9a7c1d-0000-4000-8000-000000000abc";
        const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
        let tenants: Vec<crate::Tenant> = serde_json::from_value(serde_json::json!([
            { "id": TENANT, "displayName": "Contoso", "users": [], "apps": [{ "id": APP, "displayName": "App" }] }
        ]))
        .unwrap();
        let key = SigningKey::generate();
        let verifier = Verifier::new(&key, "https://issuer.test", Arc::new(Directory::new(tenants).unwrap()));
        let now = Verifier::now();
        let token = Issuer::new(key, "https://issuer.test").mint(&TokenRequest {
            tenant_id: TENANT.into(),
            app_id: APP.into(),
            user_id: None,
            permissions: vec!["Presence.Read.All".into()],
            issued_at: now,
            lifetime_seconds: 100,
        });
        let caller = verifier.verify(&token).unwrap();
        assert_eq!(verifier.remembered(&token, now).map(|verified| verified.caller), Some(caller.clone()));
        assert_eq!(verifier.verify(&token).unwrap(), caller, "answered from the cache");
        assert_eq!(verifier.verify_until(&token).unwrap(), (caller.clone(), now + 100 + 60), "exp plus the leeway");
        assert!(verifier.remembered(&token, now + 100 + 60).is_none(), "not after exp plus the leeway");
        assert!(verifier.remembered(&token, now).is_none(), "and forgotten then");
        let tampered = format!("{}x", token);
        assert!(verifier.verify(&tampered).is_err());
        assert!(verifier.remembered(&tampered, now).is_none(), "a failed token is not remembered");
    }
}
