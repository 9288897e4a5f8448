//! Change notifications end to end: the subscriptions API, the validation handshake, and delivery to a
//! real HTTPS webhook receiver, driven by writes and by the test clock.

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use axum::http::Method;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use presence_service::Clock;
use presence_testkit::receiver::Receiver;
use presence_testkit::*;
use rsa::pkcs8::EncodePrivateKey;
use rsa::{Oaep, RsaPrivateKey};
use serde_json::{json, Value};

const READER: &[&str] = &["Presence.Read.All"];

/// `expirationDateTime` this many minutes after the server's now.
fn in_minutes(server: &Server, minutes: i64) -> String {
    let now = server.clock.now().as_millis();
    jiff::Timestamp::from_millisecond(now + minutes * 60_000).unwrap().to_string()
}

fn subscription(receiver: &Receiver, resource: &str, expiration: String) -> Value {
    json!({
        "changeType": "updated",
        "resource": resource,
        "notificationUrl": format!("{}/hook?tenant=contoso", receiver.base),
        "lifecycleNotificationUrl": format!("{}/lifecycle", receiver.base),
        "expirationDateTime": expiration,
        "clientState": "s3cr3t-state",
    })
}

async fn subscribe(server: &Server, token: &str, body: Value) -> Value {
    let reply = server.post("/v1.0/subscriptions", token, body).await;
    assert_eq!(reply.status.as_u16(), 201, "{}", reply.text);
    reply.json()
}

/// A subscription to Adele's presence for `minutes`.
fn adele(receiver: &Receiver, server: &Server, minutes: i64) -> Value {
    subscription(receiver, &format!("communications/presences/{ADELE}"), in_minutes(server, minutes))
}

fn sequence(item: &Value) -> String {
    item["resourceData"]["sequenceNumber"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_visible_change_from_writes_and_from_time_arrives_once_in_order() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |_| {});
    let reader = server.app(READER);
    let created = subscribe(
        &server,
        &reader,
        subscription(&receiver, &format!("/communications/presences/{ADELE}"), in_minutes(&server, 60)),
    )
    .await;
    assert_eq!(created["changeType"], "updated");
    assert_eq!(created["clientState"], "s3cr3t-state");
    assert_eq!(created["applicationId"], APP);
    assert_eq!(created["expirationDateTime"], "2026-09-01T11:00:00.0000000Z");
    assert!(created["@odata.context"].as_str().unwrap().ends_with("$metadata#subscriptions/$entity"));
    let id = created["id"].as_str().unwrap().to_owned();

    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    server.set_presence(ADELE, "Available", "Available", Some("PT1H")).await;
    server.set_presence(ADELE, "Available", "Available", Some("PT1H")).await; // a refresh: nothing visible
    server.set_presence(ALEX, "Busy", "InACall", None).await; // not watched
    server.advance(5 * 60).await; // fades
    server.advance(5 * 60).await; // and again
    let items = receiver.wait_items("/hook", 4).await;

    let mut shown = Vec::new();
    for item in &items {
        assert_eq!(item["subscriptionId"], id.as_str());
        assert_eq!(item["clientState"], "s3cr3t-state");
        assert_eq!(item["changeType"], "updated");
        assert_eq!(item["tenantId"], TENANT);
        assert_eq!(item["resource"], format!("communications/presences/{ADELE}"));
        assert_eq!(item["subscriptionExpirationDateTime"], "2026-09-01T11:00:00.0000000Z");
        assert_eq!(item["resourceData"]["@odata.type"], "#microsoft.graph.presence");
        assert_eq!(item["resourceData"]["id"], ADELE);
        shown.push(sequence(item));
    }
    let mut sorted = shown.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(shown, sorted, "strictly increasing sequence numbers, in arrival order");
    let posts = receiver.posts("/hook");
    assert!(posts.iter().all(|post| post.content_type.starts_with("application/json")));

    // One more change marks the end: nothing else arrived in between (exactly once).
    server.set_presence(ADELE, "DoNotDisturb", "Presenting", None).await;
    let items = receiver.wait_items("/hook", 5).await;
    assert_eq!(items.len(), 5, "{items:#?}");
    let latest = server.presence(ADELE).await;
    assert_eq!(sequence(&items[4]), latest["sequenceNumber"].as_str().unwrap(), "the reader's version");
    assert_eq!(
        sequence(&items[4]).parse::<u64>().unwrap() - sequence(&items[0]).parse::<u64>().unwrap(),
        4,
        "five visible changes, five consecutive versions"
    );
}

