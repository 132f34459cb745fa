//! The cleanup: batches that delete expired sessions, and the background
//! task that runs them at a bounded pace.
//!
//! A batch is one statement, so one short transaction: it visits at most
//! `batch` sessions whose mark `sweep_at` is due (the oldest mark first,
//! through its index; rows another transaction holds are skipped), deletes
//! those that have expired and moves the others' mark to their expiry. See
//! `migrations/0003_sweep_at.sql` for why the mark is not the expiry
//! itself. Its commit does not wait for the WAL flush (for its own
//! transaction only; the session writes on the same connection still do):
//! a batch lost in a server crash leaves expired sessions, which read as
//! gone anyway and the next batch deletes.

use std::fmt;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::PostgresStore;
use super::error::from_sqlx;
use crate::store::{Operation, StoreError};

/// The largest batch the cleanup runs: a larger one is cut to this, so
/// that one batch's transaction stays short.
pub const MAX_CLEANUP_BATCH: u32 = 10_000;
/// How long the cleanup task pauses after a full batch, in percent of the
/// time that batch took, unless told otherwise: 500 keeps the task at work
/// at most a sixth of the time, on one connection. With 200, a million
/// sessions expiring at once went in a minute but raised the p99 latency
/// of concurrent requests by about a third on a 2-core server (BENCHMARKS.md,
/// "Cost at scale").
pub const DEFAULT_CLEANUP_PAUSE_PERCENT: u32 = 500;
/// The largest pause, in percent of the batch's time, the task accepts.
const MAX_PAUSE_PERCENT: u32 = 10_000;

/// How the task started by [`PostgresStore::spawn_cleanup_with`] works:
/// every `interval`, batches of at most `batch` sessions until one comes
/// back short, with a pause after each batch in proportion to the time it
/// took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupOptions {
    interval: Duration,
    batch: u32,
    pause_percent: u32,
}

impl CleanupOptions {
    /// A sweep every `interval` (at least a millisecond), in batches of
    /// `batch` sessions (1 to [`MAX_CLEANUP_BATCH`]), pausing
    /// [`DEFAULT_CLEANUP_PAUSE_PERCENT`] of each batch's time after it.
    #[must_use]
    pub fn new(interval: Duration, batch: u32) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            batch: batch.clamp(1, MAX_CLEANUP_BATCH),
            pause_percent: DEFAULT_CLEANUP_PAUSE_PERCENT,
        }
    }

    /// The pause after each full batch, in percent of the time the batch
    /// took (at most 10,000): 0 runs batches back to back, 100 keeps the
    /// task at work half the time. The higher, the smaller the share of
    /// the server the cleanup takes from requests, and the longer it takes
    /// to catch up with a backlog.
    #[must_use]
    pub fn with_pause_percent(mut self, percent: u32) -> Self {
        self.pause_percent = percent.min(MAX_PAUSE_PERCENT);
        self
    }

    /// The time between sweeps.
    #[must_use]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The most sessions one batch visits.
    #[must_use]
    pub fn batch(&self) -> u32 {
        self.batch
    }

    /// The pause after a batch, in percent of its time.
    #[must_use]
    pub fn pause_percent(&self) -> u32 {
        self.pause_percent
    }

    /// The pause after a batch that took `took`.
    fn pause_after(&self, took: Duration) -> Duration {
        took.saturating_mul(self.pause_percent) / 100
    }
}

/// What one cleanup batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SweepBatch {
    /// Sessions whose mark was due, locked and looked at.
    pub visited: u64,
    /// Expired sessions deleted, with their attributes.
    pub deleted: u64,
    /// Live sessions whose mark moved to their expiry.
    pub rescheduled: u64,
}

impl PostgresStore {
    /// Runs one cleanup batch, and answers how many expired sessions it
    /// deleted (with their attributes).
    ///
    /// The batch visits at most `batch` sessions (at most
    /// [`MAX_CLEANUP_BATCH`]) whose cleanup mark is due, oldest first: it
    /// deletes those that expired and schedules the others' next visit at
    /// their expiry. So an answer below `batch` does not mean that no
    /// expired session is left: loop on
    /// [`sweep_expired`](Self::sweep_expired) and its
    /// [`visited`](SweepBatch::visited) count instead, or let
    /// [`spawn_cleanup`](Self::spawn_cleanup) do it.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] for [`Operation::Cleanup`].
    pub async fn delete_expired(&self, batch: u32) -> Result<u64, StoreError> {
        self.sweep_expired(batch).await.map(|done| done.deleted)
    }

    /// Runs one cleanup batch, as [`delete_expired`](Self::delete_expired),
    /// and answers what it did. Fewer sessions
    /// [visited](SweepBatch::visited) than `batch` means none was due (bar
    /// those other transactions held).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] for [`Operation::Cleanup`].
    pub async fn sweep_expired(&self, batch: u32) -> Result<SweepBatch, StoreError> {
        let op = Operation::Cleanup;
        let batch = batch.clamp(1, MAX_CLEANUP_BATCH);
        self.bounded(op, async {
            let (visited, deleted, moved): (i64, i64, i64) = sqlx::query_as(&self.inner.sql.sweep)
                .bind(i64::from(batch))
                .fetch_one(self.pool())
                .await
                .map_err(|e| from_sqlx(op, e))?;
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            Ok(SweepBatch {
                visited: count(visited),
                deleted: count(deleted),
                rescheduled: count(moved),
            })
        })
        .await
    }

