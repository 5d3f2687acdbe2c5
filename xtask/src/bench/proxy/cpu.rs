//! CPU time used by a process and its descendants (nginx's workers are the
//! master's children), read from /proc. On a machine shared with other work,
//! CPU time per request compares the proxies' efficiency more steadily than
//! requests per second, which also depend on how much CPU the others left.

use std::process::Command;

use anyhow::{Context as _, Result};

use super::processes;
use crate::command::output;

/// Clock ticks per second, the unit of /proc/PID/stat's times.
pub fn ticks_per_second() -> Result<u64> {
    output(Command::new("getconf").arg("CLK_TCK"))?
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

/// User plus system time, in clock ticks, of `pid` and every process below it.
pub fn tree_ticks(pid: u32) -> u64 {
    processes::tree(pid)
        .iter()
        .map(|(_, stat)| stat.cpu_ticks)
        .sum()
}
