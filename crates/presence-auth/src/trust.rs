//! Trusted identity providers: Microsoft Entra ID and any OpenID Connect issuer, whose tokens are accepted
//! beside the local issuer's.
//!
//! A [`Trust`] is validated from its [`TrustConfig`] at start-up and holds its signing keys ([`KeySet`]s,
//! one per Entra tenant, one for an OIDC issuer), which the HTTP layer fetches from the provider's
//! discovery document and JWKS and replaces as they rotate. Verifying a token of a trust takes nothing
//! from the token but what it proves: the key is found by the header's `kid` among the keys already held
//! (never from `jku`, `x5u` or the token's `iss`), its algorithm must be one the trust allows (asymmetric
//! only), and the issuer, audience, times and lifetime are checked before any claim is used.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use crate::is_guid;

/// Microsoft Graph's audiences in every cloud: only Graph may validate tokens made for it, so a trust may
/// be configured with none of them (the public cloud's resource and application id, the US Government,
/// DoD and China clouds, Germany's).
const GRAPH_AUDIENCES_EVERYWHERE: [&str; 6] = [
    "https://graph.microsoft.com",
    "00000003-0000-0000-c000-000000000000",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    "https://graph.microsoft.de",
];

/// Microsoft's public cloud, where Entra ID tokens come from unless `authority` says otherwise.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Entra ID's v1.0 tokens name this issuer, with the tenant appended.
const ENTRA_V1_ISSUER: &str = "https://sts.windows.net";

/// What kind of provider a trust names.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrustKind {
    /// Microsoft Entra ID: per-tenant issuers and keys, v1.0 and/or v2.0 tokens, `tid`, `oid`, `idtyp`.
    Entra,
    /// Any OpenID Connect provider: one issuer, one tenant, claims named in the configuration.
    Oidc,
}

/// Who among a trust's users may call: those the configuration lists, or anyone its tokens name.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrustUsers {
    /// Only the users of the tenant's `[[tenants.users]]`.
    #[default]
    Listed,
    /// Also every user a valid delegated token names: added to the tenant's directory (in the store) with
    /// the names its token gives.
    Auto,
}

/// One `[[trust]]` of the configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// A name for logs and errors, and the namespace of the user ids it maps (unique).
    pub name: String,
    /// Entra ID, or any OpenID Connect provider.
    pub kind: TrustKind,
    /// Entra: which token versions are accepted (`"1.0"`, `"2.0"`); default `["2.0"]`.
    #[serde(default)]
    pub versions: Vec<String>,
    /// The token audiences (`aud`) accepted: presenced's own API, never Graph's.
    pub audiences: Vec<String>,
    /// Entra: the tenants whose tokens are accepted (each must be a configured tenant).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Entra: where the tenants' discovery documents and keys are (default Microsoft's public cloud).
    #[serde(default)]
    pub authority: Option<String>,
    /// OIDC: the issuer, matched exactly; its discovery document must name the same.
    #[serde(default)]
    pub issuer: Option<String>,
    /// OIDC: the JWKS to use instead of the discovery document's `jwks_uri`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// More root certificates (PEM) for the provider's HTTPS endpoints.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// OIDC: the tenant its users and applications belong to (a configured tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// OIDC: the claim naming the user (default `sub`); a value that is not a GUID is mapped to one.
    #[serde(default)]
    pub user_claim: Option<String>,
    /// OIDC: the claim naming the application (default `azp`).
    #[serde(default)]
    pub app_claim: Option<String>,
    /// OIDC: the claim with the delegated scopes, space-separated or a list (default `scope`).
    #[serde(default)]
    pub scope_claim: Option<String>,
    /// OIDC: the dotted path to the application roles (default `roles`).
    #[serde(default)]
    pub role_claim: Option<String>,
    /// OIDC: a token carrying this claim is an application's own (client credentials); without it every
    /// token is a user's. Keycloak's service-account tokens carry `client_id`.
    #[serde(default)]
    pub app_only_claim: Option<String>,
    /// The signing algorithms accepted (default `["RS256"]`); asymmetric ones only.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// The longest lifetime (`exp` minus `nbf` or `iat`) accepted, in minutes (default 1,440).
    #[serde(default)]
    pub max_lifetime_minutes: Option<u64>,
    /// The provider's scope and role names mapped to Graph's; without it, the provider's names are Graph's.
    #[serde(default)]
    pub permissions: Option<BTreeMap<String, String>>,
    /// Whether users the configuration does not list are added from their tokens (default: listed only).
    #[serde(default)]
    pub users: TrustUsers,
    /// The board's sign-in through this provider: the client id of a public client (a single-page app)
    /// registered with it, whose redirect URI is the board's address (`{public_url}/board`).
    #[serde(default)]
    pub board_client_id: Option<String>,
    /// The scopes the board asks for (default: Entra `{first audience}/.default`, OIDC `openid`).
    #[serde(default)]
    pub board_scopes: Vec<String>,
}

