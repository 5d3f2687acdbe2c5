//! Processes started for a test bed (servers, daemons, load generators),
//! stopped when their guard drops, also when a test fails.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How many lines of its log an error about an exited process shows.
const LOG_TAIL_LINES: usize = 20;

/// How often a stopping process is checked for having exited.
const STOP_POLL: Duration = Duration::from_millis(50);

/// How a [`Child`] is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL at once, as a crash would.
    Kill,
    /// SIGTERM, so that it can shut down in order (drain connections, stop
    /// workers); SIGKILL if it still runs after `grace`.
    Terminate {
        /// How long it gets to exit after SIGTERM.
        grace: Duration,
    },
}

/// A started process, stopped as its [`Stop`] says when dropped.
#[derive(Debug)]
pub struct Child {
    name: String,
    process: std::process::Child,
    log: Option<PathBuf>,
    stop: Stop,
    terminated: bool,
}

impl Child {
    /// Starts `cmd` with its input and output connected to nothing. `name`
    /// says what it is, in messages.
    pub fn spawn(name: &str, cmd: Command, stop: Stop) -> Result<Self> {
        Self::start(name, cmd, None, stop)
    }

    /// Starts `cmd` with its standard output and error written to `log`
    /// (created or truncated).
    pub fn spawn_logged(name: &str, cmd: Command, log: &Path, stop: Stop) -> Result<Self> {
        Self::start(name, cmd, Some(log), stop)
    }

    fn start(name: &str, mut cmd: Command, log: Option<&Path>, stop: Stop) -> Result<Self> {
        let (stdout, stderr) = match log {
            Some(log) => {
                let file = File::create(log)
                    .with_context(|| format!("failed to create {}", log.display()))?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let process = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            process,
            log: log.map(Path::to_path_buf),
            stop,
            terminated: false,
        })
    }

    /// What it is.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// Where its output goes, if anywhere.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// Fails if it has exited, naming it and showing the end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(status) = self.process.try_wait()? else {
            return Ok(());
        };
        match &self.log {
            Some(log) => bail!(
                "{} exited ({status}); last log lines:\n{}",
                self.name,
                log_tail(log, LOG_TAIL_LINES)
            ),
            None => bail!("{} exited ({status})", self.name),
        }
    }

    /// Sends SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.process
            .kill()
            .with_context(|| format!("failed to kill {}", self.name))?;
        self.process
            .wait()
            .with_context(|| format!("failed to wait for {}", self.name))
    }

    /// Stops it as its [`Stop`] says and waits for it; returns at once if
    /// it has exited already.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.process.try_wait()? {
            return Ok(status);
        }
        match self.stop {
            Stop::Kill => return self.kill(),
            Stop::Terminate { grace } => {
                self.terminate();
                let deadline = Instant::now() + grace;
                while self.running() && Instant::now() < deadline {
                    std::thread::sleep(STOP_POLL);
                }
                if self.running() {
                    eprintln!(
                        "{} did not stop within {grace:?} of SIGTERM; killing it",
                        self.name
                    );
                    return self.kill();
                }
            }
        }
        self.process
            .wait()
            .with_context(|| format!("failed to wait for {}", self.name))
    }

    /// Sends SIGTERM once, if that is how it stops; does not wait.
    fn terminate(&mut self) {
        if self.stop == Stop::Kill || self.terminated {
            return;
        }
        self.terminated = true;
        if let Ok(pid) = i32::try_from(self.process.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// Long-running processes of one test bed under names, each logging to
/// `<dir>/<name>.log`. All are stopped on drop: first every one that stops
/// with SIGTERM is told to, then each is waited for.
#[derive(Debug)]
pub struct Services {
    log_dir: PathBuf,
    stop: Stop,
    running: Vec<Child>,
}

impl Services {
    /// No processes yet; those started later log under `log_dir` and stop
    /// as `stop` says.
    pub fn new(log_dir: impl Into<PathBuf>, stop: Stop) -> Self {
        Self {
            log_dir: log_dir.into(),
            stop,
            running: Vec::new(),
        }
    }

    /// Where [`Services::spawn`] writes the output of `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// Starts `cmd` as `name`, its output going to [`Services::log_path`].
    pub fn spawn(&mut self, name: &str, cmd: Command) -> Result<&Child> {
        let child = Child::spawn_logged(name, cmd, &self.log_path(name), self.stop)?;
        self.running.push(child);
        Ok(&self.running[self.running.len() - 1])
    }

    /// The process started as `name`.
    pub fn get(&self, name: &str) -> Option<&Child> {
        self.running.iter().find(|child| child.name == name)
    }

    /// The ids of all started processes.
    pub fn ids(&self) -> Vec<u32> {
        self.running.iter().map(Child::id).collect()
    }

    /// Kills the process started as `name` (SIGKILL, as a crash would) and
    /// waits for it.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let index = self
            .running
            .iter()
            .position(|child| child.name == name)
            .with_context(|| format!("no process {name} runs"))?;
        self.running.remove(index).kill().map(drop)
    }

    /// Fails if a started process has exited, naming it and showing the
    /// end of its log.
    pub fn check_alive(&mut self) -> Result<()> {
        self.running.iter_mut().try_for_each(Child::check_alive)
    }

    /// Stops every process and waits for each.
    pub fn stop_all(&mut self) {
        for child in &mut self.running {
            child.terminate();
        }
        for mut child in self.running.drain(..) {
            if let Err(e) = child.stop() {
                eprintln!("cleanup: {e:#}");
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The last `lines` lines of the file at `path` (empty if unreadable).
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::TempDir;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn dropping_a_child_kills_it() {
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        let child = Child::spawn("sleeper", sleep, Stop::Kill).unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        drop(child);
        // Reaped: the id no longer names a process of ours.
        assert!(kill(pid, None).is_err());
    }

    #[test]
    fn terminated_child_gets_sigterm_first() {
        let dir = TempDir::unique("pst").unwrap();
        let log = dir.path().join("trap.log");
        let script = "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.05; done";
        let mut child = Child::spawn_logged(
            "trapper",
            sh(script),
            &log,
            Stop::Terminate {
                grace: Duration::from_secs(60),
            },
        )
        .unwrap();
        while !std::fs::read_to_string(&log).unwrap().contains("ready") {
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = child.stop().unwrap();
        assert!(status.success(), "{status}");
        assert!(std::fs::read_to_string(&log).unwrap().contains("got TERM"));
    }

    #[test]
    fn exited_service_is_reported_with_its_log_tail() {
        let dir = TempDir::unique("psx").unwrap();
        let mut services = Services::new(dir.path(), Stop::Kill);
        services.spawn("counter", sh("seq 1 30; exit 4")).unwrap();
        let pid = services.get("counter").unwrap().id();
        while services.check_alive().is_ok() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let error = services.check_alive().unwrap_err().to_string();
        assert!(
            error.starts_with("counter exited (exit status: 4)"),
            "{error}"
        );
        let shown: Vec<&str> = error.lines().skip(1).collect();
        assert_eq!(shown.first(), Some(&"11"), "{error}");
        assert_eq!(shown.last(), Some(&"30"), "{error}");
        assert_eq!(shown.len(), LOG_TAIL_LINES);
        assert_eq!(services.ids(), [pid]);
    }

    #[test]
    fn killing_an_unknown_service_is_an_error() {
        let dir = TempDir::unique("psk").unwrap();
        let mut services = Services::new(dir.path(), Stop::Kill);
        assert!(services.kill("nginx").is_err());
    }
}