#[tokio::test]
async fn a_bulk_subscription_reports_each_user_and_expiry_of_sessions() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |_| {});
    let resource = format!("communications/presences?$filter=id in ('{ADELE}','{ALEX}')");
    subscribe(&server, &server.user(ADELE, READER), subscription(&receiver, &resource, in_minutes(&server, 30))).await;
    server.set_presence(ALEX, "Busy", "InACall", Some("PT5M")).await;
    server.set_presence(ADELE, "DoNotDisturb", "Presenting", Some("PT5M")).await;
    server.advance(5 * 60).await; // both sessions expire at the same instant
    let items = receiver.wait_items("/hook", 4).await;
    let per_user = |user: &str| -> Vec<String> {
        items.iter().filter(|item| item["resourceData"]["id"] == user).map(sequence).collect()
    };
    assert_eq!(per_user(ALEX).len(), 2);
    assert_eq!(per_user(ADELE).len(), 2);
    assert!(per_user(ALEX)[0] < per_user(ALEX)[1]);
    assert_eq!(server.shows(ALEX).await, ("Offline".into(), "Offline".into()));
}

/// A subscriber's RSA key and a self-signed certificate for it.
fn subscriber_certificate() -> (RsaPrivateKey, String) {
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = private.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate =
        rcgen::CertificateParams::new(vec!["subscriber.example".to_owned()]).unwrap().self_signed(&key_pair).unwrap();
    (private, STANDARD.encode(certificate.der()))
}

/// Opens `encryptedContent` as Graph tells subscribers to.
fn open(private: &RsaPrivateKey, content: &Value) -> Value {
    let key = private
        .decrypt(Oaep::new::<sha1::Sha1>(), &STANDARD.decode(content["dataKey"].as_str().unwrap()).unwrap())
        .unwrap();
    let ciphertext = STANDARD.decode(content["data"].as_str().unwrap()).unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(&ciphertext);
    mac.verify_slice(&STANDARD.decode(content["dataSignature"].as_str().unwrap()).unwrap()).expect("signature");
    let plain = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &key[..16])
        .unwrap()
        .decrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(&ciphertext)
        .unwrap();
    serde_json::from_slice(&plain).unwrap()
}

#[tokio::test]
async fn rich_notifications_decrypt_to_the_presence_and_carry_verifiable_validation_tokens() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |_| {});
    let (private, certificate) = subscriber_certificate();
    let mut body = adele(&receiver, &server, 60);
    body["includeResourceData"] = json!(true);
    body["encryptionCertificate"] = json!(certificate);
    body["encryptionCertificateId"] = json!("my-cert-1");
    let created = subscribe(&server, &server.app(READER), body).await;
    assert_eq!(created["includeResourceData"], true);
    assert_eq!(created["encryptionCertificateId"], "my-cert-1");

    let status = json!({ "statusMessage": { "message": { "content": "On a call", "contentType": "text" } } });
    server
        .post(&format!("/v1.0/users/{ADELE}/presence/setStatusMessage"), &server.writer(), status)
        .await
        .ok_empty(200);
    server.set_presence(ADELE, "Busy", "InACall", None).await;
    let posts = receiver.wait_posts("/hook", 1).await;
    let items = receiver.wait_items("/hook", 2).await;
    let last = &items[1];
    let content = &last["encryptedContent"];
    assert_eq!(content["encryptionCertificateId"], "my-cert-1");
    let der = STANDARD.decode(&certificate).unwrap();
    let thumbprint: String = <sha1::Sha1 as sha1::Digest>::digest(&der).iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(content["encryptionCertificateThumbprint"], thumbprint);
    let presence = open(&private, content);
    assert_eq!(presence["id"], ADELE);
    assert_eq!(presence["availability"], "Busy");
    assert_eq!(presence["activity"], "InACall");
    assert_eq!(presence["statusMessage"]["message"]["content"], "On a call");
    assert_eq!(presence["@odata.type"], "#microsoft.graph.presence");
    assert_eq!(presence["sequenceNumber"], server.presence(ADELE).await["sequenceNumber"]);

    // The validation token is signed by this server's issuer for the subscribing app.
    let token = posts[0].body["validationTokens"][0].as_str().expect("validationTokens").to_owned();
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&server.get("/discovery/v2.0/keys", "").await.text).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[APP]);
    validation.set_issuer(&[format!("{ISSUER}/{TENANT}/v2.0")]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap().claims;
    assert_eq!(claims["appid"], "0bf30f3b-4a52-48df-9a82-234910c4a086");
    assert_eq!(claims["azp"], "0bf30f3b-4a52-48df-9a82-234910c4a086");
}

