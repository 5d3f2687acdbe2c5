//! `cargo xtask vm-test`: the appliance image as shipped, booted under QEMU
//! as the gateway between a client namespace ("the internet") and a lab
//! namespace, and checked from inside and outside.
//!
//! ```text
//!  client ns                        VM (appliance image)                 lab ns
//!  tap 198.51.100.2 ── virtio-net enp0s3 198.51.100.1
//!                                   enp0s4 10.20.0.1 ── virtio-net ── tap 10.20.0.5
//! ```
//!
//! The test works on a private copy of the image whose boot entry carries
//! `befund.selftest`: that parameter makes the image's self-test unit print
//! the appliance's state on the console, run the test binaries from the
//! config drive, and wait on the second serial port until the checks from
//! outside are done. The test then reads the console and judges.

mod checks;
mod config_drive;
mod lab;
mod netns;
mod qemu;
mod scenario;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use befund_testbed::netns::Netns;

use self::{
    checks::{Check, GuestFacts},
    config_drive::ConfigDrive,
    netns::Tap,
    qemu::{Nic, Vm, VmSpec},
    scenario::{Plan, Scenario, Topology},
};
use crate::{
    command::{output, workspace_root},
    image::{self, binaries::cargo_test_executables, host_tools},
    runlog::{RunLog, seconds},
    setup::is_root,
};

/// Kernel parameter that turns on the image's self-test unit.
const SELFTEST_PARAMETER: &str = "befund.selftest";
/// The ESP's partition type, to find it in the disk copy.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Time the guest gets to power off after the test is done.
const POWER_OFF_GRACE: Duration = Duration::from_secs(90);

/// Set by SIGINT/SIGTERM: the waits give up, so that the guards still
/// remove the namespaces, TAPs and QEMU.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the test was asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

#[derive(clap::Args)]
pub struct Options {
    /// Boot this image (qcow2 or raw) instead of building one.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// What the config drive carries, and so what the test expects.
    #[arg(long, value_enum, default_value_t = Scenario::Appliance)]
    scenario: Scenario,
    /// Run this test binary in the guest (repeatable); its output appears on
    /// the console and its exit code is checked.
    #[arg(long = "guest-test", value_name = "FILE")]
    guest_tests: Vec<PathBuf>,
    /// Arguments for every guest test binary.
    #[arg(long, default_value = "--test-threads=1", allow_hyphen_values = true)]
    guest_test_args: String,
    /// Build the XDP packet-fixture tests (`befund-tests --test
    /// xdp_fixtures`) and run them on the guest's kernel.
    #[arg(long)]
    xdp_fixtures: bool,
    /// Overall time limit in seconds; everything is torn down when it passes.
    #[arg(long, default_value_t = 1200)]
    timeout: u64,
}

pub fn run(options: Options) -> Result<()> {
    if !is_root() {
        bail!("the VM test needs root (network namespaces, TAP devices); run as root");
    }
    ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::Relaxed))
        .context("failed to install the signal handler")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.timeout);
    let out = workspace_root().join("target/vm-test");
    let dir = out.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut log = RunLog::create(&out.join("vm-test.log"), "vm-test")?;

    let result = run_in(&mut log, &options, &dir, &out, deadline);

    let console = dir.join("console.log");
    if console.exists() {
        let kept = out.join("console.log");
        fs::copy(&console, &kept).ok();
        log.say(&format!("guest console: {}", kept.display()));
    }
    fs::remove_dir_all(&dir).ok();
    eprintln!("\nvm-test: timings");
    for (step, took) in log.timings() {
        eprintln!("  {step:<28} {:>9}", seconds(*took));
    }
    eprintln!("  {:<28} {:>9}", "total", seconds(started.elapsed()));
    let checks = result?;
    report(&mut log, &checks)
}

