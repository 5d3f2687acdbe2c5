//! Befund Gateway: the WAN filter's loader, the mTLS reverse proxy and the
//! operator tool's commands.
#![forbid(unsafe_code)]

pub mod access_protocol;
pub mod admin;
pub mod audit;
pub mod ca;
pub mod check;
pub mod cidr;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod firewall;
pub mod logging;
pub mod notify;
pub mod open_files;
pub mod pidfile;
pub mod privileges;
pub mod proxy;
pub mod tls;
