//! Every endpoint over HTTP, in process, with real tokens and a real store.

use axum::body::Body;
use axum::http::Request;
use presence_testkit::*;
use serde_json::json;

fn s(text: &str) -> String {
    text.to_owned()
}

#[tokio::test]
async fn set_presence_then_read_it_on_every_route_and_version() {
    let server = Server::new();
    let reply = server
        .post(
            &format!("/v1.0/users/{ADELE}/presence/setPresence"),
            &server.writer(),
            json!({ "sessionId": APP, "availability": "Busy", "activity": "InACall", "expirationDuration": "PT1H" }),
        )
        .await;
    reply.ok_empty(200);
    assert!(reply.headers.contains_key("request-id"));

    let reader = server.app(&["Presence.Read.All"]);
    for path in [
        format!("/v1.0/users/{ADELE}/presence"),
        format!("/beta/users/{ADELE}/presence"),
        format!("/v1.0/communications/presences/{ADELE}"),
        format!("/v1.0/users/{}/presence", ADELE.to_uppercase()),
        format!("/v1.0/USERS/{ADELE}/Presence"),
        format!("/V1.0/users/{ADELE}/presence"),
        format!("/Beta/users/{ADELE}/presence"),
    ] {
        let reply = server.get(&path, &reader).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/json;odata.metadata=minimal"));
        let body = reply.json();
        assert_eq!(body["id"], ADELE);
        assert_eq!(body["availability"], "Busy");
        assert_eq!(body["activity"], "InACall");
        assert_eq!(body["outOfOfficeSettings"], json!({ "message": null, "isOutOfOffice": false }));
        assert_eq!(body["sequenceNumber"], "00000000000000000001");
        assert_eq!(
            body["workLocation"],
            json!({ "workLocationType": "unspecified", "source": "none", "placeId": null })
        );
        assert!(body.get("statusMessage").is_none());
    }
    let body = server.get(&format!("/v1.0/users/{ADELE}/presence"), &reader).await.json();
    assert_eq!(
        body["@odata.context"],
        format!("http://presenced.test/v1.0/$metadata#users('{ADELE}')/presence/$entity")
    );
    let body = server.get(&format!("/beta/communications/presences/{ADELE}"), &reader).await.json();
    assert_eq!(body["@odata.context"], "http://presenced.test/beta/$metadata#communications/presences/$entity");
}

#[tokio::test]
async fn an_untouched_user_is_offline() {
    let server = Server::new();
    assert_eq!(server.shows(ALEX).await, (s("Offline"), s("Offline")));
    assert_eq!(server.presence(ALEX).await["sequenceNumber"], "00000000000000000000");
}

#[tokio::test]
async fn qualified_and_case_insensitive_action_names_and_values() {
    let server = Server::new();
    let token = server.writer();
    let body = json!({ "sessionId": APP, "availability": "donotdisturb", "activity": "PRESENTING" });
    server.post(&format!("/v1.0/users/{ADELE}/presence/microsoft.graph.setPresence"), &token, body).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("DoNotDisturb"), s("Presenting")));
    let body = json!({ "sessionId": APP });
    server.post(&format!("/v1.0/users/{ADELE}/presence/ClearPresence"), &token, body).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Offline"), s("Offline")));
    let body = json!({ "sessionId": APP, "availability": "Away", "activity": "Away" });
    server.post(&format!("/beta/communications/presences/{ADELE}/setPresence"), &token, body).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Away"), s("Away")));
}

