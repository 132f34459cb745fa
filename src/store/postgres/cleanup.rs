//! The background task that deletes expired sessions.

use std::fmt;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::PostgresStore;

/// Runs [`PostgresStore::delete_expired`] every `interval`, in batches of
/// `batch` rows until a batch comes back short. Errors are logged and the
/// next tick tries again; a closed pool ends the task.
pub(super) fn spawn(store: PostgresStore, interval: Duration, batch: u32) -> CleanupHandle {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
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
            sweep(&store, batch).await;
        }
    });
    CleanupHandle {
        stop: Some(stop),
        task: Some(task),
    }
}

/// Deletes batches until one comes back short or fails.
async fn sweep(store: &PostgresStore, batch: u32) {
    let mut total: u64 = 0;
    loop {
        match store.delete_expired(batch).await {
            Ok(deleted) => {
                total += deleted;
                if deleted < u64::from(batch) {
                    break;
                }
                // Let other tasks run between full batches.
                tokio::task::yield_now().await;
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
    if total > 0 {
        tracing::debug!(deleted = total, "expired sessions deleted");
    }
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
