//! Running the tools a test bed is made with (`ip`, `mount`, `openssl`,
//! `befundctl`): quietly, and failing with what they printed.

use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

/// Runs `cmd` to completion with its output captured; fails unless it
/// exits 0, with the command line, the exit status and what it printed.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {}", render(cmd)))?;
    if !out.status.success() {
        bail!("{} failed ({}): {}", render(cmd), out.status, printed(&out));
    }
    Ok(out)
}

/// Runs `cmd` like [`run`] and returns its standard output.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as a shell would show it.
pub fn render(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Standard error, then standard output, each trimmed, for a message.
fn printed(out: &Output) -> String {
    [&out.stderr, &out.stdout]
        .into_iter()
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned())
        .filter(|text| !text.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_program_and_arguments() {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "add", "bfc-demo1"]);
        assert_eq!(render(&cmd), "ip netns add bfc-demo1");
    }

    #[test]
    fn failing_command_reports_what_it_printed() {
        let error = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("sh -c "), "{error}");
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(error.ends_with("err\nout"), "{error}");
    }

    #[test]
    fn stdout_returns_the_standard_output() {
        let out = stdout(Command::new("sh").args(["-c", "echo hello"])).unwrap();
        assert_eq!(out, "hello\n");
    }
}