#[tokio::test]
async fn fading_and_expiry_follow_the_test_clock() {
    let server = Server::new();
    server.set_presence(ADELE, "Available", "Available", Some("PT1H")).await;
    let seq = |presence: serde_json::Value| presence["sequenceNumber"].as_str().unwrap().to_owned();
    let first = seq(server.presence(ADELE).await);
    server.advance_minutes(4);
    assert_eq!(server.shows(ADELE).await, (s("Available"), s("Available")));
    server.advance_minutes(1);
    assert_eq!(server.shows(ADELE).await, (s("Available"), s("AvailableInactive")));
    let faded = seq(server.presence(ADELE).await);
    assert!(faded > first, "{faded} > {first}");
    server.advance_minutes(5);
    assert_eq!(server.shows(ADELE).await, (s("Away"), s("Away")));
    let away = seq(server.presence(ADELE).await);
    assert!(away > faded);
    server.advance_minutes(50);
    assert_eq!(server.shows(ADELE).await, (s("Offline"), s("Offline")));
    assert!(seq(server.presence(ADELE).await) > away);
}

#[tokio::test]
async fn the_test_clock_endpoint_moves_presence_time() {
    let server = Server::new();
    server.set_presence(ADELE, "Busy", "InACall", None).await;
    let reply = server.get("/_test/clock", "").await;
    assert_eq!(reply.json()["epochMilliseconds"], START);
    let reply = server.post("/_test/clock/advance", "", json!({ "seconds": 300 })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["now"], "2026-09-01T10:05:00.0000000Z");
    assert_eq!(server.shows(ADELE).await, (s("Offline"), s("Offline")), "default expiry PT5M");
    server.post("/_test/clock/advance", "", json!({ "seconds": -5 })).await.error(400, "BadRequest");
    server.post("/_test/clock/advance", "", json!({ "seconds": "5" })).await.error(400, "BadRequest");
}

#[tokio::test]
async fn the_test_clock_is_absent_unless_enabled() {
    let server = Server::with(false, 64 * 1024);
    server.get("/_test/clock", "").await.error(404, "NotFound");
    server.post("/_test/clock/advance", "", json!({ "seconds": 60 })).await.error(404, "NotFound");
}

#[tokio::test]
async fn sessions_of_two_apps_aggregate_and_clear_independently() {
    let server = Server::new();
    server.set_presence(ADELE, "Available", "Available", Some("PT1H")).await;
    let light = server.app_of(TENANT, APP2, &["Presence.ReadWrite.All"]);
    let path = format!("/v1.0/users/{ADELE}/presence/setPresence");
    let body = json!({ "sessionId": APP2, "availability": "Busy", "activity": "InAConferenceCall" });
    server.post(&path, &light, body).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Busy"), s("InAConferenceCall")));
    let clear = format!("/v1.0/users/{ADELE}/presence/clearPresence");
    server.post(&clear, &light, json!({ "sessionId": APP2 })).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Available"), s("Available")));
    let message = server.post(&clear, &light, json!({ "sessionId": APP2 })).await.error(404, "NotFound");
    assert!(message.contains(APP2), "{message}");
    let message = server.post(&clear, &light, json!({ "sessionId": APP })).await.error(400, "BadRequest");
    assert!(message.contains("calling application"), "{message}");
    assert_eq!(server.shows(ADELE).await, (s("Available"), s("Available")), "another app cannot clear APP's session");
}

#[tokio::test]
async fn preferred_presence_wins_only_while_a_session_lives() {
    let server = Server::new();
    let token = server.writer();
    let prefer = format!("/v1.0/users/{ADELE}/presence/setUserPreferredPresence");
    let body = json!({ "availability": "DoNotDisturb", "activity": "DoNotDisturb", "expirationDuration": "PT8H" });
    server.post(&prefer, &token, body).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Offline"), s("Offline")));
    server.set_presence(ADELE, "Available", "Available", Some("PT4H")).await;
    assert_eq!(server.shows(ADELE).await, (s("DoNotDisturb"), s("DoNotDisturb")));
    let clear = format!("/v1.0/users/{ADELE}/presence/clearUserPreferredPresence");
    let reply = server
        .send(Request::post(&clear).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap());
    reply.await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Available"), s("Available")));
    server.post(&prefer, &token, json!({ "availability": "Offline", "activity": "OffWork" })).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Offline"), s("OffWork")));
    server.post(&clear, &token, json!({})).await.ok_empty(200);
    assert_eq!(server.shows(ADELE).await, (s("Available"), s("Available")));
    let message = server
        .post(&prefer, &token, json!({ "availability": "Busy", "activity": "InACall" }))
        .await
        .error(400, "BadRequest");
    assert!(message.contains("not supported"), "{message}");
}

