//! The load generator: one HTTP/1.1 keep-alive connection per simulated
//! client, each sending its requests one after another.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::BoxError;

/// No connection sends more requests than this in one phase, however fast
/// the server answers; the phase's duration is the other bound.
const MAX_REQUESTS_PER_CONNECTION: u64 = 5_000_000;

/// A latency histogram in microseconds, from 1 µs to 60 s.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds are valid")
}

/// One keep-alive connection to the server under test.
pub(crate) struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    cookie: Option<String>,
}

/// What one request got back.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) set_cookie: Option<String>,
}

impl Conn {
    /// Opens a connection that sends `cookie` (a `name=value` pair) with
    /// every request.
    pub(crate) async fn open(addr: SocketAddr, cookie: Option<String>) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes.
            let _ = connection.await;
        });
        Ok(Self {
            sender,
            addr,
            cookie,
        })
    }

    /// Sends one request without a body and reads the whole answer.
    pub(crate) async fn send(&mut self, method: Method, path: &str) -> Result<Answer, BoxError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.addr.to_string());
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = request.body(Empty::new())?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let set_cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body,
            set_cookie,
        })
    }

    /// Sends one request and fails unless it is answered with 2xx.
    pub(crate) async fn expect_ok(
        &mut self,
        method: Method,
        path: &str,
    ) -> Result<Answer, BoxError> {
        let answer = self.send(method, path).await?;
        if !answer.status.is_success() {
            return Err(format!(
                "{path} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            )
            .into());
        }
        Ok(answer)
    }
}

/// What the requests of one route look like.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route {
    /// `GET /bare`.
    Bare,
    /// `GET /read`.
    Read,
    /// `POST /write/{n}`, with `n` new for every request.
    Write,
}

impl Route {
    fn request(self, connection: usize, seq: u64) -> (Method, String) {
        match self {
            Self::Bare => (Method::GET, "/bare".to_owned()),
            Self::Read => (Method::GET, "/read".to_owned()),
            Self::Write => (Method::POST, format!("/write/{connection}{seq:09}")),
        }
    }
}

/// What one phase of load measured.
pub(crate) struct Load {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Histogram<u64>,
    pub(crate) first_failure: Option<String>,
}

impl Load {
    pub(crate) fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn requests(&self) -> u64 {
        self.ok + self.failed
    }

    /// Adds a connection's share.
    fn absorb(&mut self, other: Self) -> Result<(), BoxError> {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latency.add(&other.latency)?;
        if self.first_failure.is_none() {
            self.first_failure = other.first_failure;
        }
        Ok(())
    }

    fn empty() -> Self {
        Self {
            ok: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
            first_failure: None,
        }
    }
}

/// Drives `route` for `duration` over one connection per entry of
/// `cookies`, all at once, and measures it.
pub(crate) async fn drive(
    addr: SocketAddr,
    cookies: &[Option<String>],
    route: Route,
    duration: Duration,
) -> Result<Load, BoxError> {
    let mut conns = Vec::with_capacity(cookies.len());
    for cookie in cookies {
        conns.push(Conn::open(addr, cookie.clone()).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(index, mut conn)| {
            tokio::spawn(async move {
                let mut load = Load::empty();
                let mut seq = 0;
                while seq < MAX_REQUESTS_PER_CONNECTION && Instant::now() < deadline {
                    seq += 1;
                    let (method, path) = route.request(index, seq);
                    let sent = Instant::now();
                    match conn.send(method, &path).await {
                        Ok(answer) if answer.status.is_success() => {
                            load.ok += 1;
                            let micros = u64::try_from(sent.elapsed().as_micros())
                                .unwrap_or(u64::MAX)
                                .max(1);
                            load.latency.saturating_record(micros);
                        }
                        Ok(answer) => {
                            load.failed += 1;
                            load.first_failure.get_or_insert_with(|| {
                                format!(
                                    "{path}: {} {}",
                                    answer.status,
                                    String::from_utf8_lossy(&answer.body)
                                )
                            });
                        }
                        Err(error) => {
                            load.failed += 1;
                            load.first_failure
                                .get_or_insert_with(|| format!("{path}: {error}"));
                            break;
                        }
                    }
                }
                load
            })
        })
        .collect();
    let mut total = Load::empty();
    for task in tasks {
        total.absorb(task.await?)?;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}