/// A validated trust, with the keys currently held for it.
#[derive(Debug)]
pub struct Trust {
    /// What the configuration says.
    pub config: TrustConfig,
    algorithms: Vec<Algorithm>,
    max_lifetime: i64,
    namespace: uuid::Uuid,
    /// The keys per tenant (Entra) or under `""` (OIDC).
    keys: RwLock<HashMap<String, Arc<KeySet>>>,
}

/// Where a trust's keys come from: a discovery document, or a JWKS named in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// The key-set slot these keys fill (an Entra tenant, or `""`).
    pub slot: String,
    /// The discovery document to read the issuer and `jwks_uri` from, unless `jwks_uri` is configured.
    pub discovery: Option<String>,
    /// The JWKS, when configured.
    pub jwks_uri: Option<String>,
    /// The issuer the discovery document must name (OIDC).
    pub issuer: Option<String>,
}

/// One verification key of a provider.
#[derive(Clone)]
pub struct ProviderKey {
    key: DecodingKey,
    /// The key's public numbers as the JWKS gave them: a key replaced under the same `kid` differs here.
    material: String,
    /// The algorithm the key is for, when the JWKS names one.
    algorithm: Option<Algorithm>,
    /// Entra: the issuer the key signs for (`{tenantid}` standing for the tenant), when the JWKS says.
    issuer: Option<String>,
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderKey").field("algorithm", &self.algorithm).field("issuer", &self.issuer).finish()
    }
}

/// A provider's signing keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, ProviderKey>,
}

