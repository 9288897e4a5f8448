//! Connection-level limits on a real socket, with Tokio's clock paused (timeouts fire without waiting).

use std::time::Duration;

use presence_api::ConnectionLimits;
use presence_testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The limits users get by default.
fn defaults() -> ConnectionLimits {
    settings(&[]).connection_limits()
}

async fn start(limits: ConnectionLimits) -> (std::net::SocketAddr, Server) {
    let server = Server::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = server.router.clone();
    tokio::spawn(presence_api::serve(listener, router, limits, None, std::future::pending()));
    (address, server)
}

async fn read_all(stream: &mut TcpStream) -> String {
    let mut buffer = Vec::new();
    let _ = stream.read_to_end(&mut buffer).await;
    String::from_utf8_lossy(&buffer).into_owned()
}

fn request(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(start_paused = true)]
async fn a_request_head_larger_than_the_limit_is_refused() {
    let (address, server) = start(ConnectionLimits { max_header_bytes: 8192, ..defaults() }).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let padding = "x".repeat(16 * 1024);
    let head = format!("GET /v1.0/me/presence HTTP/1.1\r\nHost: x\r\nX-Padding: {padding}\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = read_all(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request(&format!("/v1.0/users/{ADELE}/presence"), &server.writer()).as_bytes()).await.unwrap();
    assert!(read_all(&mut stream).await.starts_with("HTTP/1.1 200"), "a normal request still works");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_head_is_disconnected() {
    // The idle timeout is far longer: what closes the connection is the header read timeout.
    let limits = ConnectionLimits {
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(3600),
        ..defaults()
    };
    let (address, _server) = start(limits).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"GET /v1.0/me/presence HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_all(&mut stream)).await;
    let answer = answer.expect("the server closes the connection after its header timeout, not its idle timeout");
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_gets_408() {
    let (address, server) = start(defaults()).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v1.0/users/{ADELE}/presence/setPresence HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\nConnection: close\r\n\r\n{{\"sessionId\":",
        server.writer()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(120), read_all(&mut stream)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"RequestTimeout\""), "{answer}");
    assert_eq!(server.shows(ADELE).await.0, "Offline");
}

#[tokio::test(start_paused = true)]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let limits = ConnectionLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(3600),
        ..defaults()
    };
    let (address, server) = start(limits).await;
    let first = TcpStream::connect(address).await.unwrap();
    tokio::task::yield_now().await;
    let mut second = TcpStream::connect(address).await.unwrap();
    second.write_all(request(&format!("/v1.0/users/{ADELE}/presence"), &server.writer()).as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_secs(60), second.read(&mut byte)).await;
    assert!(waited.is_err(), "the second connection is not served while the first holds the only slot");
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(60), read_all(&mut second)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn tls_serves_http1_and_offers_http2() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let tls = presence_api::tls::server_config(&cert_file, &key_file).unwrap();

    let server = Server::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = server.router.clone();
    tokio::spawn(presence_api::serve(listener, router, defaults(), Some(tls), std::future::pending()));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let connect = |alpn: Vec<Vec<u8>>| {
        let roots = roots.clone();
        async move {
            let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = alpn;
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let tcp = TcpStream::connect(address).await.unwrap();
            connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap()
        }
    };

    let mut stream = connect(vec![b"http/1.1".to_vec()]).await;
    stream.write_all(request(&format!("/v1.0/users/{ADELE}/presence"), &server.writer()).as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"availability\":\"Offline\""), "{answer}");

    // HTTP/2, negotiated by ALPN, and a request sent over it.
    let stream = connect(vec![b"h2".to_vec(), b"http/1.1".to_vec()]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let over_h2 = hyper::Request::get(format!("https://localhost/v1.0/users/{ADELE}/presence"))
        .header("authorization", format!("Bearer {}", server.writer()))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(over_h2).await.unwrap();
    assert_eq!((response.version(), response.status().as_u16()), (hyper::Version::HTTP_2, 200));
    let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"availability\":\"Offline\""), "{body:?}");

    let plain = TcpStream::connect(address).await.unwrap();
    let mut plain = plain;
    plain.write_all(request("/v1.0/me/presence", "x").as_bytes()).await.unwrap();
    assert!(!read_all(&mut plain).await.starts_with("HTTP/1.1"), "plain HTTP is not served on a TLS port");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let limits = ConnectionLimits { idle_timeout: Duration::from_secs(20), ..defaults() };
    let (address, _server) = start(limits).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3600), read_all(&mut stream)).await;
    assert_eq!(answer.expect("closed by the server").len(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_and_its_slot_freed() {
    let limits = ConnectionLimits { max_connections: 1, idle_timeout: Duration::from_secs(20), ..defaults() };
    let (address, server) = start(limits).await;
    let mut first = TcpStream::connect(address).await.unwrap();
    let keep_alive = format!(
        "GET /v1.0/users/{ADELE}/presence HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        server.writer()
    );
    first.write_all(keep_alive.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3600), read_all(&mut first)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "answered, then closed when idle: {answer}");
    let mut second = TcpStream::connect(address).await.unwrap();
    second.write_all(request(&format!("/v1.0/users/{ADELE}/presence"), &server.writer()).as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), read_all(&mut second)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "the slot was freed: {answer}");
}

