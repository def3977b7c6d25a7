//! Lambda code: a file or a folder next to the manifest, zipped in-process, deterministically, so the
//! same content always gives the same zip and the same `CodeSha256` that Lambda reports.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    pub zip: Arc<Vec<u8>>,
    /// Base64 of the SHA-256 of the zip: Lambda's `CodeSha256`.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("code path {} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("code folder {} is empty", .0.display())]
    Empty(PathBuf),
    #[error("code path {} is neither a regular file nor a folder", .0.display())]
    NotAFile(PathBuf),
    #[error("code under {} is larger than Lambda's {} MiB limit for unzipped code", .0.display(), MAX_UNZIPPED / (1024 * 1024))]
    TooLarge(PathBuf),
    #[error(
        "code path `{}` is {why}, outside the manifest's folder {}: Lambda code is only taken from the manifest's folder tree, \
         so that a manifest change cannot ship other files of this machine to AWS; to allow a folder outside it, pass \
         `--allow-code-from <DIR>` or set RECONCILE_ALLOW_CODE_FROM (never a manifest key)",
        given.display(),
        root.display()
    )]
    Outside { given: PathBuf, why: String, root: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Input(crate::input::InputError),
    #[error("cannot zip {}: {source}", path.display())]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
}

/// Lambda refuses deployment packages whose unzipped size is over 250 MiB.
pub const MAX_UNZIPPED: u64 = 250 * 1024 * 1024;

/// The code path `given` (as written in the manifest) resolved against the manifest's folder `root`,
/// refused unless it stays inside `root` or inside one of `allowed` once every symlink is resolved: no
/// absolute path and no `..` leads out. The checks compare canonical paths, so a symlink pointing out
/// is refused like the path it points to.
pub fn confine(root: &Path, given: &Path, allowed: &[PathBuf]) -> Result<PathBuf, ArtifactError> {
    let root = if root.as_os_str().is_empty() { Path::new(".") } else { root };
    let joined = root.join(given);
    let real = std::fs::canonicalize(&joined).map_err(|_| ArtifactError::Missing(joined.clone()))?;
    let real_root = std::fs::canonicalize(root).map_err(|source| ArtifactError::Io { path: root.to_path_buf(), source })?;
    let inside = |dir: &Path| std::fs::canonicalize(dir).is_ok_and(|d| real.starts_with(d));
    if (inside(&real_root) && !given.is_absolute()) || allowed.iter().any(|d| inside(d.as_path())) {
        return Ok(joined);
    }
    let why = if given.is_absolute() {
        "an absolute path".to_string()
    } else if given.components().any(|c| c == std::path::Component::ParentDir) {
        format!("resolved to {}", real.display())
    } else {
        format!("a symlink resolved to {}", real.display())
    };
    Err(ArtifactError::Outside { given: given.to_path_buf(), why, root: real_root })
}

pub fn package(path: &Path) -> Result<Artifact, ArtifactError> {
    let io = |source| ArtifactError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(|_| ArtifactError::Missing(path.to_path_buf()))?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if meta.is_dir() {
        let mut size = 0;
        walk(path, path, &mut files, &mut size).map_err(io)?;
        if size > MAX_UNZIPPED {
            return Err(ArtifactError::TooLarge(path.to_path_buf()));
        }
        if files.is_empty() {
            return Err(ArtifactError::Empty(path.to_path_buf()));
        }
    } else if !meta.is_file() {
        return Err(ArtifactError::NotAFile(path.to_path_buf()));
    } else if meta.len() > MAX_UNZIPPED {
        return Err(ArtifactError::TooLarge(path.to_path_buf()));
    } else {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        files.push((name, path.to_path_buf()));
    }
    files.sort();

    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let zerr = |source| ArtifactError::Zip { path: path.to_path_buf(), source };
    // Each file is read through the bounded reader (a file swapped for a FIFO after the walk, or
    // grown since, is an error, not a hang), within what is left of Lambda's limit.
    let mut left = MAX_UNZIPPED;
    for (name, file) in &files {
        let bytes = crate::input::read_bytes(file, left, "Lambda code (unzipped, in all)").map_err(|e| match e {
            crate::input::InputError::TooLarge { .. } => ArtifactError::TooLarge(path.to_path_buf()),
            crate::input::InputError::NotRegular { .. } => ArtifactError::NotAFile(file.clone()),
            e => ArtifactError::Input(e),
        })?;
        left = left.saturating_sub(bytes.len() as u64);
        writer.start_file(name.as_str(), options).map_err(zerr)?;
        writer.write_all(&bytes).map_err(io)?;
    }
    let zip = writer.finish().map_err(zerr)?.into_inner();
    let sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&zip));
    Ok(Artifact { path: path.to_path_buf(), zip: Arc::new(zip), sha256 })
}

/// The files the zip of `path` holds, with their paths on disk (what [`package`] reads; symlinks,
/// hidden files and `__pycache__` left out): for the watcher's fingerprint of the code.
pub(crate) fn files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if std::fs::metadata(path)?.is_dir() {
        let (mut out, mut size) = (Vec::new(), 0);
        walk(path, path, &mut out, &mut size)?;
        let mut paths: Vec<PathBuf> = out.into_iter().map(|(_, p)| p).collect();
        paths.sort();
        Ok(paths)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// Regular files under `dir` (hidden ones and `__pycache__` left out); stops once `size` passes the limit.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>, size: &mut u64) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        if *size > MAX_UNZIPPED {
            return Ok(());
        }
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out, size)?;
        } else if kind.is_file() {
            *size += entry.metadata()?.len();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push((rel, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_is_deterministic_and_tracks_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.py"), "def handler(e, c):\n    return 1\n").unwrap();
        let a = package(dir.path()).unwrap();
        let b = package(dir.path()).unwrap();
        assert_eq!(a.sha256, b.sha256);
        std::fs::write(dir.path().join("index.py"), "def handler(e, c):\n    return 2\n").unwrap();
        assert_ne!(package(dir.path()).unwrap().sha256, a.sha256);
        let archive = zip::ZipArchive::new(std::io::Cursor::new(a.zip.to_vec())).unwrap();
        assert_eq!(archive.file_names().collect::<Vec<_>>(), vec!["index.py"]);
    }

    #[test]
    fn missing_path_and_special_files_are_errors() {
        assert!(matches!(package(Path::new("/nonexistent/code")), Err(ArtifactError::Missing(_))));
        assert!(matches!(package(Path::new("/dev/zero")), Err(ArtifactError::NotAFile(_))));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(package(dir.path()), Err(ArtifactError::Empty(_))));
    }
}
