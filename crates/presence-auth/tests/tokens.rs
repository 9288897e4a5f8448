//! Minted tokens verify; tampered, expired, foreign and misdirected ones do not.

use std::sync::{Arc, OnceLock};

use presence_auth::{AuthError, CallerKind, Directory, Issuer, SigningKey, Tenant, TokenRequest, Verifier};

const TENANT: &str = "2f9a7c1d-0000-4000-8000-000000000abc";
const OTHER_TENANT: &str = "3f9a7c1d-0000-4000-8000-000000000abc";
const APP: &str = "0a0f1e5c-8f62-4d3f-9d52-3b1c3b0d5e11";
const USER: &str = "7d3b5e0a-2c61-4f3e-9d1a-5a2b8c9e0f11";

fn key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(SigningKey::generate).clone()
}

fn directory() -> Arc<Directory> {
    let tenants: Vec<Tenant> = serde_json::from_value(serde_json::json!([
        { "id": TENANT, "displayName": "Contoso",
          "users": [{ "id": USER, "userPrincipalName": "adele@contoso.example", "displayName": "Adele" }],
          "apps": [{ "id": APP, "displayName": "Dialler" }] },
        { "id": OTHER_TENANT, "displayName": "Fabrikam", "users": [], "apps": [] }
    ]))
    .unwrap();
    Arc::new(Directory::new(tenants).unwrap())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn request(user: Option<&str>, permissions: &[&str]) -> TokenRequest {
    TokenRequest {
        tenant_id: TENANT.into(),
        app_id: APP.into(),
        user_id: user.map(str::to_owned),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        issued_at: now(),
        lifetime_seconds: 3600,
    }
}

#[test]
fn application_and_delegated_tokens_verify() {
    let issuer = Issuer::new(key(), "http://localhost:8080");
    let verifier = Verifier::new(&key(), "http://localhost:8080/", directory());
    let caller = verifier.verify(&issuer.mint(&request(None, &["Presence.ReadWrite.All"]))).unwrap();
    assert_eq!(caller.tenant_id, TENANT);
    assert_eq!(caller.app_id, APP);
    assert_eq!(caller.kind, CallerKind::Application { roles: vec!["Presence.ReadWrite.All".into()] });
    let caller = verifier.verify(&issuer.mint(&request(Some(USER), &["Presence.Read", "Presence.ReadWrite"]))).unwrap();
    assert_eq!(caller.user_id(), Some(USER));
}

#[test]
fn bad_tokens_are_refused_with_the_reason() {
    let issuer = Issuer::new(key(), "http://localhost:8080");
    let verifier = Verifier::new(&key(), "http://localhost:8080", directory());
    let refused = |token: &str| match verifier.verify(token) {
        Err(AuthError::InvalidToken(message)) => message,
        other => panic!("{other:?}"),
    };
    assert_eq!(verifier.verify(""), Err(AuthError::MissingToken));
    assert!(refused("not-a-jwt").contains("not well formed"));

    let mut expired = request(None, &["Presence.Read.All"]);
    expired.issued_at = now() - 7200;
    assert!(refused(&issuer.mint(&expired)).contains("expired"));
    let mut future = request(None, &["Presence.Read.All"]);
    future.issued_at = now() + 3600;
    assert!(refused(&issuer.mint(&future)).contains("not yet valid"));

    let token = issuer.mint(&request(None, &["Presence.Read.All"]));
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert!(refused(std::str::from_utf8(&tampered).unwrap()).contains("signature"));

    let stranger = Issuer::new(SigningKey::generate(), "http://localhost:8080");
    assert!(refused(&stranger.mint(&request(None, &["Presence.Read.All"]))).contains("signature"));

    let elsewhere = Issuer::new(key(), "http://evil.example");
    assert!(refused(&elsewhere.mint(&request(None, &["Presence.Read.All"]))).contains("issuer"));

    let mut unknown_app = request(None, &["Presence.Read.All"]);
    unknown_app.app_id = "99999999-8f62-4d3f-9d52-3b1c3b0d5e11".into();
    assert!(refused(&issuer.mint(&unknown_app)).contains("not registered"));

    let mut wrong_tenant_app = request(None, &["Presence.Read.All"]);
    wrong_tenant_app.tenant_id = OTHER_TENANT.into();
    assert!(refused(&issuer.mint(&wrong_tenant_app)).contains("not registered"));

    let mut unknown_user = request(Some("88888888-2c61-4f3e-9d1a-5a2b8c9e0f11"), &["Presence.Read"]);
    unknown_user.tenant_id = TENANT.into();
    assert!(refused(&issuer.mint(&unknown_user)).contains("user does not exist"));

    let mut personal = request(None, &["Presence.Read.All"]);
    personal.tenant_id = presence_auth::CONSUMER_TENANT_ID.into();
    assert_eq!(verifier.verify(&issuer.mint(&personal)), Err(AuthError::PersonalAccount));
}

#[test]
fn the_key_is_created_once_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let first = SigningKey::load_or_create(dir.path()).unwrap();
    let second = SigningKey::load_or_create(dir.path()).unwrap();
    assert_eq!(first.kid(), second.kid());
    assert_eq!(first.jwks()["keys"][0]["kid"], first.kid());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("signing-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is readable by its owner only");
    }
}

