//! `cargo xtask image`: the appliance's disk image.
//!
//! A Debian 12 system (bookworm with -updates and -security) made with
//! debootstrap, the workspace's release binaries, the units, configuration
//! and kernel settings from `images/`, on a GPT/UEFI disk with systemd-boot.
//! The result is a qcow2 image (and the raw disk with `--raw`) in
//! `target/image`, next to its build log and package manifest.

mod appliance;
pub mod binaries;
pub mod disk;
pub mod host_tools;
mod rootfs;
mod verify;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    command::{output, workspace_root},
    runlog::{RunLog, seconds},
    setup::is_root,
};

/// File names of the outputs, without extension.
const IMAGE_NAME: &str = "befund-gateway";

#[derive(clap::Args, Clone, Debug, Default)]
pub struct Options {
    /// Keep the raw disk image next to the qcow2 image.
    #[arg(long)]
    pub raw: bool,
    /// Output directory [default: target/image].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Rebuild the cached Debian base and packages (picks up new security
    /// updates); otherwise they are reused from DIR/cache.
    #[arg(long)]
    pub refresh: bool,
    /// Install exactly the package versions of this manifest (a previous
    /// build's `befund-gateway.manifest`); fails if the mirror no longer
    /// has one of them.
    #[arg(long, value_name = "MANIFEST")]
    pub pin: Option<PathBuf>,
}

/// What a build produced.
pub struct Image {
    /// The qcow2 image.
    pub qcow2: PathBuf,
    /// The raw disk, when asked for.
    pub raw: Option<PathBuf>,
    /// `PACKAGE=VERSION` lines of every installed Debian package.
    pub manifest: PathBuf,
    /// The kernel release inside.
    pub kernel: String,
    /// `systemd-analyze security`'s verdict on the daemon's unit.
    pub exposure: String,
}

pub fn run(options: &Options) -> Result<()> {
    build(options).map(|_| ())
}

/// Builds the image; used by `cargo xtask vm-test` too.
pub fn build(options: &Options) -> Result<Image> {
    if !is_root() {
        bail!("building the image needs root (debootstrap, chroot, file ownership); run as root");
    }
    let started = Instant::now();
    let workspace = workspace_root();
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| workspace.join("target/image"));
    fs::create_dir_all(&out).with_context(|| format!("failed to create {}", out.display()))?;
    let mut log = RunLog::create(&out.join(format!("{IMAGE_NAME}.build.log")), "image")?;

    let image = build_logged(&mut log, options, &workspace, &out)?;

    let size = fs::metadata(&image.qcow2)?.len();
    let packages = fs::read_to_string(&image.manifest)?;
    eprintln!("\ninstalled packages ({}):", packages.lines().count());
    eprintln!("{}", packages.lines().collect::<Vec<_>>().join(" "));
    log.say(&format!(
        "{} ({:.0} MiB, kernel {}) built in {}",
        image.qcow2.display(),
        size as f64 / 1048576.0,
        image.kernel,
        seconds(started.elapsed())
    ));
    if let Some(raw) = &image.raw {
        log.say(&format!("raw disk: {}", raw.display()));
    }
    log.say(&format!("befund-proxy.service {}", image.exposure));
    log.say(&format!("manifest: {}", image.manifest.display()));
    log.say(&format!("build log: {}", log.path().display()));
    Ok(image)
}

fn build_logged(
    log: &mut RunLog,
    options: &Options,
    workspace: &Path,
    out: &Path,
) -> Result<Image> {
    let images = workspace.join("images");
    log.step("host tools", host_tools::ensure)?;
    let mirrors = host_tools::host_mirrors()?;
    log.say(&format!(
        "Debian mirror {}, security {}",
        mirrors.debian, mirrors.security
    ));
    let binaries = log.step("release binaries", |log| binaries::build(log, workspace))?;

    let work = out.join("work");
    let layout = rootfs::Layout {
        root: work.join("rootfs"),
        cache: out.join("cache"),
    };
    log.step("prepare work directory", |_| rootfs::fresh_dir(&work))?;
    let packages = rootfs::package_list(
        &fs::read_to_string(images.join("packages.txt"))
            .context("failed to read images/packages.txt")?,
    )?;
    let pin = match &options.pin {
        Some(path) => Some(
            fs::read_to_string(path)
                .with_context(|| format!("failed to read the pin manifest {}", path.display()))?,
        ),
        None => None,
    };
    log.step("Debian system", |log| {
        let wanted = rootfs::Packages {
            names: &packages,
            pin: pin.as_deref(),
        };
        rootfs::system(log, &layout, &mirrors, &wanted, options.refresh)
    })?;

    let ids = disk::new_ids()?;
    log.step("appliance layer", |log| {
        appliance::install_layer(
            log,
            &images,
            &workspace.join("README.md"),
            &layout.root,
            &binaries,
            &ids,
        )
    })?;
    let exposure = log.step("verify units", |log| verify::units(log, &layout.root))?;
    let manifest = out.join(format!("{IMAGE_NAME}.manifest"));
    write_manifest(&layout.root, &manifest)?;
    let boot = appliance::boot_files(&layout.root)?;

    let raw = out.join(format!("{IMAGE_NAME}.raw"));
    let qcow2 = out.join(format!("{IMAGE_NAME}.qcow2"));
    log.step("disk", |log| {
        let parts = disk::DiskParts {
            root: &layout.root,
            boot: &boot,
            boot_config: &images.join("boot"),
            ids: &ids,
            work: &work,
        };
        let bytes = disk::assemble(log, &parts, &raw)?;
        log.say(&format!("raw disk {} MiB", bytes / 1048576));
        let _ = fs::remove_file(&qcow2);
        log.run(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&qcow2),
        )
    })?;
    log.step("clean up", |_| {
        fs::remove_dir_all(&work).with_context(|| format!("failed to remove {}", work.display()))
    })?;
    let raw = if options.raw {
        Some(raw)
    } else {
        fs::remove_file(&raw).ok();
        None
    };
    Ok(Image {
        qcow2,
        raw,
        manifest,
        kernel: boot.release,
        exposure,
    })
}

fn write_manifest(root: &Path, manifest: &Path) -> Result<()> {
    let list = output(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package}=${Version}\\n"]),
    )?;
    fs::write(manifest, list).with_context(|| format!("failed to write {}", manifest.display()))
}
