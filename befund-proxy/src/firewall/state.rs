//! The state file: rules added with `befundctl fw`, a lockdown override and
//! the counter slots of all rules, kept across restarts and reboots.
//!
//! Writers take an exclusive lock on `<state_file>.lock` for the whole
//! read-modify-write, and replace the file atomically (temporary file, fsync,
//! rename), so a crash leaves either the old or the new state.
//!
//! The lock and the state file are mode 0660, whatever the umask: the daemon
//! creates them as root at start and must still lock and replace them after
//! it dropped to `runtime.user`. The appliance shares the state directory
//! with the daemon's group for that (setgid, group-writable); a directory
//! that belongs to the daemon's user works too (see `adopt_directory_owner`).

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{rules::Rule, slots::SlotTable};

/// Format version written into the file.
const VERSION: u32 = 1;

/// What the state file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallState {
    /// Rules added with `befundctl fw`, with their comments.
    pub rules: BTreeMap<Rule, Option<String>>,
    /// Lockdown set with `befundctl fw lockdown on|off`; `None` follows the
    /// configuration.
    pub lockdown: Option<bool>,
    /// Counter slots of every rule, the configuration's included.
    pub slots: SlotTable,
}

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or locking failed.
    #[error("cannot {operation} firewall state file {}: {source}; check firewall.state_file and its directory's permissions", path.display())]
    Io {
        /// What was attempted.
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a state file of this version.
    #[error("firewall state file {} is damaged ({message}); fix or remove it (rules added with befundctl are then lost)", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// The file's layout on disk.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    #[serde(default)]
    lockdown: Option<bool>,
    #[serde(default)]
    rules: Vec<StoredRule>,
    #[serde(default)]
    slots: Vec<StoredSlot>,
}

#[derive(Serialize, Deserialize)]
struct StoredRule {
    #[serde(flatten)]
    rule: Rule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredSlot {
    slot: u32,
    #[serde(flatten)]
    rule: Rule,
}

/// An exclusive lock on a state file, released on drop.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    _file: File,
}

