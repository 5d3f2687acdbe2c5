//! The daemon's pid file: written at start-up and locked for the daemon's
//! whole life, so `befundctl reload` can tell a running daemon from a stale
//! file, and a second daemon refuses to start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Why the pid file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Creating, locking, writing or reading failed.
    #[error("cannot {operation} pid file {}: {source}", path.display())]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the lock.
    #[error(
        "another befund-proxy runs (pid {pid}, pid file {}); stop it first or give this one \
         another runtime.pid_file",
        path.display()
    )]
    AlreadyRunning {
        /// Its process id.
        pid: String,
        /// The file.
        path: PathBuf,
    },
    /// No daemon holds the lock.
    #[error("befund-proxy is not running (no daemon holds {}); start it with `systemctl start befund-proxy`", path.display())]
    NotRunning {
        /// The file.
        path: PathBuf,
    },
    /// The file does not hold a process id.
    #[error("pid file {} does not hold a process id: {content:?}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
}

/// The locked pid file; the lock goes with the process (or this value).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    _file: File,
}

impl PidFile {
    /// Creates (or takes over a stale) pid file at `path`, locks it and
    /// writes this process's id. Creates the directory (mode 0755) if needed.
    ///
    /// # Errors
    ///
    /// [`PidFileError::AlreadyRunning`] when another process holds the lock.
    pub fn acquire(path: &Path) -> Result<Self, PidFileError> {
        let io_err = |operation, source| PidFileError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| io_err("create the directory of", e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| io_err("open", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(PidFileError::AlreadyRunning {
                    pid: pid.trim().to_owned(),
                    path: path.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err("write", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // After dropping privileges the directory may no longer be
        // writable; a file left behind is unlocked, hence known as stale.
        let _ = fs::remove_file(&self.path);
    }
}

/// The process id of the daemon that holds the pid file at `path`.
///
/// # Errors
///
/// [`PidFileError::NotRunning`] when the file is missing or no process holds
/// its lock; [`PidFileError::Malformed`] for a file without a pid.
pub fn running_daemon(path: &Path) -> Result<i32, PidFileError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(PidFileError::NotRunning {
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(PidFileError::Io {
                operation: "open",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match file.try_lock_shared() {
        Ok(()) => {
            return Err(PidFileError::NotRunning {
                path: path.to_path_buf(),
            });
        }
        Err(fs::TryLockError::WouldBlock) => {}
        Err(fs::TryLockError::Error(source)) => {
            return Err(PidFileError::Io {
                operation: "check the lock of",
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let mut content = String::new();
    file.read_to_string(&mut content)
        .map_err(|source| PidFileError::Io {
            operation: "read",
            path: path.to_path_buf(),
            source,
        })?;
    content
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| PidFileError::Malformed {
            path: path.to_path_buf(),
            content: content.trim().to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquired_pid_file_names_this_process_and_refuses_a_second_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/befund.pid");
        let held = PidFile::acquire(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        assert_eq!(
            running_daemon(&path).unwrap(),
            i32::try_from(std::process::id()).unwrap()
        );
        let err = PidFile::acquire(&path).unwrap_err();
        assert!(
            matches!(err, PidFileError::AlreadyRunning { ref pid, .. } if *pid == std::process::id().to_string()),
            "{err}"
        );
        drop(held);
        assert!(!path.exists());
    }

    #[test]
    fn unlocked_pid_file_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("befund.pid");
        fs::write(&path, "4242\n").unwrap();
        assert!(matches!(
            running_daemon(&path),
            Err(PidFileError::NotRunning { .. })
        ));
        let taken_over = PidFile::acquire(&path).unwrap();
        assert_eq!(
            fs::read_to_string(taken_over.path()).unwrap().trim(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn missing_pid_file_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let err = running_daemon(&dir.path().join("none.pid")).unwrap_err();
        assert!(err.to_string().contains("is not running"), "{err}");
    }
}
