//! Befund Gateway: the WAN filter's loader, the mTLS reverse proxy and the
//! operator tool's commands.
#![forbid(unsafe_code)]

pub mod access_protocol;
pub mod ca;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod firewall;
