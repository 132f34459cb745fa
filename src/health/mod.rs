//! Health endpoints (in progress): the traffic state machine and the ACL.

pub mod acl;
pub mod state;

pub use self::acl::{Access, Acl, AclBuilder, AclError, Refusal};
pub use self::state::{TrafficPhase, TrafficState, Transition, TransitionError};