/// A server whose shutdown the test starts: its address, the engine, the trigger, and the task serving
/// (it ends when the drain does).
async fn start_stoppable(
    limits: ConnectionLimits,
) -> (std::net::SocketAddr, Server, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let server = Server::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let serving = tokio::spawn(presence_api::serve(listener, server.router.clone(), limits, None, shutdown));
    (address, server, stop, serving)
}

/// Sends the head of a setPresence (Adele busy) and the first half of its body, and waits until the
/// server reads the body (it answers the `Expect: 100-continue`): the request is in flight. Returns the
/// rest of the body.
async fn begin_set_presence(stream: &mut TcpStream, server: &Server) -> Vec<u8> {
    let body = serde_json::json!({
        "sessionId": APP, "availability": "Busy", "activity": "InACall", "expirationDuration": "PT1H"
    })
    .to_string();
    let head = format!(
        "POST /v1.0/users/{ADELE}/presence/setPresence HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.writer(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    stream.write_all(first).await.unwrap();
    rest.to_vec()
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let (address, server, stop, mut serving) = start_stoppable(defaults()).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let rest = begin_set_presence(&mut stream, &server).await;

    stop.send(()).unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), &mut serving).await;
    assert!(waited.is_err(), "serving ended with a request in flight, inside the drain timeout (10 s)");
    // The write that follows waits for the store's thread: on the real clock, the paused one would jump.
    tokio::time::resume();
    stream.write_all(&rest).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), read_all(&mut stream)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "the request begun before shutdown is answered: {answer}");
    assert_eq!(server.shows(ADELE).await, ("Busy".to_owned(), "InACall".to_owned()));
    tokio::time::timeout(Duration::from_secs(60), serving)
        .await
        .expect("the drain ends with its last request")
        .unwrap();
    assert!(TcpStream::connect(address).await.is_err(), "nothing listens any more");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_waiting_for_requests_at_the_drain_timeout() {
    // The request's body stalls: the router would answer 408 after 30 s, but the drain gives up after 5.
    let limits = ConnectionLimits { drain_timeout: Duration::from_secs(5), ..defaults() };
    let (address, server, stop, serving) = start_stoppable(limits).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    begin_set_presence(&mut stream, &server).await;

    let stopped = tokio::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(120), serving).await.expect("the drain ends").unwrap();
    let drained = stopped.elapsed();
    assert!(
        (Duration::from_secs(5)..Duration::from_secs(6)).contains(&drained),
        "the drain took {drained:?}, not its 5 s"
    );
    assert_eq!(server.shows(ADELE).await.0, "Offline");
}
