//! What the VM test expects: checks on the facts the guest printed on its
//! console (`befund-report:` and `befund-selftest:` lines) and on what the
//! client namespace observed.

use std::collections::BTreeMap;

/// One check: what was expected, what was seen.
pub struct Check {
    /// The behaviour it proves.
    pub name: String,
    /// The expected observation.
    pub expected: String,
    /// The actual observation.
    pub observed: String,
    /// Whether the observation is what was expected.
    pub passed: bool,
}

/// A check that passes when `observed` equals `expected`.
pub fn check(name: &str, expected: impl Into<String>, observed: impl Into<String>) -> Check {
    let (expected, observed) = (expected.into(), observed.into());
    Check {
        name: name.to_owned(),
        passed: expected == observed,
        expected,
        observed,
    }
}

/// A check whose verdict the caller computed; `expected` describes it.
pub fn check_that(name: &str, expected: &str, observed: impl Into<String>, passed: bool) -> Check {
    Check {
        name: name.to_owned(),
        expected: expected.to_owned(),
        observed: observed.into(),
        passed,
    }
}

/// The facts of the guest's self-test run, parsed from the console.
#[derive(Debug, Default)]
pub struct GuestFacts {
    /// `befund-report:` lines of the self-test's report, split into words,
    /// keyed by their first one or two words (e.g. `kernel`, `sysctl KEY`).
    report: BTreeMap<String, Vec<String>>,
    /// `befund-selftest:` lines, split into words.
    selftest: Vec<Vec<String>>,
    /// Every `befund-alert:` line of the whole boot.
    pub alerts: Vec<String>,
    /// Every `befund-config:` line (the config import's messages).
    pub config_messages: Vec<String>,
    /// What each guest test binary printed, by name.
    pub binary_output: BTreeMap<String, Vec<String>>,
    /// The commands of the drive's before- and after-checks, in order.
    pub check_runs: Vec<CheckRun>,
}

/// One command of the self-test's `before-checks` or `after-checks`.
#[derive(Debug, Default)]
pub struct CheckRun {
    /// `before` or `after` the checks from outside.
    pub phase: String,
    /// The command line.
    pub command: String,
    /// What it printed, one entry per line.
    pub output: Vec<String>,
    /// Its exit code, once reported.
    pub exit: Option<String>,
}

/// What a section of the self-test's output belongs to.
enum Capture {
    Binary(String),
    CheckRun(usize),
}

impl GuestFacts {
    /// Parses the console log; only the report printed by the self-test
    /// counts, earlier boot-time reports are ignored.
    pub fn parse(console: &str) -> Self {
        let mut facts = Self::default();
        let mut in_selftest = false;
        let mut capture: Option<Capture> = None;
        for line in console.lines() {
            if let Some(rest) = after(line, "befund-alert: ") {
                facts.alerts.push(rest.to_owned());
            } else if let Some(rest) = after(line, "befund-config: ") {
                facts.config_messages.push(rest.to_owned());
            }
            if let Some(rest) = after(line, "befund-selftest: ") {
                in_selftest = true;
                let words = words(rest);
                capture = match words.as_slice() {
                    [run, name, ..] if run == "run" => Some(Capture::Binary(name.clone())),
                    [exit, code] if exit.ends_with("-check-exit") => {
                        let phase = exit.trim_end_matches("-check-exit");
                        if let Some(run) = facts
                            .check_runs
                            .iter_mut()
                            .rev()
                            .find(|r| r.phase == phase && r.exit.is_none())
                        {
                            run.exit = Some(code.clone());
                        }
                        None
                    }
                    [check, ..] if check.ends_with("-check") => {
                        facts.check_runs.push(CheckRun {
                            phase: check.trim_end_matches("-check").to_owned(),
                            command: rest
                                .trim()
                                .split_once(char::is_whitespace)
                                .map(|(_, c)| c.trim().to_owned())
                                .unwrap_or_default(),
                            ..CheckRun::default()
                        });
                        Some(Capture::CheckRun(facts.check_runs.len() - 1))
                    }
                    _ => None,
                };
                facts.selftest.push(words);
                continue;
            }
            // What the self-test's children printed: journal lines on the
            // console, "[time] befund-selftest[pid]: text". Lines of other
            // units (e.g. the daemon's log) may come in between.
            if let (Some(capture), Some(text)) = (&capture, selftest_output(line)) {
                match capture {
                    Capture::Binary(name) => facts
                        .binary_output
                        .entry(name.clone())
                        .or_default()
                        .push(text.to_owned()),
                    Capture::CheckRun(index) => {
                        facts.check_runs[*index].output.push(text.to_owned());
                    }
                }
            }
            if let Some(rest) = after(line, "befund-report: ")
                && in_selftest
            {
                let words = words(rest);
                let key_words = match words.first().map(String::as_str) {
                    Some("sysctl" | "service" | "unit-type" | "listen" | "link" | "xdp")
                        if words.len() > 1 =>
                    {
                        2
                    }
                    Some(_) => 1,
                    None => continue,
                };
                facts
                    .report
                    .entry(words[..key_words].join(" "))
                    .or_default()
                    .extend_from_slice(&words[key_words..]);
            }
        }
        facts
    }

    /// The words of the report line(s) with `key`, after the key itself.
    pub fn report(&self, key: &str) -> String {
        self.report
            .get(key)
            .map(|words| words.join(" "))
            .unwrap_or_else(|| "(not reported)".to_owned())
    }

    /// The rest of the first `befund-selftest:` line starting with `prefix`.
    pub fn selftest(&self, prefix: &str) -> String {
        let wanted = words(prefix);
        self.selftest
            .iter()
            .find(|line| line.starts_with(&wanted))
            .map(|line| line[wanted.len()..].join(" "))
            .unwrap_or_else(|| "(not reported)".to_owned())
    }

