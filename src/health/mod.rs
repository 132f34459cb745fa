//! Health endpoints (in progress): the traffic state machine so far.

pub mod state;

pub use self::state::{TrafficPhase, TrafficState, Transition, TransitionError};
