//! `befundctl`'s subcommands, one module each.

pub mod audit;
pub mod ca;
pub mod cert;
pub mod crl;
pub mod fw;
pub mod reload;
