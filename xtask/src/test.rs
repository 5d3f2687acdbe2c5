//! `cargo xtask test`: every check and test suite, privileged ones included.

use std::process::Command;

use anyhow::Result;

use crate::command::{self, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Skip the privileged tests (root, BPF, network namespaces).
    #[arg(long)]
    unprivileged_only: bool,
}

pub fn run(options: Options) -> Result<()> {
    crate::setup::run()?;
    let root = workspace_root();
    let cargo = || {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root);
        cmd
    };

    command::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    command::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    command::run(cargo().args(["test", "--workspace", "--exclude", "befund-tests"]))?;
    if !options.unprivileged_only {
        // The namespace tests start the product's binaries as processes.
        command::run(cargo().args(["build", "--workspace", "--bins"]))?;
        command::run(cargo().args(["test", "-p", "befund-tests", "--", "--test-threads=1"]))?;
    }
    Ok(())
}
