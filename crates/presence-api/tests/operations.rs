//! What operators and the live board use: health and readiness, Prometheus metrics, the user list, and the
//! board's page and stream of changes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use presence_testkit::{Server, ADELE, ALEX, STRANGER};
use serde_json::{json, Value};
use tower::ServiceExt;

#[tokio::test]
async fn health_is_the_process_and_readiness_waits_for_recovery() {
    let server = Server::new();
    assert_eq!(server.get("/healthz", "").await.json(), json!({ "status": "ok" }));
    let reply = server.get("/readyz", "").await;
    assert_eq!((reply.status, reply.json()), (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "starting" })));
    let server = Server::started();
    let reply = server.get("/readyz", "").await;
    assert_eq!((reply.status, reply.json()), (StatusCode::OK, json!({ "status": "ready" })));
}

/// The value of the sample `name` (with its labels, as written) in an exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_store_work_and_state() {
    let server = Server::started();
    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    server.set_presence(ALEX, "Available", "Available", Some("PT1H")).await;
    server.presence(ADELE).await;
    server.get(&format!("/v1.0/users/{ADELE}/presence"), "").await.error(401, "InvalidAuthenticationToken");
    let reply = server.get("/metrics", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = reply.text;
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no sample {name} in\n{text}"));
    assert_eq!(value("presenced_http_requests_total{route=\"setPresence\",status=\"200\"}"), 2.0);
    assert_eq!(value("presenced_http_requests_total{route=\"getPresence\",status=\"200\"}"), 1.0);
    assert_eq!(value("presenced_http_requests_total{route=\"getPresence\",status=\"401\"}"), 1.0);
    assert_eq!(value("presenced_http_request_duration_seconds_count{route=\"setPresence\"}"), 2.0);
    assert!(value("presenced_store_operation_duration_seconds_count{operation=\"write_batch\"}") >= 1.0);
    assert_eq!(value("presenced_store_operation_duration_seconds_count{operation=\"read\"}"), 1.0);
    assert_eq!(value("presenced_directory_users"), 3.0);
    assert_eq!(value("presenced_users"), 2.0);
    assert_eq!(value("presenced_live_sessions"), 2.0);
    assert_eq!(value("presenced_pending_timers"), 2.0, "each session expires; Alex's also fades");
    assert_eq!(value("presenced_queued_notifications"), 0.0);
    assert_eq!(value("presenced_throttled_requests_total"), 0.0);
    assert!(text.ends_with("# EOF\n"));

    // An hour later both sessions have expired: the gauges follow the clock, and the timers, once their pass
    // has run (in the background), are gone.
    server.advance(3601).await;
    let text = server.get("/metrics", "").await.text;
    assert_eq!(sample(&text, "presenced_live_sessions"), Some(0.0));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sample(&server.get("/metrics", "").await.text, "presenced_pending_timers") != Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "the expired users' timers were not cleared");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn throttled_requests_are_counted() {
    let server = Server::throttled(1, 30);
    server.presence(ADELE).await;
    let reply = server.get(&format!("/v1.0/users/{ADELE}/presence"), &server.app(&["Presence.Read.All"])).await;
    reply.error(429, "TooManyRequests");
    let text = server.get("/metrics", "").await.text;
    assert_eq!(sample(&text, "presenced_throttled_requests_total"), Some(1.0));
}

