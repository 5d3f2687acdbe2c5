//! The GPT/UEFI disk, assembled from files without loop mounts: an ESP made
//! with mkfs.vfat and mtools, a root file system made with `mkfs.ext4 -d`,
//! a partition table written by sfdisk into a sparse file, and both file
//! systems copied into place with `dd conv=notrunc`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::appliance::{BootFiles, PartitionIds};
use crate::{command::output, runlog::RunLog};

const MIB: u64 = 1024 * 1024;
const SECTOR: u64 = 512;
/// The first partition starts at 1 MiB, the usual alignment.
const FIRST_PARTITION_MIB: u64 = 1;
/// Room for the backup GPT at the end of the disk.
const GPT_TAIL_MIB: u64 = 1;
/// The ESP holds one kernel and initramfs; updates replace the whole image.
const MIN_ESP_MIB: u64 = 128;
/// Free space on the root file system for logs and state.
const ROOT_FREE_MIB: u64 = 1024;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// "Linux root (x86-64)" from the Discoverable Partitions Specification.
const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// Random ids for the partitions, from the kernel's generator.
pub fn new_ids() -> Result<PartitionIds> {
    Ok(PartitionIds {
        esp: random_uuid()?,
        root: random_uuid()?,
    })
}

fn random_uuid() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("failed to read a random uuid from the kernel")?
        .trim()
        .to_owned())
}

/// Inputs of the disk.
pub struct DiskParts<'a> {
    /// The finished root file system tree.
    pub root: &'a Path,
    /// Kernel, initramfs and boot loader.
    pub boot: &'a BootFiles,
    /// The boot loader's configuration (`images/boot`).
    pub boot_config: &'a Path,
    /// Partition ids, as written into fstab.
    pub ids: &'a PartitionIds,
    /// Scratch directory for the file system images.
    pub work: &'a Path,
}

/// Builds the raw disk at `disk` and returns its size in bytes.
pub fn assemble(log: &mut RunLog, parts: &DiskParts<'_>, disk: &Path) -> Result<u64> {
    let esp = parts.work.join("esp.img");
    let rootfs = parts.work.join("root.img");
    let esp_mib = esp_size_mib(parts.boot)?;
    let root_mib = tree_size_mib(parts.root)? * 5 / 4 + ROOT_FREE_MIB;

    build_esp(log, parts, &esp, esp_mib)?;
    log.run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "befund-root", "-d"])
            .arg(parts.root)
            .arg(&rootfs)
            .arg(format!("{root_mib}M")),
    )?;

    let total_mib = FIRST_PARTITION_MIB + esp_mib + root_mib + GPT_TAIL_MIB;
    let _ = fs::remove_file(disk);
    log.run(
        Command::new("truncate")
            .arg(format!("--size={total_mib}M"))
            .arg(disk),
    )?;
    let table = partition_table(parts.ids, esp_mib, root_mib);
    log.note(&table);
    let table_file = parts.work.join("partitions.sfdisk");
    fs::write(&table_file, &table).context("failed to write the partition table script")?;
    log.run(
        Command::new("sh")
            .arg("-c")
            .arg("sfdisk --quiet --no-reread --no-tell-kernel \"$1\" < \"$2\"")
            .args(["sh"])
            .arg(disk)
            .arg(&table_file),
    )?;
    copy_into(log, &esp, disk, FIRST_PARTITION_MIB)?;
    copy_into(log, &rootfs, disk, FIRST_PARTITION_MIB + esp_mib)?;
    fs::remove_file(&esp).ok();
    fs::remove_file(&rootfs).ok();
    Ok(total_mib * MIB)
}

fn esp_size_mib(boot: &BootFiles) -> Result<u64> {
    let mut bytes = 0;
    for file in [&boot.kernel, &boot.initrd, &boot.loader] {
        bytes += fs::metadata(file)
            .with_context(|| format!("failed to stat {}", file.display()))?
            .len();
    }
    // Twice the content leaves room for FAT overhead and a larger initramfs.
    Ok((2 * bytes).div_ceil(MIB).max(MIN_ESP_MIB))
}

fn tree_size_mib(root: &Path) -> Result<u64> {
    let du = output(Command::new("du").args(["-s", "--block-size=1M"]).arg(root))?;
    du.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cannot read the size of {} from du: {du}", root.display()))
}

fn build_esp(log: &mut RunLog, parts: &DiskParts<'_>, esp: &Path, esp_mib: u64) -> Result<()> {
    let _ = fs::remove_file(esp);
    log.run(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "ESP", "-C"])
            .arg(esp)
            .arg((esp_mib * 1024).to_string()),
    )?;
    let mtools = |program: &str| {
        let mut cmd = Command::new(program);
        cmd.arg("-i").arg(esp).env("MTOOLS_SKIP_CHECK", "1");
        cmd
    };
    log.run(mtools("mmd").args([
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/systemd",
        "::/loader",
        "::/loader/entries",
    ]))?;

    let entry = fs::read_to_string(parts.boot_config.join("befund.conf.in"))
        .context("failed to read images/boot/befund.conf.in")?
        .replace("@ROOT_PARTUUID@", &parts.ids.root);
    let entry_file = parts.work.join("befund.conf");
    fs::write(&entry_file, entry).context("failed to write the boot loader entry")?;

    let copies: [(PathBuf, &str); 6] = [
        (parts.boot.loader.clone(), "::/EFI/BOOT/BOOTX64.EFI"),
        (
            parts.boot.loader.clone(),
            "::/EFI/systemd/systemd-bootx64.efi",
        ),
        (
            parts.boot_config.join("loader.conf"),
            "::/loader/loader.conf",
        ),
        (entry_file, "::/loader/entries/befund.conf"),
        (parts.boot.kernel.clone(), "::/vmlinuz"),
        (parts.boot.initrd.clone(), "::/initrd.img"),
    ];
    for (from, to) in copies {
        log.run(mtools("mcopy").arg(&from).arg(to))?;
    }
    Ok(())
}

fn partition_table(ids: &PartitionIds, esp_mib: u64, root_mib: u64) -> String {
    let sectors = |mib: u64| mib * MIB / SECTOR;
    let esp_start = sectors(FIRST_PARTITION_MIB);
    let root_start = esp_start + sectors(esp_mib);
    format!(
        "label: gpt\n\
         start={esp_start}, size={}, type={ESP_TYPE}, uuid={}, name=\"ESP\"\n\
         start={root_start}, size={}, type={ROOT_TYPE}, uuid={}, name=\"befund-root\"\n",
        sectors(esp_mib),
        ids.esp,
        sectors(root_mib),
        ids.root,
    )
}

fn copy_into(log: &mut RunLog, image: &Path, disk: &Path, offset_mib: u64) -> Result<()> {
    log.run(
        Command::new("dd")
            .arg(format!("if={}", image.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={offset_mib}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_table_places_the_root_right_after_the_esp() {
        let ids = PartitionIds {
            esp: "e".into(),
            root: "r".into(),
        };
        let table = partition_table(&ids, 128, 1024);
        assert!(table.contains("start=2048, size=262144, type=C12A7328"));
        assert!(table.contains("start=264192, size=2097152, type=4F68BCE3"));
    }
}
