//! `befundctl`'s subcommands, one module each.

pub mod ca;
pub mod cert;
pub mod crl;