fn run_in(
    log: &mut RunLog,
    options: &Options,
    dir: &Path,
    keep: &Path,
    deadline: Instant,
) -> Result<Vec<Check>> {
    log.step("host tools", host_tools::ensure)?;
    let image = match &options.image {
        Some(image) => image.clone(),
        None => {
            log.step("build image", |_| image::build(&image::Options::default()))?
                .qcow2
        }
    };
    let guest_tests = log.step("guest test binaries", |_| guest_tests(options))?;

    let disk = dir.join("system.raw");
    log.step("system disk copy", |log| selftest_disk(log, &image, &disk))?;
    let topology = Topology::new();
    let plan = log.step("scenario: host binaries, PKI", |_| {
        options.scenario.prepare(dir, keep, &topology)
    })?;
    let drive = dir.join("config-drive.img");
    log.step("config drive", |log| {
        let tree = ConfigDrive::new(dir)?;
        plan.fill_config_drive(&tree, &topology)?;
        for (name, binary) in &guest_tests {
            tree.copy(binary, &format!("selftest/bin/{name}"))?;
            tree.write(
                &format!("selftest/bin/{name}.args"),
                &options.guest_test_args,
            )?;
        }
        tree.build(log, &drive)
    })?;

    let booted = boot_and_probe(log, &plan, dir, &disk, &drive, &topology, deadline);
    plan.keep_logs();
    let (facts, client) = booted?;
    let mut checks = vec![checks::check(
        "the guest's self-test ran to its end",
        "yes",
        if facts.ran() { "yes" } else { "no" },
    )];
    checks.extend(plan.guest_checks(&facts, &topology)?);
    for (name, code) in facts.binary_exits() {
        if code != "0" {
            eprintln!("vm-test: output of {name} in the guest:");
            for line in facts.binary_output.get(&name).into_iter().flatten() {
                eprintln!("  | {line}");
            }
        }
        checks.push(checks::check(
            &format!("guest test {name} passes on the appliance kernel"),
            "0",
            code,
        ));
    }
    for (name, _) in &guest_tests {
        if !facts.binary_exits().iter().any(|(ran, _)| ran == name) {
            checks.push(checks::check(
                &format!("guest test {name} ran"),
                "yes",
                "no",
            ));
        }
    }
    checks.extend(client);
    Ok(checks)
}

/// Boots the VM between the namespaces, waits for the self-test, probes
/// from the client namespace, and powers the VM off.
fn boot_and_probe(
    log: &mut RunLog,
    plan: &Plan,
    dir: &Path,
    disk: &Path,
    drive: &Path,
    topology: &Topology,
    deadline: Instant,
) -> Result<(GuestFacts, Vec<Check>)> {
    let pid = std::process::id();
    let client = Netns::create(format!("bfvc-{pid}"))?;
    let lab = Netns::create(format!("bfvl-{pid}"))?;
    let mut wan_tap = Tap::create(format!("bfvw{pid}"))?;
    let mut lan_tap = Tap::create(format!("bfvl{pid}"))?;
    let nics = [
        Nic {
            tap: &wan_tap.name,
            mac: topology.wan_mac,
            slot: topology.wan_slot,
        },
        Nic {
            tap: &lan_tap.name,
            mac: topology.lan_mac,
            slot: topology.lan_slot,
        },
    ];
    let spec = VmSpec {
        disk,
        config_drive: drive,
        nics: &nics,
        dir,
    };
    let mut vm = log.step("start qemu", |_| Vm::start(&spec))?;
    wan_tap.move_into(&client, &topology.client_cidr())?;
    lan_tap.move_into(&lab, &topology.lab_host_cidr())?;
    client.run(&[
        "ip",
        "route",
        "add",
        topology.lab_network,
        "via",
        topology.gateway_wan,
    ])?;
    lab.run(&["ip", "route", "add", "default", "via", topology.gateway_lan])?;
    let mut lab_service = plan.start_lab_service(&lab, topology)?;
    vm.resume()?;

    log.say(&format!("console: {}", vm.console_path().display()));
    let booted = log.step("boot to self-test report", |_| {
        vm.wait_for_console("befund-selftest: ready", deadline)
    });
    if let Err(error) = booted {
        show_console_tail(&vm.console());
        return Err(error);
    }
    if !lab_service.running() {
        bail!("the {} in the lab namespace stopped", lab_service.name());
    }
    let client_checks = log.step("checks from the client", |_| {
        plan.client_checks(&client, topology)
    })?;
    log.step("power off", |_| {
        vm.tell_guest("done")?;
        let grace = (Instant::now() + POWER_OFF_GRACE).min(deadline);
        if !vm.wait_for_exit(grace)? {
            bail!(
                "the guest did not power off within {}",
                seconds(POWER_OFF_GRACE)
            );
        }
        Ok(())
    })?;
    Ok((GuestFacts::parse(&vm.console()), client_checks))
}

