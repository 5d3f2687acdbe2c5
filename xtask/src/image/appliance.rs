//! The appliance layer: the workspace's binaries and everything under
//! `images/`, laid onto the Debian system in the build root. Rebuilt on every
//! image build (it is small), never cached.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use super::rootfs::{chroot, install, write};
use crate::runlog::RunLog;

/// Units shipped from `images/systemd` are those with these suffixes.
const UNIT_SUFFIXES: &[&str] = &[".service", ".timer", ".socket", ".path", ".target"];
/// Timers that would reach for a Debian mirror from the appliance: updates
/// come as a new image instead.
const MASKED_UNITS: &[&str] = &["apt-daily.timer", "apt-daily-upgrade.timer"];
/// Debian's units the appliance turns on.
const ENABLED_DEBIAN_UNITS: &[&str] = &["systemd-networkd.service"];
const HOSTNAME: &str = "befund-gateway";

/// Partition ids that the boot loader entry and fstab refer to.
pub struct PartitionIds {
    /// PARTUUID of the EFI system partition.
    pub esp: String,
    /// PARTUUID of the root partition.
    pub root: String,
}

/// Lays the appliance onto `root`.
pub fn install_layer(
    log: &mut RunLog,
    images: &Path,
    readme: &Path,
    root: &Path,
    binaries: &[PathBuf],
    ids: &PartitionIds,
) -> Result<()> {
    for binary in binaries {
        let name = binary.file_name().context("binary without a file name")?;
        install(binary, &root.join("usr/bin").join(name), 0o755)?;
        log.note(&format!("installed {}", binary.display()));
    }
    for script in files_in(&images.join("scripts"))? {
        let name = script.file_name().context("script without a file name")?;
        install(&script, &root.join("usr/lib/befund").join(name), 0o755)?;
    }
    let units = unit_files(&images.join("systemd"))?;
    for unit in &units {
        let name = unit.file_name().context("unit without a file name")?;
        install(unit, &root.join("usr/lib/systemd/system").join(name), 0o644)?;
    }
    let copies = [
        ("sysctl/99-befund.conf", "etc/sysctl.d/99-befund.conf"),
        ("tmpfiles/befund.conf", "usr/lib/tmpfiles.d/befund.conf"),
        ("sysusers/befund.conf", "usr/lib/sysusers.d/befund.conf"),
        ("config/befund.toml", "usr/share/befund/befund.toml"),
    ];
    for (from, to) in copies {
        install(&images.join(from), &root.join(to), 0o644)?;
    }
    install(readme, &root.join("usr/share/doc/befund/README.md"), 0o644)?;

    write_system_files(images, root, ids)?;
    configure_in_chroot(log, root, &units)
}

fn write_system_files(images: &Path, root: &Path, ids: &PartitionIds) -> Result<()> {
    let fstab = fs::read_to_string(images.join("boot/fstab.in"))
        .context("failed to read images/boot/fstab.in")?
        .replace("@ROOT_PARTUUID@", &ids.root)
        .replace("@ESP_PARTUUID@", &ids.esp);
    write(&root.join("etc/fstab"), &fstab)?;
    write(&root.join("etc/hostname"), &format!("{HOSTNAME}\n"))?;
    write(
        &root.join("etc/hosts"),
        &format!("127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost\n"),
    )?;
    // Empty: every appliance gets its own machine id at first boot.
    write(&root.join("etc/machine-id"), "")?;
    fs::create_dir_all(root.join("boot/efi")).context("failed to create /boot/efi")?;
    // The package lists are only needed to install; updates come as images.
    let lists = root.join("var/lib/apt/lists");
    if lists.is_dir() {
        fs::remove_dir_all(&lists).context("failed to remove the apt lists")?;
        fs::create_dir_all(lists.join("partial")).context("failed to recreate the apt lists")?;
    }
    Ok(())
}

fn configure_in_chroot(log: &mut RunLog, root: &Path, units: &[PathBuf]) -> Result<()> {
    let mut enable: Vec<String> = ENABLED_DEBIAN_UNITS.iter().map(|u| u.to_string()).collect();
    for unit in units {
        let text = fs::read_to_string(unit)
            .with_context(|| format!("failed to read {}", unit.display()))?;
        // Templates and units without an [Install] section are pulled in by
        // other units (e.g. OnFailure=), never enabled on their own.
        let name = unit.file_name().unwrap_or_default().to_string_lossy();
        if text.contains("[Install]") && !name.contains("@.") {
            enable.push(name.into_owned());
        }
    }
    log.run(&mut chroot(root, "systemd-sysusers"))?;
    log.run(chroot(root, "install").args([
        "-d",
        "-m",
        "0750",
        "-o",
        "root",
        "-g",
        "befund",
        "/etc/befund",
    ]))?;
    log.run(chroot(root, "systemctl").arg("enable").args(&enable))?;
    log.run(chroot(root, "systemctl").arg("mask").args(MASKED_UNITS))?;
    log.say(&format!("enabled units: {}", enable.join(" ")));
    Ok(())
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("failed to list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Every unit file in `dir` (services, timers, ...), whoever wrote it.
pub fn unit_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let units: Vec<PathBuf> = files_in(dir)?
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            UNIT_SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
        })
        .collect();
    if units.is_empty() {
        bail!("{} holds no unit files", dir.display());
    }
    Ok(units)
}

/// The kernel and initramfs that `/vmlinuz` and `/initrd.img` point to.
pub struct BootFiles {
    /// The kernel image.
    pub kernel: PathBuf,
    /// Its initramfs.
    pub initrd: PathBuf,
    /// systemd-boot's EFI binary.
    pub loader: PathBuf,
    /// The kernel release, e.g. `6.1.0-41-amd64`.
    pub release: String,
}

/// Finds the boot files in the build root.
pub fn boot_files(root: &Path) -> Result<BootFiles> {
    let resolve = |link: &str| -> Result<PathBuf> {
        let target = fs::read_link(root.join(link)).with_context(|| {
            format!("the image has no /{link}; is linux-image-amd64 installed?")
        })?;
        let relative = target.strip_prefix("/").unwrap_or(&target);
        Ok(root.join(relative))
    };
    let kernel = resolve("vmlinuz")?;
    let initrd = resolve("initrd.img")?;
    let release = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("the kernel image is not named vmlinuz-RELEASE")?
        .to_owned();
    let loader = root.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    for file in [&kernel, &initrd, &loader] {
        if !file.is_file() {
            bail!("{} is missing from the image", file.display());
        }
    }
    Ok(BootFiles {
        kernel,
        initrd,
        loader,
        release,
    })
}
