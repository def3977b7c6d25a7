//! What a stack's watcher loaded: the manifest file and the Lambda code it names, with a cheap
//! fingerprint of both, so a pass picks up an edit of either without a restart, and remediation can
//! tell that what it loaded is still what is on disk.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::manifest::Manifest;

/// Bytes of file content a fingerprint reads; past this, files count by their metadata alone.
pub const CONTENT_BUDGET: u64 = 8 * 1024 * 1024;

/// A fingerprint of the code trees a manifest names: each file's path, size, modification and status
/// change times and inode, and the content of the first [`CONTENT_BUDGET`] bytes (so an edit within
/// the file system's timestamp granularity is still seen in usual code folders, and large ones stay
/// cheap to check).
pub fn code_fingerprint(manifest: &Manifest) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut budget = CONTENT_BUDGET;
    for r in &manifest.resources {
        if let Some(a) = &r.artifact {
            h.update(r.name.as_bytes());
            h.update([0]);
            tree(&a.path, &mut h, &mut budget);
        }
    }
    h.finalize().into()
}

/// The files the function's zip holds (the packager's own selection: symlinks are not followed, so a
/// link loop cannot trap it, and hidden files or `__pycache__` never count as a code change).
fn tree(path: &Path, h: &mut Sha256, budget: &mut u64) {
    h.update(path.as_os_str().as_encoded_bytes());
    h.update([0]);
    let files = match crate::manifest::artifact::files(path) {
        Ok(files) => files,
        Err(e) => {
            h.update(e.to_string().as_bytes());
            return;
        }
    };
    for file in files {
        h.update(file.as_os_str().as_encoded_bytes());
        h.update([0]);
        let Ok(meta) = std::fs::metadata(&file) else {
            h.update(b"missing");
            continue;
        };
        h.update(meta.len().to_le_bytes());
        stamp(&meta, h);
        if meta.len() <= *budget
            && let Ok(bytes) = std::fs::read(&file)
        {
            *budget = budget.saturating_sub(bytes.len() as u64);
            h.update(Sha256::digest(&bytes));
        }
    }
}

#[cfg(unix)]
fn stamp(meta: &std::fs::Metadata, h: &mut Sha256) {
    use std::os::unix::fs::MetadataExt;
    for v in [meta.mtime(), meta.mtime_nsec(), meta.ctime(), meta.ctime_nsec(), meta.ino() as i64, meta.dev() as i64] {
        h.update(v.to_le_bytes());
    }
}

#[cfg(not(unix))]
fn stamp(meta: &std::fs::Metadata, h: &mut Sha256) {
    if let Ok(t) = meta.modified().map(|t| t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()) {
        h.update(t.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_follows_code_edits_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("code")).unwrap();
        std::fs::write(dir.path().join("code/index.py"), "def handler(e, c):\n    return 1\n").unwrap();
        let text = "[stack]\nname = \"s\"\n\n[resources.f]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\nhandler = \"index.handler\"\nrole = \"arn:aws:iam::123456789012:role/r\"\ncode = \"code\"\n";
        let m = crate::manifest::parse(&dir.path().join("stack.toml"), text.to_string()).unwrap();
        let a = code_fingerprint(&m);
        assert_eq!(a, code_fingerprint(&m), "stable while nothing changes");
        std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
        assert_eq!(a, code_fingerprint(&m), "files outside the code tree do not count");
        // One byte changed, same size.
        std::fs::write(dir.path().join("code/index.py"), "def handler(e, c):\n    return 2\n").unwrap();
        let b = code_fingerprint(&m);
        assert_ne!(a, b);
        std::fs::write(dir.path().join("code/extra.py"), "").unwrap();
        assert_ne!(b, code_fingerprint(&m), "a new file counts");
    }
}
