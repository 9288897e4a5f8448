//! Serving the router on a listener with bounded connections, headers and idle time, and a bounded drain.
//!
//! Why not `axum::serve`: it does not expose hyper's connection settings, and a presence server facing many
//! clients needs them. Each connection is served by hyper's HTTP/1.1-or-HTTP/2 builder with
//! - a header read timeout (an HTTP/1 client that does not send a complete request head in time is
//!   disconnected),
//! - an idle timeout on every connection, TLS handshake and HTTP/2 included: no byte read or written for that
//!   long and the connection is closed (a silent client, an idle keep-alive, a client that stops reading),
//! - a cap on the header buffer (larger request heads get `431`),
//! - a cap on concurrent connections (accepting waits for a free slot).
//!
//! Shutdown stops accepting, lets in-flight requests finish, and gives up after the drain timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Connection-level limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (also the keep-alive idle limit).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; at least 8192.
    pub max_header_bytes: usize,
    /// A connection on which nothing was read or written for this long is closed: a client that connects
    /// and sends nothing, an idle keep-alive or HTTP/2 connection, a client that stops reading a response.
    pub idle_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub drain_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains. With `tls`, every connection is a
/// TLS connection (the handshake must finish within the header read timeout).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (stream, idle) = Watched::new(stream, limits.idle_timeout);
        let service = TowerToHyperService::new(router.clone());
        let (builder, watcher, acceptor) = (builder.clone(), graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            let serve = async {
                match acceptor {
                    None => {
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection.into_owned()).await;
                    }
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            let _ = watcher.watch(connection.into_owned()).await;
                        }
                    }
                }
            };
            tokio::select! {
                () = serve => {},
                () = idle.expired() => {},
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!(timeout = ?limits.drain_timeout, "connections still open after the drain timeout");
    }
}

/// An I/O object that records when bytes last moved, so an idle connection can be closed whatever the
/// protocol state (hyper's own timeouts do not cover the bytes before the protocol is known, nor HTTP/2).
struct Watched<T> {
    inner: T,
    epoch: tokio::time::Instant,
    last_activity: Arc<AtomicU64>,
}

/// The idle side of a [`Watched`] connection.
struct IdleTimer {
    epoch: tokio::time::Instant,
    last_activity: Arc<AtomicU64>,
    timeout: Duration,
}

impl<T> Watched<T> {
    fn new(inner: T, timeout: Duration) -> (Self, IdleTimer) {
        let epoch = tokio::time::Instant::now();
        let last_activity = Arc::new(AtomicU64::new(0));
        let timer = IdleTimer { epoch, last_activity: last_activity.clone(), timeout };
        (Watched { inner, epoch, last_activity }, timer)
    }

    fn touch(&self) {
        let millis = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(millis, Ordering::Relaxed);
    }
}

impl IdleTimer {
    /// Completes once no byte has moved for the timeout.
    async fn expired(self) {
        loop {
            let last = self.epoch + Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
            let deadline = last + self.timeout;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
