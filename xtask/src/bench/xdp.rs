//! `cargo xtask bench xdp`: the WAN filter's cost per packet, timed by the
//! kernel with BPF_PROG_TEST_RUN (the measuring binary lives in befund-tests).

use std::process::Command;

use anyhow::Result;

use crate::command::{self, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Runs per measurement; the kernel reports their mean.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measurements per path; the median and the fastest are shown.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

pub fn run(options: &Options) -> Result<()> {
    command::run(
        Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args(["run", "--quiet", "--release", "-p", "befund-tests"])
            .args(["--bin", "xdp-bench", "--"])
            .arg(format!("--repeat={}", options.repeat))
            .arg(format!("--rounds={}", options.rounds)),
    )
}
