//! The config drive the lab provides to the appliance: a FAT file system
//! labelled BEFUNDCFG, made from a directory tree with mkfs.vfat and mtools
//! (no mounts). `images/scripts/befund-import-config` describes the layout.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::runlog::RunLog;

/// The label the appliance looks for.
pub const LABEL: &str = "BEFUNDCFG";
/// Free room on the drive beyond its contents.
const SPARE_MIB: u64 = 16;

/// A config drive being put together in a directory.
pub struct ConfigDrive {
    tree: PathBuf,
}

impl ConfigDrive {
    /// Starts an empty tree in `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let tree = dir.join("config-drive");
        fs::create_dir_all(&tree)
            .with_context(|| format!("failed to create {}", tree.display()))?;
        Ok(Self { tree })
    }

    /// Writes `text` to `relative` on the drive.
    pub fn write(&self, relative: &str, text: &str) -> Result<()> {
        let path = self.tree.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, text).with_context(|| format!("failed to write {}", path.display()))
    }

    /// Copies the file `from` to `relative` on the drive.
    pub fn copy(&self, from: &Path, relative: &str) -> Result<()> {
        let path = self.tree.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(from, &path)
            .with_context(|| format!("failed to copy {} to the config drive", from.display()))?;
        Ok(())
    }

    /// Makes the FAT image at `image`.
    pub fn build(&self, log: &mut RunLog, image: &Path) -> Result<()> {
        let content_mib = tree_bytes(&self.tree)?.div_ceil(1024 * 1024);
        let _ = fs::remove_file(image);
        log.run(
            Command::new("mkfs.vfat")
                .args(["-n", LABEL, "-C"])
                .arg(image)
                .arg(((content_mib + SPARE_MIB) * 1024).to_string()),
        )?;
        let mut entries: Vec<PathBuf> = fs::read_dir(&self.tree)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        if entries.is_empty() {
            return Ok(());
        }
        log.run(
            Command::new("mcopy")
                .arg("-s")
                .arg("-i")
                .arg(image)
                .args(&entries)
                .arg("::/")
                .env("MTOOLS_SKIP_CHECK", "1"),
        )
    }
}

fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// A systemd-networkd file giving the NIC with `mac` a static `address`.
pub fn network_file(mac: &str, address: &str) -> String {
    format!(
        "[Match]\nMACAddress={mac}\n\n[Network]\nAddress={address}\n\
         LinkLocalAddressing=no\nIPv6AcceptRA=no\nLLDP=no\nEmitLLDP=no\n"
    )
}
