//! `befundctl`'s subcommands, one module each.

pub mod fw;
