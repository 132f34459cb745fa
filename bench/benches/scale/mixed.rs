//! Load that runs beside something else (the cleanup task, a sampler):
//! reads and writes on live sessions, over the load bench's keep-alive
//! connections, until told to stop or until its time is up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;

use crate::BoxError;
use crate::client::{self, Conn};

/// No connection sends more requests than this in one window; the window's
/// time limit is the other bound.
const MAX_REQUESTS_PER_CONNECTION: u64 = 20_000_000;

/// What one window of load measured, reads and writes together.
pub(crate) struct Window {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) first_failure: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) latency: Histogram<u64>,
}

impl Window {
    fn empty() -> Self {
        Self {
            ok: 0,
            failed: 0,
            first_failure: None,
            elapsed: Duration::ZERO,
            latency: client::histogram(),
        }
    }

    pub(crate) fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Load under way.
pub(crate) struct Running {
    stop: Arc<AtomicBool>,
    started: Instant,
    tasks: Vec<JoinHandle<Window>>,
}

/// Starts one connection per cookie: those in `readers` send `GET /read`,
/// those in `writers` `POST /write/{n}`, until [`Running::finish`] or
/// `limit`.
pub(crate) async fn start(
    addr: SocketAddr,
    readers: &[Option<String>],
    writers: &[Option<String>],
    limit: Duration,
) -> Result<Running, BoxError> {
    start_at(addr, readers, writers, limit, None).await
}

/// Like [`start`], at a fixed `rate` if one is given: `rate` requests a
/// second in all, each connection sending its share on a schedule of its
/// own (staggered against the others), whatever the answers' pace. A
/// request that could not go when it was due, because the one before was
/// still out, counts its latency from when it was due, so a stall of the
/// server shows in full and is not hidden by the load slowing down with it.
pub(crate) async fn start_at(
    addr: SocketAddr,
    readers: &[Option<String>],
    writers: &[Option<String>],
    limit: Duration,
    rate: Option<f64>,
) -> Result<Running, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    let all = readers
        .iter()
        .map(|c| (false, c))
        .chain(writers.iter().map(|c| (true, c)));
    let connections = readers.len() + writers.len();
    // Each connection's gap between requests, at the fixed rate.
    let gap = rate
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(|r| Duration::from_secs_f64(connections as f64 / r));
    for (index, (write, cookie)) in all.enumerate() {
        let mut conn = Conn::open(addr, cookie.clone()).await?;
        let stop = Arc::clone(&stop);
        let first = gap.map(|gap| started + gap.mul_f64(index as f64 / connections as f64));
        tasks.push(tokio::spawn(async move {
            let mut window = Window::empty();
            let mut seq: u64 = 0;
            let mut due = first;
            let mut last_answer = started;
            while seq < MAX_REQUESTS_PER_CONNECTION
                && !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
            {
                seq += 1;
                let (method, path) = if write {
                    (Method::POST, format!("/write/{index}{seq:09}"))
                } else {
                    (Method::GET, "/read".to_owned())
                };
                let sent = match (due, gap) {
                    (Some(at), Some(gap)) => {
                        tokio::time::sleep_until(at.into()).await;
                        due = Some(at + gap);
                        // Late because the answer before came after the
                        // due time: the wait is the server's. Late only
                        // because the timer woke late: it is not.
                        if last_answer > at { at } else { Instant::now() }
                    }
                    _ => Instant::now(),
                };
                let answered = conn.send(method, &path).await;
                last_answer = Instant::now();
                match answered {
                    Ok(answer) if answer.status.is_success() => {
                        window.ok += 1;
                        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        window.latency.saturating_record(micros.max(1));
                    }
                    Ok(answer) => {
                        window.failed += 1;
                        window
                            .first_failure
                            .get_or_insert_with(|| format!("{path}: {}", answer.status));
                    }
                    Err(error) => {
                        window.failed += 1;
                        window
                            .first_failure
                            .get_or_insert_with(|| format!("{path}: {error}"));
                        break;
                    }
                }
            }
            window
        }));
    }
    Ok(Running {
        stop,
        started,
        tasks,
    })
}

impl Running {
    /// Stops every connection and sums up what they measured.
    pub(crate) async fn finish(self) -> Result<Window, BoxError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Window::empty();
        for task in self.tasks {
            let part = task.await?;
            total.ok += part.ok;
            total.failed += part.failed;
            total.latency.add(&part.latency)?;
            if total.first_failure.is_none() {
                total.first_failure = part.first_failure;
            }
        }
        total.elapsed = self.started.elapsed();
        Ok(total)
    }
}

/// Runs the load for `duration`, at a fixed `rate` if one is given (see
/// [`start_at`]), and measures it.
pub(crate) async fn window_at(
    addr: SocketAddr,
    readers: &[Option<String>],
    writers: &[Option<String>],
    duration: Duration,
    rate: Option<f64>,
) -> Result<Window, BoxError> {
    let running = start_at(addr, readers, writers, duration, rate).await?;
    tokio::time::sleep(duration).await;
    running.finish().await
}
