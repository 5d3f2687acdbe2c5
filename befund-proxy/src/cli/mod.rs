//! `befundctl`'s subcommands, one module each.
