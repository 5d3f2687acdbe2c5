//! Shared helpers of the privileged integration tests.

pub mod gateway;
pub mod netns;
pub mod traffic;