#[tokio::test]
async fn the_user_list_pages_through_the_callers_tenant_only() {
    let server = Server::new();
    let token = server.app(&["Presence.Read.All"]);
    let first = server.get("/v1.0/users?$top=1", &token).await.json();
    assert_eq!(first["value"].as_array().unwrap().len(), 1);
    assert_eq!(first["value"][0]["id"], ADELE);
    assert_eq!(first["@odata.context"], "http://presenced.test/v1.0/$metadata#users");
    let next = first["@odata.nextLink"].as_str().unwrap();
    assert_eq!(next, "http://presenced.test/v1.0/users?$top=1&$skiptoken=1");
    let second = server.get(next.trim_start_matches("http://presenced.test"), &token).await.json();
    assert_eq!(second["value"][0]["userPrincipalName"], "alex@contoso.example");
    assert!(second.get("@odata.nextLink").is_none(), "{second}");
    let all = server.get("/v1.0/users", &token).await.json();
    assert_eq!(all["value"].as_array().unwrap().len(), 2, "Contoso's two users, not Fabrikam's");
    assert!(!all.to_string().contains(STRANGER));
    let message = server.get("/v1.0/users?$top=1000", &token).await.error(400, "BadRequest");
    assert!(message.contains("$top"), "{message}");
    server.get("/v1.0/users?$skiptoken=abc", &token).await.error(400, "BadRequest");
    for malformed in ["%2B1", "-1", "1.0", "%201", "18446744073709551616000"] {
        server.get(&format!("/v1.0/users?$skiptoken={malformed}"), &token).await.error(400, "BadRequest");
    }
    server.get("/v1.0/users", "").await.error(401, "InvalidAuthenticationToken");
    let own_presence_only = server.user(ADELE, &["Presence.ReadWrite"]);
    server.get("/v1.0/users", &own_presence_only).await.error(403, "Authorization_RequestDenied");
    let directory_reader = server.user(ADELE, &["User.ReadBasic.All"]);
    assert_eq!(server.get("/v1.0/users", &directory_reader).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_board_page_is_served_from_the_binary() {
    let server = Server::new();
    let reply = server.get("/board", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(reply.text.contains("<title>presenced · presence board</title>"));
    assert!(reply.text.contains("/board/events"));
    let policy = reply.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("connect-src 'self';"), "no provider to reach: {policy}");
    // Without a trust naming a board client, nothing to sign in with but a pasted token.
    let offered = server.get("/board/sign-in", "").await;
    assert_eq!(offered.status, StatusCode::OK);
    assert_eq!(offered.json(), serde_json::json!({ "providers": [] }));
}

/// Reads the event stream until a `presence` event arrives, and returns its data (at most 10 s).
async fn next_presence(body: &mut Body, buffer: &mut String) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                if block.contains("event: presence") {
                    let data = block.lines().find_map(|line| line.strip_prefix("data: ")).unwrap();
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let frame = body.frame().await.expect("the stream ended").unwrap();
            if let Ok(data) = frame.into_data() {
                buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await
    .expect("no presence event within 10 s")
}

#[tokio::test]
async fn the_board_stream_carries_the_tenants_changes_fades_included() {
    let server = Server::started();
    server.get("/board/events", "").await.error(401, "InvalidAuthenticationToken");
    server
        .get("/board/events", &server.user(ADELE, &["Presence.Read"]))
        .await
        .error(403, "Authorization_RequestDenied");

    let request = Request::builder()
        .method(Method::GET)
        .uri("/board/events")
        .header("authorization", format!("Bearer {}", server.app(&["Presence.Read.All"])))
        .body(Body::empty())
        .unwrap();
    let response = server.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut buffer = String::new();

    // Another tenant's change is not shown; this tenant's is, as a GET would show it.
    let fabrikam =
        server.app_of(presence_testkit::OTHER_TENANT, presence_testkit::OTHER_APP, &["Presence.ReadWrite.All"]);
    let body_of = |availability: &str, activity: &str| json!({ "sessionId": presence_testkit::OTHER_APP, "availability": availability, "activity": activity });
    server
        .post(&format!("/v1.0/users/{STRANGER}/presence/setPresence"), &fabrikam, body_of("Busy", "InACall"))
        .await
        .ok_empty(200);
    server.set_presence(ALEX, "Available", "Available", Some("PT1H")).await;
    let event = next_presence(&mut body, &mut buffer).await;
    let mut shown = server.presence(ALEX).await;
    shown.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(event, shown, "the event is the presence a GET shows");
    assert_eq!(event["availability"], "Available");

    // A timer-driven change: after 5 idle minutes Alex's session fades.
    server.advance(301).await;
    let faded = next_presence(&mut body, &mut buffer).await;
    let mut shown = server.presence(ALEX).await;
    shown.as_object_mut().unwrap().remove("@odata.context");
    assert_eq!(faded, shown);
    assert_ne!(faded["activity"], "Available", "faded");
    assert!(faded["sequenceNumber"].as_str() > event["sequenceNumber"].as_str());

    // At shutdown the stream ends, so that draining does not wait for it.
    server.state.begin_shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end at shutdown");
}

/// Opens the board's stream with `token`.
async fn open_board(server: &Server, token: &str) -> axum::response::Response {
    let request = Request::builder()
        .method(Method::GET)
        .uri("/board/events")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    server.router.clone().oneshot(request).await.unwrap()
}

/// The next event of the stream, its name and data (keep-alive comments skipped); `None` once it ended.
async fn next_event(body: &mut Body, buffer: &mut String) -> Option<(String, String)> {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| block.lines().find_map(|line| line.strip_prefix(name)).map(str::to_owned);
            if let Some(event) = field("event: ") {
                return Some((event, field("data: ").unwrap_or_default()));
            }
            continue;
        }
        let frame = body.frame().await?.unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

#[tokio::test]
async fn each_application_of_a_tenant_holds_at_most_64_board_streams() {
    let server = Server::started();
    let token = server.app(&["Presence.Read.All"]);
    let mut open = Vec::new();
    for _ in 0..64 {
        let response = open_board(&server, &token).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = open_board(&server, &token).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "a 65th stream is refused");
    assert_eq!(refused.headers()["retry-after"], "30");
    let body: Value = serde_json::from_slice(&refused.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");

    // Another application of the tenant, and an application of another tenant, count on their own.
    let other_app = server.app_of(presence_testkit::TENANT, presence_testkit::APP2, &["Presence.Read.All"]);
    assert_eq!(open_board(&server, &other_app).await.status(), StatusCode::OK);
    let other_tenant =
        server.app_of(presence_testkit::OTHER_TENANT, presence_testkit::OTHER_APP, &["Presence.Read.All"]);
    assert_eq!(open_board(&server, &other_tenant).await.status(), StatusCode::OK);

    // A stream that closes gives its place back.
    open.pop();
    assert_eq!(open_board(&server, &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_board_listener_that_falls_behind_is_told_to_resync() {
    let server = Server::started();
    let mut body = open_board(&server, &server.app(&["Presence.Read.All"])).await.into_body();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await.unwrap().0, "ready");

    // While the listener reads nothing, more changes than the feed keeps for it (4096): each write of a
    // user's loop changes what the user shows.
    let changes = |user: &'static str| {
        let server = &server;
        async move {
            for n in 0..2100 {
                let (availability, activity) =
                    if n % 2 == 0 { ("Busy", "InACall") } else { ("Available", "Available") };
                server.set_presence(user, availability, activity, Some("PT1H")).await;
            }
        }
    };
    tokio::join!(changes(ADELE), changes(ALEX));

    let (event, data) = next_event(&mut body, &mut buffer).await.unwrap();
    assert_eq!((event.as_str(), data.as_str()), ("resync", "{}"), "told it missed changes, before any of them");
    // The stream goes on with the changes still kept.
    assert_eq!(next_event(&mut body, &mut buffer).await.unwrap().0, "presence");
}

#[tokio::test]
async fn a_board_stream_ends_when_its_token_expires() {
    let server = Server::started();
    // Valid for an hour, accepted a minute longer (the leeway).
    let mut body = open_board(&server, &server.app(&["Presence.Read.All"])).await.into_body();
    let mut buffer = String::new();
    assert_eq!(next_event(&mut body, &mut buffer).await.unwrap().0, "ready");

    // With the clock paused, time moves on as fast as the stream's timers ask: keep-alives every 15 s,
    // token checks every 30 s, and the end.
    tokio::time::pause();
    let opened = tokio::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(2 * 3600), async {
        while next_event(&mut body, &mut buffer).await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    let lasted = opened.elapsed().as_secs();
    assert!((3650..=3660).contains(&lasted), "the stream lasted {lasted} s, not the token's hour and a minute");
}
