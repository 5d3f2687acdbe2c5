//! Shared helpers of the privileged integration tests.

pub mod frames;
pub mod wan_filter;