    /// Starts a task that deletes expired sessions every `interval`, in
    /// batches of at most `batch` sessions until one comes back short,
    /// pausing after each batch; see [`CleanupOptions::new`] and
    /// [`spawn_cleanup_with`](Self::spawn_cleanup_with).
    ///
    /// Database errors are logged with `tracing` and the task tries again at
    /// the next interval. Sessions are also treated as gone as soon as they
    /// expire, whether or not the task has run; it only reclaims the space.
    /// One instance running it is enough, though several do no harm (each
    /// skips the rows another is visiting).
    ///
    /// Must be called within a tokio runtime. The task runs until the
    /// returned handle is stopped or dropped, or the pool is closed.
    ///
    /// # Choosing `batch`
    ///
    /// Keep batches small; 100 is a good start. A batch's deletions enter
    /// the write-ahead log as it runs (a full page image for each page it
    /// touches first after a checkpoint), and a concurrent request's commit
    /// waits until the log in front of it is flushed. On a 2-core server at
    /// half load, with a million sessions expiring at once, batches of 100
    /// deleted them in about five minutes and kept the p99 latency of the
    /// requests meanwhile at 8.6 to 10.2 ms; batches of 1,000 took three
    /// minutes and raised it to 17.5 ms (BENCHMARKS.md, "Cost at scale").
    pub fn spawn_cleanup(&self, interval: Duration, batch: u32) -> CleanupHandle {
        self.spawn_cleanup_with(CleanupOptions::new(interval, batch))
    }

    /// Starts the cleanup task with `options`, as
    /// [`spawn_cleanup`](Self::spawn_cleanup).
    ///
    /// Each batch is one short transaction. After each full batch the task
    /// sleeps in proportion to the time the batch took
    /// ([`CleanupOptions::with_pause_percent`]), so that a large backlog
    /// (say, a million sessions that expired together) is worked off at a
    /// bounded share of the server while requests go on.
    pub fn spawn_cleanup_with(&self, options: CleanupOptions) -> CleanupHandle {
        spawn(self.clone(), options)
    }
}

/// Runs sweeps every `options.interval` until stopped. Errors are logged
/// and the next tick tries again; a closed pool ends the task.
fn spawn(store: PostgresStore, options: CleanupOptions) -> CleanupHandle {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(options.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticks.tick() => {}
            }
            if store.pool().is_closed() {
                tracing::info!("session cleanup stops: the connection pool is closed");
                break;
            }
            if sweep(&store, &options, &mut stopped).await == Sweep::Stopped {
                break;
            }
        }
    });
    CleanupHandle {
        stop: Some(stop),
        task: Some(task),
    }
}

/// How a sweep ended.
#[derive(Debug, PartialEq, Eq)]
enum Sweep {
    /// Nothing more was due, or a batch failed: wait for the next tick.
    Done,
    /// The handle asked the task to stop during a pause.
    Stopped,
}

/// Runs batches until one comes back short, makes no progress or fails,
/// pausing after each.
async fn sweep(
    store: &PostgresStore,
    options: &CleanupOptions,
    stopped: &mut oneshot::Receiver<()>,
) -> Sweep {
    let (mut deleted, mut rescheduled) = (0_u64, 0_u64);
    let mut end = Sweep::Done;
    loop {
        let started = Instant::now();
        match store.sweep_expired(options.batch).await {
            Ok(done) => {
                deleted += done.deleted;
                rescheduled += done.rescheduled;
                let progress = done.deleted + done.rescheduled > 0;
                if done.visited < u64::from(options.batch) || !progress {
                    break;
                }
                let pause = options.pause_after(started.elapsed());
                tokio::select! {
                    _ = &mut *stopped => {
                        end = Sweep::Stopped;
                        break;
                    }
                    () = tokio::time::sleep(pause) => {}
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = %crate::store::chain(&error),
                    "session cleanup failed; retrying at the next interval"
                );
                break;
            }
        }
    }
    if deleted > 0 || rescheduled > 0 {
        tracing::debug!(deleted, rescheduled, "session cleanup swept");
    }
    end
}

/// Controls the task started by [`PostgresStore::spawn_cleanup`].
///
/// Dropping the handle aborts the task; keep it for as long as the cleanup
/// should run, and call [`stop`](Self::stop) for a graceful end.
#[must_use = "dropping the handle stops the cleanup task"]
pub struct CleanupHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl CleanupHandle {
    /// Stops the task after the batch in flight, if any, and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the task at once, even in the middle of a batch (whose
    /// transaction then rolls back).
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Whether the task has ended.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for CleanupHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for CleanupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanupHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_bound_the_batch_the_interval_and_the_pause() {
        let options = CleanupOptions::new(Duration::ZERO, 0);
        assert_eq!(options.interval(), Duration::from_millis(1));
        assert_eq!(options.batch(), 1);
        let options = CleanupOptions::new(Duration::from_secs(60), u32::MAX);
        assert_eq!(options.batch(), MAX_CLEANUP_BATCH);
        assert_eq!(options.pause_percent(), DEFAULT_CLEANUP_PAUSE_PERCENT);
        assert_eq!(
            options.with_pause_percent(u32::MAX).pause_percent(),
            MAX_PAUSE_PERCENT
        );
    }

    #[test]
    fn the_pause_is_in_proportion_to_the_batch_time() {
        let options = CleanupOptions::new(Duration::from_secs(60), 1_000);
        let took = Duration::from_millis(40);
        assert_eq!(options.pause_after(took), Duration::from_millis(200));
        assert_eq!(
            options.with_pause_percent(50).pause_after(took),
            Duration::from_millis(20)
        );
        assert_eq!(
            options.with_pause_percent(0).pause_after(took),
            Duration::ZERO
        );
        // No overflow, however long a batch took.
        assert!(options.pause_after(Duration::MAX) > Duration::ZERO);
    }
}
