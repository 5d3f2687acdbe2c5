//! The image's root file system: a cached Debian base with the appliance's
//! packages, and on top of it the workspace's binaries, units and settings.
//!
//! Two cache layers keep a rebuild quick: `base.tar` (what debootstrap made)
//! and `system.tar` (after the packages in `images/packages.txt` were
//! installed and the base upgraded from bookworm-updates and
//! bookworm-security). Each sits next to a `.key` file naming what it was
//! made from; a different key, or `--refresh`, rebuilds the layer.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::host_tools::Mirrors;
use crate::runlog::RunLog;

const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";

/// Where the rootfs is made and cached.
pub struct Layout {
    /// The root file system being assembled.
    pub root: PathBuf,
    /// Cached tarballs.
    pub cache: PathBuf,
}

/// What to install on top of debootstrap's base.
pub struct Packages<'a> {
    /// Names from `images/packages.txt`.
    pub names: &'a [String],
    /// A manifest (`PACKAGE=VERSION` lines) whose versions must be installed.
    pub pin: Option<&'a str>,
}

/// Fills `layout.root` with the cached (or freshly built) system layer.
pub fn system(
    log: &mut RunLog,
    layout: &Layout,
    mirrors: &Mirrors,
    packages: &Packages<'_>,
    refresh: bool,
) -> Result<()> {
    fs::create_dir_all(&layout.cache)
        .with_context(|| format!("failed to create {}", layout.cache.display()))?;
    let base_key = format!(
        "debootstrap --variant={VARIANT} {SUITE} {}\n",
        mirrors.debian
    );
    let system_key = format!(
        "{base_key}security {}\npackages {}\npin {}\n",
        mirrors.security,
        packages.names.join(" "),
        packages.pin.unwrap_or("none"),
    );
    let base_tar = layout.cache.join("base.tar");
    let system_tar = layout.cache.join("system.tar");

    if !refresh && cache_matches(&system_tar, &system_key) {
        log.say(&format!(
            "using cached system layer {}",
            system_tar.display()
        ));
        return unpack(log, &system_tar, &layout.root);
    }

    if !refresh && cache_matches(&base_tar, &base_key) {
        log.say(&format!(
            "using cached debootstrap base {}",
            base_tar.display()
        ));
        unpack(log, &base_tar, &layout.root)?;
    } else {
        log.step("debootstrap", |log| {
            debootstrap(log, &layout.root, mirrors)?;
            pack(log, &layout.root, &base_tar, &base_key)
        })?;
    }

    log.step("install packages", |log| {
        install_packages(log, &layout.root, mirrors, packages)?;
        pack(log, &layout.root, &system_tar, &system_key)
    })
}

fn cache_matches(tar: &Path, key: &str) -> bool {
    tar.exists() && fs::read_to_string(key_path(tar)).is_ok_and(|k| k == key)
}

fn key_path(tar: &Path) -> PathBuf {
    tar.with_extension("key")
}

fn unpack(log: &mut RunLog, tar: &Path, root: &Path) -> Result<()> {
    fresh_dir(root)?;
    log.run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(root),
    )
}

fn pack(log: &mut RunLog, root: &Path, tar: &Path, key: &str) -> Result<()> {
    let partial = tar.with_extension("tar.partial");
    log.run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf"])
            .arg(&partial)
            .arg("-C")
            .arg(root)
            .arg("."),
    )?;
    fs::rename(&partial, tar).with_context(|| format!("failed to store {}", tar.display()))?;
    fs::write(key_path(tar), key)
        .with_context(|| format!("failed to store the key of {}", tar.display()))
}

/// Removes `dir` if it exists and creates it empty.
pub fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("failed to remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))
}

fn debootstrap(log: &mut RunLog, root: &Path, mirrors: &Mirrors) -> Result<()> {
    fresh_dir(root)?;
    log.run(
        Command::new("debootstrap")
            .arg(format!("--variant={VARIANT}"))
            .args(["--arch=amd64", "--components=main", SUITE])
            .arg(root)
            .arg(&mirrors.debian),
    )
}

