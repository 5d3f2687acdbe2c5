//! Files the CA writes: created with their final mode from the start, staged
//! next to their destination and moved into place only once everything else
//! has worked, so a failure leaves nothing half-written behind.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::CaError;

/// Mode of private keys and of files that contain them.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of certificates, chains and CRLs, which the proxy reads.
pub const PUBLIC_MODE: u32 = 0o644;

/// Creates `path` and its parents if missing; a directory this creates gets
/// `mode`, an existing one is left alone.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(CaError::io("create directory", path))
}

/// Reads a private key file, refusing one that group or others can access.
///
/// The mode is checked on the opened file, so the check and the read see the
/// same file.
pub fn read_private_key(path: &Path) -> Result<String, CaError> {
    let mut file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CaError::KeyMissing {
            path: path.to_owned(),
        },
        _ => CaError::KeyUnreadable {
            path: path.to_owned(),
            source,
        },
    })?;

    let mode = file
        .metadata()
        .map_err(CaError::io("inspect", path))?
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }

    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|source| CaError::KeyUnreadable {
            path: path.to_owned(),
            source,
        })?;
    Ok(text)
}

/// A file written under a temporary name in its destination's directory.
/// Dropping it before [`StagedFile::place`] removes the temporary file.
#[derive(Debug)]
pub struct StagedFile {
    temp: PathBuf,
    dest: PathBuf,
    placed: bool,
}

impl StagedFile {
    /// Writes `contents` to a new temporary file next to `dest`, created with
    /// `mode` (never wider, whatever the umask) and flushed to disk.
    pub fn write(dest: &Path, contents: &[u8], mode: u32) -> Result<Self, CaError> {
        let temp = temp_name(dest)?;
        let staged = Self {
            temp,
            dest: dest.to_owned(),
            placed: false,
        };

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&staged.temp)
            .map_err(CaError::io("create", &staged.temp))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(CaError::io("write", &staged.temp))?;
        Ok(staged)
    }

    /// Picks the temporary name for `dest` without creating the file, for
    /// a writer that creates it itself (SQLite).
    pub fn reserve(dest: &Path) -> Result<Self, CaError> {
        Ok(Self {
            temp: temp_name(dest)?,
            dest: dest.to_owned(),
            placed: false,
        })
    }

    /// The final path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temporary path the contents are written to.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Moves the file to its destination. With `replace` false an existing
    /// destination is an error and stays untouched.
    pub fn place(mut self, replace: bool) -> Result<PlacedFile, CaError> {
        if replace {
            fs::rename(&self.temp, &self.dest).map_err(CaError::io("replace", &self.dest))?;
        } else {
            // A hard link fails when the destination exists, unlike rename.
            fs::hard_link(&self.temp, &self.dest).map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => CaError::OutputExists {
                    path: self.dest.clone(),
                },
                _ => CaError::io("create", &self.dest)(source),
            })?;
            fs::remove_file(&self.temp).map_err(CaError::io("remove", &self.temp))?;
        }
        self.placed = true;
        sync_parent(&self.dest)?;
        Ok(PlacedFile {
            path: self.dest.clone(),
        })
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.placed {
            // Best effort: the file may already be gone.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A file that [`StagedFile::place`] put at its destination.
#[derive(Debug)]
pub struct PlacedFile {
    path: PathBuf,
}

impl PlacedFile {
    /// Where the file now is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file again, for rolling back a step that failed later.
    pub fn undo(self) {
        // Best effort: a rollback that cannot remove the file has nothing
        // better to do than report the original error.
        let _ = fs::remove_file(&self.path);
    }
}

/// Places every staged file; if one fails, the ones already placed are
/// removed again. Destinations must be new unless `replace` is set.
pub fn place_all(staged: Vec<StagedFile>, replace: bool) -> Result<Vec<PlacedFile>, CaError> {
    let mut placed = Vec::with_capacity(staged.len());
    for file in staged {
        match file.place(replace) {
            Ok(done) => placed.push(done),
            Err(e) => {
                placed.into_iter().for_each(PlacedFile::undo);
                return Err(e);
            }
        }
    }
    Ok(placed)
}

/// `.NAME.tmp-PID-RANDOM` in the destination's directory, so the final move
/// is a rename within one file system.
fn temp_name(dest: &Path) -> Result<PathBuf, CaError> {
    let name = dest
        .file_name()
        .ok_or_else(|| {
            CaError::invalid(
                "output path",
                format!("{} has no file name", dest.display()),
            )
        })?
        .to_string_lossy();
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).map_err(|e| CaError::Io {
        action: "draw random bytes for a temporary name next to",
        path: dest.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let temp = format!(".{name}.tmp-{}-{nonce}", std::process::id());
    Ok(dest.with_file_name(temp))
}

/// Flushes the directory entry of a newly placed file.
fn sync_parent(path: &Path) -> Result<(), CaError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(CaError::io("sync directory", parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn staged_private_file_has_mode_0600_before_and_after_placing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("leaf.key");

        let staged = StagedFile::write(&dest, b"secret", PRIVATE_MODE).unwrap();
        assert_eq!(mode_of(&staged.temp), 0o600);
        let placed = staged.place(false).unwrap();

        assert_eq!(mode_of(placed.path()), 0o600);
        assert_eq!(fs::read(&dest).unwrap(), b"secret");
    }

    #[test]
    fn dropped_staged_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("leaf.crt");

        drop(StagedFile::write(&dest, b"x", PUBLIC_MODE).unwrap());

        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn placing_without_replace_keeps_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ca.key");
        fs::write(&dest, b"old").unwrap();

        let err = StagedFile::write(&dest, b"new", PRIVATE_MODE)
            .unwrap()
            .place(false)
            .unwrap_err();

        assert!(matches!(err, CaError::OutputExists { .. }), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn place_all_undoes_earlier_files_when_a_later_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.crt");
        let second = dir.path().join("b.key");
        fs::write(&second, b"taken").unwrap();

        let staged = vec![
            StagedFile::write(&first, b"a", PUBLIC_MODE).unwrap(),
            StagedFile::write(&second, b"b", PRIVATE_MODE).unwrap(),
        ];
        assert!(place_all(staged, false).is_err());

        assert!(!first.exists());
        assert_eq!(fs::read(&second).unwrap(), b"taken");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_key_readable_by_others_is_refused_with_chmod_hint() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        fs::write(&key, b"k").unwrap();
        fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();

        let err = read_private_key(&key).unwrap_err();

        assert!(matches!(err, CaError::KeyPermissions { mode: 0o644, .. }));
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", key.display()))
        );
    }

    #[test]
    fn private_key_with_mode_0600_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        StagedFile::write(&key, b"k", PRIVATE_MODE)
            .unwrap()
            .place(false)
            .unwrap();

        assert_eq!(read_private_key(&key).unwrap(), "k");
    }

    #[test]
    fn missing_private_key_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();

        let err = read_private_key(&dir.path().join("ca.key")).unwrap_err();

        assert!(matches!(err, CaError::KeyMissing { .. }));
    }
}
