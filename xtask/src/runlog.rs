//! Long tasks (image build, VM test) that keep the full output of every
//! command in a log file and show only the command lines and step timings.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::command::render;

/// Lines of the log shown when a command fails.
const FAILURE_TAIL_LINES: usize = 40;

/// A log file that commands write their output into.
pub struct RunLog {
    path: PathBuf,
    file: File,
    task: &'static str,
    timings: Vec<(String, Duration)>,
}

impl RunLog {
    /// Creates (truncates) the log at `path`; `task` prefixes terminal lines.
    pub fn create(path: &Path, task: &'static str) -> Result<Self> {
        let file =
            File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            task,
            timings: Vec::new(),
        })
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `line` to the terminal and the log.
    pub fn say(&mut self, line: &str) {
        eprintln!("{}: {line}", self.task);
        let _ = writeln!(self.file, "## {line}");
    }

    /// Writes `text` to the log only.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.file, "{text}");
    }

    /// Runs `cmd` with its output going to the log; fails unless it exits 0,
    /// showing the end of the log.
    pub fn run(&mut self, cmd: &mut Command) -> Result<()> {
        let line = render(cmd);
        eprintln!("+ {line}");
        let _ = writeln!(self.file, "+ {line}");
        let stdout = self
            .file
            .try_clone()
            .context("failed to share the log file")?;
        let stderr = self
            .file
            .try_clone()
            .context("failed to share the log file")?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .with_context(|| format!("failed to start {line}"))?;
        if !status.success() {
            self.show_tail();
            bail!(
                "{line} failed: {status} (full log: {})",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Runs `step`, then prints how long it took.
    pub fn step<T>(&mut self, name: &str, step: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.say(&format!("{name} ..."));
        let started = Instant::now();
        let result = step(self);
        let took = started.elapsed();
        self.timings.push((name.to_owned(), took));
        match &result {
            Ok(_) => self.say(&format!("{name}: done in {}", seconds(took))),
            Err(_) => self.say(&format!("{name}: failed after {}", seconds(took))),
        }
        result
    }

    /// Every finished step with its duration, in order.
    pub fn timings(&self) -> &[(String, Duration)] {
        &self.timings
    }

    fn show_tail(&self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(FAILURE_TAIL_LINES);
        for line in &lines[start..] {
            eprintln!("  | {line}");
        }
    }
}

/// A duration as seconds with one decimal, e.g. `12.3 s`.
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
