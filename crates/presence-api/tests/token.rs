//! The local issuer's token endpoint: the client credentials grant, answered like Entra ID's v2.0 endpoint,
//! and the tokens it gives working on the Graph API.

use axum::body::Body;
use axum::http::Request;
use presence_testkit::*;
use serde_json::{json, Value};

const GRAPH_DEFAULT: &str = "https://graph.microsoft.com/.default";

/// Posts `form` (already encoded) to the token endpoint of `tenant`, with `basic` credentials when given.
async fn token_request(server: &Server, tenant: &str, form: &str, basic: Option<(&str, &str)>) -> Reply {
    let mut request = Request::post(format!("/{tenant}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    server.send(request.body(Body::from(form.to_owned())).unwrap()).await
}

fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| {
            format!("{name}={}", percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn credentials(app: &str, secret: &str) -> String {
    form(&[
        ("grant_type", "client_credentials"),
        ("client_id", app),
        ("client_secret", secret),
        ("scope", GRAPH_DEFAULT),
    ])
}

#[tokio::test]
async fn a_client_with_its_secret_gets_a_token_that_works_on_the_graph_api() {
    let server = Server::new();
    let reply = token_request(&server, TENANT, &credentials(APP, APP_SECRET), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["cache-control"], "no-store, no-cache");
    let body = reply.json();
    assert_eq!((body["token_type"].as_str(), body["expires_in"].as_i64()), (Some("Bearer"), Some(3599)), "{body}");
    let token = body["access_token"].as_str().unwrap();
    // Granted Presence.ReadWrite.All: it writes and reads anyone's presence in its tenant.
    let write = json!({ "sessionId": APP, "availability": "Busy", "activity": "InACall" });
    server.post(&format!("/v1.0/users/{ADELE}/presence/setPresence"), token, write).await.ok_empty(200);
    let read = server.get(&format!("/v1.0/users/{ADELE}/presence"), token).await;
    assert_eq!(read.json()["availability"], "Busy", "{}", read.text);

    // HTTP Basic authentication works the same.
    let basic = form(&[("grant_type", "client_credentials"), ("scope", GRAPH_DEFAULT)]);
    assert_eq!(token_request(&server, TENANT, &basic, Some((APP, APP_SECRET))).await.status, 200);

    // An application granted no permission gets a token without roles, which Graph refuses with 403.
    let reply = token_request(&server, TENANT, &credentials(APP2, APP2_SECRET), None).await;
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get(&format!("/v1.0/users/{ADELE}/presence"), &token).await.status, 403);
}

#[tokio::test]
async fn bad_requests_get_entra_style_oauth_errors_and_no_token() {
    let server = Server::new();
    let unknown_tenant = "11111111-1111-4111-8111-111111111111";
    // (case, form, Basic credentials, tenant, status, OAuth error)
    type Case<'a> = (&'a str, String, Option<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("a wrong secret", credentials(APP, "not-the-secret"), None, TENANT, 401, "invalid_client"),
        ("another app's secret", credentials(APP, APP2_SECRET), None, TENANT, 401, "invalid_client"),
        (
            "a wrong secret over Basic",
            form(&[("grant_type", "client_credentials"), ("scope", GRAPH_DEFAULT)]),
            Some((APP, "nope")),
            TENANT,
            401,
            "invalid_client",
        ),
        (
            "no secret",
            form(&[("grant_type", "client_credentials"), ("client_id", APP), ("scope", GRAPH_DEFAULT)]),
            None,
            TENANT,
            401,
            "invalid_client",
        ),
        (
            "an unknown client",
            credentials("99999999-9999-4999-8999-999999999999", APP_SECRET),
            None,
            TENANT,
            400,
            "unauthorized_client",
        ),
        ("another tenant's client", credentials(OTHER_APP, APP_SECRET), None, TENANT, 400, "unauthorized_client"),
        ("an unknown tenant", credentials(APP, APP_SECRET), None, unknown_tenant, 400, "invalid_request"),
        (
            "the password grant",
            form(&[
                ("grant_type", "password"),
                ("client_id", APP),
                ("client_secret", APP_SECRET),
                ("scope", GRAPH_DEFAULT),
            ]),
            None,
            TENANT,
            400,
            "unsupported_grant_type",
        ),
        (
            "no grant type",
            form(&[("client_id", APP), ("client_secret", APP_SECRET), ("scope", GRAPH_DEFAULT)]),
            None,
            TENANT,
            400,
            "invalid_request",
        ),
        (
            "a scope that is not Graph's .default",
            form(&[
                ("grant_type", "client_credentials"),
                ("client_id", APP),
                ("client_secret", APP_SECRET),
                ("scope", "Presence.Read.All"),
            ]),
            None,
            TENANT,
            400,
            "invalid_scope",
        ),
        (
            "no scope",
            form(&[("grant_type", "client_credentials"), ("client_id", APP), ("client_secret", APP_SECRET)]),
            None,
            TENANT,
            400,
            "invalid_scope",
        ),
    ];
    for (case, body, basic, tenant, status, error) in cases {
        let reply = token_request(&server, tenant, &body, basic).await;
        assert_eq!(reply.status.as_u16(), status, "{case}: {}", reply.text);
        let answer: Value = reply.json();
        assert_eq!(answer["error"], error, "{case}: {answer}");
        assert!(answer["error_description"].as_str().unwrap().starts_with("AADSTS"), "{case}: {answer}");
        assert!(answer.get("access_token").is_none(), "{case}");
    }
    // JSON is not a token request.
    let request = Request::post(format!("/{TENANT}/oauth2/v2.0/token"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "grant_type": "client_credentials" }).to_string()))
        .unwrap();
    let reply = server.send(request).await;
    assert_eq!((reply.status.as_u16(), reply.json()["error"].as_str()), (400, Some("invalid_request")));
}

#[tokio::test]
async fn the_tenants_openid_metadata_names_the_token_endpoint() {
    let server = Server::new();
    let reply = server.get(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"), "").await;
    let metadata = reply.json();
    let endpoint = metadata["token_endpoint"].as_str().unwrap();
    assert!(endpoint.ends_with(&format!("/{TENANT}/oauth2/v2.0/token")), "{metadata}");
    assert!(metadata["authorization_endpoint"].is_string(), "MSAL needs it named: {metadata}");
}
