//! Graceful drain: leave the rotation before the server stops.

use std::time::Duration;

use super::state::TrafficState;

/// Waits for `signal`, marks the state `ShuttingDown` (readiness now
/// fails), waits `period` so the balancer notices, then resolves.
///
/// Give the returned future to axum's `with_graceful_shutdown`: when it
/// resolves, axum stops accepting connections and lets in-flight requests
/// finish. Requests that arrive during the drain are still served.
///
/// ```
/// use std::time::Duration;
/// use tower_httpsession::health::{TrafficPhase, TrafficState, drain};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let state = TrafficState::running();
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let shutdown = tokio::spawn(drain(state.clone(), async { stopped.await.ok(); }, Duration::from_secs(5)));
///
/// stop.send(()).unwrap();
/// shutdown.await.unwrap();
/// assert_eq!(state.phase(), TrafficPhase::ShuttingDown);
/// # }
/// ```
pub async fn drain<F>(state: TrafficState, signal: F, period: Duration)
where
    F: Future<Output = ()>,
{
    signal.await;
    let previous = state.mark_shutting_down().previous;
    tracing::info!(
        from = %previous,
        drain_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        "shutdown requested: out of rotation, draining"
    );
    tokio::time::sleep(period).await;
    tracing::info!("drain period over: no longer accepting connections");
}

/// Resolves on `SIGTERM` or Ctrl-C (`SIGINT`), whichever comes first; on
/// platforms without `SIGTERM`, on Ctrl-C alone.
pub async fn terminate_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    () = ctrl_c => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::*;
    use crate::health::TrafficPhase;

    #[tokio::test(start_paused = true)]
    async fn drain_leaves_rotation_then_waits_the_period() {
        let state = TrafficState::running();
        let (stop, stopped) = oneshot::channel::<()>();
        let period = Duration::from_secs(15);
        let task = tokio::spawn(drain(
            state.clone(),
            async {
                stopped.await.ok();
            },
            period,
        ));

        // nothing happens before the signal, however long it takes
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(state.phase(), TrafficPhase::Running);
        assert!(!task.is_finished());

        let mut rx = state.subscribe();
        let signalled = Instant::now();
        stop.send(()).unwrap();
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), TrafficPhase::ShuttingDown);
        assert!(!state.is_ready());

        // still draining just before the period ends
        tokio::time::sleep_until(signalled + period - Duration::from_millis(1)).await;
        assert!(!task.is_finished());

        task.await.unwrap();
        assert_eq!(signalled.elapsed(), period);
        assert_eq!(state.phase(), TrafficPhase::ShuttingDown);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_after_out_of_service_still_shuts_down() {
        let state = TrafficState::running();
        state.mark_out_of_service().unwrap();
        drain(state.clone(), async {}, Duration::from_secs(1)).await;
        assert_eq!(state.phase(), TrafficPhase::ShuttingDown);
        assert!(state.mark_running().is_err());
    }
}
