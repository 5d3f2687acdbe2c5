//! `cargo xtask setup`: installs the eBPF toolchain on a Debian machine.
//!
//! The machine's rustup toolchains carry no `rust-src`, so `-Z build-std` is
//! not available. Debian ships a rustc with a prebuilt `core` for the BPF
//! targets instead; we link it into rustup as `befund-bpf` and build
//! bpf-linker against Debian's LLVM 22.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::command::{self, output, succeeds};

/// Debian packages the build needs.
pub const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Packages the tests use as real peers and tools.
pub const TEST_PACKAGES: &[&str] = &["iproute2", "curl", "openssl", "nmap", "tcpdump"];

/// bpf-linker, pinned: 0.13.0 is the release that builds against LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The rustup name of Debian's compiler, used by befund-proxy's build script.
pub const BPF_TOOLCHAIN: &str = "befund-bpf";
const BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none";

pub fn run() -> Result<()> {
    install_packages(&[BUILD_PACKAGES, TEST_PACKAGES].concat())?;
    install_bpf_linker()?;
    link_toolchain()?;
    eprintln!("setup: done; `cargo build` now embeds a freshly built eBPF filter");
    Ok(())
}

/// Installs whichever of `packages` are missing, with apt.
pub fn install_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages present: {}", packages.join(" "));
        return Ok(());
    }

    if !is_root() {
        bail!(
            "setup needs root to install Debian packages; run as root, or install by hand: \
             apt-get install {}",
            missing.join(" ")
        );
    }
    if !succeeds(Command::new("apt-get").arg("--version")) {
        bail!(
            "apt-get not found; this setup supports Debian only. Install by hand: {}",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    command::run(Command::new("apt-get").arg("update").arg("-q"))?;
    command::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

pub fn package_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| status.contains("install ok installed"))
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

fn install_bpf_linker() -> Result<()> {
    let installed = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if installed.contains(BPF_LINKER_VERSION) {
        eprintln!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }

    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    command::run(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22", "--force"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )
}

fn link_toolchain() -> Result<()> {
    if !Path::new(BPF_CORE).is_dir() {
        bail!("{BPF_CORE} is missing; install libstd-rust-web-dev-bpf");
    }
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to link the BPF toolchain")?;
    if toolchains.lines().any(|l| l.starts_with(BPF_TOOLCHAIN)) {
        eprintln!("setup: rustup toolchain {BPF_TOOLCHAIN} present");
        return Ok(());
    }

    eprintln!("setup: linking Debian's compiler in /usr as rustup toolchain {BPF_TOOLCHAIN}");
    command::run(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))
}
