//! Serving an axum app in front of the internet, with the limits that
//! `axum::serve` does not set.
//!
//! `axum::serve` has no header read timeout, no connection limit and no
//! idle timeout: every client that connects and sends nothing, or a few
//! bytes of a request line, keeps a file descriptor and a task for as long
//! as it likes, and enough of them exhaust the process's descriptors so
//! that real clients are refused. [`serve`] bounds each of them (see
//! [`Limits`]) and shuts down gracefully, and it inserts the peer address
//! as `ConnectInfo<SocketAddr>` as `into_make_service_with_connect_info`
//! does, for the health ACL.
//!
//! `examples/shop/main.rs` uses it; `integration/tests/serve_limits.rs` includes this file
//! and checks the limits over real sockets.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::response::IntoResponse as _;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// What [`serve`] bounds. The defaults suit a small app behind a balancer.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Connections served at once. With all of them taken the server stops
    /// calling `accept`: new connections wait in the kernel's listen backlog
    /// (and are refused once it is full) instead of each taking a file
    /// descriptor and a task. Default: 1,024, well under a usual descriptor
    /// limit.
    pub(crate) max_connections: usize,
    /// The time a client has to send a request's head. It runs from the
    /// connection's start, and on a kept-alive HTTP/1 connection again after
    /// each response, so a client that sends nothing, or trickles a head a
    /// byte at a time, is closed. Default: 10 s.
    pub(crate) header_read_timeout: Duration,
    /// The time a connection may stay open between requests with none in
    /// flight. hyper closes an idle HTTP/1 connection at the header read
    /// timeout already; this closes idle HTTP/2 connections, which hyper
    /// keeps open as long as the client answers its pings. Default: 60 s.
    pub(crate) idle_timeout: Duration,
    /// The time a request may take from its head to the handler's response,
    /// the upload of its body included: a body sent a byte at a time holds
    /// a connection no longer than this. Past it the answer is 408.
    /// Default: 30 s.
    pub(crate) request_timeout: Duration,
    /// The largest body axum's extractors (`Json`, `Form`, `Bytes`,
    /// `String`) read; a larger one is 413 before the handler runs. A
    /// handler that reads `Body` itself must bound it itself, as
    /// `axum::body::to_bytes(body, limit)` does. Default: 64 KiB.
    pub(crate) max_body_bytes: usize,
    /// The time in-flight requests get to finish once shutdown starts;
    /// after it [`serve`] returns, and requests still running end with the
    /// runtime. Default: 30 s.
    pub(crate) shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves,
/// then stops accepting and lets in-flight requests finish: an idle
/// HTTP/1 connection is closed at once, a busy one after its response, and
/// an HTTP/2 one is told to go away. Give it `Health::shutdown_signal()` to
/// leave the balancer's rotation before that.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: F,
) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let shared = Arc::new(Shared {
        app: app.layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        builder: builder(&limits),
        limits,
    });
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A permit before `accept`: at the limit, connections queue in the
        // kernel, where they cost this process nothing.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.map_err(io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let shared = Arc::clone(&shared);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serve_connection(&shared, stream, peer, watcher).await;
            // the connection is closed: another may be accepted
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "no longer accepting connections; letting in-flight requests finish"
    );
    if tokio::time::timeout(shared.limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
    Ok(())
}

/// What every connection's task reads.
struct Shared {
    app: Router,
    builder: Builder<TokioExecutor>,
    limits: Limits,
}

/// hyper's server for both HTTP versions, with its timers.
fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        // the timeout needs a timer; without one hyper ignores it
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // pings find a peer that vanished while a request was in flight
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        // requests at once on one connection
        .max_concurrent_streams(100);
    builder
}

/// Like axum: a failed accept is logged, and if it is not about one
/// connection (too many open files, say), the loop waits a second before
/// trying again instead of spinning.
async fn accept_failed(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection(shared: &Shared, stream: TcpStream, peer: SocketAddr, watcher: Watcher) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let activity = Arc::new(Activity::new());
    let service = connection_service(
        shared.app.clone(),
        peer,
        Arc::clone(&activity),
        shared.limits.request_timeout,
    );
    let connection = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service);
    let connection = watcher.watch(connection);
    let mut connection = std::pin::pin!(connection);
    loop {
        let now = Instant::now();
        let check = match activity.idle_until(&shared.limits) {
            Some(deadline) if deadline <= now => {
                // dropping the connection closes the socket; nothing is in flight
                tracing::debug!(%peer, "closing an idle connection");
                return;
            }
            Some(deadline) => deadline,
            None => now + shared.limits.idle_timeout,
        };
        tokio::select! {
            outcome = &mut connection => {
                if let Err(error) = outcome {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(check) => {}
        }
    }
}

/// The app for one connection: the peer in every request's extensions,
/// every request counted in flight until its response body is sent, and
/// bounded by the request timeout.
fn connection_service(
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    request_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future: Send + 'static,
> {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // what `into_make_service_with_connect_info::<SocketAddr>()` does
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = activity.begin();
        let response = tokio::time::timeout(request_timeout, app.clone().oneshot(request));
        async move {
            let response = match response.await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timeout").into_response(),
            };
            // The body owns `busy`, so the connection counts as busy until
            // the body is sent or dropped.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        }
    })
}

/// What one connection is doing, for its idle timeout.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    requests: AtomicUsize,
    /// When the last request ended, in milliseconds after `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Counts a request in flight until the guard drops.
    fn begin(self: &Arc<Self>) -> Busy {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// When the connection has been idle too long: the header read timeout
    /// after it opened if no request came yet, the idle timeout after the
    /// last request otherwise; `None` while a request is in flight.
    fn idle_until(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst));
        let allowed = if self.requests.load(Ordering::SeqCst) == 0 {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        Some(self.opened + since + allowed)
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let idle_since = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(idle_since, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