impl KeySet {
    /// The signature keys of a JWKS document: RSA and EC keys with a `kid`; symmetric (`oct`) keys,
    /// encryption keys and keys of a disallowed algorithm are left out. Fails when the document is not a
    /// JWKS.
    pub fn from_jwks(jwks: &Value, allowed: &[Algorithm]) -> Result<KeySet, String> {
        let keys = jwks.get("keys").and_then(Value::as_array).ok_or("the JWKS has no \"keys\" list")?;
        let mut set = KeySet::default();
        for key in keys {
            let text = |name: &str| key.get(name).and_then(Value::as_str);
            let Some(kid) = text("kid") else { continue };
            if text("use").is_some_and(|usage| usage != "sig") {
                continue;
            }
            let algorithm = match text("alg") {
                Some(name) => match name.parse::<Algorithm>() {
                    Ok(algorithm) if allowed.contains(&algorithm) => Some(algorithm),
                    _ => continue,
                },
                None => None,
            };
            let decoding = match text("kty") {
                Some("RSA") => match (text("n"), text("e")) {
                    (Some(n), Some(e)) => {
                        DecodingKey::from_rsa_components(n, e).ok().map(|key| (key, format!("{n}.{e}")))
                    }
                    _ => None,
                },
                Some("EC") => match (text("x"), text("y")) {
                    (Some(x), Some(y)) => {
                        DecodingKey::from_ec_components(x, y).ok().map(|key| (key, format!("{x}.{y}")))
                    }
                    _ => None,
                },
                _ => None,
            };
            let Some((decoding, material)) = decoding else { continue };
            set.keys.insert(
                kid.to_owned(),
                ProviderKey { key: decoding, material, algorithm, issuer: text("issuer").map(str::to_owned) },
            );
        }
        Ok(set)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each key's id with its public numbers, in order: what tells two key sets apart.
    fn fingerprint(&self) -> Vec<(&str, &str, Option<Algorithm>, Option<&str>)> {
        let mut keys: Vec<_> = self
            .keys
            .iter()
            .map(|(kid, key)| (kid.as_str(), key.material.as_str(), key.algorithm, key.issuer.as_deref()))
            .collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        keys
    }
}

/// Why a trust's configuration is refused.
fn refuse(name: &str, reason: impl std::fmt::Display) -> String {
    format!("trust {name:?}: {reason}")
}

/// The asymmetric algorithms a trust may allow.
const ASYMMETRIC: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

impl Trust {
    /// Validates `config`; `tenant_known` says whether a tenant id is configured.
    pub fn new(config: TrustConfig, tenant_known: impl Fn(&str) -> bool) -> Result<Trust, String> {
        let name = config.name.clone();
        if name.trim().is_empty() {
            return Err("a trust needs a name".into());
        }
        if config.audiences.is_empty() {
            return Err(refuse(&name, "audiences: at least one is needed (presenced's own API)"));
        }
        for audience in &config.audiences {
            let bare = audience.trim_end_matches('/').trim_end_matches("/.default");
            if GRAPH_AUDIENCES_EVERYWHERE.iter().any(|graph| graph.eq_ignore_ascii_case(bare)) {
                return Err(refuse(
                    &name,
                    format!("audiences: {audience:?} is Microsoft Graph's; only Graph may validate its tokens, so register presenced as an API of its own"),
                ));
            }
        }
        let names = if config.algorithms.is_empty() { vec!["RS256".to_owned()] } else { config.algorithms.clone() };
        let mut algorithms = Vec::new();
        for algorithm in &names {
            match algorithm.parse::<Algorithm>() {
                Ok(parsed) if ASYMMETRIC.contains(&parsed) => algorithms.push(parsed),
                _ => {
                    return Err(refuse(
                        &name,
                        format!(
                        "algorithms: {algorithm:?} is not an asymmetric signature algorithm (RS*, PS*, ES256, ES384)"
                    ),
                    ))
                }
            }
        }
        let https = |field: &str, url: &Option<String>| -> Result<(), String> {
            match url {
                Some(url) if !url.starts_with("https://") => {
                    Err(refuse(&name, format!("{field}: {url:?} is not an https:// URL")))
                }
                _ => Ok(()),
            }
        };
        https("authority", &config.authority)?;
        https("issuer", &config.issuer)?;
        https("jwks_uri", &config.jwks_uri)?;
        match config.kind {
            TrustKind::Entra => {
                if config.tenants.is_empty() {
                    return Err(refuse(&name, "tenants: an Entra trust names the tenants it accepts"));
                }
                for tenant in &config.tenants {
                    if !is_guid(tenant) || !tenant_known(&tenant.to_ascii_lowercase()) {
                        return Err(refuse(&name, format!("tenants: {tenant:?} is not a configured tenant")));
                    }
                }
                for version in &config.versions {
                    if version != "1.0" && version != "2.0" {
                        return Err(refuse(&name, format!("versions: {version:?} is neither \"1.0\" nor \"2.0\"")));
                    }
                }
                for (field, set) in [
                    ("issuer", config.issuer.is_some()),
                    ("jwks_uri", config.jwks_uri.is_some()),
                    ("tenant", config.tenant.is_some()),
                    ("user_claim", config.user_claim.is_some()),
                    ("app_claim", config.app_claim.is_some()),
                    ("scope_claim", config.scope_claim.is_some()),
                    ("role_claim", config.role_claim.is_some()),
                    ("app_only_claim", config.app_only_claim.is_some()),
                ] {
                    if set {
                        return Err(refuse(&name, format!("{field}: not for an Entra trust (its claims are Entra's)")));
                    }
                }
            }
            TrustKind::Oidc => {
                if config.issuer.is_none() {
                    return Err(refuse(&name, "issuer: an OIDC trust names its issuer"));
                }
                match &config.tenant {
                    Some(tenant) if is_guid(tenant) && tenant_known(&tenant.to_ascii_lowercase()) => {}
                    Some(tenant) => {
                        return Err(refuse(&name, format!("tenant: {tenant:?} is not a configured tenant")))
                    }
                    None => return Err(refuse(&name, "tenant: an OIDC trust names the tenant its users belong to")),
                }
                if !config.tenants.is_empty() || !config.versions.is_empty() || config.authority.is_some() {
                    return Err(refuse(&name, "tenants, versions and authority are for Entra trusts"));
                }
                if config.users == TrustUsers::Auto && config.app_only_claim.is_none() {
                    return Err(refuse(
                        &name,
                        "users = \"auto\" needs app_only_claim: without it an application's own token would be taken for a user's, and its client added as a user",
                    ));
                }
            }
        }
        match &config.board_client_id {
            Some(client) if client.trim().is_empty() || client.len() > 256 || client.chars().any(char::is_control) => {
                return Err(refuse(&name, "board_client_id: a client id (at most 256 characters)"));
            }
            Some(_) if config.kind == TrustKind::Oidc && config.jwks_uri.is_some() => {
                return Err(refuse(
                    &name,
                    "board_client_id: the board's sign-in reads the provider's endpoints from its discovery document, so jwks_uri is not set",
                ));
            }
            None if !config.board_scopes.is_empty() => {
                return Err(refuse(&name, "board_scopes: only with board_client_id"));
            }
            _ => {}
        }
        if config.board_scopes.iter().any(|scope| scope.is_empty() || scope.contains(char::is_whitespace)) {
            return Err(refuse(&name, "board_scopes: each a scope without spaces"));
        }
        let max_lifetime_minutes = config.max_lifetime_minutes.unwrap_or(1_440);
        if max_lifetime_minutes == 0 || max_lifetime_minutes > 10_080 {
            return Err(refuse(&name, "max_lifetime_minutes: between 1 and 10,080 (a week)"));
        }
        let namespace = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, format!("presenced:trust:{name}").as_bytes());
        Ok(Trust {
            config,
            algorithms,
            max_lifetime: i64::try_from(max_lifetime_minutes * 60).unwrap_or(i64::MAX),
            namespace,
            keys: RwLock::default(),
        })
    }

