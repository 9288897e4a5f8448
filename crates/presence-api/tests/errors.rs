//! Bad input, missing permissions and other tenants: the right status and Graph error, and nothing changes.

use axum::body::Body;
use axum::http::Request;
use presence_testkit::*;
use serde_json::{json, Value};

/// Sends `request` and checks the error; then checks Adele's presence is exactly what it was.
/// Also checks that no record was created for anybody.
async fn refused(server: &Server, request: Request<Body>, status: u16, code: &str) -> String {
    let before: Value = server.presence(ADELE).await;
    let records = server.store.user_count().unwrap();
    let message = server.send(request).await.error(status, code);
    assert_eq!(server.presence(ADELE).await, before, "a refused request changed state");
    assert_eq!(server.store.user_count().unwrap(), records, "a refused request created a record");
    message
}

fn post(path: &str, token: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(path).header("authorization", format!("Bearer {token}"));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.body(body.into()).unwrap()
}

fn json_post(path: &str, token: &str, body: Value) -> Request<Body> {
    post(path, token, Some("application/json"), body.to_string())
}

#[tokio::test]
async fn bad_action_bodies_are_400_and_change_nothing() {
    let server = Server::new();
    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    let token = server.writer();
    let path = format!("/v1.0/users/{ADELE}/presence/setPresence");
    let valid = || json!({ "sessionId": APP, "availability": "Available", "activity": "Available" });
    let with = |name: &str, value: Value| {
        let mut body = valid();
        body[name] = value;
        body
    };
    let without = |name: &str| {
        let mut body = valid();
        body.as_object_mut().unwrap().remove(name);
        body
    };

    let cases: Vec<(Request<Body>, &str)> = vec![
        (post(&path, &token, Some("application/json"), "{\"sessionId\":"), "Unable to read JSON"),
        (post(&path, &token, Some("application/json"), "[1,2]"), "JSON object"),
        (post(&path, &token, Some("text/plain"), valid().to_string()), "Content-Type"),
        (post(&path, &token, None, valid().to_string()), "Content-Type"),
        (post(&path, &token, Some("application/json"), ""), "Empty Payload"),
        (json_post(&path, &token, without("availability")), "'availability' is required"),
        (json_post(&path, &token, without("activity")), "'activity' is required"),
        (json_post(&path, &token, without("sessionId")), "'sessionId' is required"),
        (json_post(&path, &token, with("availability", json!(3))), "must be a string"),
        (json_post(&path, &token, with("activity", json!({"a": 1}))), "must be a string"),
        (json_post(&path, &token, with("availability", json!("Sleeping"))), "not a valid availability"),
        (json_post(&path, &token, with("activity", json!("Napping"))), "not a valid activity"),
        (json_post(&path, &token, with("activity", json!("Busy"))), "not supported"),
        (
            json_post(&path, &token, json!({ "sessionId": APP, "availability": "Busy", "activity": "Busy" })),
            "not supported",
        ),
        (
            json_post(&path, &token, json!({ "sessionId": APP, "availability": "Busy", "activity": "InAMeeting" })),
            "not supported",
        ),
        (
            json_post(&path, &token, json!({ "sessionId": APP, "availability": "Offline", "activity": "OffWork" })),
            "not supported",
        ),
        (json_post(&path, &token, with("expirationDuration", json!("PT4M"))), "out of range"),
        (json_post(&path, &token, with("expirationDuration", json!("PT5H"))), "out of range"),
        (json_post(&path, &token, with("expirationDuration", json!("PT0S"))), "longer than zero"),
        (json_post(&path, &token, with("expirationDuration", json!("-PT10M"))), "longer than zero"),
        (json_post(&path, &token, with("expirationDuration", json!("ten minutes"))), "ISO 8601"),
        (json_post(&path, &token, with("expirationDuration", json!(600))), "must be a string"),
        (json_post(&path, &token, with("sessionId", json!(APP2))), "calling application"),
        (json_post(&path, &token, with("sessionId", json!("my-session"))), "calling application"),
    ];
    for (request, fragment) in cases {
        let message = refused(&server, request, 400, "BadRequest").await;
        assert!(message.contains(fragment), "expected '{fragment}' in '{message}'");
    }
}

#[tokio::test]
async fn unknown_members_are_ignored() {
    let server = Server::new();
    let body = json!({ "sessionId": APP, "availability": "Away", "activity": "Away", "note": "hi" });
    server.post(&format!("/v1.0/users/{ADELE}/presence/setPresence"), &server.writer(), body).await.ok_empty(200);
    let body = json!({ "sessionId": APP, "availability": "Busy", "activity": "Busy" });
    let path = format!("/v1.0/users/{ADELE}/presence/setUserPreferredPresence");
    server.post(&path, &server.writer(), body).await.ok_empty(200);
}

