//! The host's side of the image build and the VM test: which Debian packages
//! they need, and where the Debian mirror is.
//!
//! QEMU comes from bookworm-backports because the machine's preinstalled
//! `qemu-utils` is the backports build and conflicts with bookworm's
//! `qemu-system-x86`.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    runlog::RunLog,
    setup::{is_root, package_installed},
};

/// Tools for building the image without loop mounts.
const IMAGE_PACKAGES: &[&str] = &[
    "debootstrap",
    "mtools",
    "dosfstools",
    "fdisk",
    "e2fsprogs",
    "qemu-utils",
    "ovmf",
];
/// Peers and probes of the VM test: namespaces and TAPs, ping, bash's
/// /dev/tcp, the lab-side HTTP service.
const VM_TEST_PACKAGES: &[&str] = &["iproute2", "iputils-ping", "bash", "python3", "curl"];
/// From bookworm-backports (see the module comment).
const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86"];
const BACKPORTS_SUITE: &str = "bookworm-backports";
/// Written when the host's apt sources lack the backports suite.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/befund-backports.sources";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// Where the host's apt takes Debian from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirrors {
    /// Serves bookworm, bookworm-updates (and bookworm-backports).
    pub debian: String,
    /// Serves bookworm-security.
    pub security: String,
}

/// Installs the missing host tools, saying what it installs.
pub fn ensure(log: &mut RunLog) -> Result<()> {
    let missing: Vec<&str> = IMAGE_PACKAGES
        .iter()
        .chain(VM_TEST_PACKAGES)
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    let missing_backports: Vec<&str> = BACKPORTS_PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() && missing_backports.is_empty() {
        log.say("host tools present");
        return Ok(());
    }
    if !is_root() {
        bail!("installing host tools needs root; run `cargo xtask` as root");
    }

    let mirrors = host_mirrors()?;
    if !missing_backports.is_empty() {
        ensure_backports_source(log, &mirrors)?;
    }
    log.run(Command::new("apt-get").args(["update", "-q"]))?;
    if !missing.is_empty() {
        log.say(&format!("installing host tools: {}", missing.join(" ")));
        log.run(apt_install().args(&missing))?;
    }
    if !missing_backports.is_empty() {
        log.say(&format!(
            "installing host tools from {BACKPORTS_SUITE}: {}",
            missing_backports.join(" ")
        ));
        log.run(
            apt_install()
                .args(["-t", BACKPORTS_SUITE])
                .args(&missing_backports),
        )?;
    }
    Ok(())
}

fn apt_install() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-q", "--no-install-recommends"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn ensure_backports_source(log: &mut RunLog, mirrors: &Mirrors) -> Result<()> {
    if apt_source_texts()?
        .iter()
        .any(|text| text.contains(BACKPORTS_SUITE))
    {
        return Ok(());
    }
    log.say(&format!(
        "adding {BACKPORTS_SUITE} from {} to {BACKPORTS_SOURCE}",
        mirrors.debian
    ));
    let source = format!(
        "# Added by `cargo xtask image`: QEMU for the appliance's VM test.\n\
         Types: deb\nURIs: {}\nSuites: {BACKPORTS_SUITE}\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        mirrors.debian
    );
    fs::write(BACKPORTS_SOURCE, source)
        .with_context(|| format!("failed to write {BACKPORTS_SOURCE}"))
}

/// The Debian mirrors configured in the host's apt sources.
pub fn host_mirrors() -> Result<Mirrors> {
    let texts = apt_source_texts()?;
    Ok(mirrors_from_sources(&texts.join("\n")))
}

fn apt_source_texts() -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let list = Path::new("/etc/apt/sources.list");
    if list.exists() {
        texts.push(fs::read_to_string(list).context("failed to read /etc/apt/sources.list")?);
    }
    let dir = Path::new("/etc/apt/sources.list.d");
    if dir.is_dir() {
        let mut paths: Vec<_> = fs::read_dir(dir)
            .context("failed to list /etc/apt/sources.list.d")?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|ext| ext == "sources" || ext == "list")
            })
            .collect();
        paths.sort();
        for path in paths {
            texts.push(
                fs::read_to_string(&path)
                    .with_context(|| format!("failed to read {}", path.display()))?,
            );
        }
    }
    Ok(texts)
}

/// Finds the URIs that serve `bookworm` and `bookworm-security`, in both the
/// one-line (`deb URI SUITE ...`) and the deb822 (`URIs:`/`Suites:`) formats.
fn mirrors_from_sources(text: &str) -> Mirrors {
    let mut debian = None;
    let mut security = None;
    let mut note = |uri: &str, suites: &[&str]| {
        let uri = uri.trim_end_matches('/').to_owned();
        if debian.is_none() && suites.contains(&"bookworm") {
            debian = Some(uri.clone());
        }
        if security.is_none() && suites.contains(&"bookworm-security") {
            security = Some(uri);
        }
    };

    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) {
            let suites: Vec<&str> = suites.split_whitespace().collect();
            for uri in uris.split_whitespace() {
                note(uri, &suites);
            }
        }
    }
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"deb") {
            continue;
        }
        // Skip an options block: deb [signed-by=...] URI SUITE ...
        let rest: Vec<&str> = match words.iter().position(|w| w.ends_with(']')) {
            Some(end) if words[1].starts_with('[') => words[end + 1..].to_vec(),
            _ => words[1..].to_vec(),
        };
        if let [uri, suite, ..] = rest.as_slice() {
            note(uri, &[suite]);
        }
    }

    Mirrors {
        debian: debian.unwrap_or_else(|| DEFAULT_MIRROR.to_owned()),
        security: security.unwrap_or_else(|| DEFAULT_SECURITY_MIRROR.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_deb822_sources_take_the_uris_serving_each_suite() {
        let text = "Types: deb\nURIs: http://mirror.example/debian/\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirrors_from_sources(text),
            Mirrors {
                debian: "http://mirror.example/debian".into(),
                security: "http://mirror.example/debian-security".into(),
            }
        );
    }

    #[test]
    fn mirrors_from_one_line_sources_skip_the_options_block() {
        let text = "deb [signed-by=/k.gpg arch=amd64] http://m.example/debian bookworm main\n\
                    deb http://s.example/debian-security bookworm-security main\n";
        assert_eq!(
            mirrors_from_sources(text),
            Mirrors {
                debian: "http://m.example/debian".into(),
                security: "http://s.example/debian-security".into(),
            }
        );
    }

    #[test]
    fn mirrors_without_debian_sources_fall_back_to_the_default_mirror() {
        let text = "deb https://packages.example/apt cloud-sdk main\n";
        assert_eq!(mirrors_from_sources(text).debian, DEFAULT_MIRROR);
    }
}
