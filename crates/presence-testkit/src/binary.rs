//! The real `presenced` binary: started as a child process on a free port, killed when dropped, and
//! called over HTTP.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A plain HTTP/1 client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new [`HttpClient`].
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A running `presenced`, killed (SIGKILL) and reaped when dropped.
pub struct Running {
    pub child: Child,
    /// `http://127.0.0.1:{port}`.
    pub base: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` with `global` arguments (say `--config FILE` or `--data-dir DIR`) and `serve --listen`
/// on a free port, and waits (at most `within`) until it accepts connections.
pub fn start(binary: &Path, global: &[&str], within: Duration) -> Running {
    let port = crate::free_port();
    // PRESENCED_TEST_LOGS=DIR keeps each started server's output in DIR/presenced-PORT.log (to debug a test).
    let output = || match std::env::var_os("PRESENCED_TEST_LOGS") {
        Some(dir) => std::fs::File::create(Path::new(&dir).join(format!("presenced-{port}.log")))
            .map_or_else(|_| Stdio::null(), Stdio::from),
        None => Stdio::null(),
    };
    let child = Command::new(binary)
        .args(global)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(output())
        .stderr(output())
        .spawn()
        .expect("presenced starts");
    let running = Running { child, base: format!("http://127.0.0.1:{port}") };
    wait_for_port(port, within);
    running
}

/// Waits (at most `within`) until something accepts connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listened on port {port} within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (at most `within`) until the server at `base` (`http://127.0.0.1:PORT`) answers `/readyz` with
/// `200`.
pub fn wait_ready(base: &str, within: Duration) {
    use std::io::{Read, Write};
    let address = base.strip_prefix("http://").expect("a plain HTTP base");
    let deadline = Instant::now() + within;
    loop {
        let answer = std::net::TcpStream::connect(address).and_then(|mut stream| {
            stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        });
        if answer.is_ok_and(|answer| answer.starts_with("HTTP/1.1 200")) {
            return;
        }
        assert!(Instant::now() < deadline, "{base} was not ready within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A token minted by `binary token` with `global` arguments and `extra` token arguments.
pub fn token(binary: &Path, global: &[&str], extra: &[&str]) -> String {
    let output = Command::new(binary).args(global).arg("token").args(extra).output().expect("presenced runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("a token is text").trim().to_owned()
}

/// Calls `{base}{path}` with a bearer token (unless empty) and a JSON body (unless `Value::Null`):
/// the status and the body as JSON (`Value::Null` when empty or not JSON).
pub async fn call(
    client: &HttpClient,
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    try_call(client, base, method, path, token, body).await.expect("the server answers")
}

/// GETs `{base}{path}` without a token: the status and the body as text.
pub async fn get_text(client: &HttpClient, base: &str, path: &str) -> (u16, String) {
    let request = Request::get(format!("{base}{path}")).body(Full::new(Bytes::new())).expect("a valid request");
    let response = client.request(request).await.expect("the server answers");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.expect("the body arrives").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// [`call`], answering `None` when the server does not answer (the connection failed or closed).
pub async fn try_call(
    client: &HttpClient,
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> Option<(u16, Value)> {
    let mut request = Request::builder().method(method).uri(format!("{base}{path}"));
    if !token.is_empty() {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = if body.is_null() {
        Full::new(Bytes::new())
    } else {
        request = request.header("content-type", "application/json");
        Full::new(Bytes::from(body.to_string()))
    };
    let response = client.request(request.body(body).expect("a valid request")).await.ok()?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}