#[tokio::test]
async fn creation_fails_clearly_when_the_endpoint_does_not_validate() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |config| {
        config.validation_timeout = std::time::Duration::from_secs(2);
    });
    let reader = server.app(READER);
    receiver.refuse_validation();
    let body = adele(&receiver, &server, 60);
    let message = server.post("/v1.0/subscriptions", &reader, body).await.error(400, "InvalidRequest");
    assert!(message.contains("validationToken"), "{message}");

    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut body = adele(&receiver, &server, 60);
    body["notificationUrl"] = json!(format!("https://127.0.0.1:{port}/hook"));
    let message = server.post("/v1.0/subscriptions", &reader, body).await.error(400, "InvalidRequest");
    assert!(message.contains("could not be reached"), "{message}");

    let list = server.get("/v1.0/subscriptions", &reader).await.json();
    assert_eq!(list["value"], json!([]), "no subscription was created");
}

#[tokio::test]
async fn internal_and_plain_http_targets_are_refused_by_default() {
    let server = Server::new();
    let reader = server.app(READER);
    for url in ["https://127.0.0.1:8443/hook", "https://10.1.2.3/hook", "https://[::1]/hook", "http://example.com/hook"]
    {
        let body = json!({
            "changeType": "updated",
            "resource": format!("communications/presences/{ADELE}"),
            "notificationUrl": url,
            "expirationDateTime": in_minutes(&server, 30),
        });
        let message = server.post("/v1.0/subscriptions", &reader, body).await.error(400, "ValidationError");
        assert!(message.starts_with("notificationUrl"), "{url}: {message}");
    }
}

