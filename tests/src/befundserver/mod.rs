//! The reference Befundserver: the stand-in for the lab's own report
//! application, behind the proxy on the lab network.
//!
//! It admits a physician only when three things agree: the username, the
//! password (Argon2id hash in SQLite) and the client certificate that the
//! proxy verified and forwarded, which must be the one bound to the account.
//! It believes forwarded identity headers only on requests that carry the
//! proxy's shared secret, and only when they agree with the forwarded DER.
//! A session stays tied to the certificate it logged in with.

pub mod auth;
pub mod db;
pub mod demo;
pub mod identity;
pub mod password;
pub mod proxy_secret;
pub mod render;
pub mod server;
pub mod session;