    /// The trust's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The algorithms this trust accepts.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The longest lifetime accepted, in seconds.
    pub fn max_lifetime(&self) -> i64 {
        self.max_lifetime
    }

    /// The scopes the board's sign-in asks for.
    pub fn board_scopes(&self) -> Vec<String> {
        if !self.config.board_scopes.is_empty() {
            return self.config.board_scopes.clone();
        }
        match self.config.kind {
            TrustKind::Entra => {
                let audience = self.config.audiences.first().map_or("", |audience| audience.trim_end_matches('/'));
                vec![format!("{audience}/.default")]
            }
            TrustKind::Oidc => vec!["openid".to_owned()],
        }
    }

    /// Entra: the authorization and token endpoints of the trust's first tenant, where the board signs in.
    pub fn entra_sign_in_endpoints(&self) -> Option<(String, String)> {
        let tenant = self.config.tenants.first().filter(|_| self.config.kind == TrustKind::Entra)?;
        let base = format!("{}/{}/oauth2/v2.0", self.authority(), tenant.to_ascii_lowercase());
        Some((format!("{base}/authorize"), format!("{base}/token")))
    }

    fn authority(&self) -> &str {
        self.config.authority.as_deref().unwrap_or(ENTRA_AUTHORITY).trim_end_matches('/')
    }

    fn versions(&self) -> Vec<&str> {
        if self.config.versions.is_empty() {
            vec!["2.0"]
        } else {
            self.config.versions.iter().map(String::as_str).collect()
        }
    }

