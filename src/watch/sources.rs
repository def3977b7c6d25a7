//! What a stack's watcher loaded: the manifest file and the Lambda code it names, with a cheap
//! fingerprint of both, so a pass picks up an edit of either without a restart, and remediation can
//! tell that what it loaded is still what is on disk; and the manifests named on the command line or
//! found in watched directories ([`Sources`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::WatchError;
use crate::input::{InputError, MAX_MANIFEST, MAX_VAR_FILE, check_regular, read_bytes};
use crate::manifest::{self, Manifest};

/// Bytes of file content a fingerprint reads; past this, files count by their metadata alone.
pub const CONTENT_BUDGET: u64 = 8 * 1024 * 1024;

/// How long reading a stack's manifest, var files and code may take before the watcher gives up on
/// it for now (a hung file system) and goes on with the last good version.
pub const READ_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

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
        let meta = match check_regular(&file) {
            Ok(meta) => meta,
            Err(e) => {
                h.update(e.to_string().as_bytes());
                continue;
            }
        };
        h.update(meta.len().to_le_bytes());
        stamp(&meta, h);
        if meta.len() <= *budget
            && let Ok(bytes) = read_bytes(&file, *budget, "a Lambda code file")
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

/// The manifests named on the command line, and those found in named directories, each in every
/// environment (`--var-set`).
pub(super) struct Sources {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// The options each environment loads manifests with (`None`: the command line's).
    envs: Vec<Option<manifest::Options>>,
    /// (Canonical path, environment) → stack of the manifests being watched.
    watched: HashMap<(PathBuf, usize), String>,
    /// Files in a directory that were invalid, by content hash (reported once per content).
    rejected: HashMap<PathBuf, [u8; 32]>,
}

impl Sources {
    pub(super) fn new(paths: &[PathBuf], var_sets: &[Vec<PathBuf>]) -> Sources {
        let (dirs, files) = paths.iter().cloned().partition(|p| p.is_dir());
        let envs =
            if var_sets.is_empty() { vec![None] } else { var_sets.iter().map(|s| Some(manifest::options_with_var_files(s))).collect() };
        Sources { files, dirs, envs, watched: HashMap::new(), rejected: HashMap::new() }
    }

