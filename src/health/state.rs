//! The instance's traffic state: whether it should get requests.
//!
//! # Transitions
//!
//! | from \ to        | `Starting` | `Running`                       | `OutOfService`                     | `ShuttingDown`           |
//! |------------------|------------|---------------------------------|------------------------------------|--------------------------|
//! | `Starting`       | stays      | `mark_running`, `finish_startup`, `PUT UP` | `mark_out_of_service`, `PUT DOWN` | `mark_shutting_down`, drain |
//! | `Running`        | refused    | stays                           | `mark_out_of_service`, `PUT DOWN`  | `mark_shutting_down`, drain |
//! | `OutOfService`   | refused    | `mark_running`, `PUT UP`        | stays                              | `mark_shutting_down`, drain |
//! | `ShuttingDown`   | refused    | refused (`PUT UP`: 409)         | refused (`PUT DOWN`: 409)          | stays                    |
//!
//! - Nothing returns to `Starting`: it is where a [`TrafficState::starting`]
//!   handle begins, and only there.
//! - [`finish_startup`](TrafficState::finish_startup) moves `Starting` to
//!   `Running` and leaves every other state alone, so an operator who took
//!   the instance out of rotation while it warmed up keeps it out.
//! - `ShuttingDown` is terminal: the process is about to stop, and putting
//!   it back into rotation would send the balancer to a dying instance.
//! - Only `Running` answers readiness `UP`.

use std::fmt;

use serde::Serialize;
use tokio::sync::watch;

/// Where an instance is in its life, as far as traffic is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum TrafficPhase {
    /// Warming up; not ready for traffic yet.
    Starting,
    /// Ready: readiness answers `UP`.
    Running,
    /// Taken out of rotation, by an operator or by the app.
    OutOfService,
    /// Draining before the process stops. Terminal.
    ShuttingDown,
}

impl TrafficPhase {
    /// The phase's name as the endpoints spell it, such as `"OUT_OF_SERVICE"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::OutOfService => "OUT_OF_SERVICE",
            Self::ShuttingDown => "SHUTTING_DOWN",
        }
    }

    /// Whether the instance should get traffic: only while `Running`.
    #[must_use]
    pub const fn is_ready(self) -> bool {
        matches!(self, Self::Running)
    }
}

impl fmt::Display for TrafficPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine refuses; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot move from {from} to {to}")]
pub struct TransitionError {
    /// The phase the instance is in, unchanged.
    pub from: TrafficPhase,
    /// The phase asked for.
    pub to: TrafficPhase,
}

/// What a successful transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The phase before.
    pub previous: TrafficPhase,
    /// The phase now.
    pub current: TrafficPhase,
}

impl Transition {
    /// Whether the phase changed.
    #[must_use]
    pub fn changed(self) -> bool {
        self.previous != self.current
    }
}

/// A cheap, clonable handle on the instance's [`TrafficPhase`].
///
/// Every clone sees and drives the same state: the health router reads it,
/// the `PUT` endpoint and the drain helper write it, and the app can write
/// it from code.
///
/// ```
/// use tower_httpsession::health::{TrafficPhase, TrafficState};
///
/// let state = TrafficState::starting();
/// let seen_by_router = state.clone();
/// assert!(!seen_by_router.is_ready());
///
/// // ... warm caches, open pools ...
/// state.finish_startup();
/// assert_eq!(seen_by_router.phase(), TrafficPhase::Running);
///
/// state.mark_shutting_down();
/// assert!(state.mark_running().is_err()); // terminal
/// ```
#[derive(Clone)]
pub struct TrafficState {
    tx: watch::Sender<TrafficPhase>,
}

impl fmt::Debug for TrafficState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrafficState").field(&self.phase()).finish()
    }
}

impl Default for TrafficState {
    /// Same as [`TrafficState::running`].
    fn default() -> Self {
        Self::running()
    }
}

impl TrafficState {
    fn with(phase: TrafficPhase) -> Self {
        Self {
            tx: watch::Sender::new(phase),
        }
    }

    /// A state that begins `Starting`: readiness fails until the app calls
    /// [`finish_startup`](Self::finish_startup) or
    /// [`mark_running`](Self::mark_running).
    #[must_use]
    pub fn starting() -> Self {
        Self::with(TrafficPhase::Starting)
    }

    /// A state that begins `Running`: ready as soon as it serves.
    #[must_use]
    pub fn running() -> Self {
        Self::with(TrafficPhase::Running)
    }

    /// The phase now.
    #[must_use]
    pub fn phase(&self) -> TrafficPhase {
        *self.tx.borrow()
    }

