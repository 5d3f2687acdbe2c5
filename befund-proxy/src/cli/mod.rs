//! `befundctl`'s subcommands, one module each.

pub mod audit;
pub mod fw;