#[tokio::test]
async fn subscriptions_can_be_listed_read_renewed_and_deleted_by_their_owner_only() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |_| {});
    let body = || subscription(&receiver, &format!("communications/presences/{ALEX}"), in_minutes(&server, 30));

    // Delegated Presence.Read.All as Graph requires; application Presence.Read.All beyond Graph.
    let delegated = subscribe(&server, &server.user(ADELE, READER), body()).await;
    let app = subscribe(&server, &server.app(READER), body()).await;
    server
        .post("/v1.0/subscriptions", &server.user(ADELE, &["Presence.Read"]), body())
        .await
        .error(403, "Authorization_RequestDenied");
    server.post("/v1.0/subscriptions", &server.app(&["User.Read.All"]), body()).await.error(403, "Forbidden");
    assert_eq!(delegated["creatorId"], ADELE);
    assert_eq!(app["creatorId"], APP);

    let app_id = app["id"].as_str().unwrap();
    let delegated_id = delegated["id"].as_str().unwrap();
    let list = server.get("/beta/subscriptions", &server.app(READER)).await.json();
    assert_eq!(list["value"].as_array().unwrap().len(), 2, "an app token sees all of its app's subscriptions");
    let list = server.get("/v1.0/subscriptions", &server.user(ALEX, READER)).await.json();
    assert_eq!(list["value"], json!([]), "a user sees only their own delegated subscriptions");
    let other_app = server.app_of(TENANT, APP2, READER);
    server.get(&format!("/v1.0/subscriptions/{app_id}"), &other_app).await.error(404, "ResourceNotFound");
    server
        .call(Method::DELETE, &format!("/v1.0/subscriptions/{app_id}"), &other_app, None)
        .await
        .error(404, "ResourceNotFound");

    let read = server.get(&format!("/v1.0/subscriptions/{delegated_id}"), &server.user(ADELE, READER)).await.json();
    assert_eq!(read["id"], delegated_id);
    assert_eq!(read["notificationUrl"], format!("{}/hook?tenant=contoso", receiver.base));

    // Renewal: at most 60 minutes ahead.
    let reader = server.app(READER);
    let path = format!("/v1.0/subscriptions/{app_id}");
    let renewed = server
        .call(Method::PATCH, &path, &reader, Some(json!({ "expirationDateTime": in_minutes(&server, 60) })))
        .await;
    assert_eq!(renewed.status.as_u16(), 200, "{}", renewed.text);
    assert_eq!(renewed.json()["expirationDateTime"], "2026-09-01T11:00:00.0000000Z");
    let message = server
        .call(Method::PATCH, &path, &reader, Some(json!({ "expirationDateTime": in_minutes(&server, 61) })))
        .await
        .error(400, "ValidationError");
    assert!(message.contains("60 minutes"), "{message}");
    server.call(Method::PATCH, &path, &reader, Some(json!({ "resource": "x" }))).await.error(400, "BadRequest");
    let reauthorize = server.post(&format!("{path}/reauthorize"), &reader, json!({})).await;
    assert_eq!(reauthorize.status.as_u16(), 204, "{}", reauthorize.text);

    // A new notificationUrl is validated like a new subscription's: one that does not answer the handshake
    // is refused and changes nothing; one that does is taken.
    let unreachable = json!({ "notificationUrl": "https://127.0.0.1:9/hook" });
    server.call(Method::PATCH, &path, &reader, Some(unreachable)).await.error(400, "InvalidRequest");
    assert_eq!(
        server.get(&path, &reader).await.json()["notificationUrl"],
        format!("{}/hook?tenant=contoso", receiver.base)
    );
    let moved = json!({ "notificationUrl": format!("{}/moved", receiver.base) });
    let patched = server.call(Method::PATCH, &path, &reader, Some(moved)).await;
    assert_eq!(patched.status.as_u16(), 200, "{}", patched.text);
    assert_eq!(patched.json()["notificationUrl"], format!("{}/moved", receiver.base));

    // Deleted: gone, and no longer notified.
    server.call(Method::DELETE, &path, &reader, None).await.ok_empty(204);
    server.get(&path, &reader).await.error(404, "ResourceNotFound");
    server.set_presence(ALEX, "Busy", "InACall", None).await;
    // A later change as a sentinel: once the remaining subscription delivered it, the deleted one had its
    // chance to deliver the first change too.
    server.set_presence(ALEX, "Away", "Away", None).await;
    let items = receiver.wait_items("/hook", 2).await;
    let from: Vec<&str> = items.iter().map(|item| item["subscriptionId"].as_str().unwrap_or_default()).collect();
    assert_eq!(from, [delegated_id, delegated_id], "only the delegated subscription remains: {items:#?}");
    assert!(receiver.posts("/moved").is_empty(), "nothing for the deleted one at its new address");
}

