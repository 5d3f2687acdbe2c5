//! Shared helpers of the privileged integration tests.

pub mod befundserver;