impl StateLock {
    /// Waits for the lock of the state file at `path`, creating its directory
    /// (mode 0750) if needed.
    ///
    /// # Errors
    ///
    /// [`StateError::Io`] when the directory or lock file cannot be created.
    pub fn acquire(path: &Path) -> Result<Self, StateError> {
        let io_err = |operation, source| StateError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| io_err("create the directory of", e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(STATE_FILE_MODE)
            .open(lock_path(path))
            .map_err(|e| io_err("create the lock of", e))?;
        share_with_group(&file).map_err(|e| io_err("share the lock of", e))?;
        adopt_directory_owner(&file, path).map_err(|e| io_err("hand over the lock of", e))?;
        file.lock().map_err(|e| io_err("lock", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// Reads the state; a missing file is the empty state.
    ///
    /// # Errors
    ///
    /// [`StateError`] when the file cannot be read or parsed.
    pub fn load(&self) -> Result<FirewallState, StateError> {
        load(&self.path)
    }

    /// Replaces the state file with `state`.
    ///
    /// # Errors
    ///
    /// [`StateError::Io`] when the file cannot be written.
    pub fn save(&self, state: &FirewallState) -> Result<(), StateError> {
        save(&self.path, state)
    }
}

/// Mode of the lock and the state file: the owner and the directory's group
/// may read and write, nobody else may read.
const STATE_FILE_MODE: u32 = 0o660;

/// Sets [`STATE_FILE_MODE`] on a file this process just created or owns;
/// unlike the mode given to `open`, the umask does not narrow it. A file
/// that belongs to someone else (the daemon's user, written earlier) keeps
/// its mode.
fn share_with_group(file: &File) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    let meta = file.metadata()?;
    if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o777 == STATE_FILE_MODE {
        return Ok(());
    }
    file.set_permissions(fs::Permissions::from_mode(STATE_FILE_MODE))
}

/// When root writes into a state directory that belongs to another user
/// (the daemon's `runtime.user`), the new file goes to that user too, so the
/// daemon can still lock, read and replace it after dropping privileges.
fn adopt_directory_owner(file: &File, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;

    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let meta = fs::metadata(dir)?;
    if meta.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()))
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Reads the state at `path` without locking (for read-only views); a missing
/// file is the empty state.
///
/// # Errors
///
/// [`StateError`] when the file cannot be read or parsed.
pub fn load(path: &Path) -> Result<FirewallState, StateError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FirewallState::default()),
        Err(source) => {
            return Err(StateError::Io {
                operation: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let format_err = |message: String| StateError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file: StateFile = serde_json::from_str(&text).map_err(|e| format_err(e.to_string()))?;
    if file.version != VERSION {
        return Err(format_err(format!(
            "version {} is not the supported version {VERSION}",
            file.version
        )));
    }
    Ok(FirewallState {
        rules: file
            .rules
            .into_iter()
            .map(|r| (r.rule, r.comment))
            .collect(),
        lockdown: file.lockdown,
        slots: SlotTable::from_entries(file.slots.into_iter().map(|s| (s.rule, s.slot))),
    })
}

fn save(path: &Path, state: &FirewallState) -> Result<(), StateError> {
    let file = StateFile {
        version: VERSION,
        lockdown: state.lockdown,
        rules: state
            .rules
            .iter()
            .map(|(rule, comment)| StoredRule {
                rule: *rule,
                comment: comment.clone(),
            })
            .collect(),
        slots: state
            .slots
            .iter()
            .map(|(rule, slot)| StoredSlot { slot, rule: *rule })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).expect("state serialises to JSON");
    text.push('\n');

    let io_err = |operation, source| StateError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(STATE_FILE_MODE)
        .open(&tmp)
        .map_err(|e| io_err("write", e))?;
    share_with_group(&out).map_err(|e| io_err("share", e))?;
    adopt_directory_owner(&out, path).map_err(|e| io_err("hand over", e))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| io_err("write", e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("replace", e))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("sync the directory of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::firewall::rules::{AllowRule, Protocol};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("befund-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn sample() -> FirewallState {
        let mut state = FirewallState {
            lockdown: Some(true),
            ..Default::default()
        };
        let ssh = Rule::Allow(AllowRule {
            source: "198.51.100.0/24".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: NonZeroU16::new(22).unwrap(),
        });
        let block = Rule::Block {
            source: "2001:db8::/32".parse().unwrap(),
        };
        state.rules.insert(ssh, Some("admin".into()));
        state.rules.insert(block, None);
        state.slots.assign(block).unwrap();
        state.slots.assign(ssh).unwrap();
        state
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("sub/firewall.json");
        let lock = StateLock::acquire(&path).unwrap();
        assert_eq!(lock.load().unwrap(), FirewallState::default());

        let state = sample();
        lock.save(&state).unwrap();
        assert_eq!(lock.load().unwrap(), state);
        assert!(!dir.join("sub/firewall.json.tmp").exists());

        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"kind\": \"allow\""), "{text}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn lock_and_state_file_are_shared_with_the_group() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = temp_dir("mode");
        let path = dir.join("firewall.json");
        let lock = StateLock::acquire(&path).unwrap();
        lock.save(&sample()).unwrap();
        for file in [path.clone(), lock_path(&path)] {
            let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o660, "{}", file.display());
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_narrowed_by_the_umask_is_widened_to_the_group() {
        use std::os::unix::fs::PermissionsExt as _;

        // What open(0660) gives under the daemon unit's umask 0077.
        let dir = temp_dir("umask");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("firewall.json.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        share_with_group(&file).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn damaged_state_file_is_reported_with_the_fix() {
        let dir = temp_dir("damaged");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("firewall.json");
        fs::write(&path, "{\"version\": 1, \"rules\": [{\"kind\": \"open\"}]}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, StateError::Format { .. }));
        assert!(err.to_string().contains("fix or remove it"), "{err}");

        fs::write(&path, "{\"version\": 9}").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("version 9"));
        fs::remove_dir_all(dir).unwrap();
    }
}