    /// Where the trust's keys come from: one source per Entra tenant, or the OIDC issuer's.
    pub fn key_sources(&self) -> Vec<KeySource> {
        match self.config.kind {
            TrustKind::Entra => self
                .config
                .tenants
                .iter()
                .map(|tenant| {
                    let tenant = tenant.to_ascii_lowercase();
                    KeySource {
                        discovery: None,
                        jwks_uri: Some(format!("{}/{tenant}/discovery/v2.0/keys", self.authority())),
                        issuer: None,
                        slot: tenant,
                    }
                })
                .collect(),
            TrustKind::Oidc => {
                let issuer = self.config.issuer.clone().unwrap_or_default();
                vec![KeySource {
                    slot: String::new(),
                    discovery: self
                        .config
                        .jwks_uri
                        .is_none()
                        .then(|| format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))),
                    jwks_uri: self.config.jwks_uri.clone(),
                    issuer: Some(issuer),
                }]
            }
        }
    }

    /// Replaces the keys of `slot`; answers whether they changed (a key added, dropped, or replaced under
    /// the same `kid`).
    pub fn set_keys(&self, slot: &str, keys: KeySet) -> bool {
        let mut held = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = held.get(slot).is_none_or(|old| old.fingerprint() != keys.fingerprint());
        held.insert(slot.to_owned(), Arc::new(keys));
        changed
    }

    /// The key `kid` of `slot`, if held.
    fn key(&self, slot: &str, kid: &str) -> Option<ProviderKey> {
        let held = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        held.get(slot).and_then(|keys| keys.keys.get(kid)).cloned()
    }

    /// The key-set slot and the exact issuer `iss` is, when this trust issues tokens under that name: an
    /// Entra tenant it accepts in a version it accepts, or the OIDC issuer.
    pub fn issues(&self, iss: &str) -> Option<String> {
        match self.config.kind {
            TrustKind::Oidc => (self.config.issuer.as_deref() == Some(iss)).then(String::new),
            TrustKind::Entra => self.config.tenants.iter().find_map(|tenant| {
                let tenant = tenant.to_ascii_lowercase();
                let versions = self.versions();
                let v2 = versions.contains(&"2.0") && iss == format!("{}/{tenant}/v2.0", self.authority());
                let v1 = versions.contains(&"1.0") && iss == format!("{ENTRA_V1_ISSUER}/{tenant}/");
                (v1 || v2).then_some(tenant)
            }),
        }
    }

    /// The key to verify a token of `slot` signed with `algorithm` under `kid`, checked against what the
    /// JWKS says of it: its algorithm, and (Entra) the issuer it signs for.
    pub fn verification_key(
        &self,
        slot: &str,
        kid: &str,
        algorithm: Algorithm,
        iss: &str,
    ) -> Result<Option<DecodingKey>, &'static str> {
        let Some(key) = self.key(slot, kid) else { return Ok(None) };
        if key.algorithm.is_some_and(|named| named != algorithm) {
            return Err("the token's algorithm is not its key's");
        }
        if let Some(template) = &key.issuer {
            // Entra's keys name the v2.0 issuer they sign for; v1.0 tokens name another form of it.
            if self.config.kind == TrustKind::Entra
                && iss.starts_with(self.authority())
                && template.replace("{tenantid}", slot) != iss
            {
                return Err("the key does not sign for the token's issuer");
            }
        }
        Ok(Some(key.key))
    }

    /// The user id the value of the user claim maps to. A GUID in `sub` (an OIDC provider's own,
    /// immutable user id) is taken as it is; anything else, and any value of another claim (which a user
    /// might choose, say a username), becomes a UUIDv5 in this trust's namespace: stable across restarts
    /// and nodes, and never another trust's or a listed user's id by accident or by choice.
    pub fn user_id(&self, value: &str) -> String {
        let claim = self.config.user_claim.as_deref().unwrap_or("sub");
        if claim == "sub" && is_guid(value) {
            value.to_ascii_lowercase()
        } else {
            uuid::Uuid::new_v5(&self.namespace, format!("user:{claim}:{value}").as_bytes()).to_string()
        }
    }

    /// The application id the value of the application claim maps to, like [`Trust::user_id`]: a GUID in
    /// `azp`, `client_id` or `appid` (client ids the provider's administrators assign) is taken as it is.
    pub fn app_id(&self, value: &str) -> String {
        let claim = self.config.app_claim.as_deref().unwrap_or("azp");
        if matches!(claim, "azp" | "client_id" | "appid") && is_guid(value) {
            value.to_ascii_lowercase()
        } else {
            uuid::Uuid::new_v5(&self.namespace, format!("app:{claim}:{value}").as_bytes()).to_string()
        }
    }

    /// The Graph permission names a provider's scope or role names grant.
    pub fn graph_permissions(&self, names: Vec<String>) -> Vec<String> {
        match &self.config.permissions {
            None => names,
            Some(map) => names.iter().filter_map(|name| map.get(name).cloned()).collect(),
        }
    }
}