/// The test binaries to copy into the guest, with the names they get there.
fn guest_tests(options: &Options) -> Result<Vec<(String, PathBuf)>> {
    let mut binaries = Vec::new();
    for binary in &options.guest_tests {
        let name = binary
            .file_name()
            .with_context(|| format!("guest test {} has no file name", binary.display()))?
            .to_string_lossy()
            .into_owned();
        binaries.push((name, binary.clone()));
    }
    if options.xdp_fixtures {
        let built = cargo_test_executables(
            Command::new(env!("CARGO"))
                .current_dir(workspace_root())
                .args([
                    "test",
                    "-p",
                    "befund-tests",
                    "--test",
                    "xdp_fixtures",
                    "--no-run",
                ]),
        )
        .context(
            "failed to build the XDP packet-fixture tests (befund-tests --test xdp_fixtures)",
        )?;
        if built.is_empty() {
            bail!("cargo built no xdp_fixtures test harness");
        }
        binaries.extend(built);
    }
    for (_, binary) in &binaries {
        if !binary.is_file() {
            bail!("guest test binary {} does not exist", binary.display());
        }
    }
    Ok(binaries)
}

/// Copies the image to a raw disk and adds the self-test parameter to its
/// boot entry, on the ESP, with mtools.
fn selftest_disk(log: &mut RunLog, image: &Path, disk: &Path) -> Result<()> {
    log.run(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(image)
            .arg(disk),
    )?;
    let esp = format!("{}@@{}", disk.display(), esp_offset(disk)?);
    let entry = "::/loader/entries/befund.conf";
    let text = output(
        Command::new("mtype")
            .args(["-i", &esp, entry])
            .env("MTOOLS_SKIP_CHECK", "1"),
    )?;
    let edited = with_kernel_parameter(&text, SELFTEST_PARAMETER)?;
    let local = disk.with_file_name("befund.conf");
    fs::write(&local, edited).context("failed to write the edited boot entry")?;
    log.run(
        Command::new("mcopy")
            .args(["-o", "-i", &esp])
            .arg(&local)
            .arg(entry)
            .env("MTOOLS_SKIP_CHECK", "1"),
    )
}

fn esp_offset(disk: &Path) -> Result<u64> {
    let dump = output(Command::new("sfdisk").arg("--dump").arg(disk))?;
    dump.lines()
        .find(|l| l.to_uppercase().contains(ESP_TYPE))
        .and_then(|l| l.split("start=").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|sector| sector * 512)
        .with_context(|| format!("{} has no EFI system partition", disk.display()))
}

fn with_kernel_parameter(entry: &str, parameter: &str) -> Result<String> {
    if !entry.lines().any(|l| l.starts_with("options")) {
        bail!("the boot entry has no options line:\n{entry}");
    }
    Ok(entry
        .lines()
        .map(|line| {
            if line.starts_with("options") {
                format!("{line} {parameter}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect())
}

fn show_console_tail(console: &str) {
    let lines: Vec<&str> = console.lines().collect();
    eprintln!("vm-test: last console lines:");
    for line in &lines[lines.len().saturating_sub(30)..] {
        eprintln!("  | {line}");
    }
}

fn report(log: &mut RunLog, checks: &[Check]) -> Result<()> {
    eprintln!("\nvm-test: checks");
    for check in checks {
        let verdict = if check.passed { "ok  " } else { "FAIL" };
        eprintln!("  {verdict} {}", check.name);
        log.note(&format!(
            "{verdict} {}: expected {}, observed {}",
            check.name, check.expected, check.observed
        ));
        if !check.passed {
            eprintln!("       expected: {}", check.expected);
            eprintln!("       observed: {}", check.observed);
        }
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    eprintln!("{} passed, {failed} failed", checks.len() - failed);
    if failed > 0 {
        bail!("{failed} of {} VM checks failed", checks.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_parameter_is_appended_to_the_options_line_only() {
        let entry = "title T\nlinux /vmlinuz\noptions root=X ro quiet\n";
        assert_eq!(
            with_kernel_parameter(entry, "befund.selftest").unwrap(),
            "title T\nlinux /vmlinuz\noptions root=X ro quiet befund.selftest\n"
        );
    }

    #[test]
    fn kernel_parameter_needs_an_options_line() {
        assert!(with_kernel_parameter("title T\n", "befund.selftest").is_err());
    }
}
