//! Work directories and the files a test bed writes: temporary directories
//! removed on drop, private files for keys and secrets, and finding the one
//! file of a kind that a tool wrote.

use std::{
    fs::{self, Permissions},
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::unique_name;

/// A work directory, removed with everything in it on drop unless
/// [`TempDir::keep`] was called.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates a fresh directory with a [`unique_name`] under the system's
    /// temporary directory.
    pub fn unique(prefix: &str) -> Result<Self> {
        Self::create(std::env::temp_dir().join(unique_name(prefix)))
    }

    /// Creates `path` (and its parents) and takes charge of it.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        fs::create_dir_all(&path)
            .with_context(|| format!("failed to create {}", path.display()))?;
        Ok(Self { path, keep: false })
    }

    /// Like [`TempDir::create`], with mode 0700: for directories that hold
    /// private keys.
    pub fn create_private(path: impl Into<PathBuf>) -> Result<Self> {
        let dir = Self::create(path)?;
        fs::set_permissions(&dir.path, Permissions::from_mode(0o700))
            .with_context(|| format!("failed to restrict {}", dir.path.display()))?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place on drop, for inspecting a run.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Whether the directory stays after drop.
    pub fn is_kept(&self) -> bool {
        self.keep
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes `contents` to a new file at `path` with mode 0600, for keys,
/// secrets and passwords. Fails if the file exists, so a secret is never
/// written into a file that someone else could already have open.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    file.write_all(contents.as_ref())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// The one file with extension `ext` in `dir`. `befundctl` names the files
/// it issues after common name and serial, so a test finds them this way.
pub fn only_file(dir: &Path, ext: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("failed to list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one .{ext} file in {}, found {found:?}",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let dir = TempDir::unique("tdt").unwrap();
        let path = dir.path().to_path_buf();
        fs::write(path.join("file"), "x").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn kept_temp_dir_stays_after_drop() {
        let mut dir = TempDir::unique("tdk").unwrap();
        dir.keep();
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(path.is_dir());
        fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn private_temp_dir_has_mode_0700() {
        let path = std::env::temp_dir().join(unique_name("tdp"));
        let dir = TempDir::create_private(&path).unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn private_file_has_mode_0600_and_the_contents() {
        let dir = TempDir::unique("wpm").unwrap();
        let path = dir.path().join("secret");
        write_private(&path, "s3cret").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "s3cret");
    }

    #[test]
    fn private_file_refuses_to_overwrite() {
        let dir = TempDir::unique("wpo").unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "before").unwrap();
        assert!(write_private(&path, "after").is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "before");
    }

    #[test]
    fn only_file_finds_the_single_file_with_the_extension() {
        let dir = TempDir::unique("ofs").unwrap();
        fs::write(dir.path().join("ARZT0001-1f.crt"), "").unwrap();
        fs::write(dir.path().join("ARZT0001-1f.key"), "").unwrap();
        assert_eq!(
            only_file(dir.path(), "crt").unwrap(),
            dir.path().join("ARZT0001-1f.crt")
        );
    }

    #[test]
    fn only_file_fails_on_none_or_several() {
        let dir = TempDir::unique("ofn").unwrap();
        assert!(only_file(dir.path(), "crt").is_err());
        fs::write(dir.path().join("a.crt"), "").unwrap();
        fs::write(dir.path().join("b.crt"), "").unwrap();
        let error = only_file(dir.path(), "crt").unwrap_err().to_string();
        assert!(error.contains("expected one .crt file"), "{error}");
    }
}
