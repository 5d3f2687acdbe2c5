//! bpf filesystems for the WAN filter's pins. `ip netns exec` remounts
//! `/sys` for the program it runs, hiding `/sys/fs/bpf`, so a test bed
//! mounts its own bpffs on a directory that stays visible.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::{command, files::TempDir};

/// A bpffs mount, unmounted on drop (which also drops every pin in it).
#[derive(Debug)]
pub struct BpfFs {
    path: PathBuf,
    /// The mount point, when this guard made it; removed after unmounting.
    _dir: Option<TempDir>,
}

impl BpfFs {
    /// Mounts a bpffs on `path`, creating the directory. The directory
    /// itself stays after drop; it usually lies in a work directory that
    /// goes with it.
    pub fn mount(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        std::fs::create_dir_all(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        command::run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path))?;
        Ok(Self { path, _dir: None })
    }

    /// Mounts a bpffs on a fresh temporary directory, removed on drop.
    pub fn unique() -> Result<Self> {
        let dir = TempDir::unique("bfs")?;
        let mut bpffs = Self::mount(dir.path())?;
        bpffs._dir = Some(dir);
        Ok(bpffs)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).output();
        if !unmounted.is_ok_and(|out| out.status.success()) {
            eprintln!("cleanup: cannot unmount {}", self.path.display());
        }
    }
}
