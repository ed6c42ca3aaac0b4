//! Fair sharing between tenants: token buckets for bytes and commands
//! (tenant ▸ user ▸ session), session counts, connection rates and bans.
//!
//! Limits delay, they never drop: a transfer over its rate waits for its
//! bucket, a command over its rate waits before it runs. Only sessions and
//! connections past a maximum, a session that floods commands for longer
//! than its tenant allows, and banned addresses get a 421.

pub mod admission;
pub mod bans;
pub mod bucket;
pub mod registry;
pub mod throttle;

pub use admission::{ConnectionRate, IpSlot, LoginSlot, SessionCounts, SessionLimit};
pub use bans::{FailureVerdict, LoginGuard};
pub use registry::Limits;
pub use throttle::{CommandVerdict, Direction, SessionLimiter, TransferThrottle};