#[test]
fn directory_rejects_bad_configuration() {
    let bad =
        |value: serde_json::Value| Directory::new(serde_json::from_value(value).unwrap()).unwrap_err().to_string();
    assert!(bad(serde_json::json!([{ "id": "contoso", "displayName": "x" }])).contains("not a GUID"));
    assert!(bad(serde_json::json!([
        { "id": TENANT, "displayName": "x", "users": [
            { "id": USER, "userPrincipalName": "a@x", "displayName": "A" },
            { "id": "11111111-2c61-4f3e-9d1a-5a2b8c9e0f11", "userPrincipalName": "A@X", "displayName": "B" }] }
    ]))
    .contains("configured twice"));
    assert!(
        bad(serde_json::json!([{ "id": presence_auth::CONSUMER_TENANT_ID, "displayName": "x" }])).contains("personal")
    );
}

/// Claims of a valid delegated token of the local issuer (at `http://localhost:8080`), as `overrides` change
/// them (a `null` removes a claim).
fn claims(overrides: serde_json::Value) -> serde_json::Value {
    let at = now();
    let mut claims = serde_json::json!({
        "aud": "https://graph.microsoft.com", "iss": presence_auth::issuer::issuer_for("http://localhost:8080", TENANT),
        "iat": at, "nbf": at, "exp": at + 3600, "tid": TENANT, "oid": USER, "sub": USER, "azp": APP,
        "idtyp": "user", "ver": "2.0", "scp": "Presence.Read",
    });
    for (name, value) in overrides.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// [`claims`] signed with the server's key (RS256, its `kid`).
fn signed(overrides: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key().kid().to_owned());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key().pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims(overrides), &key).unwrap()
}

/// Each claim is checked, and a token otherwise valid is refused for the one thing wrong with it, with that
/// reason: audience, issuer, algorithm, the edges of the 60 s leeway, and each branch that tells a user's
/// token from an application's.
#[test]
fn an_otherwise_valid_token_is_refused_for_the_one_thing_wrong_with_it() {
    let verifier = Verifier::new(&key(), "http://localhost:8080", directory());
    let verify = |overrides: serde_json::Value| verifier.verify(&signed(overrides));
    let refused_token = |token: &str, what: &str, reason: &str| match verifier.verify(token) {
        Err(AuthError::InvalidToken(message)) => assert!(message.contains(reason), "{what}: {message}"),
        other => panic!("{what}: {other:?}, not refused for {reason}"),
    };
    let refused = |overrides: serde_json::Value, reason: &str| {
        refused_token(&signed(overrides.clone()), &overrides.to_string(), reason)
    };
    let user = |caller: presence_auth::Caller| caller.user_id().map(str::to_owned);
    assert_eq!(user(verify(serde_json::json!({})).unwrap()), Some(USER.into()), "the valid token");

    refused(serde_json::json!({ "aud": "api://someone-else" }), "Invalid audience");
    refused(serde_json::json!({ "aud": null }), "Missing claim 'aud'");
    refused(serde_json::json!({ "iss": "http://localhost:8080/other-tenant/v2.0" }), "Invalid issuer");
    refused(serde_json::json!({ "tid": null }), "Missing claim 'tid'");
    refused(serde_json::json!({ "azp": null }), "Missing claim 'azp'");
    assert!(verify(serde_json::json!({ "azp": null, "appid": APP })).is_ok(), "appid (v1.0) names the app too");

    // The 60 s leeway: 30 s inside each edge passes, 30 s outside is refused.
    let at = now();
    assert!(verify(serde_json::json!({ "exp": at - 30 })).is_ok(), "expired 30 s ago: inside the leeway");
    refused(serde_json::json!({ "exp": at - 90 }), "expired");
    assert!(verify(serde_json::json!({ "nbf": at + 30 })).is_ok(), "valid in 30 s: inside the leeway");
    refused(serde_json::json!({ "nbf": at + 90 }), "not yet valid");

    // User or application: idtyp first, then scp, then roles.
    let kind = |overrides: serde_json::Value| verify(overrides).unwrap().kind;
    assert!(matches!(kind(serde_json::json!({ "scp": null })), CallerKind::Delegated { .. }), "idtyp user");
    let app = kind(serde_json::json!({ "idtyp": "app", "scp": null, "roles": ["Presence.Read.All"] }));
    assert_eq!(app, CallerKind::Application { roles: vec!["Presence.Read.All".into()] });
    assert!(matches!(kind(serde_json::json!({ "idtyp": null })), CallerKind::Delegated { .. }), "scp: a user's");
    let roles_only = kind(serde_json::json!({ "idtyp": null, "scp": null, "roles": ["Presence.Read.All"] }));
    assert!(matches!(roles_only, CallerKind::Application { .. }), "roles without scp: an application's");
    refused(serde_json::json!({ "idtyp": null, "scp": null }), "neither 'scp' nor 'roles'");
    refused(serde_json::json!({ "idtyp": "device" }), "Invalid 'idtyp'");
    refused(serde_json::json!({ "oid": null }), "Missing claim 'oid'");

    // The algorithm: HS256 keyed with the public key, and none.
    let mut hs256 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs256.kid = Some(key().kid().to_owned());
    let valid = claims(serde_json::json!({}));
    let public = format!("{}.{}", key().modulus(), key().exponent());
    let forged =
        jsonwebtoken::encode(&hs256, &valid, &jsonwebtoken::EncodingKey::from_secret(public.as_bytes())).unwrap();
    refused_token(&forged, "HS256 keyed with the public key", "algorithm");
    use base64::Engine as _;
    let b64 = |value: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let unsigned = format!("{}.{}.", b64(&serde_json::json!({ "alg": "none", "typ": "JWT" })), b64(&valid));
    refused_token(&unsigned, "alg none", "not well formed");
}