fn install_packages(
    log: &mut RunLog,
    root: &Path,
    mirrors: &Mirrors,
    packages: &Packages<'_>,
) -> Result<()> {
    // bookworm-updates and bookworm-security before the kernel, so the image
    // gets the current 6.1 kernel and every security fix.
    let sources = format!(
        "Types: deb\nURIs: {debian}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        debian = mirrors.debian,
        security = mirrors.security,
    );
    write(
        &root.join("etc/apt/sources.list.d/debian.sources"),
        &sources,
    )?;
    let _ = fs::remove_file(root.join("etc/apt/sources.list"));
    // Nothing may start inside the build root.
    let policy = root.join("usr/sbin/policy-rc.d");
    write(&policy, "#!/bin/sh\nexit 101\n")?;
    set_mode(&policy, 0o755)?;

    let apt = |args: &[&str]| {
        let mut cmd = chroot(root, "apt-get");
        cmd.args(["-y", "-q", "-o", "Dpkg::Options::=--force-confold"])
            .args(args);
        cmd
    };
    log.run(&mut apt(&["update"]))?;
    log.run(&mut apt(&["dist-upgrade"]))?;
    let mut install = apt(&["install", "--no-install-recommends"]);
    install.args(packages.names);
    log.run(&mut install)?;
    if let Some(pin) = packages.pin {
        install_pinned(log, root, pin, &apt)?;
    }
    log.run(&mut apt(&["clean"]))?;
    fs::remove_file(&policy).context("failed to remove policy-rc.d")
}

/// Brings every package to the version the manifest names, then checks that
/// the system holds exactly the manifest's packages and versions.
fn install_pinned(
    log: &mut RunLog,
    root: &Path,
    pin: &str,
    apt: &dyn Fn(&[&str]) -> Command,
) -> Result<()> {
    let wanted: Vec<&str> = pin
        .lines()
        .map(str::trim)
        .filter(|l| l.contains('='))
        .collect();
    log.say(&format!("pinning {} package versions", wanted.len()));
    let mut install = apt(&["install", "--no-install-recommends", "--allow-downgrades"]);
    install.args(&wanted);
    log.run(&mut install)?;
    let installed = crate::command::output(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package}=${Version}\\n"]),
    )?;
    let differences = manifest_differences(pin, &installed);
    if !differences.is_empty() {
        bail!(
            "the system differs from the pin manifest:\n{}",
            differences.join("\n")
        );
    }
    Ok(())
}

/// Lines present in only one of two manifests, marked `-` (only in the pin)
/// or `+` (only installed).
fn manifest_differences(pin: &str, installed: &str) -> Vec<String> {
    let set = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.contains('='))
            .map(str::to_owned)
            .collect()
    };
    let (pin, installed) = (set(pin), set(installed));
    pin.difference(&installed)
        .map(|l| format!("- {l}"))
        .chain(installed.difference(&pin).map(|l| format!("+ {l}")))
        .collect()
}

/// A command run inside `root` with /proc, /sys and /dev mounted in a private
/// mount namespace: the mounts vanish with the command, also when it fails.
pub fn chroot(root: &Path, program: &str) -> Command {
    let root = root.display().to_string();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "--",
        "sh",
        "-ec",
    ])
    .arg(
        "root=$1; shift; \
             mount -t proc proc \"$root/proc\"; \
             mount -t sysfs sysfs \"$root/sys\"; \
             mount --rbind /dev \"$root/dev\"; \
             exec chroot \"$root\" \"$@\"",
    )
    .args(["sh", &root, program])
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("DEBIAN_FRONTEND", "noninteractive")
    .env("LC_ALL", "C.UTF-8");
    cmd
}

/// Writes `text` to `path`, creating the parent directories.
pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("failed to set the mode of {}", path.display()))
}

/// Copies `from` to `to` with `mode`, creating the parent directories.
pub fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("failed to copy {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

/// The packages listed in `images/packages.txt` (comments and blanks skipped).
pub fn package_list(text: &str) -> Result<Vec<String>> {
    let packages: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if packages.is_empty() {
        bail!("images/packages.txt names no package; list at least linux-image-amd64 and systemd");
    }
    Ok(packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_skips_comments_and_blank_lines() {
        let text = "# comment\nlinux-image-amd64\n\n  systemd  # init\n";
        assert_eq!(
            package_list(text).unwrap(),
            ["linux-image-amd64", "systemd"]
        );
    }

    #[test]
    fn manifest_differences_name_missing_and_extra_versions() {
        let pin = "bash=5.2\nsystemd=252.39\n";
        let installed = "bash=5.2\nsystemd=252.40\nvim=9\n";
        assert_eq!(
            manifest_differences(pin, installed),
            ["- systemd=252.39", "+ systemd=252.40", "+ vim=9"]
        );
        assert!(manifest_differences(pin, pin).is_empty());
    }

    #[test]
    fn package_list_without_packages_is_an_error() {
        assert!(package_list("# only a comment\n").is_err());
    }
}