    /// Whether readiness answers `UP` as far as traffic goes (`Running`).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.phase().is_ready()
    }

    /// A receiver that sees every change, for apps that wait on one.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<TrafficPhase> {
        self.tx.subscribe()
    }

    /// Moves to `to` if the table in the [module docs](self) allows it.
    ///
    /// # Errors
    ///
    /// A [`TransitionError`] if it does not; the phase is unchanged.
    pub fn transition(&self, to: TrafficPhase) -> Result<Transition, TransitionError> {
        let mut outcome = Err(TransitionError { from: to, to });
        self.tx.send_if_modified(|phase| {
            let from = *phase;
            if allowed(from, to) {
                *phase = to;
                outcome = Ok(Transition {
                    previous: from,
                    current: to,
                });
                from != to
            } else {
                outcome = Err(TransitionError { from, to });
                false
            }
        });
        if let Some(t) = outcome.as_ref().ok().filter(|t| t.changed()) {
            tracing::info!(from = %t.previous, to = %t.current, "traffic state changed");
        }
        outcome
    }

    /// Puts the instance into rotation (`PUT UP`).
    ///
    /// # Errors
    ///
    /// A [`TransitionError`] while `ShuttingDown`.
    pub fn mark_running(&self) -> Result<Transition, TransitionError> {
        self.transition(TrafficPhase::Running)
    }

    /// Takes the instance out of rotation (`PUT OUT_OF_SERVICE` or `DOWN`).
    ///
    /// # Errors
    ///
    /// A [`TransitionError`] while `ShuttingDown`.
    pub fn mark_out_of_service(&self) -> Result<Transition, TransitionError> {
        self.transition(TrafficPhase::OutOfService)
    }

    /// Starts the drain before the process stops. Always succeeds; the state
    /// never leaves `ShuttingDown` again.
    pub fn mark_shutting_down(&self) -> Transition {
        let previous = self.tx.send_replace(TrafficPhase::ShuttingDown);
        if previous != TrafficPhase::ShuttingDown {
            tracing::info!(from = %previous, "traffic state changed to SHUTTING_DOWN");
        }
        Transition {
            previous,
            current: TrafficPhase::ShuttingDown,
        }
    }

    /// Warm-up is done: `Starting` becomes `Running`; any other phase stays
    /// as it is, so an operator's `OUT_OF_SERVICE` stands. Returns the phase
    /// now.
    pub fn finish_startup(&self) -> TrafficPhase {
        let _ = self.tx.send_if_modified(|phase| {
            if *phase == TrafficPhase::Starting {
                *phase = TrafficPhase::Running;
                true
            } else {
                false
            }
        });
        self.phase()
    }
}

/// The transition table of the module docs.
const fn allowed(from: TrafficPhase, to: TrafficPhase) -> bool {
    use TrafficPhase::{OutOfService, Running, ShuttingDown, Starting};
    match (from, to) {
        (ShuttingDown, ShuttingDown) | (Starting, Starting) => true,
        (ShuttingDown, _) | (_, Starting) => false,
        (Starting | Running | OutOfService, Running | OutOfService | ShuttingDown) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::TrafficPhase::{OutOfService, Running, ShuttingDown, Starting};
    use super::*;

    const ALL: [TrafficPhase; 4] = [Starting, Running, OutOfService, ShuttingDown];

    fn state_in(phase: TrafficPhase) -> TrafficState {
        TrafficState::with(phase)
    }

    #[test]
    fn table_matches_module_docs() {
        let expected = |from, to| match (from, to) {
            (a, b) if a == b => true,
            (ShuttingDown, _) | (_, Starting) => false,
            _ => true,
        };
        for from in ALL {
            for to in ALL {
                let state = state_in(from);
                let result = state.transition(to);
                assert_eq!(result.is_ok(), expected(from, to), "{from} -> {to}");
                let now = state.phase();
                if result.is_ok() {
                    assert_eq!(now, to);
                } else {
                    assert_eq!(now, from, "a refused transition changes nothing");
                    assert_eq!(result, Err(TransitionError { from, to }));
                }
            }
        }
    }

    #[test]
    fn shutting_down_is_terminal() {
        let state = TrafficState::running();
        let t = state.mark_shutting_down();
        assert_eq!(t.previous, Running);
        assert!(state.mark_running().is_err());
        assert!(state.mark_out_of_service().is_err());
        assert_eq!(state.finish_startup(), ShuttingDown);
        assert_eq!(state.phase(), ShuttingDown);
    }

    #[test]
    fn only_running_is_ready() {
        for phase in ALL {
            assert_eq!(state_in(phase).is_ready(), phase == Running);
        }
    }

    #[test]
    fn finish_startup_keeps_an_operators_out_of_service() {
        let state = TrafficState::starting();
        state.mark_out_of_service().unwrap();
        assert_eq!(state.finish_startup(), OutOfService);
        let state = TrafficState::starting();
        assert_eq!(state.finish_startup(), Running);
    }

    #[test]
    fn clones_share_state_and_subscribers_see_changes() {
        let state = TrafficState::starting();
        let mut rx = state.subscribe();
        let other = state.clone();
        other.mark_running().unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), Running);
        assert_eq!(state.phase(), Running);
        // an idempotent transition does not wake subscribers
        let t = state.mark_running().unwrap();
        assert!(!t.changed());
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn phase_names() {
        assert_eq!(
            serde_json::to_string(&OutOfService).unwrap(),
            "\"OUT_OF_SERVICE\""
        );
        assert_eq!(ShuttingDown.to_string(), "SHUTTING_DOWN");
        assert_eq!(
            format!("{:?}", TrafficState::running()),
            "TrafficState(Running)"
        );
    }
}