    /// Names and exit codes of the test binaries the guest ran.
    pub fn binary_exits(&self) -> Vec<(String, String)> {
        self.selftest
            .iter()
            .filter(|line| line.first().is_some_and(|w| w == "exit") && line.len() == 3)
            .map(|line| (line[1].clone(), line[2].clone()))
            .collect()
    }

    /// The check command of `phase` (`before`, `after`) whose command line
    /// starts with `command`.
    pub fn check_run(&self, phase: &str, command: &str) -> Option<&CheckRun> {
        self.check_runs
            .iter()
            .find(|r| r.phase == phase && r.command.starts_with(command))
    }

    /// Whether the self-test reached its end marker.
    pub fn ran(&self) -> bool {
        self.selftest
            .iter()
            .any(|l| l.first().is_some_and(|w| w == "ready"))
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|at| &line[at + marker.len()..])
}

/// The text of a console line that the self-test unit (or a process it
/// started) wrote to the journal.
fn selftest_output(line: &str) -> Option<&str> {
    let unit = line.find("befund-selftest[")?;
    after(&line[unit..], "]: ")
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// `KEY = VALUE` settings of a sysctl.d file.
pub fn sysctl_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[   80.1] befund-report[300]: befund-report: kernel 5.0-early-boot
[   81.0] befund-alert[330]: befund-alert: befund-proxy.service FAILED; the gateway serves nothing
[   90.0] befund-selftest[400]: befund-selftest: begin
[   90.1] befund-selftest[400]: befund-report: kernel 6.1.0-57-amd64
[   90.2] befund-selftest[400]: befund-report: service befund-proxy.service failed failed result=exit-code restarts=4
[   90.3] befund-selftest[400]: befund-report: sysctl net.ipv4.ip_forward 0
[   90.4] befund-selftest[400]: befund-report: listen tcp none
[   90.4] befund-selftest[400]: befund-report: listen udp 0.0.0.0:68
[   90.4] befund-selftest[400]: befund-report: listen udp [::]:546
[   90.5] befund-selftest[400]: befund-selftest: ping 10.20.0.5 ok
[   90.6] befund-selftest[400]: befund-selftest: run xdp_fixtures --test-threads=1
[   90.7] befund-selftest[401]: running 1 test
[   90.8] befund-selftest[401]: test drops_fragments ... ok
[   91.0] befund-selftest[400]: befund-selftest: exit xdp_fixtures 0
[   91.0] befund-selftest[400]: befund-selftest: before-check befundctl fw counters --json
[   91.0] befund-selftest[402]: {
[   91.0] befund-proxy[350]: WARN handshake refused
[   91.0] befund-selftest[402]:   \"counters\": []
[   91.0] befund-selftest[402]: }
[   91.0] befund-selftest[400]: befund-selftest: before-check-exit 0
[   91.1] befund-selftest[400]: befund-selftest: ready
[   95.0] befund-selftest[400]: befund-selftest: after-check befundctl fw counters --json
[   95.0] befund-selftest[403]: befundctl: no filter pinned
[   95.0] befund-selftest[400]: befund-selftest: after-check-exit 1
";

    #[test]
    fn guest_facts_take_the_report_printed_by_the_selftest() {
        let facts = GuestFacts::parse(CONSOLE);
        assert_eq!(facts.report("kernel"), "6.1.0-57-amd64");
        assert_eq!(
            facts.report("service befund-proxy.service"),
            "failed failed result=exit-code restarts=4"
        );
        assert_eq!(facts.report("sysctl net.ipv4.ip_forward"), "0");
        assert_eq!(facts.report("listen tcp"), "none");
        assert_eq!(facts.report("listen udp"), "0.0.0.0:68 [::]:546");
        assert_eq!(facts.report("btf"), "(not reported)");
        assert!(facts.ran());
    }

    #[test]
    fn guest_facts_collect_alerts_probes_and_binary_exits() {
        let facts = GuestFacts::parse(CONSOLE);
        assert!(facts.alerts[0].starts_with("befund-proxy.service FAILED"));
        assert_eq!(facts.selftest("ping 10.20.0.5"), "ok");
        assert_eq!(facts.binary_exits(), [("xdp_fixtures".into(), "0".into())]);
        assert_eq!(
            facts.binary_output["xdp_fixtures"],
            ["running 1 test", "test drops_fragments ... ok"]
        );
    }

    #[test]
    fn guest_facts_keep_each_check_commands_own_output_and_exit() {
        let facts = GuestFacts::parse(CONSOLE);
        let before = facts.check_run("before", "befundctl fw counters").unwrap();
        assert_eq!(before.command, "befundctl fw counters --json");
        assert_eq!(before.output, ["{", "  \"counters\": []", "}"]);
        assert_eq!(before.exit.as_deref(), Some("0"));
        let after = facts.check_run("after", "befundctl fw counters").unwrap();
        assert_eq!(after.output, ["befundctl: no filter pinned"]);
        assert_eq!(after.exit.as_deref(), Some("1"));
        assert_eq!(facts.binary_exits(), [("xdp_fixtures".into(), "0".into())]);
    }

    #[test]
    fn guest_facts_without_selftest_report_nothing() {
        let facts = GuestFacts::parse("befund-report: kernel 6.1.0\n");
        assert_eq!(facts.report("kernel"), "(not reported)");
        assert!(!facts.ran());
    }

    #[test]
    fn sysctl_settings_skip_comments() {
        let settings = sysctl_settings("# c\nnet.ipv4.ip_forward = 0\n\nkernel.x=2\n");
        assert_eq!(
            settings,
            [
                ("net.ipv4.ip_forward".into(), "0".into()),
                ("kernel.x".into(), "2".into())
            ]
        );
    }
}
