//! `cargo xtask demo`: the whole system in three network namespaces, with the
//! lab's access protocol run by real clients.

use std::process::Command;

use anyhow::Result;

use crate::command::{self, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Leave the namespaces and processes running after the protocol and
    /// print how to try the gateway by hand; Ctrl-C removes everything.
    #[arg(long)]
    keep: bool,
}

pub fn run(options: Options) -> Result<()> {
    crate::setup::run()?;
    let root = workspace_root();

    command::run(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "--release", "--bins"])
            .args(["-p", "befund-proxy", "-p", "befund-tests"]),
    )?;

    let mut demo = Command::new(root.join("target/release/befund-demo"));
    demo.arg("--bin-dir").arg(root.join("target/release"));
    if options.keep {
        demo.arg("--keep");
    }
    command::run(&mut demo)
}
