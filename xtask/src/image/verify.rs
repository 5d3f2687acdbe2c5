//! Checks the appliance's units with the image's own systemd: `systemd-analyze
//! verify` must accept them without a word, and `systemd-analyze security`
//! rates the daemon's sandbox (its exposure score goes into the build log).

use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};

use super::rootfs::chroot;
use crate::{command::output, runlog::RunLog};

/// The unit whose sandbox is rated.
const DAEMON_UNIT: &str = "befund-proxy.service";

/// Verifies every `befund-*` unit in the build root and returns the daemon's
/// exposure score line.
pub fn units(log: &mut RunLog, root: &Path) -> Result<String> {
    let unit_dir = root.join("usr/lib/systemd/system");
    let mut units: Vec<String> = fs::read_dir(&unit_dir)
        .with_context(|| format!("failed to list {}", unit_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("befund-") && !name.contains("@."))
        .map(|name| format!("/usr/lib/systemd/system/{name}"))
        .collect();
    units.sort();

    let verify = chroot(root, "systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .context("failed to run systemd-analyze verify")?;
    let findings = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    log.note(&findings);
    if !verify.status.success() || !findings.trim().is_empty() {
        bail!("systemd-analyze verify found problems in the units:\n{findings}");
    }
    log.say(&format!(
        "systemd-analyze verify: {} units accepted",
        units.len()
    ));

    let security = output(
        chroot(root, "systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("/usr/lib/systemd/system/{DAEMON_UNIT}")),
    )?;
    log.note(&security);
    let overall = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .map(|l| l.trim_start_matches(['→', ' ']).trim().to_owned())
        .context("systemd-analyze security printed no overall exposure level")?;
    log.say(&format!("systemd-analyze security: {overall}"));
    Ok(overall)
}