/// The value at a dotted path in `claims` (`realm_access.roles`).
pub fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |value, part| value.get(part))
}

/// A claim's strings: a space-separated string, or a list of strings.
pub fn claim_strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "5f1d3c2a-7b6e-4d8f-9a01-23456789abcd";

    fn config(kind: TrustKind) -> TrustConfig {
        TrustConfig {
            name: "t".into(),
            kind,
            versions: Vec::new(),
            audiences: vec!["api://presence".into()],
            tenants: if kind == TrustKind::Entra { vec![TENANT.into()] } else { Vec::new() },
            authority: None,
            issuer: (kind == TrustKind::Oidc).then(|| "https://sso.example.org/realms/staff".into()),
            jwks_uri: None,
            ca_file: None,
            tenant: (kind == TrustKind::Oidc).then(|| TENANT.into()),
            user_claim: None,
            app_claim: None,
            scope_claim: None,
            role_claim: None,
            app_only_claim: None,
            algorithms: Vec::new(),
            max_lifetime_minutes: None,
            permissions: None,
            users: TrustUsers::Listed,
            board_client_id: None,
            board_scopes: Vec::new(),
        }
    }

    fn known(tenant: &str) -> bool {
        tenant == TENANT
    }

    #[test]
    fn graph_audiences_symmetric_algorithms_and_unknown_tenants_are_refused() {
        for kind in [TrustKind::Entra, TrustKind::Oidc] {
            assert!(Trust::new(config(kind), known).is_ok());
            for audience in GRAPH_AUDIENCES_EVERYWHERE.iter().chain(&["https://graph.microsoft.us/.default"]) {
                let mut graph = config(kind);
                graph.audiences.push((*audience).to_owned());
                assert!(Trust::new(graph, known).unwrap_err().contains("Graph"), "{audience}");
            }
            for algorithm in ["HS256", "none", "EdDSA-ish"] {
                let mut symmetric = config(kind);
                symmetric.algorithms = vec![algorithm.into()];
                assert!(Trust::new(symmetric, known).unwrap_err().contains("asymmetric"), "{algorithm}");
            }
        }
        let mut stranger = config(TrustKind::Entra);
        stranger.tenants = vec!["11111111-1111-4111-8111-111111111111".into()];
        assert!(Trust::new(stranger, known).unwrap_err().contains("not a configured tenant"));
        let mut plain = config(TrustKind::Oidc);
        plain.issuer = Some("http://sso.example.org".into());
        assert!(Trust::new(plain, known).unwrap_err().contains("https"));
    }

    #[test]
    fn the_board_signs_in_with_a_public_client_and_default_scopes() {
        let mut entra = config(TrustKind::Entra);
        entra.board_client_id = Some("8d6f0c1e-0000-4000-8000-000000000002".into());
        let trust = Trust::new(entra.clone(), known).unwrap();
        assert_eq!(trust.board_scopes(), ["api://presence/.default"]);
        let (authorize, token) = trust.entra_sign_in_endpoints().unwrap();
        assert_eq!(authorize, format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize"));
        assert_eq!(token, format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"));
        entra.board_scopes = vec!["api://presence/Presence.Read.All".into()];
        assert_eq!(Trust::new(entra, known).unwrap().board_scopes(), ["api://presence/Presence.Read.All"]);

        let mut oidc = config(TrustKind::Oidc);
        oidc.board_client_id = Some("presence-board".into());
        let trust = Trust::new(oidc.clone(), known).unwrap();
        assert_eq!((trust.board_scopes(), trust.entra_sign_in_endpoints()), (vec!["openid".to_owned()], None));
        let refused = |change: &dyn Fn(&mut TrustConfig), why: &str| {
            let mut changed = oidc.clone();
            change(&mut changed);
            assert!(Trust::new(changed, known).unwrap_err().contains(why), "{why}");
        };
        refused(&|config| config.jwks_uri = Some("https://sso.example.org/keys".into()), "discovery document");
        refused(&|config| config.users = TrustUsers::Auto, "needs app_only_claim");
        let mut adding = oidc.clone();
        (adding.users, adding.app_only_claim) = (TrustUsers::Auto, Some("client_id".into()));
        assert!(Trust::new(adding, known).is_ok());
        refused(&|config| config.board_client_id = Some(" ".into()), "board_client_id");
        refused(&|config| config.board_scopes = vec!["openid profile".into()], "board_scopes");
        refused(
            &|config| {
                config.board_client_id = None;
                config.board_scopes = vec!["openid".into()];
            },
            "only with board_client_id",
        );
    }

    #[test]
    fn entra_issuers_name_an_accepted_tenant_in_an_accepted_version() {
        let mut entra = config(TrustKind::Entra);
        let trust = Trust::new(entra.clone(), known).unwrap();
        assert_eq!(trust.issues(&format!("https://login.microsoftonline.com/{TENANT}/v2.0")), Some(TENANT.into()));
        assert_eq!(trust.issues(&format!("https://sts.windows.net/{TENANT}/")), None, "v1.0 not accepted");
        assert_eq!(trust.issues("https://login.microsoftonline.com/11111111-1111-4111-8111-111111111111/v2.0"), None);
        entra.versions = vec!["1.0".into()];
        let trust = Trust::new(entra, known).unwrap();
        assert_eq!(trust.issues(&format!("https://sts.windows.net/{TENANT}/")), Some(TENANT.into()));
    }

    #[test]
    fn user_claims_that_are_not_guids_map_to_stable_guids_per_trust() {
        let trust = Trust::new(config(TrustKind::Oidc), known).unwrap();
        let mapped = trust.user_id("alice");
        assert!(is_guid(&mapped));
        assert_eq!(trust.user_id("alice"), mapped, "stable");
        assert_eq!(trust.user_id("8D6F0C1E-0000-4000-8000-000000000001"), "8d6f0c1e-0000-4000-8000-000000000001");
        let mut by_username = config(TrustKind::Oidc);
        by_username.user_claim = Some("preferred_username".into());
        let by_username = Trust::new(by_username, known).unwrap();
        let victim = "8d6f0c1e-0000-4000-8000-000000000001";
        assert_ne!(by_username.user_id(victim), victim, "a username shaped like someone's id is not that id");
        let mut other = config(TrustKind::Oidc);
        other.name = "other".into();
        assert_ne!(Trust::new(other, known).unwrap().user_id("alice"), mapped, "another trust, another user");
    }

    #[test]
    fn a_jwks_keeps_only_signature_keys_of_allowed_algorithms() {
        let jwks = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "secret", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "RSA", "kid": "hs", "alg": "HS256", "n": "AQAB", "e": "AQAB" },
            { "kty": "RSA", "kid": "good", "use": "sig", "n": "AQAB", "e": "AQAB" },
        ]});
        let set = KeySet::from_jwks(&jwks, &[Algorithm::RS256]).unwrap();
        let kids: Vec<&str> = set.fingerprint().iter().map(|key| key.0).collect();
        assert_eq!(kids, ["good"]);
        assert!(KeySet::from_jwks(&serde_json::json!({}), &[Algorithm::RS256]).is_err());
    }

    #[test]
    fn a_key_replaced_under_the_same_kid_is_a_change() {
        let trust = Trust::new(config(TrustKind::Oidc), known).unwrap();
        let jwks = |n: &str| serde_json::json!({ "keys": [{ "kty": "RSA", "kid": "k1", "n": n, "e": "AQAB" }] });
        let set = |n: &str| KeySet::from_jwks(&jwks(n), &[Algorithm::RS256]).unwrap();
        assert!(trust.set_keys("", set("AQAB")), "the first keys");
        assert!(!trust.set_keys("", set("AQAB")), "the same keys again");
        assert!(trust.set_keys("", set("AQAD")), "another key under the same kid");
    }

    #[test]
    fn claims_are_found_by_dotted_paths_as_strings_or_lists() {
        let claims = serde_json::json!({ "scope": "a b", "realm_access": { "roles": ["x", "y"] } });
        assert_eq!(claim_strings(claim_at(&claims, "scope")), ["a", "b"]);
        assert_eq!(claim_strings(claim_at(&claims, "realm_access.roles")), ["x", "y"]);
        assert!(claim_strings(claim_at(&claims, "missing.path")).is_empty());
    }
}