#[tokio::test]
async fn bad_subscription_requests_are_refused_and_create_nothing() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |config| config.max_subscriptions_per_app = 1);
    let reader = server.app(READER);
    let good = || adele(&receiver, &server, 30);
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut b = good();
                b["changeType"] = json!("created");
                b
            },
            "ValidationError",
        ),
        (
            {
                let mut b = good();
                b["resource"] = json!("users/x/messages");
                b
            },
            "ValidationError",
        ),
        (
            {
                let mut b = good();
                b["expirationDateTime"] = json!(in_minutes(&server, 61));
                b
            },
            "ValidationError",
        ),
        (
            {
                let mut b = good();
                b["expirationDateTime"] = json!("soon");
                b
            },
            "BadRequest",
        ),
        (
            {
                let mut b = good();
                b["includeResourceData"] = json!(true);
                b
            },
            "ValidationError",
        ),
        (
            {
                let mut b = good();
                b["clientState"] = json!("x".repeat(129));
                b
            },
            "ValidationError",
        ),
        (
            {
                let mut b = good();
                b["color"] = json!("blue");
                b
            },
            "BadRequest",
        ),
    ];
    for (body, code) in cases {
        server.post("/v1.0/subscriptions", &reader, body).await.error(400, code);
    }
    let mut unknown = good();
    unknown["resource"] = json!(format!("communications/presences/{STRANGER}"));
    server.post("/v1.0/subscriptions", &reader, unknown).await.error(404, "NotFound");
    subscribe(&server, &reader, good()).await;
    server.post("/v1.0/subscriptions", &reader, good()).await.error(403, "Forbidden");
    assert_eq!(server.get("/v1.0/subscriptions", &reader).await.json()["value"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn lifecycle_reauthorization_required_then_removed_at_expiry() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |_| {});
    let reader = server.app(READER);
    let created = subscribe(&server, &reader, adele(&receiver, &server, 20)).await;
    let id = created["id"].as_str().unwrap();
    server.advance(10 * 60).await;
    let events = receiver.wait_items("/lifecycle", 1).await;
    assert_eq!(events[0]["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(events[0]["subscriptionId"], id);
    assert_eq!(events[0]["clientState"], "s3cr3t-state");
    assert_eq!(events[0]["tenantId"], TENANT);
    server.advance(10 * 60).await;
    let events = receiver.wait_items("/lifecycle", 2).await;
    assert_eq!(events[1]["lifecycleEvent"], "subscriptionRemoved");
    server.get(&format!("/v1.0/subscriptions/{id}"), &reader).await.error(404, "ResourceNotFound");
}

#[tokio::test]
async fn failed_deliveries_are_retried_in_order_and_dropped_with_missed_after_the_window() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |config| {
        config.retry_window = std::time::Duration::from_secs(120);
    });
    let reader = server.app(READER);
    subscribe(&server, &reader, adele(&receiver, &server, 60)).await;
    receiver.answer_with(503);
    server.set_presence(ADELE, "Busy", "InACall", None).await;
    let failed = receiver.wait_items("/hook", 1).await;
    server.set_presence(ADELE, "DoNotDisturb", "Presenting", None).await;
    receiver.answer_with(202);
    server.advance(10).await; // the first retry is due 10 seconds after the failed attempt
    let items = receiver.wait_items("/hook", 3).await;
    assert_eq!(items[1], failed[0], "the failed notification again, first");
    assert!(sequence(&items[1]) < sequence(&items[2]), "then the later change");

    // An endpoint that keeps failing: retried until the window closes, then dropped with `missed`.
    receiver.answer_with(500);
    server.set_presence(ADELE, "Away", "Away", None).await;
    receiver.wait_items("/hook", 4).await;
    server.advance(10).await;
    receiver.wait_items("/hook", 5).await;
    server.advance(121).await;
    let events = receiver.wait_items("/lifecycle", 1).await;
    assert_eq!(events[0]["lifecycleEvent"], "missed");
    receiver.answer_with(202);
    server.set_presence(ADELE, "Available", "Available", None).await;
    let items = receiver.wait_items("/hook", 6).await;
    assert_eq!(items[5]["resourceData"]["sequenceNumber"], server.presence(ADELE).await["sequenceNumber"]);
}

