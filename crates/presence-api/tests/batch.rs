//! `$batch` and throttling over HTTP.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use presence_testkit::*;
use serde_json::{json, Value};

fn by_id<'a>(body: &'a Value, id: &str) -> &'a Value {
    body["responses"].as_array().unwrap().iter().find(|response| response["id"] == id).unwrap()
}

#[tokio::test]
async fn the_documented_presence_batch_runs_in_dependency_order() {
    let server = Server::new();
    let token = server.writer();
    let batch = json!({ "requests": [
        { "id": "1", "method": "GET", "url": format!("/users/{ADELE}/presence") },
        { "id": "2", "method": "POST", "url": format!("/users/{ADELE}/presence/setPresence"),
          "headers": { "Content-Type": "application/json" },
          "body": { "sessionId": APP, "availability": "Available", "activity": "Available" }, "dependsOn": ["1"] },
        { "id": "3", "dependsOn": ["2"], "method": "GET", "url": format!("/v1.0/users/{ADELE}/presence") },
        { "id": "4", "method": "GET", "url": format!("http://presenced.test/beta/communications/presences/{ALEX}") }
    ] });
    let reply = server.post("/v1.0/$batch", &token, batch).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(by_id(&body, "1")["body"]["availability"], "Offline");
    assert_eq!(by_id(&body, "2")["status"], 200);
    assert!(by_id(&body, "2").get("body").is_none());
    assert_eq!(by_id(&body, "3")["body"]["availability"], "Available");
    assert!(by_id(&body, "3")["headers"]["Content-Type"].as_str().unwrap().starts_with("application/json"));
    assert_eq!(by_id(&body, "4")["body"]["id"], ALEX);
}

#[tokio::test]
async fn inner_failures_stay_inner_and_fail_their_dependents() {
    let server = Server::new();
    let batch = json!({ "requests": [
        { "id": "a", "method": "POST", "url": format!("/users/{ADELE}/presence/setPresence"),
          "headers": { "content-type": "application/json" },
          "body": { "sessionId": APP, "availability": "Busy", "activity": "Busy" } },
        { "id": "b", "method": "GET", "url": format!("/users/{ADELE}/presence"), "dependsOn": ["a"] },
        { "id": "c", "method": "GET", "url": "/users/adele@contoso.example/presence" },
        { "id": "d", "method": "GET", "url": "/$batch" },
        { "id": "e", "method": "GET", "url": "https://graph.microsoft.com/v1.0/me/presence" }
    ] });
    let reply = server.post("/beta/$batch", &server.writer(), batch).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(by_id(&body, "a")["status"], 400);
    assert_eq!(by_id(&body, "a")["body"]["error"]["code"], "BadRequest");
    assert!(by_id(&body, "a")["body"]["error"]["innerError"]["request-id"].is_string());
    assert_eq!(by_id(&body, "b")["status"], 424);
    assert_eq!(by_id(&body, "c")["status"], 400);
    assert_eq!(by_id(&body, "d")["status"], 400);
    assert_eq!(by_id(&body, "e")["status"], 400);
    assert_eq!(server.shows(ADELE).await.0, "Offline");
}

#[tokio::test]
async fn each_inner_request_is_authorised_on_its_own() {
    let server = Server::new();
    let reader = server.app(&["Presence.Read.All"]);
    let batch = json!({ "requests": [
        { "id": "1", "method": "GET", "url": format!("/users/{ADELE}/presence") },
        { "id": "2", "method": "POST", "url": format!("/users/{ADELE}/presence/clearPresence"),
          "headers": { "Content-Type": "application/json" }, "body": { "sessionId": APP } },
        { "id": "3", "method": "GET", "url": "/me/presence" }
    ] });
    let body = server.post("/v1.0/$batch", &reader, batch).await.json();
    assert_eq!(by_id(&body, "1")["status"], 200);
    assert_eq!(by_id(&body, "2")["status"], 403);
    assert_eq!(by_id(&body, "3")["status"], 400);
}

#[tokio::test]
async fn malformed_batches_are_400_and_need_a_token() {
    let server = Server::new();
    let token = server.writer();
    let one = json!({ "requests": [{ "id": "1", "method": "GET", "url": "/me/presence" }] });
    server.post("/v1.0/$batch", "", one).await.error(401, "InvalidAuthenticationToken");
    server.post("/v1.0/$batch", &token, json!({ "requests": [] })).await.error(400, "BadRequest");
    let duplicate = json!({ "requests": [
        { "id": "x", "method": "GET", "url": "/me/presence" }, { "id": "X", "method": "GET", "url": "/me/presence" }] });
    server.post("/v1.0/$batch", &token, duplicate).await.error(400, "BadRequest");
    let unknown = json!({ "requests": [{ "id": "1", "method": "GET", "url": "/me/presence", "dependsOn": ["9"] }] });
    server.post("/v1.0/$batch", &token, unknown).await.error(400, "BadRequest");
    let text = Request::post("/v1.0/$batch")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    server.send(text).await.error(400, "BadRequest");
    server.get("/v1.0/$batch", &token).await.error(405, "Request_BadRequest");
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_a_429_says_when_to_retry() {
    let server = Server::throttled(3, 30);
    let token = server.app(&["Presence.Read.All"]);
    let path = format!("/v1.0/users/{ADELE}/presence");
    for _ in 0..2 {
        assert_eq!(server.get(&path, &token).await.status, 200);
    }
    let ids: Vec<String> = (0..650).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    let reply = server.post("/v1.0/communications/getPresencesByUserId", &token, json!({ "ids": ids })).await;
    assert_eq!(reply.status, 200, "650 ids count as one request");
    let reply = server.get(&path, &token).await;
    reply.error(429, "TooManyRequests");
    assert_eq!(reply.headers["retry-after"], "30");
    let other_app = server.app_of(TENANT, APP2, &["Presence.Read.All"]);
    assert_eq!(server.get(&path, &other_app).await.status, 200, "another application has its own budget");
    assert_eq!(
        server.get(&format!("/v1.0/users/{ADELE}"), &token).await.status,
        200,
        "directory reads are not presence operations"
    );

    tokio::time::advance(Duration::from_secs(12)).await;
    assert_eq!(server.get(&path, &token).await.headers["retry-after"], "18");
    tokio::time::advance(Duration::from_secs(18)).await;
    assert_eq!(server.get(&path, &token).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn inner_batch_requests_are_throttled_one_by_one() {
    let server = Server::throttled(2, 30);
    let token = server.app(&["Presence.Read.All"]);
    let requests: Vec<Value> = (1..=4)
        .map(|i| {
            json!({ "id": i.to_string(), "method": "GET", "url": format!("/users/{ADELE}/presence"),
                         "dependsOn": if i > 1 { vec![(i - 1).to_string()] } else { vec![] } })
        })
        .collect();
    let body = server.post("/v1.0/$batch", &token, json!({ "requests": requests })).await.json();
    assert_eq!(by_id(&body, "1")["status"], 200);
    assert_eq!(by_id(&body, "2")["status"], 200);
    assert_eq!(by_id(&body, "3")["status"], 429);
    assert_eq!(by_id(&body, "3")["headers"]["Retry-After"], "30");
    assert_eq!(by_id(&body, "4")["status"], 424);
}
