//! The workspace's release binaries that go into the image: every binary
//! target of the befund-proxy package, whatever it is called.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::runlog::RunLog;

const PACKAGE: &str = "befund-proxy";

/// Builds the release binaries and returns their paths.
pub fn build(log: &mut RunLog, workspace: &Path) -> Result<Vec<PathBuf>> {
    let executables =
        cargo_executables(Command::new(env!("CARGO")).current_dir(workspace).args([
            "build",
            "--release",
            "--bins",
            "-p",
            PACKAGE,
        ]))?;
    if executables.is_empty() {
        bail!("`cargo build --release -p {PACKAGE}` produced no binaries");
    }
    for executable in &executables {
        log.say(&format!("binary {}", executable.display()));
    }
    Ok(executables)
}

/// Runs a cargo build or `test --no-run` command and returns the executables
/// it produced, read from cargo's JSON messages; diagnostics go to stderr.
pub fn cargo_executables(cmd: &mut Command) -> Result<Vec<PathBuf>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    eprintln!("+ {}", crate::command::render(cmd));
    let mut child = cmd.spawn().context("failed to start cargo")?;
    let stdout = child.stdout.take().context("cargo's stdout is not piped")?;
    let mut executables = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("failed to read cargo's output")?;
        if let Some(path) = executable_of(&line) {
            executables.push(path);
        }
    }
    let status = child.wait().context("failed to wait for cargo")?;
    if !status.success() {
        bail!("cargo failed: {status}");
    }
    Ok(executables)
}

fn executable_of(message: &str) -> Option<PathBuf> {
    let value: serde_json::Value = serde_json::from_str(message).ok()?;
    if value.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    value.get("executable")?.as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_of_reads_the_path_of_a_built_binary() {
        let message = r#"{"reason":"compiler-artifact","executable":"/t/release/befundctl"}"#;
        assert_eq!(
            executable_of(message),
            Some(PathBuf::from("/t/release/befundctl"))
        );
    }

    #[test]
    fn executable_of_ignores_libraries_and_other_messages() {
        assert_eq!(
            executable_of(r#"{"reason":"compiler-artifact","executable":null}"#),
            None
        );
        assert_eq!(
            executable_of(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(executable_of("not json"), None);
    }
}