#[tokio::test]
async fn bad_paths_methods_and_sizes() {
    let server = Server::with(true, 2048);
    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    let token = server.writer();
    let get =
        |path: &str| Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap();
    let with_method = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap()
    };

    let message = refused(&server, get("/v1.0/users/adele@contoso.example/presence"), 400, "BadRequest").await;
    assert!(message.contains("object id"), "{message}");
    refused(&server, get("/v1.0/communications/presences/adele"), 400, "BadRequest").await;
    let unknown = "00000000-0000-4000-8000-000000000009";
    refused(&server, get(&format!("/v1.0/users/{unknown}/presence")), 404, "NotFound").await;
    let set = json!({ "sessionId": APP, "availability": "Away", "activity": "Away" });
    refused(
        &server,
        json_post(&format!("/v1.0/users/{unknown}/presence/setPresence"), &token, set.clone()),
        404,
        "NotFound",
    )
    .await;

    refused(&server, with_method("PATCH", &format!("/v1.0/users/{ADELE}/presence")), 405, "Request_BadRequest").await;
    refused(&server, with_method("DELETE", &format!("/v1.0/users/{ADELE}/presence")), 405, "Request_BadRequest").await;
    refused(
        &server,
        with_method("PUT", &format!("/v1.0/users/{ADELE}/presence/setPresence")),
        405,
        "Request_BadRequest",
    )
    .await;
    refused(&server, with_method("POST", "/v1.0/communications/presences"), 405, "Request_BadRequest").await;

    let message = refused(&server, get(&format!("/v1.0/users/{ADELE}/presence/mood")), 400, "BadRequest").await;
    assert_eq!(message, "Resource not found for the segment 'mood'.");
    refused(&server, get("/v1.0/groups"), 400, "BadRequest").await;
    refused(&server, get("/v2.0/me/presence"), 404, "NotFound").await;
    refused(&server, get("/"), 404, "NotFound").await;

    let big = json!({ "sessionId": APP, "availability": "Away", "activity": "Away", "padding": "x".repeat(4096) });
    refused(
        &server,
        json_post(&format!("/v1.0/users/{ADELE}/presence/setPresence"), &token, big),
        413,
        "RequestEntityTooLarge",
    )
    .await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let server = Server::with(true, 64 * 1024);
    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    let token = server.writer();
    refused(
        &server,
        post(&format!("/v1.0/users/{ADELE}/presence/setPresence"), &token, Some("application/json"), deep),
        400,
        "BadRequest",
    )
    .await;
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let server = Server::new();
    let path = format!("/v1.0/users/{ADELE}/presence");
    let message = server.get(&path, "").await.error(401, "InvalidAuthenticationToken");
    assert_eq!(message, "Access token is empty.");
    let bare = Request::get(&path).header("authorization", "Bearer ").body(Body::empty()).unwrap();
    assert_eq!(server.send(bare).await.error(401, "InvalidAuthenticationToken"), "Access token is empty.");
    server.get(&path, "garbage").await.error(401, "InvalidAuthenticationToken");
    let basic = Request::get(&path).header("authorization", "Basic dXNlcjpwYXNz").body(Body::empty()).unwrap();
    server.send(basic).await.error(401, "InvalidAuthenticationToken");
    let set = json!({ "sessionId": APP, "availability": "Away", "activity": "Away" });
    server.post(&format!("{path}/setPresence"), "", set).await.error(401, "InvalidAuthenticationToken");
    assert_eq!(server.shows(ADELE).await.0, "Offline");
}