#[tokio::test]
async fn a_full_queue_is_dropped_with_a_missed_event() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |config| config.max_queued_per_subscription = 2);
    let reader = server.app(READER);
    subscribe(&server, &reader, adele(&receiver, &server, 60)).await;
    receiver.answer_with(503);
    server.set_presence(ADELE, "Busy", "InACall", None).await;
    receiver.wait_items("/hook", 1).await;
    for (availability, activity) in [("DoNotDisturb", "Presenting"), ("Away", "Away"), ("Busy", "InAConferenceCall")] {
        server.set_presence(ADELE, availability, activity, None).await;
    }
    // Dropped as soon as the bound is passed, not at the next retry (the clock does not move).
    let events = receiver.wait_items("/lifecycle", 1).await;
    assert_eq!(events[0]["lifecycleEvent"], "missed");
}

#[tokio::test]
async fn a_queue_passing_its_bound_while_an_attempt_is_in_flight_is_dropped_when_it_fails() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |config| config.max_queued_per_subscription = 2);
    let reader = server.app(READER);
    subscribe(&server, &reader, adele(&receiver, &server, 60)).await;
    receiver.answer_with(503);
    receiver.hold();
    server.set_presence(ADELE, "Busy", "InACall", None).await;
    receiver.wait_items("/hook", 1).await; // the attempt is in flight, its answer held
    for (availability, activity) in [("DoNotDisturb", "Presenting"), ("Away", "Away"), ("Busy", "InAConferenceCall")] {
        server.set_presence(ADELE, availability, activity, None).await;
    }
    receiver.release(); // the attempt fails; the queue is over its bound by now
    let events = receiver.wait_items("/lifecycle", 1).await;
    assert_eq!(events[0]["lifecycleEvent"], "missed", "dropped at once, not at the retry (the clock does not move)");
}

#[tokio::test]
async fn a_preferred_presence_expiring_is_a_change_too() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |_| {});
    let resource = format!("communications/presences/{ADELE}");
    subscribe(&server, &server.app(READER), subscription(&receiver, &resource, in_minutes(&server, 60))).await;
    server.set_presence(ADELE, "Busy", "InACall", Some("PT1H")).await;
    let prefer = json!({ "availability": "DoNotDisturb", "activity": "DoNotDisturb", "expirationDuration": "PT10M" });
    let path = format!("/v1.0/users/{ADELE}/presence/setUserPreferredPresence");
    server.post(&path, &server.writer(), prefer).await.ok_empty(200);
    server.advance(10 * 60).await;
    let items = receiver.wait_items("/hook", 3).await;
    let sequences: Vec<u64> = items.iter().map(|item| sequence(item).parse().unwrap()).collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert_eq!(server.shows(ADELE).await, ("Busy".into(), "InACall".into()), "back to the session");
}

#[tokio::test]
async fn concurrent_creations_cannot_pass_the_limit() {
    let receiver = Receiver::start().await;
    let server = Server::notifying(&receiver.ca_der, |config| config.max_subscriptions_per_app = 2);
    let reader = server.app(READER);
    let body = || adele(&receiver, &server, 30);
    let create = || server.post("/v1.0/subscriptions", &reader, body());
    let replies = tokio::join!(create(), create(), create(), create(), create());
    let mut statuses: Vec<u16> =
        [replies.0, replies.1, replies.2, replies.3, replies.4].iter().map(|reply| reply.status.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 403, 403, 403]);
}

#[tokio::test]
async fn without_usable_root_certificates_presence_works_and_subscribing_says_why_not() {
    let server = Server::notifying(b"not a certificate", |_| {});
    server.set_presence(ADELE, "Busy", "InACall", None).await;
    let body = json!({
        "changeType": "updated",
        "resource": format!("communications/presences/{ADELE}"),
        "notificationUrl": "https://127.0.0.1:9/hook",
        "expirationDateTime": in_minutes(&server, 30),
    });
    let message = server.post("/v1.0/subscriptions", &server.app(READER), body).await.error(500, "generalException");
    assert!(message.contains("change notifications are unavailable"), "{message}");
}
