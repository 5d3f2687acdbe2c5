//! Shared helpers of the privileged integration tests.

/// The reference Befundserver behind the proxy (binary `befundserver`).
pub mod befundserver;

/// The whole system in network namespaces: `cargo xtask demo`.
pub mod demo;

pub mod frames;
pub mod gateway;
pub mod harness;
pub mod traffic;
pub mod wan_filter;