#[tokio::test]
async fn status_message_times_are_shown_to_the_user_only() {
    let server = Server::new();
    let adele = server.user(ADELE, &["Presence.ReadWrite", "Presence.Read.All"]);
    let body = json!({ "statusMessage": {
        "message": { "content": "Back at 3", "contentType": "text" },
        "expiryDateTime": { "dateTime": "2026-09-01T15:00:00.0000000", "timeZone": "UTC" } } });
    server.post("/v1.0/me/presence/setStatusMessage", &adele, body).await.ok_empty(200);

    let own = server.get("/v1.0/me/presence", &adele).await.json();
    assert_eq!(own["statusMessage"]["message"], json!({ "content": "Back at 3", "contentType": "text" }));
    assert_eq!(
        own["statusMessage"]["expiryDateTime"],
        json!({ "dateTime": "2026-09-01T15:00:00.0000000", "timeZone": "UTC" })
    );
    assert_eq!(own["statusMessage"]["publishedDateTime"], "2026-09-01T10:00:00.0000000Z");

    let alex = server.user(ALEX, &["Presence.Read.All"]);
    let other = server.get(&format!("/v1.0/users/{ADELE}/presence"), &alex).await.json();
    assert_eq!(other["statusMessage"], json!({ "message": { "content": "Back at 3", "contentType": "text" } }));
    let app_view = server.presence(ADELE).await;
    assert!(app_view["statusMessage"].get("publishedDateTime").is_none());

    server.advance_minutes(5 * 60);
    assert!(server.presence(ADELE).await.get("statusMessage").is_none(), "expired at 15:00 UTC");
}

#[tokio::test]
async fn status_message_expiry_in_a_windows_time_zone_and_clearing() {
    let server = Server::new();
    let token = server.writer();
    let path = format!("/v1.0/users/{ADELE}/presence/setStatusMessage");
    let body = json!({ "statusMessage": {
        "message": { "content": "Lab day", "contentType": "text" },
        "expiryDateTime": { "dateTime": "2026-09-01T04:00:00", "timeZone": "Pacific Standard Time" } } });
    server.post(&path, &token, body).await.ok_empty(200);
    server.advance_minutes(59);
    assert_eq!(server.presence(ADELE).await["statusMessage"]["message"]["content"], "Lab day");
    server.advance_minutes(1);
    assert!(server.presence(ADELE).await.get("statusMessage").is_none(), "04:00 PDT is 11:00 UTC");

    server.post(&path, &token, json!({ "statusMessage": { "message": { "content": "x" } } })).await.ok_empty(200);
    server.post(&path, &token, json!({ "statusMessage": null })).await.ok_empty(200);
    assert!(server.presence(ADELE).await.get("statusMessage").is_none());

    let check = |body: serde_json::Value, fragment: &'static str| {
        let server = &server;
        let token = token.clone();
        let path = path.clone();
        async move {
            let message = server.post(&path, &token, body).await.error(400, "BadRequest");
            assert!(message.contains(fragment), "{message}");
        }
    };
    check(json!({ "statusMessage": { "message": { "content": "<b>x</b>", "contentType": "html" } } }), "text").await;
    check(json!({ "statusMessage": { "message": { "content": "x" }, "expiryDateTime": { "dateTime": "2026-09-01T04:00:00Z", "timeZone": "UTC" } } }), "offset").await;
    check(json!({ "statusMessage": { "message": { "content": "x" }, "expiryDateTime": { "dateTime": "soon", "timeZone": "UTC" } } }), "not a date").await;
    check(json!({ "statusMessage": { "message": { "content": "x" }, "expiryDateTime": { "dateTime": "2026-09-01T04:00:00", "timeZone": "Mars" } } }), "time zone").await;
    check(json!({ "statusMessage": { "message": "x" } }), "must be an object").await;
    check(json!({ "statusMessage": {} }), "statusMessage.message").await;
    check(json!({ "statusMessage": { "message": { "content": "x" }, "expiryDateTime": { "dateTime": "2026-09-01 04:00:00+02:00", "timeZone": "UTC" } } }), "offset").await;
    check(json!({}), "statusMessage").await;
    // A clear (a null message) is refused too when another member is malformed (found by schemathesis).
    check(json!({ "statusMessage": { "message": null, "expiryDateTime": 3 } }), "must be an object").await;
    check(json!({ "statusMessage": { "message": null, "expiryDateTime": {} } }), "dateTime").await;
}

