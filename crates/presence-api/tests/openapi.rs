//! The served OpenAPI documents match the routes the server serves, both ways.

use axum::body::Body;
use axum::http::{Method, Request};
use presence_testkit::receiver::Receiver;
use presence_testkit::*;
use serde_json::{json, Value};

fn example_body(operation_id: &str) -> Option<Value> {
    let action = operation_id.rsplit('.').next().unwrap();
    Some(match action {
        "setPresence" => json!({ "sessionId": APP, "availability": "Busy", "activity": "InACall" }),
        "clearPresence" => json!({ "sessionId": APP }),
        "setUserPreferredPresence" => json!({ "availability": "Away", "activity": "Away" }),
        "setStatusMessage" => json!({ "statusMessage": { "message": { "content": "hi", "contentType": "text" } } }),
        "setManualLocation" | "setAutomaticLocation" => json!({ "workLocationType": "office" }),
        "getPresencesByUserId" => json!({ "ids": [ADELE] }),
        "batch" => json!({ "requests": [{ "id": "1", "method": "GET", "url": "/me/presence" }] }),
        "update" => json!({ "expirationDateTime": "2026-09-01T10:45:00Z" }),
        "reauthorize" => json!({}),
        _ => return None,
    })
}

fn subscription_body(receiver: &Receiver) -> Value {
    json!({
        "changeType": "updated",
        "resource": format!("communications/presences/{ADELE}"),
        "notificationUrl": format!("{}/hook", receiver.base),
        "expirationDateTime": "2026-09-01T10:30:00Z",
    })
}

#[tokio::test]
async fn every_documented_operation_is_served_and_nothing_else() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |_| {});
    let token = server.user(ADELE, &["Presence.ReadWrite", "Presence.Read.All"]);
    for version in ["v1.0", "beta"] {
        let reply = server.get(&format!("/openapi/{version}.json"), "").await;
        assert_eq!(reply.status, 200);
        let document = reply.json();
        assert_eq!(document["servers"][0]["url"], format!("/{version}"));
        let paths = document["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 3 * (1 + 9) + 9, "3 presence routes with GET and 9 actions, 9 others");
        for (template, item) in paths {
            let subscription = if template.contains("{subscription-id}") {
                let created = server.post("/v1.0/subscriptions", &token, subscription_body(&receiver)).await;
                assert_eq!(created.status, 201, "{}", created.text);
                created.json()["id"].as_str().unwrap().to_owned()
            } else {
                String::new()
            };
            let path = format!(
                "/{version}{}",
                template
                    .replace("{user-id}", ADELE)
                    .replace("{presence-id}", ADELE)
                    .replace("{subscription-id}", &subscription)
            );
            let mut documented: Vec<String> = ["get", "post", "patch", "put", "delete"]
                .into_iter()
                .filter(|method| item.get(*method).is_some())
                .map(str::to_uppercase)
                .collect();
            documented.sort();
            for method in ["get", "post", "patch", "put", "delete"] {
                let Some(operation) = item.get(method) else {
                    let request = Request::builder()
                        .method(method.to_uppercase().as_str())
                        .uri(&path)
                        .header("authorization", format!("Bearer {token}"))
                        .body(Body::empty())
                        .unwrap();
                    let reply = server.send(request).await;
                    reply.error(405, "Request_BadRequest");
                    let allow = reply.headers.get("allow").map(|value| value.to_str().unwrap().to_owned());
                    let mut allowed: Vec<String> =
                        allow.unwrap_or_default().split(',').map(|method| method.trim().to_owned()).collect();
                    allowed.sort();
                    assert_eq!(allowed, documented, "Allow of {method} {template} is the documented methods");
                    continue;
                };
                let operation_id = operation["operationId"].as_str().unwrap();
                if operation_id.ends_with("clearPresence") {
                    server
                        .post(
                            &format!("/{version}/me/presence/setPresence"),
                            &token,
                            example_body("x.setPresence").unwrap(),
                        )
                        .await;
                }
                let uri = if operation_id == "communications.presences.list" {
                    format!("{path}?$filter=id%20in%20('{ADELE}')")
                } else {
                    path.clone()
                };
                let body = if operation_id == "subscriptions.create" {
                    Some(subscription_body(&receiver))
                } else {
                    example_body(operation_id)
                };
                let reply = match body {
                    Some(body) => server.call(method.to_uppercase().parse().unwrap(), &uri, &token, Some(body)).await,
                    None => server.call(method.to_uppercase().parse().unwrap(), &uri, &token, None).await,
                };
                let documented: Vec<&String> = operation["responses"].as_object().unwrap().keys().collect();
                let status = reply.status.as_u16().to_string();
                assert!(reply.status.is_success(), "{method} {uri} ({operation_id}): {}", reply.text);
                assert!(documented.contains(&&status), "{operation_id} answered {status}, documented {documented:?}");
            }
        }
    }
    server.get("/openapi/v2.json", "").await.error(404, "NotFound");
}

#[tokio::test]
async fn paths_outside_the_documents_are_not_served() {
    let server = Server::new();
    let token = server.user(ADELE, &["Presence.ReadWrite", "Presence.Read.All"]);
    let documented: Vec<String> =
        server.get("/openapi/v1.0.json", "").await.json()["paths"].as_object().unwrap().keys().cloned().collect();
    for probe in [
        format!("/users/{ADELE}/presence/setPresenceNow"),
        format!("/users/{ADELE}/presence/microsoft.graph.nothing"),
        format!("/communications/presences/{ADELE}/extra"),
        format!("/users/{ADELE}/calendar"),
        "/me/calendar".to_owned(),
        "/communications".to_owned(),
        "/communications/calls".to_owned(),
        "/$batch/extra".to_owned(),
        "/subscriptions/x/renew".to_owned(),
        "/groups".to_owned(),
    ] {
        assert!(!documented.contains(&probe), "{probe} is documented");
        for method in ["GET", "POST"] {
            let body = (method == "POST").then(|| json!({}));
            let reply = server.call(method.parse().unwrap(), &format!("/v1.0{probe}"), &token, body).await;
            let message = reply.error(400, "BadRequest");
            assert!(message.starts_with("Resource not found for the segment"), "{method} {probe}: {message}");
        }
    }
}

#[tokio::test]
async fn fixed_routes_answer_other_methods_with_405_and_allow() {
    let server = Server::new();
    for (path, allowed) in [
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/metrics", "GET"),
        ("/board", "GET"),
        ("/board/sign-in", "GET"),
        ("/openapi/v1.0.json", "GET"),
        ("/discovery/v2.0/keys", "GET"),
        ("/_test/clock", "GET"),
        ("/_test/clock/advance", "POST"),
    ] {
        let method = if allowed == "GET" { Method::DELETE } else { Method::GET };
        let reply = server.call(method, path, "", None).await;
        reply.error(405, "Request_BadRequest");
        assert_eq!(reply.headers.get("allow").map(|value| value.to_str().unwrap()), Some(allowed), "{path}");
    }
}
