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
    cargo_artifacts(cmd, executable_of)
}

/// Runs `cargo test --no-run` and returns only the test harnesses it built
/// (cargo also builds, and reports, the package's binaries for its
/// integration tests), each with its target's name.
pub fn cargo_test_executables(cmd: &mut Command) -> Result<Vec<(String, PathBuf)>> {
    cargo_artifacts(cmd, test_executable_of)
}

fn cargo_artifacts<T>(cmd: &mut Command, pick: fn(&str) -> Option<T>) -> Result<Vec<T>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    eprintln!("+ {}", crate::command::render(cmd));
    let mut child = cmd.spawn().context("failed to start cargo")?;
    let stdout = child.stdout.take().context("cargo's stdout is not piped")?;
    let mut executables = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("failed to read cargo's output")?;
        if let Some(picked) = pick(&line) {
            executables.push(picked);
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

fn test_executable_of(message: &str) -> Option<(String, PathBuf)> {
    let value: serde_json::Value = serde_json::from_str(message).ok()?;
    if value.get("reason")?.as_str()? != "compiler-artifact"
        || !value.get("profile")?.get("test")?.as_bool()?
    {
        return None;
    }
    let name = value.get("target")?.get("name")?.as_str()?.to_owned();
    let path = value.get("executable")?.as_str().map(PathBuf::from)?;
    Some((name, path))
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
    fn test_executables_are_the_harnesses_not_the_packages_binaries() {
        let harness = r#"{"reason":"compiler-artifact","target":{"name":"xdp_fixtures"},
            "profile":{"test":true},"executable":"/t/debug/deps/xdp_fixtures-0a1b"}"#
            .replace('\n', "");
        let binary = r#"{"reason":"compiler-artifact","target":{"name":"befundserver"},
            "profile":{"test":false},"executable":"/t/debug/befundserver"}"#
            .replace('\n', "");
        assert_eq!(
            test_executable_of(&harness),
            Some((
                "xdp_fixtures".to_owned(),
                PathBuf::from("/t/debug/deps/xdp_fixtures-0a1b")
            ))
        );
        assert_eq!(test_executable_of(&binary), None);
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
