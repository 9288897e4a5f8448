//! The webhook client's safety, on the wire against a real HTTPS receiver: a name that resolves to a
//! loopback, private or link-local address is refused by the validation handshake and by every
//! notification POST (the check is at connection time, so a name that changes its address later is caught
//! too); redirects are never followed.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use presence_notify::target::TargetPolicy;
use presence_service::Posted;
use presence_testkit::receiver::Receiver;
use presence_webhook::{Lookup, WebhookClient};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A resolver the test controls: every name resolves to the addresses set last.
fn resolver() -> (Lookup, Arc<Mutex<Vec<IpAddr>>>) {
    let addresses = Arc::new(Mutex::new(Vec::new()));
    let answers = addresses.clone();
    let lookup: Lookup = Arc::new(move |_host: String| {
        let answer = answers.lock().unwrap().clone();
        Box::pin(async move { Ok(answer) })
    });
    (lookup, addresses)
}

/// The receiver's address under the name `localhost` (which its certificate names).
fn named(receiver: &Receiver, path: &str) -> String {
    format!("{}{path}", receiver.base.replace("127.0.0.1", "localhost"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_resolve_to_internal_addresses_are_refused_at_validation_and_before_each_post() {
    let receiver = Receiver::start().await;
    let (lookup, addresses) = resolver();
    let strict = TargetPolicy { allow_http: false, allow_internal: false };
    let client = WebhookClient::with_lookup(strict, std::slice::from_ref(&receiver.ca_der), lookup.clone()).unwrap();
    let url = named(&receiver, "/hook");
    let parsed = url::Url::parse(&url).unwrap();
    for internal in [
        vec!["127.0.0.1"],
        vec!["10.0.0.7"],
        vec!["192.168.1.20"],
        vec!["169.254.169.254"],
        vec!["::1"],
        vec!["fe80::1"],
        vec!["100.64.0.1", "127.0.0.1"],
    ] {
        *addresses.lock().unwrap() = internal.iter().map(|address| address.parse().unwrap()).collect();
        let refused = client.validate(&parsed, TIMEOUT).await.unwrap_err();
        assert!(refused.contains("has no address that notifications may be sent to"), "{internal:?}: {refused}");
        match client.post(&url, b"{}".to_vec(), TIMEOUT).await {
            Posted::Failed(reason) => {
                assert!(reason.contains("has no address that notifications may be sent to"), "{internal:?}: {reason}")
            }
            other => panic!("{internal:?}: {other:?}"),
        }
    }
    assert!(receiver.posts("/hook").is_empty(), "nothing reached the receiver");

    // The same name and receiver where internal targets are allowed: the refusal above is the policy's.
    *addresses.lock().unwrap() = vec!["127.0.0.1".parse().unwrap()];
    let open = TargetPolicy { allow_http: false, allow_internal: true };
    let client = WebhookClient::with_lookup(open, std::slice::from_ref(&receiver.ca_der), lookup).unwrap();
    client.validate(&parsed, TIMEOUT).await.unwrap();
    assert!(matches!(client.post(&url, b"{}".to_vec(), TIMEOUT).await, Posted::Status(202)));
    assert_eq!(receiver.posts("/hook").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_never_followed() {
    let receiver = Receiver::start().await;
    receiver.redirect_to("/elsewhere");
    let open = TargetPolicy { allow_http: false, allow_internal: true };
    let client = WebhookClient::new(open, std::slice::from_ref(&receiver.ca_der)).unwrap();
    let url = format!("{}/hook", receiver.base);
    let refused = client.validate(&url::Url::parse(&url).unwrap(), TIMEOUT).await.unwrap_err();
    assert!(refused.contains("307"), "{refused}");
    assert!(matches!(client.post(&url, b"{}".to_vec(), TIMEOUT).await, Posted::Status(307)), "a failed delivery");
    assert!(receiver.posts("/elsewhere").is_empty(), "the redirect was not followed");
}