    /// The TOML files of a directory that are manifests: a file without a top-level `[stack]` (a var
    /// file kept next to its manifest) is not one. (A file that is not TOML at all is reported.)
    fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, WatchError> {
        let entries = std::fs::read_dir(dir).map_err(|source| WatchError::ReadDir { path: dir.to_path_buf(), source })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && check_regular(p).is_ok())
            .filter(|p| {
                let text = read_bytes(p, MAX_MANIFEST, "a manifest").map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                manifest::variables::has_stack_table(&text) != Some(false)
            })
            .collect();
        files.sort();
        Ok(files)
    }

    fn load(&self, path: &Path, env: usize) -> Result<Manifest, WatchError> {
        // Only a file that is there but not a regular one is refused here (a missing one is left to
        // the manifest's own error, which says how to name one).
        let refuse = |p: &Path| match check_regular(p) {
            Err(e @ InputError::NotRegular { .. }) => Err(e),
            _ => Ok(()),
        };
        refuse(path)?;
        let options = self.envs.get(env).and_then(Option::as_ref);
        let files = options.cloned().unwrap_or_else(|| manifest::options_with_var_files(&[])).variables.var_files;
        for file in &files {
            refuse(file)?;
        }
        Ok(match options {
            Some(options) => manifest::load_with(path, options)?,
            None => manifest::load(path)?,
        })
    }

    fn claim(&mut self, path: &Path, env: usize, manifest: &Manifest) -> Result<(), WatchError> {
        if let Some(((other, _), _)) = self.watched.iter().find(|(_, s)| **s == manifest.stack) {
            return Err(WatchError::DuplicateStack { stack: manifest.stack.clone(), first: other.clone(), second: path.to_path_buf() });
        }
        self.watched.insert((canonical(path), env), manifest.stack.clone());
        Ok(())
    }

    /// Every manifest at start: any invalid one is an error (fix it before starting a service).
    pub(super) fn scan_initial(&mut self) -> Result<Vec<(PathBuf, Manifest)>, WatchError> {
        let mut paths = self.files.clone();
        for dir in self.dirs.clone() {
            let found = Self::toml_files(&dir)?;
            if found.is_empty() {
                return Err(WatchError::NoManifests(dir.display().to_string()));
            }
            paths.extend(found);
        }
        let mut out = Vec::new();
        for path in paths {
            for env in 0..self.envs.len() {
                if self.watched.contains_key(&(canonical(&path), env)) {
                    continue;
                }
                let m = self.load(&path, env)?;
                self.claim(&path, env, &m)?;
                out.push((path.clone(), m));
            }
        }
        Ok(out)
    }

    /// Files that appeared in the watched directories since the last scan and are valid.
    pub(super) fn scan_new(&mut self) -> Vec<(PathBuf, Manifest)> {
        let mut out = Vec::new();
        for dir in self.dirs.clone() {
            let Ok(files) = Self::toml_files(&dir) else { continue };
            for path in files {
                let Ok(text) = read_bytes(&path, MAX_MANIFEST, "a manifest") else { continue };
                let hash = sha256(&text);
                if self.rejected.get(&path) == Some(&hash) {
                    continue;
                }
                let mut rejected = false;
                for env in 0..self.envs.len() {
                    if self.watched.contains_key(&(canonical(&path), env)) {
                        continue;
                    }
                    let result = self.load(&path, env).and_then(|m| self.claim(&path, env, &m).map(|()| m));
                    match result {
                        Ok(m) => {
                            tracing::info!(manifest = %path.display(), stack = %m.stack, "new manifest: watching it");
                            out.push((path.clone(), m));
                        }
                        Err(e) => {
                            tracing::warn!(manifest = %path.display(), error = %e, "new manifest not watched");
                            rejected = true;
                        }
                    }
                }
                if rejected {
                    self.rejected.insert(path, hash);
                } else {
                    self.rejected.remove(&path);
                }
            }
        }
        out
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The hash of a manifest's text and of the var files it is loaded with, so an edit of either is
/// seen (a var file that cannot be read is an error: it would stop the manifest from loading).
fn inputs_hash(text: &[u8], manifest: &Manifest) -> Result<[u8; 32], InputError> {
    let mut h = Sha256::new();
    h.update(text);
    for file in &manifest.inputs.var_files {
        h.update([0]);
        h.update(file.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(read_bytes(file, MAX_VAR_FILE, "a var file")?);
    }
    Ok(h.finalize().into())
}

/// What is wrong with the manifest on disk, while the last good version is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// `manifest_invalid`, `manifest_unreadable` or `manifest_other_stack` (the metric's `reason`).
    pub(super) reason: &'static str,
    /// The error, as a user reads it (file:line:column for an invalid manifest).
    pub(super) message: String,
}

/// One stack's manifest file as the watcher uses it: the last good version, and what was last
/// reported about the file on disk.
///
/// A version is used only once it has settled: the same content (manifest, var files and code) read
/// twice at least `settle` apart, so a file being written (a pause mid-write, a copy in progress) is
/// never planned or remediated. At start too: the version loaded at start is used once a read
/// `settle` later finds it unchanged.
#[derive(Clone)]
pub(super) struct ManifestSource {
    pub(super) path: PathBuf,
    /// The last good version (what passes use).
    pub(super) manifest: Manifest,
    good_hash: [u8; 32],
    /// Fingerprint of the code the manifest in use was built from ([`code_fingerprint`]).
    good_code: [u8; 32],
    /// The content (manifest and code) last reported invalid (or missing), so it is reported once.
    bad_hash: Option<[u8; 32]>,
    settle: std::time::Duration,
    /// Content on disk that differs from the version in use, and when it was first read.
    pending: Option<([u8; 32], std::time::Instant)>,
    /// Whether the version in use was confirmed settled (false at start until a second read).
    settled: bool,
    /// What is wrong with the file on disk now, if anything.
    problem: Option<Problem>,
    /// Whether the stack is remediated (what a problem pauses, as logged).
    pub(super) remediating: bool,
}

impl ManifestSource {
    pub(super) fn new(path: PathBuf, manifest: Manifest, settle: std::time::Duration) -> ManifestSource {
        // The version in use and its hash come from one read: the file may have changed since
        // `manifest` was loaded from it (a writer still at work), and a hash of newer bytes beside an
        // older parse would let the half-written version pass for settled. What cannot be read or
        // parsed again keeps no hash (the first settled read then loads the file anew).
        let (manifest, good_hash) = match read_bytes(&path, MAX_MANIFEST, "a manifest") {
            Ok(bytes) => {
                let again = String::from_utf8(bytes.clone())
                    .ok()
                    .and_then(|text| manifest::parse_like(&path, text, &manifest).ok())
                    .filter(|m| m.stack == manifest.stack);
                match again.and_then(|m| inputs_hash(&bytes, &m).ok().map(|h| (m, h))) {
                    Some((m, h)) => (m, h),
                    None => (manifest, [0; 32]),
                }
            }
            Err(_) => (manifest, [0; 32]),
        };
        let good_code = code_fingerprint(&manifest);
        let pending = Some((sha256(&[good_hash, good_code].concat()), std::time::Instant::now()));
        ManifestSource {
            path,
            manifest,
            good_hash,
            good_code,
            bad_hash: None,
            settle,
            pending,
            settled: false,
            problem: None,
            remediating: false,
        }
    }

    /// SHA-256 (hex) of the manifest file text in use (what other watchers of the stack compare).
    pub(super) fn hash_hex(&self) -> String {
        self.good_hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the version in use has settled (passes wait until it has).
    pub(super) fn settled(&self) -> bool {
        self.settled
    }

    /// When content read but not yet settled may be read again to settle it.
    pub(super) fn settle_at(&self) -> Option<std::time::Instant> {
        self.pending.map(|(_, since)| since + self.settle)
    }

    /// What is wrong with the manifest on disk (invalid, unreadable, another stack), if anything:
    /// the last good version is watched meanwhile, and remediation pauses.
    pub(super) fn problem(&self) -> Option<&Problem> {
        self.problem.as_ref()
    }

    /// Whether the manifest file or its code changed on disk since they were loaded (an edit in
    /// progress, or an apply about to deploy it): remediation then waits for the next pass.
    pub(super) fn changed(&self) -> bool {
        let text = read_bytes(&self.path, MAX_MANIFEST, "a manifest").ok().and_then(|b| inputs_hash(&b, &self.manifest).ok());
        text != Some(self.good_hash) || code_fingerprint(&self.manifest) != self.good_code
    }

    /// The file could not be read in time: the last good version is watched meanwhile.
    pub(super) fn unreadable(&mut self, message: String) {
        let hash = sha256(message.as_bytes());
        self.trouble(hash, Problem { reason: "manifest_unreadable", message }, None);
    }

    /// Notes a problem with the file on disk, logging it once per change.
    fn trouble(&mut self, hash: [u8; 32], problem: Problem, location: Option<String>) {
        self.pending = None;
        if self.bad_hash != Some(hash) || self.problem.as_ref() != Some(&problem) {
            let stack = &self.manifest.stack;
            let location = location.unwrap_or_else(|| self.path.display().to_string());
            let what = match problem.reason {
                "manifest_unreadable" => "cannot read the manifest",
                "manifest_other_stack" => "the manifest now names another stack; restart the watcher to follow it",
                _ => "manifest edit is invalid",
            };
            let then = if self.remediating {
                "still watching its last good version (drift is recorded), remediation paused until the file is fixed"
            } else {
                "still watching its last good version"
            };
            tracing::warn!(
                stack,
                manifest = %self.path.display(),
                location,
                reason = problem.reason,
                error = %problem.message,
                "{what}; {then}"
            );
        }
        self.bad_hash = Some(hash);
        self.problem = Some(problem);
    }

    /// Picks up an edit of the manifest file (by content hash) or of the Lambda code it names (by
    /// [`code_fingerprint`]), rebuilding the code artifacts, once it has settled. An invalid edit, a
    /// different stack name or a file that cannot be read (missing, not a regular file, too large) is
    /// reported once, and the last good version keeps being watched (see [`ManifestSource::problem`]).
    pub(super) fn reload(&mut self) {
        let stack = self.manifest.stack.clone();
        let read = read_bytes(&self.path, MAX_MANIFEST, "a manifest").and_then(|b| {
            let hash = inputs_hash(&b, &self.manifest)?;
            Ok((b, hash))
        });
        let (bytes, text_hash) = match read {
            Ok(read) => read,
            Err(e) => {
                let hash = sha256(format!("unreadable: {e}").as_bytes());
                self.trouble(hash, Problem { reason: "manifest_unreadable", message: e.to_string() }, None);
                return;
            }
        };
        // Taken before the code is packaged, so an edit made while it is packaged is seen next time.
        let code = code_fingerprint(&self.manifest);
        let hash = sha256(&[text_hash, code].concat());
        let now = std::time::Instant::now();
        // Used only once two reads `settle` apart found the same content.
        match self.pending {
            Some((h, since)) if h == hash => {
                if now.duration_since(since) < self.settle {
                    return;
                }
            }
            _ if self.settled && text_hash == self.good_hash && code == self.good_code => {
                // Back to the version in use: a later bad edit is news again.
                if self.problem.take().is_some() {
                    tracing::info!(stack, manifest = %self.path.display(), "the manifest on disk is the version in use again");
                }
                self.bad_hash = None;
                self.pending = None;
                return;
            }
            _ => {
                if Some(hash) != self.bad_hash {
                    tracing::debug!(stack, manifest = %self.path.display(), "the manifest or its code changed on disk: waiting for it to settle");
                    self.pending = Some((hash, now));
                }
                return;
            }
        }
        self.pending = None;
        if text_hash == self.good_hash && code == self.good_code {
            self.settled = true;
            if self.problem.take().is_some() {
                tracing::info!(stack, manifest = %self.path.display(), "the manifest on disk is the version in use again");
            }
            self.bad_hash = None;
            return;
        }
        if Some(hash) == self.bad_hash {
            return;
        }
        let code_only = text_hash == self.good_hash;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                let message = format!("{}: not UTF-8 text", self.path.display());
                self.trouble(hash, Problem { reason: "manifest_invalid", message }, None);
                return;
            }
        };
        match manifest::parse_like(&self.path, text, &self.manifest) {
            Ok(m) if m.stack != stack => {
                let message = format!("the manifest names the stack `{}`, this watcher watches `{stack}`", m.stack);
                self.trouble(hash, Problem { reason: "manifest_other_stack", message }, None);
            }
            Ok(m) => {
                if code_only {
                    tracing::info!(stack, manifest = %self.path.display(), "code changed: rebuilt");
                } else {
                    tracing::info!(stack, manifest = %self.path.display(), resources = m.resources.len(), "manifest changed: reloaded");
                }
                if self.problem.take().is_some() {
                    tracing::info!(stack, manifest = %self.path.display(), "the manifest on disk is valid again: remediation (if on) goes on");
                }
                // A new manifest may name other code: fingerprint what it names (before it was packaged
                // when only the code changed).
                self.good_code = if code_only { code } else { code_fingerprint(&m) };
                self.manifest = m;
                self.good_hash = text_hash;
                self.bad_hash = None;
                self.settled = true;
            }
            Err(e) => {
                let location = e.diagnostics().first().map(|d| d.location.to_string());
                self.trouble(hash, Problem { reason: "manifest_invalid", message: e.to_string() }, location);
            }
        }
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

    #[test]
    fn the_version_in_use_and_its_hash_come_from_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.toml");
        let head = "[stack]\nname = \"s\"\n\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"L\"\nretention_in_days = 1";
        // Loaded from a writer's first half (`retention_in_days = 1`); the file is whole (`14`) by the
        // time the watcher takes its hash.
        std::fs::write(&path, format!("{head}\n")).unwrap();
        let half = crate::manifest::load(&path).unwrap();
        std::fs::write(&path, format!("{head}4\n")).unwrap();
        let source = ManifestSource::new(path.clone(), half, std::time::Duration::ZERO);
        let retention = |m: &Manifest| m.resource("logs").and_then(|r| r.attrs.get("retention_in_days").cloned());
        assert_eq!(retention(&source.manifest), Some(serde_json::json!(14)), "the hash taken is of the version in use");
        let whole = read_bytes(&path, MAX_MANIFEST, "a manifest").unwrap();
        assert_eq!(source.good_hash, inputs_hash(&whole, &source.manifest).unwrap());
    }
}