#[tokio::test]
async fn work_location_actions_are_delegated_and_answer_204() {
    let server = Server::new();
    let adele = server.user(ADELE, &["Presence.ReadWrite"]);
    let body = json!({ "workLocationType": "remote" });
    server.post("/v1.0/me/presence/setAutomaticLocation", &adele, body).await.ok_empty(204);
    let body = json!({ "workLocationType": "office", "placeId": "b1f0c2d4-0000-4000-8000-00000000a1b2" });
    server.post(&format!("/v1.0/users/{ADELE}/presence/setManualLocation"), &adele, body).await.ok_empty(204);
    assert_eq!(
        server.presence(ADELE).await["workLocation"],
        json!({ "workLocationType": "office", "source": "manual", "placeId": "b1f0c2d4-0000-4000-8000-00000000a1b2" })
    );
    server
        .send(
            Request::post("/v1.0/me/presence/clearAutomaticLocation")
                .header("authorization", format!("Bearer {adele}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .ok_empty(204);
    assert_eq!(server.presence(ADELE).await["workLocation"]["source"], "manual");
    server
        .post(&format!("/v1.0/communications/presences/{ADELE}/clearLocation"), &adele, json!({}))
        .await
        .ok_empty(204);
    assert_eq!(server.presence(ADELE).await["workLocation"]["source"], "none");

    let body = json!({ "workLocationType": "office" });
    let path = format!("/v1.0/users/{ADELE}/presence/setManualLocation");
    server.post(&path, &server.writer(), body.clone()).await.error(403, "Forbidden");
    let alex = server.user(ALEX, &["Presence.ReadWrite"]);
    server.post(&path, &alex, body).await.error(401, "Unauthorized");
    server.post(&path, &adele, json!({ "workLocationType": "moon" })).await.error(400, "BadRequest");
    server.post(&path, &adele, json!({ "placeId": "x" })).await.error(400, "BadRequest");

    server
        .post("/v1.0/me/presence/setManualLocation", &adele, json!({ "workLocationType": "timeOff" }))
        .await
        .ok_empty(204);
    server.advance_minutes(14 * 60);
    assert_eq!(server.presence(ADELE).await["workLocation"]["source"], "none", "cleared at the end of the day (UTC)");
}

#[tokio::test]
async fn get_presences_by_user_id_keeps_order_collapses_duplicates_and_marks_unknown_ids() {
    let server = Server::new();
    server.set_presence(ADELE, "Busy", "InACall", None).await;
    let unknown = "00000000-0000-4000-8000-000000000001";
    let reply = server
        .post(
            "/v1.0/communications/getPresencesByUserId",
            &server.app(&["Presence.Read.All"]),
            json!({ "ids": [ALEX, unknown, ADELE.to_uppercase(), ALEX.to_uppercase(), STRANGER] }),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["@odata.context"], "http://presenced.test/v1.0/$metadata#Collection(microsoft.graph.presence)");
    let value = body["value"].as_array().unwrap();
    let ids: Vec<&str> = value.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [ALEX, unknown, ADELE, STRANGER], "ids are answered in lowercase");
    assert_eq!(value[0]["availability"], "Offline");
    assert_eq!(
        value[1],
        json!({ "id": unknown, "availability": "PresenceUnknown", "activity": "PresenceUnknown",
                "outOfOfficeSettings": { "message": null, "isOutOfOffice": false },
                "sequenceNumber": "00000000000000000000",
                "workLocation": { "workLocationType": "unspecified", "source": "none", "placeId": null } })
    );
    assert_eq!(value[2]["activity"], "InACall");
    assert_eq!(value[3]["availability"], "PresenceUnknown", "another tenant's user is unknown here");

    let path = "/v1.0/communications/microsoft.graph.getPresencesByUserId";
    let token = server.app(&["Presence.Read.All"]);
    let many: Vec<String> = (0..650).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    let reply = server.post(path, &token, json!({ "ids": many })).await;
    assert_eq!(reply.json()["value"].as_array().unwrap().len(), 650);
    let too_many: Vec<String> = (0..651).map(|i| format!("00000000-0000-4000-8000-{i:012}")).collect();
    assert!(server.post(path, &token, json!({ "ids": too_many })).await.error(400, "BadRequest").contains("650"));
    server.post(path, &token, json!({ "ids": [] })).await.error(400, "BadRequest");
    assert!(server.post(path, &token, json!({})).await.error(400, "BadRequest").contains("'ids' is required"));
    let null = server.post(path, &token, json!({ "ids": null })).await.error(400, "BadRequest");
    assert!(null.contains("'ids' is required"), "{null}");
    let string = server.post(path, &token, json!({ "ids": "x" })).await.error(400, "BadRequest");
    assert!(string.contains("must be an array of strings"), "{string}");
    let number = server.post(path, &token, json!({ "ids": [1] })).await.error(400, "BadRequest");
    assert!(number.contains("Every member of 'ids' must be a string"), "{number}");
    let array = server.post(path, &token, json!([[ALEX]])).await.error(400, "BadRequest");
    assert!(array.contains("must be a JSON object"), "{array}");
    // An id with an escape in it beside other members, and `ids` given twice (the last counts, as for any
    // member of a JSON object).
    let bodies = [
        format!(r#"{{"other": 1, "ids": ["\u0035{}", "{ADELE}"]}}"#, &ALEX[1..]),
        format!(r#"{{"ids": ["{ADELE}"], "ids": ["{ALEX}", "{ADELE}"]}}"#),
    ];
    for body in bodies {
        let request = Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let reply = server.send(request).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let value = reply.json();
        let ids: Vec<&str> =
            value["value"].as_array().unwrap().iter().map(|presence| presence["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [ALEX, ADELE], "{}", reply.text);
    }
    server.post(path, &token, json!({ "ids": ["adele@contoso.example"] })).await.error(400, "BadRequest");
    server.get(path, &token).await.error(405, "Request_BadRequest");
}

#[tokio::test]
async fn the_presences_collection_answers_an_id_filter_only() {
    let server = Server::new();
    server.set_presence(ALEX, "Away", "Away", None).await;
    let token = server.app(&["Presence.Read.All"]);
    let reply =
        server.get(&format!("/v1.0/communications/presences?$filter=id%20in%20('{ALEX}',%20'{ADELE}')"), &token).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["value"][0]["availability"], "Away");
    assert_eq!(body["value"][1]["availability"], "Offline");
    server.get("/v1.0/communications/presences", &token).await.error(400, "BadRequest");
    server
        .get("/v1.0/communications/presences?$filter=availability%20eq%20'Away'", &token)
        .await
        .error(400, "BadRequest");
}

#[tokio::test]
async fn select_limits_the_properties() {
    let server = Server::new();
    let token = server.app(&["Presence.Read.All"]);
    let body = server.get(&format!("/v1.0/users/{ADELE}/presence?$select=availability,activity"), &token).await.json();
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["@odata.context", "activity", "availability", "id"]);
    server.get(&format!("/v1.0/users/{ADELE}/presence?$select=mood"), &token).await.error(400, "BadRequest");
    let spaced = server.get(&format!("/v1.0/users/{ADELE}/presence?$select=%20Availability%20"), &token).await;
    assert_eq!(spaced.json()["availability"], "Offline", "names match ignoring case and surrounding spaces");
    for empty_item in ["", "availability,", ",", "availability,,activity"] {
        let path = format!("/v1.0/users/{ADELE}/presence?$select={empty_item}");
        server.get(&path, &token).await.error(400, "BadRequest");
    }
}

#[tokio::test]
async fn a_body_of_whitespace_is_not_an_empty_body() {
    let server = Server::new();
    let token = server.writer();
    let path = format!("/v1.0/users/{ADELE}/presence/clearUserPreferredPresence");
    let send = |body: &'static str| {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri(&path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        server.send(request)
    };
    send("").await.ok_empty(200);
    send("{}").await.ok_empty(200);
    send("\r\n").await.error(400, "BadRequest");
}

#[tokio::test]
async fn users_resolve_by_id_and_upn_within_the_tenant() {
    let server = Server::new();
    let token = server.app(&["Presence.Read.All"]);
    let body = server.get("/v1.0/users/adele@contoso.example", &token).await.json();
    assert_eq!(body["id"], ADELE);
    assert_eq!(body["displayName"], "Adele Vance");
    assert_eq!(body["userPrincipalName"], "adele@contoso.example");
    assert_eq!(
        server.get(&format!("/v1.0/users/{ALEX}"), &token).await.json()["userPrincipalName"],
        "alex@contoso.example"
    );
    server.get("/v1.0/users/sam@fabrikam.example", &token).await.error(404, "Request_ResourceNotFound");
    server.get("/v1.0/users/nobody@contoso.example", &token).await.error(404, "Request_ResourceNotFound");
    let adele = server.user(ADELE, &["Presence.Read"]);
    assert_eq!(server.get("/v1.0/me", &adele).await.json()["id"], ADELE);
    server.get("/v1.0/me", &token).await.error(400, "BadRequest");
}

#[tokio::test]
async fn request_ids_are_issued_and_client_ids_echoed() {
    let server = Server::new();
    let token = server.app(&["Presence.Read.All"]);
    let request = Request::get(format!("/v1.0/users/{ADELE}/presence"))
        .header("authorization", format!("Bearer {token}"))
        .header("client-request-id", "3a3b1bf7-3596-4493-8264-de81e028071f")
        .body(Body::empty())
        .unwrap();
    let reply = server.send(request).await;
    assert_eq!(reply.headers["client-request-id"], "3a3b1bf7-3596-4493-8264-de81e028071f");
    assert_ne!(reply.headers["request-id"], reply.headers["client-request-id"]);

    let request = Request::get("/v1.0/users/nope/presence")
        .header("client-request-id", "mine")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let reply = server.send(request).await;
    reply.error(400, "BadRequest");
    assert_eq!(reply.json()["error"]["innerError"]["client-request-id"], "mine");

    let reply = server.get("/v1.0/me/presence", "").await;
    reply.error(401, "InvalidAuthenticationToken");
    assert_eq!(reply.json()["error"]["innerError"]["client-request-id"], reply.headers["request-id"].to_str().unwrap());
    assert!(reply.headers.contains_key("www-authenticate"));
}

#[tokio::test]
async fn the_issuer_publishes_its_metadata_and_keys() {
    let server = Server::new();
    let reply = server.get("/.well-known/openid-configuration", "").await;
    assert_eq!(reply.json()["issuer"], format!("{ISSUER}/{{tenantid}}/v2.0"));
    assert_eq!(reply.json()["jwks_uri"], "http://presenced.test/discovery/v2.0/keys");
    let reply = server.get(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"), "").await;
    assert_eq!(reply.json()["issuer"], format!("{ISSUER}/{TENANT}/v2.0"));
    server
        .get("/00000000-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration", "")
        .await
        .error(404, "NotFound");
    let keys = server.get("/discovery/v2.0/keys", "").await.json();
    assert_eq!(keys["keys"][0]["kty"], "RSA");
    assert_eq!(keys["keys"][0]["alg"], "RS256");
}
