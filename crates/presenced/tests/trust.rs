//! Trusted identity providers, against the real binary and a mock provider over HTTPS (its own CA): Entra
//! ID v1.0 and v2.0 tokens and Keycloak-shaped tokens are accepted as their callers; every row of the
//! attack table in docs/hostile-input.md is refused with 401 and changes nothing; keys rotate without a
//! restart; an unreachable provider leaves the last good keys in place.

use std::path::Path;
use std::time::Duration;

use hyper::Method;
use presence_testkit::binary::{self, call, client, HttpClient, Running};
use presence_testkit::provider::{now, Provider, ProviderKey};
use presence_testkit::{ADELE, APP, OTHER_APP, OTHER_TENANT, STRANGER, TENANT};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_presenced");
const AUDIENCE: &str = "api://presence.test";

struct Setup {
    provider: Provider,
    entra_key: ProviderKey,
    keycloak_key: ProviderKey,
    server: Running,
    client: HttpClient,
    /// The ids the Keycloak trust maps `alice` and `presence-app` to.
    alice: String,
    keycloak_app: String,
    dir: tempfile::TempDir,
}

/// The demo configuration, a second tenant, an Entra trust for both tenants (v1.0 and v2.0) and a
/// Keycloak trust for the second, both on `provider`.
fn configuration(provider: &Provider, extra_users: &str, keycloak_extra: &str) -> String {
    let ca = provider.ca_file.to_str().unwrap();
    format!(
        r#"{example}
[[tenants]]
id = "{OTHER_TENANT}"
displayName = "Fabrikam"
[[tenants.users]]
id = "{STRANGER}"
userPrincipalName = "stranger@fabrikam.example"
displayName = "Stranger"
{extra_users}
[[tenants.apps]]
id = "{OTHER_APP}"
displayName = "Fabrikam app"

[[trust]]
name = "entra"
kind = "entra"
authority = "{base}"
versions = ["1.0", "2.0"]
audiences = ["{AUDIENCE}"]
tenants = ["{TENANT}", "{OTHER_TENANT}"]
ca_file = "{ca}"

[[trust]]
name = "keycloak"
kind = "oidc"
issuer = "{realm}"
audiences = ["presenced"]
tenant = "{OTHER_TENANT}"
role_claim = "realm_access.roles"
app_only_claim = "client_id"
ca_file = "{ca}"
{keycloak_extra}
[trust.permissions]
"presence:write" = "Presence.ReadWrite"
"presence-admin" = "Presence.ReadWrite.All"
"#,
        example = include_str!("../../../presenced.example.toml").replace("test_clock = false", "test_clock = true"),
        base = provider.base,
        realm = provider.realm_issuer(),
    )
}

async fn setup() -> Setup {
    setup_with("").await
}

/// [`setup`] with `keycloak_extra` lines in the Keycloak trust.
async fn setup_with(keycloak_extra: &str) -> Setup {
    let setup = setup_unready(keycloak_extra, |_| {}).await;
    binary::wait_ready(&setup.server.base, Duration::from_secs(60));
    setup
}

