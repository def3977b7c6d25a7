//! The SQLite state file while a process has it open.
//!
//! SQLite keeps writing into a file that was deleted or replaced under it (its connections hold the
//! old inode, and the `-wal` beside the path), so the writes are lost and the next process at that
//! path builds a new file next to a write-ahead log that is not its own (a corrupt state). SQLite's
//! own advice ("How To Corrupt An SQLite Database File", §2.4 and §3.2) is never to unlink or rename
//! a database that is open. A [`StateFile`] is what this process opened: its device and inode,
//! checked before every statement and again before every COMMIT; once the path names another file
//! (or none), the store refuses everything from then on ([`StateError::Vanished`]), for good.
//!
//! It also decides which pooled connections are reused: after a write failed (a full disk, a file
//! made read-only, a commit that did not go through) every connection opened before the failure is
//! closed at its next checkout instead of reused, so one opened read-only, or left in a bad state,
//! never outlives the cause and the store recovers by itself once the disk has space or the file is
//! writable again.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Result, StateError};

/// The SQLite state file this process opened (see the module documentation).
#[derive(Debug)]
pub(crate) struct StateFile {
    path: PathBuf,
    /// Device and inode of the file when it was opened.
    id: (u64, u64),
    /// Why the path no longer names the file opened, once seen (never cleared).
    lost: OnceLock<String>,
    /// The clock connection ages are measured against.
    base: Instant,
    /// Connections opened before this many milliseconds after `base` are closed, not reused.
    reopen_before_ms: AtomicU64,
}

impl StateFile {
    /// The file `path` names now.
    pub(crate) fn at(path: &Path) -> std::io::Result<StateFile> {
        let meta = std::fs::metadata(path)?;
        Ok(StateFile {
            path: path.to_path_buf(),
            id: identity(&meta),
            lost: OnceLock::new(),
            base: Instant::now(),
            reopen_before_ms: AtomicU64::new(0),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the path still names the file opened: [`StateError::Vanished`] once it was deleted,
    /// moved away or replaced (and from then on, whatever the path names later).
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(why) = self.lost.get() {
            return Err(self.vanished(why));
        }
        let why = match std::fs::metadata(&self.path) {
            Ok(meta) if identity(&meta) == self.id => return Ok(()),
            Ok(meta) => {
                let (dev, ino) = identity(&meta);
                format!(
                    "it was replaced by another file (the path now names inode {ino} on device {dev}; this process opened inode {} on device {})",
                    self.id.1, self.id.0
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "it was deleted or moved away".to_string(),
            // Not a sign the file is gone (too many open files, a permission on a parent directory):
            // refused now, checked again next time.
            Err(e) => {
                return Err(StateError::Create {
                    path: self.path.clone(),
                    source: std::io::Error::new(e.kind(), format!("cannot check that the state file is still in place: {e}")),
                });
            }
        };
        let why = self.lost.get_or_init(|| why);
        Err(self.vanished(why))
    }

    fn vanished(&self, why: &str) -> StateError {
        StateError::Vanished { path: self.path.clone(), why: why.to_string() }
    }

    /// Closes, at their next checkout, every connection opened until now (after a write failed).
    pub(crate) fn reopen_connections(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.reopen_before_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether a pooled connection of this `age` may be reused (it was opened after the last failed write).
    pub(crate) fn keep(&self, age: Duration) -> bool {
        let opened = self.base.elapsed().saturating_sub(age);
        u64::try_from(opened.as_millis()).unwrap_or(u64::MAX) >= self.reopen_before_ms.load(Ordering::Relaxed)
    }
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// Why this process cannot write `path` or create files in its directory (`None`: it can): a state
/// opened read-only would fail every write, and its connections would stay read-only after the
/// permission is fixed.
pub(crate) fn not_writable(path: &Path) -> Option<String> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Err(e) = writable(path) {
        return Some(format!("the file is not writable by this process ({e})"));
    }
    if let Err(e) = writable(dir) {
        return Some(format!(
            "its directory {} is not writable by this process ({e}); SQLite creates the state's -wal and -shm files there",
            dir.display()
        ));
    }
    None
}

/// access(2) with W_OK: what this process may write, as the kernel decides it (its user, groups and
/// ACLs, a read-only mount; root too).
#[cfg(unix)]
fn writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(unix))]
fn writable(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path)?.permissions().readonly() { Err(std::io::Error::other("read-only")) } else { Ok(()) }
}

/// The `-wal` and `-shm` files beside `path` (which does not exist): the write-ahead log of a state
/// file that was deleted or moved. A new database there would read them as its own.
pub(crate) fn leftovers(path: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm"].into_iter().map(|suffix| super::sidecar(path, suffix)).filter(|p| std::fs::symlink_metadata(p).is_ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_replaced_or_removed_is_lost_for_good_and_connections_opened_before_a_failure_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, b"a").unwrap();
        let file = StateFile::at(&path).unwrap();
        file.check().unwrap();
        // Rewritten in place: the same file.
        std::fs::write(&path, b"b").unwrap();
        file.check().unwrap();
        // Replaced (a new inode renamed over it).
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"c").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let err = file.check().unwrap_err();
        assert!(matches!(&err, StateError::Vanished { why, .. } if why.contains("replaced by another file")), "{err}");
        // Lost for good: the same answer whatever the path names later.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(file.check(), Err(StateError::Vanished { why, .. }) if why.contains("replaced")));

        let gone = dir.path().join("gone.db");
        std::fs::write(&gone, b"a").unwrap();
        let file = StateFile::at(&gone).unwrap();
        std::fs::remove_file(&gone).unwrap();
        let err = file.check().unwrap_err();
        assert!(err.to_string().contains("deleted or moved away") && err.to_string().contains("gone.db"), "{err}");

        assert!(file.keep(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        file.reopen_connections();
        assert!(!file.keep(Duration::from_millis(3)), "opened before the failure");
        assert!(file.keep(Duration::ZERO), "opened after it");
    }
}
