//! Shared helpers of the privileged integration tests.
