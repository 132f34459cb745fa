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
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    let all = readers
        .iter()
        .map(|c| (false, c))
        .chain(writers.iter().map(|c| (true, c)));
    for (index, (write, cookie)) in all.enumerate() {
        let mut conn = Conn::open(addr, cookie.clone()).await?;
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut window = Window::empty();
            let mut seq: u64 = 0;
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
                let sent = Instant::now();
                match conn.send(method, &path).await {
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

/// Runs the load for `duration` and measures it.
pub(crate) async fn window(
    addr: SocketAddr,
    readers: &[Option<String>],
    writers: &[Option<String>],
    duration: Duration,
) -> Result<Window, BoxError> {
    let running = start(addr, readers, writers, duration).await?;
    tokio::time::sleep(duration).await;
    running.finish().await
}
