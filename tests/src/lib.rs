//! Shared helpers of the privileged integration tests.

pub mod frames;
pub mod gateway;
pub mod netns;
pub mod traffic;
pub mod wan_filter;
