//! The shop example's server (`examples/serve/mod.rs`) over real sockets:
//! stalled clients are closed at the header read timeout, the connection
//! limit queues the rest in the kernel, and a normal request still gets
//! through; bodies, slow uploads, the peer address and shutdown.

#[path = "../../examples/serve/mod.rs"]
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a test waits for what must happen before it fails: far past
/// the few seconds the slowest step takes, so only a broken limit reaches
/// it.
const DEADLINE: Duration = Duration::from_secs(20);

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(|body: String| async move { body }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
}

/// A running server, and what stops it.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(limits: serve::Limits) -> Server {
    start_app(app(), limits).await
}

async fn start_app(app: Router, limits: serve::Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        stopped.await.ok();
    };
    let task = tokio::spawn(serve::serve(listener, app, limits, shutdown));
    Server { addr, stop, task }
}

/// Sends `request` on a new connection and reads until the server closes
/// it, at most `wait`.
async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Waits until the server closes `stream` (end of file or a reset) and
/// returns when, or `None` if it sent anything first.
async fn closed_at(mut stream: TcpStream) -> Option<Instant> {
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte).await {
        Ok(0) | Err(_) => Some(Instant::now()),
        Ok(_) => None,
    }
}

#[tokio::test]
async fn stalled_clients_are_closed_and_the_limit_queues_the_rest() {
    const LIMIT: usize = 64;
    const STALLED: usize = 200;
    const TIMEOUT: Duration = Duration::from_secs(1);
    let server = start(serve::Limits {
        max_connections: LIMIT,
        header_read_timeout: TIMEOUT,
        idle_timeout: Duration::from_secs(2),
        ..serve::Limits::default()
    })
    .await;

    let began = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        // part of a request line, part of the HTTP/2 preface, or nothing
        let opening: &[u8] = match i % 4 {
            0 => b"",
            1 => b"PRI * HTTP/2",
            _ => b"GET / HT",
        };
        stream.write_all(opening).await.expect("write");
        stalled.push(tokio::spawn(closed_at(stream)));
    }

    // A normal client behind them all: it waits for a free connection, and
    // is served once the stalled ones ahead of it have timed out.
    let answer = exchange(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        DEADLINE,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    assert!(
        began.elapsed() >= TIMEOUT,
        "served at once: nothing held it back"
    );

    let mut closed = Vec::with_capacity(STALLED);
    for client in stalled {
        let at = tokio::time::timeout(DEADLINE, client)
            .await
            .expect("every stalled client is closed")
            .expect("reader task");
        closed.push(at.expect("closed without an answer") - began);
    }
    // Counted from before the clients connected: none can be closed before
    // the timeout, however slow the machine.
    let first = closed.iter().min().copied().unwrap_or_default();
    assert!(first >= TIMEOUT, "{first:?}");
    // At most the limit were served at once: the rest waited in the
    // backlog, were accepted as the first ones were closed, and were closed
    // a whole timeout after that. Counted from the first close, not from
    // the start, so that a late first round does not blur the rounds, and
    // within half a timeout of it, so that a second round seen on time
    // does not fall in with a first round seen late.
    let first_round = closed
        .iter()
        .filter(|&&at| at < first + TIMEOUT / 2)
        .count();
    assert!(
        first_round <= LIMIT,
        "{first_round} closed in the first round"
    );

    server.stop.send(()).expect("running");
    server.task.await.expect("server task").expect("serve");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let server = start(serve::Limits {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        ..serve::Limits::default()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let sent = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0_u8; 1024];
    let n = stream.read(&mut answer).await.expect("read");
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let closed = tokio::time::timeout(DEADLINE, closed_at(stream))
        .await
        .expect("closed in time")
        .expect("nothing more was sent");
    // Kept alive: the wait for a next request (the header read timeout,
    // 500 ms) starts after the answer, so after the request was sent.
    assert!(
        closed - sent >= Duration::from_millis(500),
        "{:?}",
        closed - sent
    );
    // Closed by the limits set here, not by a default (10 s, 60 s): within
    // the idle timeout, with a second to spare for a loaded machine.
    let idle = closed - answered;
    assert!(idle < Duration::from_secs(2), "{idle:?}");
}

#[tokio::test]
async fn bodies_past_the_limit_and_slow_uploads_are_refused() {
    let server = start(serve::Limits {
        max_body_bytes: 16 * 1024,
        request_timeout: Duration::from_millis(500),
        ..serve::Limits::default()
    })
    .await;
    let post = |len: usize| {
        let mut request = format!(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        request.extend(std::iter::repeat_n(b'x', len));
        request
    };
    let wait = DEADLINE;
    let answer = exchange(server.addr, &post(1024), wait).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = exchange(server.addr, &post(17 * 1024), wait).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // the head promises a body that never comes
    let mut slow = post(100);
    slow.truncate(slow.len() - 90);
    let began = Instant::now();
    let answer = exchange(server.addr, &slow, wait).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Taken before the request was sent: the server cannot answer sooner.
    assert!(began.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn handlers_see_the_peer_and_shutdown_lets_requests_finish() {
    // A handler that holds its request until the test lets it go.
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let held = {
        let (entered, release) = (entered.clone(), release.clone());
        move || async move {
            entered.notify_one();
            release.notified().await;
            "done"
        }
    };
    let server = start_app(app().route("/held", get(held)), serve::Limits::default()).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.addr);

    let peer = client
        .get(format!("{base}/peer"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let peer: SocketAddr = peer.parse().expect("an address");
    assert!(peer.ip().is_loopback(), "{peer}");

    let in_flight = tokio::spawn(client.get(format!("{base}/held")).send());
    entered.notified().await;
    server.stop.send(()).expect("running");
    // Shutdown has begun once the listener is closed.
    let deadline = Instant::now() + DEADLINE;
    while TcpStream::connect(server.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !server.task.is_finished(),
        "returned with a request in flight"
    );
    release.notify_one();
    let response = in_flight
        .await
        .expect("task")
        .expect("the request finishes");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "done");
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("serve returns")
        .expect("server task")
        .expect("serve");
}