/// [`setup_with`], with `before` done to the provider before the server starts, and not waiting until the
/// server is ready.
async fn setup_unready(keycloak_extra: &str, before: impl FnOnce(&Provider)) -> Setup {
    let (entra_key, keycloak_key) = (ProviderKey::new("entra-1"), ProviderKey::new("keycloak-1"));
    let provider = Provider::start(entra_key.clone(), keycloak_key.clone()).await;
    before(&provider);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("presenced.toml");
    // The Keycloak user and application are named by strings; the trust maps them to GUIDs, which the
    // directory must list.
    std::fs::write(&path, configuration(&provider, "", keycloak_extra)).unwrap();
    let trust_id = |kind: &str, value: &str| keycloak_id(&path, kind, value);
    let (alice, keycloak_app) = (trust_id("--user", "alice"), trust_id("--app", "presence-app"));
    assert!(presence_auth::is_guid(&alice) && alice != trust_id("--user", "bob"), "{alice}");
    let users = format!(
        "[[tenants.users]]\nid = \"{alice}\"\nuserPrincipalName = \"alice@fabrikam.example\"\ndisplayName = \"Alice\"\n\
         [[tenants.apps]]\nid = \"{keycloak_app}\"\ndisplayName = \"Keycloak client\"\n"
    );
    std::fs::write(&path, configuration(&provider, &users, keycloak_extra)).unwrap();
    let global = global_arguments(dir.path());
    let server = binary::start(
        Path::new(BINARY),
        &global.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    Setup { provider, entra_key, keycloak_key, server, client: client(), alice, keycloak_app, dir }
}

/// The id the Keycloak trust of the configuration at `path` maps a `--user` or `--app` `value` to (the
/// `presenced config trust-id` command).
fn keycloak_id(path: &Path, kind: &str, value: &str) -> String {
    let output = std::process::Command::new(BINARY)
        .args(["--config", path.to_str().unwrap(), "config", "trust-id", "keycloak", kind, value])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The global arguments of the server in `dir`: its configuration file and data directory.
fn global_arguments(dir: &Path) -> Vec<String> {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    vec!["--config".into(), path("presenced.toml"), "--data-dir".into(), path("data")]
}

/// Starts the server of `dir` and waits until it is ready (its start-up fetch of the providers' keys over).
fn start_server(dir: &Path) -> Running {
    let global = global_arguments(dir);
    let server = binary::start(
        Path::new(BINARY),
        &global.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    binary::wait_ready(&server.base, Duration::from_secs(60));
    server
}

/// Claims of a Keycloak service account's token (its client's own: `client_id` present) with the realm
/// role presence-admin (Presence.ReadWrite.All).
fn keycloak_service_account(provider: &Provider) -> Value {
    keycloak(
        provider,
        json!({
            "sub": "service-account-presence-app", "client_id": "presence-app", "scope": "profile",
            "realm_access": { "roles": ["presence-admin"] },
        }),
    )
}

/// Entra v2.0 claims of a delegated token of `tenant`'s `user` in `app`, valid for an hour.
fn entra_v2(provider: &Provider, tenant: &str, user: &str, app: &str, scp: &str) -> Value {
    let at = now();
    json!({
        "iss": provider.entra_issuer(tenant), "aud": AUDIENCE, "tid": tenant, "oid": user, "azp": app,
        "scp": scp, "idtyp": "user", "ver": "2.0", "iat": at, "nbf": at, "exp": at + 3600,
    })
}

/// Claims of a Keycloak token of `alice` in the client `presence-app` (scope presence:write), valid for
/// five minutes, with `extra` claims set over them.
fn keycloak(provider: &Provider, extra: Value) -> Value {
    let mut claims = json!({
        "iss": provider.realm_issuer(), "aud": "presenced", "sub": "alice", "azp": "presence-app",
        "scope": "openid presence:write", "iat": now(), "exp": now() + 300,
    });
    claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    claims
}

impl Setup {
    async fn set_presence(&self, token: &str, user: &str, availability: &str, activity: &str) -> (u16, Value) {
        self.set_presence_as(APP, token, user, availability, activity).await
    }

    async fn set_presence_as(
        &self,
        app: &str,
        token: &str,
        user: &str,
        availability: &str,
        activity: &str,
    ) -> (u16, Value) {
        let body = json!({ "sessionId": app, "availability": availability, "activity": activity });
        let path = format!("/v1.0/users/{user}/presence/setPresence");
        call(&self.client, &self.server.base, Method::POST, &path, token, body).await
    }

    async fn presence(&self, token: &str, user: &str) -> (u16, Value) {
        let path = format!("/v1.0/users/{user}/presence");
        call(&self.client, &self.server.base, Method::GET, &path, token, Value::Null).await
    }

    fn entra(&self, claims: &Value) -> String {
        Provider::mint(&self.entra_key, claims, |_| {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_each_trusted_provider_are_accepted_as_their_callers() {
    let setup = setup().await;
    let provider = &setup.provider;

    // Entra ID v2.0, delegated: Adele sets her own presence and reads it through /me.
    let adele = setup.entra(&entra_v2(provider, TENANT, ADELE, APP, "Presence.ReadWrite Presence.Read"));
    assert_eq!(setup.set_presence(&adele, ADELE, "Busy", "InACall").await.0, 200);
    let (status, me) =
        call(&setup.client, &setup.server.base, Method::GET, "/v1.0/me/presence", &adele, Value::Null).await;
    assert_eq!((status, me["availability"].as_str()), (200, Some("Busy")), "{me}");

    // Entra ID v1.0, the application's own token (idtyp = app): it reads anyone's presence.
    let at = now();
    let app_only = setup.entra(&json!({
        "iss": format!("https://sts.windows.net/{TENANT}/"), "aud": AUDIENCE, "tid": TENANT, "appid": APP,
        "idtyp": "app", "roles": ["Presence.ReadWrite.All"], "oid": "9f1b8c2d-0000-4000-8000-00000000a11a",
        "ver": "1.0", "iat": at, "nbf": at, "exp": at + 3600,
    }));
    let (status, read) = setup.presence(&app_only, ADELE).await;
    assert_eq!((status, read["activity"].as_str()), (200, Some("InACall")), "{read}");
    // Without idtyp, an application's own token is known by its subject being its object id.
    let service_principal = "9f1b8c2d-0000-4000-8000-00000000a11a";
    let app_only = setup.entra(&json!({
        "iss": provider.entra_issuer(TENANT), "aud": AUDIENCE, "tid": TENANT, "azp": APP,
        "roles": ["Presence.Read.All"], "oid": service_principal, "sub": service_principal,
        "ver": "2.0", "iat": at, "nbf": at, "exp": at + 3600,
    }));
    assert_eq!(setup.presence(&app_only, ADELE).await.0, 200);

    // Keycloak, delegated: "alice" and the client "presence-app", mapped to the directory's GUIDs; the
    // scope "presence:write" is Presence.ReadWrite by the trust's permissions table.
    let keycloak_claims = |extra: Value| keycloak(provider, extra);
    let alice = Provider::mint(&setup.keycloak_key, &keycloak_claims(json!({})), |_| {});
    let (status, body) =
        setup.set_presence_as(&setup.keycloak_app, &alice, &setup.alice, "DoNotDisturb", "Presenting").await;
    assert_eq!(status, 200, "{body}");
    // A scope the table does not map grants nothing: an unmapped "presence:read" cannot read others.
    let unmapped = Provider::mint(&setup.keycloak_key, &keycloak_claims(json!({ "scope": "presence:read" })), |_| {});
    assert_eq!(setup.presence(&unmapped, STRANGER).await.0, 403);

    // Keycloak, the client's own token (client_id present): realm role presence-admin is
    // Presence.ReadWrite.All.
    let service_account = Provider::mint(&setup.keycloak_key, &keycloak_service_account(provider), |_| {});
    let (status, read) = setup.presence(&service_account, &setup.alice).await;
    assert_eq!((status, read["availability"].as_str()), (200, Some("DoNotDisturb")), "{read}");

    // The local issuer's tokens keep working beside the trusts.
    let global = global_arguments(setup.dir.path());
    let global: Vec<&str> = global.iter().map(String::as_str).collect();
    let local = binary::token(Path::new(BINARY), &global, &["--roles", "Presence.Read.All"]);
    assert_eq!(setup.presence(&local, ADELE).await.0, 200);
}

/// The token of an attack table row, and its name.
fn attacks(setup: &Setup) -> Vec<(&'static str, String)> {
    let provider = &setup.provider;
    let good = entra_v2(provider, TENANT, ADELE, APP, "Presence.ReadWrite");
    let with = |changes: Value| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().extend(changes.as_object().unwrap().clone());
        claims
    };
    let b64 = |value: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    let attacker = ProviderKey::new("attacker");
    let public = format!("{}.{}", setup.entra_key.key.modulus(), setup.entra_key.key.exponent());
    let at = now();
    vec![
        ("alg none", format!("{}.{}.", b64(&json!({ "alg": "none", "kid": "entra-1" })), b64(&good))),
        ("HS256 keyed with the provider's public key", {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("entra-1".into());
            jsonwebtoken::encode(&header, &good, &jsonwebtoken::EncodingKey::from_secret(public.as_bytes())).unwrap()
        }),
        ("unknown kid", Provider::mint(&attacker, &good, |_| {})),
        ("no kid", Provider::mint(&setup.entra_key, &good, |header| header.kid = None)),
        (
            "signed by another key under the right kid",
            Provider::mint(&attacker, &good, |header| header.kid = Some("entra-1".into())),
        ),
        ("kid of another trust's key", Provider::mint(&setup.keycloak_key, &good, |_| {})),
        ("swapped tid", setup.entra(&with(json!({ "tid": OTHER_TENANT })))),
        ("Graph's audience", setup.entra(&with(json!({ "aud": "https://graph.microsoft.com" })))),
        (
            "Graph's application id as audience",
            setup.entra(&with(json!({ "aud": "00000003-0000-0000-c000-000000000000" }))),
        ),
        ("expired", setup.entra(&with(json!({ "nbf": at - 3600, "iat": at - 3600, "exp": at - 120 })))),
        ("not yet valid", setup.entra(&with(json!({ "nbf": at + 300, "iat": at, "exp": at + 3600 })))),
        ("too long a lifetime", setup.entra(&with(json!({ "nbf": at, "iat": at, "exp": at + 3 * 86_400 })))),
        (
            "jku header naming the attacker's keys",
            Provider::mint(&attacker, &good, |header| {
                header.jku = Some(format!("{}/attacker/keys", provider.base));
            }),
        ),
        (
            "an issuer no trust names",
            setup.entra(&with(json!({ "iss": format!("https://evil.example/{TENANT}/v2.0") }))),
        ),
        (
            "a user of tenant A in tenant B",
            setup.entra(&entra_v2(provider, OTHER_TENANT, ADELE, OTHER_APP, "Presence.ReadWrite")),
        ),
        ("an application not registered in the tenant", setup.entra(&with(json!({ "azp": OTHER_APP })))),
        (
            "a user's token with app roles and no scope, without idtyp",
            setup.entra(&with(json!({
                "idtyp": null, "scp": null, "roles": ["Presence.ReadWrite.All"], "sub": "pairwise-subject-of-adele",
            }))),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_attack_table_is_refused_and_changes_nothing() {
    let setup = setup().await;
    let adele = setup.entra(&entra_v2(&setup.provider, TENANT, ADELE, APP, "Presence.ReadWrite"));
    assert_eq!(setup.set_presence(&adele, ADELE, "Busy", "InACall").await.0, 200);
    for (row, token) in attacks(&setup) {
        let (status, body) = setup.set_presence(&token, ADELE, "Away", "Away").await;
        assert_eq!(status, 401, "{row}: {body}");
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken", "{row}: {body}");
    }
    let (status, read) = setup.presence(&adele, ADELE).await;
    assert_eq!((status, read["availability"].as_str()), (200, Some("Busy")), "nothing changed: {read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart_and_a_dropped_key_is_refused() {
    let setup = setup().await;
    let provider = &setup.provider;
    let old = setup.entra(&entra_v2(provider, TENANT, ADELE, APP, "Presence.Read"));
    assert_eq!(setup.presence(&old, ADELE).await.0, 200);

    // The provider rolls over to a new key and drops the old one at once.
    let new_key = ProviderKey::new("entra-2");
    provider.set_entra_keys(vec![new_key.clone()]);
    let new = Provider::mint(&new_key, &entra_v2(provider, TENANT, ADELE, APP, "Presence.Read"), |_| {});
    assert_eq!(setup.presence(&new, ADELE).await.0, 200, "a new key is fetched when a token names it");
    let (status, body) = setup.presence(&old, ADELE).await;
    assert_eq!(status, 401, "a token of the dropped key, though verified before: {body}");

    // Tokens naming made-up keys right after a fetch fetch nothing (at most one fetch per 30 s).
    let served = provider.jwks_served();
    for kid in ["made-up-1", "made-up-2", "made-up-3"] {
        let token =
            Provider::mint(&ProviderKey::new(kid), &entra_v2(provider, TENANT, ADELE, APP, "Presence.Read"), |_| {});
        assert_eq!(setup.presence(&token, ADELE).await.0, 401);
    }
    assert_eq!(provider.jwks_served(), served, "unknown keys right after a fetch made the provider be asked again");

    // Those made-up keys were tenant A's: tenant B's keys are fetched for its own new key all the same.
    let newer = ProviderKey::new("entra-3");
    provider.set_entra_keys(vec![new_key, newer.clone()]);
    let fabrikam =
        Provider::mint(&newer, &entra_v2(provider, OTHER_TENANT, STRANGER, OTHER_APP, "Presence.Read"), |_| {});
    assert_eq!(setup.presence(&fabrikam, STRANGER).await.0, 200, "another tenant's key rotation was held back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_ready_once_the_providers_keys_were_fetched() {
    // The provider takes its time: the start-up fetch is on its way, and the server up but not ready.
    let setup = setup_unready("", |provider| provider.set_held(true)).await;
    let provider = &setup.provider;
    tokio::time::timeout(Duration::from_secs(30), async {
        while provider.requests() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the start-up fetch reached the provider");
    assert_eq!(setup.get("", "/readyz").await, (503, json!({ "status": "starting" })));
    assert_eq!(setup.get("", "/healthz").await.0, 200);

    provider.set_held(false);
    binary::wait_ready(&setup.server.base, Duration::from_secs(30));
    // Ready: a token of each trust verifies with the keys of that fetch, without another.
    let served = provider.jwks_served();
    let adele = setup.entra(&entra_v2(provider, TENANT, ADELE, APP, "Presence.Read"));
    assert_eq!(setup.presence(&adele, ADELE).await.0, 200);
    let alice = Provider::mint(&setup.keycloak_key, &keycloak(provider, json!({})), |_| {});
    assert_eq!(setup.presence(&alice, &setup.alice).await.0, 200);
    assert_eq!(provider.jwks_served(), served, "the keys were fetched again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_leaves_the_last_good_keys() {
    let setup = setup().await;
    let provider = &setup.provider;
    let first = setup.entra(&entra_v2(provider, TENANT, ADELE, APP, "Presence.Read"));
    assert_eq!(setup.presence(&first, ADELE).await.0, 200);

    // Both trusts' keys are held once a token of each verifies: the start-up fetches are over.
    let alice = Provider::mint(&setup.keycloak_key, &keycloak(provider, json!({})), |_| {});
    assert_eq!(setup.presence(&alice, &setup.alice).await.0, 200);
    let (served, requests) = (provider.jwks_served(), provider.requests());
    provider.set_down(true);
    // A token naming a key not held: the keys are fetched again, the fetch fails at once, the request is
    // answered, and the keys held stay.
    let unknown =
        Provider::mint(&ProviderKey::new("entra-9"), &entra_v2(provider, TENANT, ADELE, APP, "Presence.Read"), |_| {});
    assert_eq!(setup.presence(&unknown, ADELE).await.0, 401);
    assert_eq!(provider.requests(), requests + 1, "the keys were asked for again, once");
    // A token never seen before, of the key held: verified with the last good keys.
    let mut claims = entra_v2(provider, TENANT, ADELE, APP, "Presence.Read");
    claims["jti"] = json!("another token");
    let second = setup.entra(&claims);
    assert_eq!(setup.presence(&second, ADELE).await.0, 200, "the last good keys stayed");
    assert_eq!(provider.jwks_served(), served, "no key set was served while down");
}

impl Setup {
    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        call(&self.client, &self.server.base, Method::GET, path, token, Value::Null).await
    }

    /// Stops the server (SIGKILL) and starts it again on the same configuration and data.
    fn restart(&mut self) {
        self.server.child.kill().unwrap();
        self.server.child.wait().unwrap();
        self.server = start_server(self.dir.path());
    }
}

/// The users a listing shows: `(id, displayName, userPrincipalName)`, and the `$skiptoken` of its next page.
fn listed(page: &Value) -> (Vec<(String, String, String)>, Option<String>) {
    let users = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| {
            let text = |field: &str| user[field].as_str().unwrap().to_owned();
            (text("id"), text("displayName"), text("userPrincipalName"))
        })
        .collect();
    let next = page["@odata.nextLink"].as_str().map(|link| link.split("$skiptoken=").nth(1).unwrap().to_owned());
    (users, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adding_trust_s_users_join_the_directory_with_their_first_token_and_stay() {
    let mut setup = setup_with("users = \"auto\"").await;
    let provider = &setup.provider;
    let bob_claims = |name: &str| {
        keycloak(
            provider,
            json!({ "sub": "bob", "name": name, "preferred_username": "bob@fabrikam.example", "scope": "presence:write" }),
        )
    };
    let bob_token = Provider::mint(&setup.keycloak_key, &bob_claims("Bob Jones"), |_| {});
    let admin = Provider::mint(&setup.keycloak_key, &keycloak_service_account(provider), |_| {});
    let bob = keycloak_id(&setup.dir.path().join("presenced.toml"), "--user", "bob");
    assert!(presence_auth::is_guid(&bob), "{bob}");

    // Before Bob's first request he is nobody.
    assert_eq!(setup.presence(&admin, &bob).await.0, 404);
    let (_, users) = setup.get(&admin, "/v1.0/users").await;
    assert_eq!(listed(&users).0.len(), 2, "the configured users only: {users}");

    // His first token adds him, with its names: he sets his own presence, and is listed after the
    // configured users, found by id and by sign-in name in any case.
    let (status, body) = setup.set_presence_as(&setup.keycloak_app, &bob_token, &bob, "Busy", "InACall").await;
    assert_eq!(status, 200, "{body}");
    let (_, users) = setup.get(&admin, "/v1.0/users").await;
    let expected_bob = (bob.clone(), "Bob Jones".to_owned(), "bob@fabrikam.example".to_owned());
    let (shown, next) = listed(&users);
    assert_eq!(shown.len(), 3, "{users}");
    assert_eq!((shown[2].clone(), next), (expected_bob.clone(), None));
    for path in [format!("/v1.0/users/{bob}"), "/v1.0/users/BOB@fabrikam.example".to_owned()] {
        let (status, user) = setup.get(&admin, &path).await;
        assert_eq!((status, user["displayName"].as_str()), (200, Some("Bob Jones")), "{path}: {user}");
    }
    let (status, me) = setup.get(&bob_token, "/v1.0/me").await;
    assert_eq!((status, me["id"].as_str()), (200, Some(bob.as_str())), "{me}");
    let ids = json!({ "ids": [bob, STRANGER] });
    let (status, many) =
        call(&setup.client, &setup.server.base, Method::POST, "/v1.0/communications/getPresencesByUserId", &admin, ids)
            .await;
    assert_eq!(status, 200, "{many}");
    assert_eq!(many["value"][0]["availability"], "Busy", "{many}");

    // Pages: the configured users by offset, then the added ones by id.
    let (_, first) = setup.get(&admin, "/v1.0/users?$top=2").await;
    let (shown, next) = listed(&first);
    assert_eq!((shown.len(), next.as_deref()), (2, Some("2")), "{first}");
    let (_, second) = setup.get(&admin, "/v1.0/users?$top=2&$skiptoken=2").await;
    assert_eq!(listed(&second), (vec![expected_bob.clone()], None), "{second}");
    let (_, first) = setup.get(&admin, "/v1.0/users?$top=3").await;
    assert_eq!(listed(&first).1, None, "{first}");

    // A token with other names: written at most once a minute (tokens of several applications may name a
    // user differently); a token without names keeps them.
    let renamed = Provider::mint(&setup.keycloak_key, &bob_claims("Robert Jones"), |_| {});
    let display_name =
        async |setup: &Setup| setup.get(&admin, &format!("/v1.0/users/{bob}")).await.1["displayName"].clone();
    assert_eq!(setup.get(&renamed, "/v1.0/me/presence").await.0, 200);
    assert_eq!(display_name(&setup).await, "Bob Jones", "not within a minute of the last write");
    let advance = json!({ "seconds": 61 });
    let moved = call(&setup.client, &setup.server.base, Method::POST, "/_test/clock/advance", "", advance).await;
    assert_eq!(moved.0, 200, "{moved:?}");
    assert_eq!(setup.get(&renamed, "/v1.0/me/presence").await.0, 200);
    assert_eq!(display_name(&setup).await, "Robert Jones");
    let nameless = Provider::mint(
        &setup.keycloak_key,
        &keycloak(provider, json!({ "sub": "bob", "scope": "presence:write", "name": null })),
        |_| {},
    );
    assert_eq!(setup.get(&nameless, "/v1.0/me/presence").await.0, 200);
    let (_, user) = setup.get(&admin, &format!("/v1.0/users/{bob}")).await;
    assert_eq!(
        (user["displayName"].as_str(), user["userPrincipalName"].as_str()),
        (Some("Robert Jones"), Some("bob@fabrikam.example"))
    );

    // Another user whose token claims Bob's sign-in name does not take it.
    let carol = Provider::mint(
        &setup.keycloak_key,
        &keycloak(provider, json!({ "sub": "carol", "preferred_username": "BOB@fabrikam.example", "name": "Carol" })),
        |_| {},
    );
    assert_eq!(setup.get(&carol, "/v1.0/me").await.0, 200);
    let (_, found) = setup.get(&admin, "/v1.0/users/bob@fabrikam.example").await;
    assert_eq!(found["id"].as_str(), Some(bob.as_str()), "{found}");

    // A trust that lists its users does not take an added one: the Entra trust refuses Bob's id.
    let entra_bob = setup.entra(&entra_v2(provider, OTHER_TENANT, &bob, OTHER_APP, "Presence.Read"));
    assert_eq!(setup.presence(&entra_bob, &bob).await.0, 401);

    // Kept in the store: after a restart Bob is listed and his presence read before he calls again.
    setup.restart();
    let (_, users) = setup.get(&admin, "/v1.0/users").await;
    let names: Vec<String> = listed(&users).0.into_iter().skip(2).map(|user| user.1).collect();
    assert!(names.contains(&"Robert Jones".to_owned()) && names.contains(&"Carol".to_owned()), "{users}");
    let (status, read) = setup.presence(&admin, &bob).await;
    assert_eq!((status, read["availability"].as_str()), (200, Some("Busy")), "{read}");
}
