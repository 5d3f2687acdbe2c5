//! `cargo xtask bench`: measurements that are not pass/fail tests.

use std::process::Command;

use anyhow::Result;

use crate::command::{self, workspace_root};

#[derive(clap::Args)]
pub struct Options {
    #[command(subcommand)]
    target: Target,
}

#[derive(clap::Subcommand)]
enum Target {
    /// Cost per packet of the XDP WAN filter's main paths, measured in the
    /// kernel with BPF_PROG_TEST_RUN (needs root), beside the 67 ns line-rate
    /// budget and the 30 ns goal.
    Xdp {
        /// Runs per measurement; the kernel reports their mean.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Measurements per path; the median and the fastest are shown.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

pub fn run(options: Options) -> Result<()> {
    match options.target {
        Target::Xdp { repeat, rounds } => command::run(
            Command::new(env!("CARGO"))
                .current_dir(workspace_root())
                .args(["run", "--quiet", "--release", "-p", "befund-tests"])
                .args(["--bin", "xdp-bench", "--"])
                .arg(format!("--repeat={repeat}"))
                .arg(format!("--rounds={rounds}")),
        ),
    }
}