#[tokio::test]
async fn the_permission_table_is_enforced() {
    let server = Server::new();
    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    let adele_path = format!("/v1.0/users/{ADELE}/presence");
    let set = |session: &str| json!({ "sessionId": session, "availability": "Away", "activity": "Away" });

    // Reading.
    let own_only = server.user(ALEX, &["Presence.Read"]);
    let message = server.get(&adele_path, &own_only).await.error(403, "Authorization_RequestDenied");
    assert_eq!(message, "Insufficient privileges to complete the operation.");
    assert_eq!(server.get("/v1.0/me/presence", &own_only).await.status, 200);
    assert_eq!(server.get(&format!("/v1.0/users/{ALEX}/presence"), &own_only).await.status, 200);
    let many = json!({ "ids": [ADELE] });
    server
        .post("/v1.0/communications/getPresencesByUserId", &own_only, many.clone())
        .await
        .error(403, "Authorization_RequestDenied");
    let no_role = server.app(&["User.Read.All"]);
    server.get(&adele_path, &no_role).await.error(403, "Forbidden");
    server.post("/v1.0/communications/getPresencesByUserId", &no_role, many).await.error(403, "Forbidden");
    let app = server.app(&["Presence.Read.All"]);
    let message = server.get("/v1.0/me/presence", &app).await.error(400, "BadRequest");
    assert_eq!(message, "/me request is only valid with delegated authentication flow.");

    // Writing.
    let reader_app = server.app(&["Presence.Read.All"]);
    server.post(&format!("{adele_path}/setPresence"), &reader_app, set(APP)).await.error(403, "Forbidden");
    let alex_writer = server.user(ALEX, &["Presence.ReadWrite"]);
    let message =
        server.post(&format!("{adele_path}/setPresence"), &alex_writer, set(APP)).await.error(401, "Unauthorized");
    assert!(message.starts_with("Cannot set the presence of another user."), "{message}");
    let status = json!({ "statusMessage": { "message": { "content": "hi" } } });
    server
        .post(&format!("{adele_path}/setStatusMessage"), &alex_writer, status.clone())
        .await
        .error(401, "Unauthorized");
    server
        .post(&format!("{adele_path}/clearUserPreferredPresence"), &alex_writer, json!({}))
        .await
        .error(401, "Unauthorized");
    let adele_reader = server.user(ADELE, &["Presence.Read.All"]);
    server
        .post("/v1.0/me/presence/setPresence", &adele_reader, set(APP))
        .await
        .error(403, "Authorization_RequestDenied");
    assert_eq!(server.shows(ADELE).await, ("Busy".into(), "InACall".into()));

    // A delegated writer on itself works, through /me and through its id.
    let adele_writer = server.user(ADELE, &["Presence.ReadWrite"]);
    server.post("/v1.0/me/presence/setPresence", &adele_writer, set(APP)).await.ok_empty(200);
    server.post(&format!("{adele_path}/setStatusMessage"), &adele_writer, status).await.ok_empty(200);
    assert_eq!(
        server.get("/v1.0/me/presence", &adele_writer).await.json()["statusMessage"]["message"]["content"],
        "hi"
    );
}

#[tokio::test]
async fn another_tenant_can_neither_read_nor_write_nor_learn_existence() {
    let server = Server::new();
    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    let foreign = server.app_of(OTHER_TENANT, OTHER_APP, &["Presence.ReadWrite.All"]);
    let missing = "00000000-0000-4000-8000-000000000009";
    let real = server.get(&format!("/v1.0/users/{ADELE}/presence"), &foreign).await;
    let fake = server.get(&format!("/v1.0/users/{missing}/presence"), &foreign).await;
    real.error(404, "NotFound");
    fake.error(404, "NotFound");
    let set = json!({ "sessionId": OTHER_APP, "availability": "Away", "activity": "Away" });
    server.post(&format!("/v1.0/users/{ADELE}/presence/setPresence"), &foreign, set).await.error(404, "NotFound");
    let clear = json!({ "sessionId": OTHER_APP });
    server.post(&format!("/v1.0/users/{ADELE}/presence/clearPresence"), &foreign, clear).await.error(404, "NotFound");
    let reply = server.post("/v1.0/communications/getPresencesByUserId", &foreign, json!({ "ids": [ADELE] })).await;
    assert_eq!(reply.json()["value"][0]["availability"], "PresenceUnknown");
    assert_eq!(server.shows(ADELE).await, ("Busy".into(), "InACall".into()));
    assert_eq!(server.store.user_count().unwrap(), 1, "nothing was written for the foreign tenant");

    // The same object id in the other tenant is a different record.
    let stranger_writer = server.app_of(OTHER_TENANT, OTHER_APP, &["Presence.ReadWrite.All"]);
    let set = json!({ "sessionId": OTHER_APP, "availability": "Away", "activity": "Away" });
    server.post(&format!("/v1.0/users/{STRANGER}/presence/setPresence"), &stranger_writer, set).await.ok_empty(200);
    let body = server.get(&format!("/v1.0/users/{STRANGER}/presence"), &stranger_writer).await.json();
    assert_eq!(body["availability"], "Away");
    server
        .get(&format!("/v1.0/users/{STRANGER}/presence"), &server.app(&["Presence.Read.All"]))
        .await
        .error(404, "NotFound");
}

#[tokio::test]
async fn personal_account_tokens_are_refused() {
    let server = Server::new();
    let token = server.app_of(presence_auth::CONSUMER_TENANT_ID, APP, &["Presence.Read.All"]);
    server.get(&format!("/v1.0/users/{ADELE}/presence"), &token).await.error(400, "BadRequest");
}
