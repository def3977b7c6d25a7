//! `reconcile watch`: a long-running drift watcher.
//!
//! One task per stack runs passes one after the other (so a resource is never reconciled twice at
//! once; different stacks run concurrently). A pass re-reads the manifest if its content changed,
//! reads what the state owns through the plan layer's tolerant refresh, sorts the plan's changes
//! ([`findings`]), records drift events in the state database, and, when remediation is on for the
//! stack, carries out the updates and creates through the same executor as `apply`, holding the
//! stack's lock. Each pass yields the next one after the interval (with jitter); a failed read backs
//! off that resource alone ([`cadence`]). SIGTERM, SIGQUIT or Ctrl-C cancels the reads in flight or
//! lets a remediation finish, then the process releases what it holds and exits; SIGHUP re-reads the
//! manifests and their code now (a pass of every stack starts) and never interrupts a remediation.
//!
//! Remediation never fights the stack's users: it uses the manifest and code as they are on disk now
//! ([`sources`]), skips a pass during which an apply wrote the state or the files changed, leaves a
//! stack whose last operation was `destroy` alone, carries out only what it can finish in one pass,
//! and counts as remediated only what a read after the writes confirms.

pub mod cadence;
pub mod findings;
pub mod metrics;
pub mod observe;
pub mod server;
pub mod sources;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::apply::{self, Event, Options, Reporter, Status};
use crate::manifest::{self, Manifest, ManifestError};
use crate::plan;
use crate::providers::Aws;
use crate::state::{DELETED, Resolution, StateError, Store};

use cadence::Cadence;
use metrics::Metrics;
use observe::Tracker;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no manifest to watch: {0} holds no *.toml file")]
    NoManifests(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("stack `{stack}` is declared by both {} and {}; one watcher per stack", first.display(), second.display())]
    DuplicateStack { stack: String, first: PathBuf, second: PathBuf },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Manifest files, or directories whose `*.toml` files are manifests (re-scanned every interval).
    pub paths: Vec<PathBuf>,
    pub interval: Duration,
    /// `/readyz` turns 503 once a stack's passes have been failing for this long (see [`metrics::unready_after`]).
    pub unready_after: Duration,
    pub listen: SocketAddr,
    /// Remediate every stack (a stack can also ask for it with `[stack] remediate = true`).
    pub remediate: bool,
    /// How long remediation waits for the stack's lock before it skips the pass.
    pub lock_timeout: Duration,
    /// Concurrent resource operations of one remediation.
    pub parallelism: usize,
}

struct Ctx {
    config: Config,
    store: Store,
    aws: Aws,
    metrics: Arc<Metrics>,
}

/// Runs until SIGTERM or Ctrl-C; returns after the passes in flight ended and the HTTP server stopped.
pub async fn run(config: Config, store: Store, aws: Aws) -> Result<(), WatchError> {
    let mut sources = Sources::new(&config.paths);
    let initial = sources.scan_initial()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (hup_tx, hup_rx) = watch::channel(0u64);
    tokio::spawn(signals(stop_tx, hup_tx));

    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|source| WatchError::Listen { addr: config.listen, source })?;
    let bound = listener.local_addr().map_err(|source| WatchError::Listen { addr: config.listen, source })?;
    println!("listening on http://{bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");

    let metrics = Arc::new(Metrics::new(config.unready_after));
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = server::router(metrics.clone(), aws.calls.clone());
    let server = tokio::spawn(async move {
        let stopped = async {
            let _ = server_stop_rx.await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    let ctx = Arc::new(Ctx { config, store, aws, metrics });
    tracing::info!(stacks = initial.len(), interval_s = ctx.config.interval.as_secs_f64(), remediate = ctx.config.remediate, "watching");
    let mut tasks = JoinSet::new();
    for (path, manifest) in initial {
        spawn_stack(&mut tasks, &ctx, path, manifest, stop_rx.clone(), hup_rx.clone());
    }

    // New manifest files in watched directories join without a restart (at once on SIGHUP).
    let mut stop = stop_rx.clone();
    let mut hup = hup_rx.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(ctx.config.interval) => {
                for (path, manifest) in sources.scan_new() {
                    spawn_stack(&mut tasks, &ctx, path, manifest, stop_rx.clone(), hup_rx.clone());
                }
            }
            Ok(()) = hup.changed() => {
                for (path, manifest) in sources.scan_new() {
                    spawn_stack(&mut tasks, &ctx, path, manifest, stop_rx.clone(), hup_rx.clone());
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "a stack watcher ended unexpectedly");
                }
            }
        }
    }
    tracing::info!("stopping: letting the passes in flight end");
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "a stack watcher ended unexpectedly");
        }
    }
    let _ = server_stop_tx.send(());
    let _ = server.await;
    ctx.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Flips `stop` on the first SIGTERM, SIGQUIT or Ctrl-C; counts SIGHUPs in `hup` (reload now).
/// Every signal whose default action ends the process and that a daemon is commonly sent is handled,
/// so none ends it with the stack's lock held.
async fn signals(stop: watch::Sender<bool>, hup: watch::Sender<u64>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (term, quit, mut hangup) = (signal(SignalKind::terminate()), signal(SignalKind::quit()), signal(SignalKind::hangup()));
        let (mut term, mut quit) = match (term, quit) {
            (Ok(t), Ok(q)) => (t, q),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM and SIGQUIT");
                let _ = tokio::signal::ctrl_c().await;
                let _ = stop.send(true);
                return;
            }
        };
        if let Err(e) = &hangup {
            tracing::error!(error = %e, "cannot listen for SIGHUP");
        }
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break }
                _ = quit.recv() => { tracing::info!("SIGQUIT received"); break }
                _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt received"); break }
                Some(()) = async { match &mut hangup { Ok(h) => h.recv().await, Err(_) => std::future::pending().await } } => {
                    tracing::info!("SIGHUP received: re-reading the manifests and their code now; a remediation in flight goes on");
                    hup.send_modify(|n| *n += 1);
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &hup;
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received");
    }
    let _ = stop.send(true);
}

fn spawn_stack(
    tasks: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    path: PathBuf,
    manifest: Manifest,
    stop: watch::Receiver<bool>,
    hup: watch::Receiver<u64>,
) {
    ctx.metrics.register(&manifest.stack);
    let watcher = StackWatcher::new(path, manifest, ctx.config.interval);
    tasks.spawn(watcher.run(ctx.clone(), stop, hup));
}

/// The manifests named on the command line, and those found in named directories.
struct Sources {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// Canonical path → stack of the files being watched.
    watched: HashMap<PathBuf, String>,
    /// Files in a directory that were invalid, by content hash (reported once per content).
    rejected: HashMap<PathBuf, [u8; 32]>,
}

impl Sources {
    fn new(paths: &[PathBuf]) -> Sources {
        let (dirs, files) = paths.iter().cloned().partition(|p| p.is_dir());
        Sources { files, dirs, watched: HashMap::new(), rejected: HashMap::new() }
    }

    fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, WatchError> {
        let entries = std::fs::read_dir(dir).map_err(|source| WatchError::ReadDir { path: dir.to_path_buf(), source })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        Ok(files)
    }

    fn claim(&mut self, path: &Path, manifest: &Manifest) -> Result<(), WatchError> {
        if let Some((other, _)) = self.watched.iter().find(|(_, s)| **s == manifest.stack) {
            return Err(WatchError::DuplicateStack { stack: manifest.stack.clone(), first: other.clone(), second: path.to_path_buf() });
        }
        self.watched.insert(canonical(path), manifest.stack.clone());
        Ok(())
    }

    /// Every manifest at start: any invalid one is an error (fix it before starting a service).
    fn scan_initial(&mut self) -> Result<Vec<(PathBuf, Manifest)>, WatchError> {
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
            if self.watched.contains_key(&canonical(&path)) {
                continue;
            }
            let m = manifest::load(&path)?;
            self.claim(&path, &m)?;
            out.push((path, m));
        }
        Ok(out)
    }

    /// Files that appeared in the watched directories since the last scan and are valid.
    fn scan_new(&mut self) -> Vec<(PathBuf, Manifest)> {
        let mut out = Vec::new();
        for dir in self.dirs.clone() {
            let Ok(files) = Self::toml_files(&dir) else { continue };
            for path in files {
                if self.watched.contains_key(&canonical(&path)) {
                    continue;
                }
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                let hash = sha256(text.as_bytes());
                if self.rejected.get(&path) == Some(&hash) {
                    continue;
                }
                let result = manifest::parse(&path, text).map_err(WatchError::from).and_then(|m| self.claim(&path, &m).map(|()| m));
                match result {
                    Ok(m) => {
                        tracing::info!(manifest = %path.display(), stack = %m.stack, "new manifest: watching it");
                        self.rejected.remove(&path);
                        out.push((path, m));
                    }
                    Err(e) => {
                        tracing::warn!(manifest = %path.display(), error = %e, "new manifest not watched");
                        self.rejected.insert(path, hash);
                    }
                }
            }
        }
        out
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What a pass ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassEnd {
    /// Every resource the state owns is seen (read now, none backing off) and the outcome recorded.
    Complete,
    /// It ran, but some resources are not seen (failed reads, backing off), or the state moved under it.
    Partial,
    /// Stopped by a signal before anything was recorded.
    Cancelled,
}

/// Counts for the one log line per pass.
#[derive(Debug, Default)]
struct PassStats {
    read: usize,
    unreadable: usize,
    open: usize,
    opened: usize,
    resolved: usize,
    remediated: usize,
}

/// One stack: its manifest (last good version), read schedule, and what was already said once.
struct StackWatcher {
    path: PathBuf,
    manifest: Manifest,
    good_hash: [u8; 32],
    /// Fingerprint of the code the manifest in use was built from ([`sources::code_fingerprint`]).
    good_code: [u8; 32],
    /// The content (manifest and code) last reported invalid (or missing), so it is reported once.
    bad_hash: Option<[u8; 32]>,
    cadence: Cadence,
    told: BTreeSet<(String, &'static str)>,
    /// Why the stack is refused (pinned to another account or region), as last logged.
    refused: Option<String>,
}

impl StackWatcher {
    fn new(path: PathBuf, manifest: Manifest, interval: Duration) -> StackWatcher {
        let good_hash = std::fs::read(&path).map(|b| sha256(&b)).unwrap_or_default();
        let good_code = sources::code_fingerprint(&manifest);
        StackWatcher {
            path,
            manifest,
            good_hash,
            good_code,
            bad_hash: None,
            cadence: Cadence::new(interval),
            told: BTreeSet::new(),
            refused: None,
        }
    }

    async fn run(mut self, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>, mut hup: watch::Receiver<u64>) {
        loop {
            if *stop.borrow() {
                break;
            }
            self.reload();
            if self.pass(&ctx, &mut stop).await == PassEnd::Cancelled {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(cadence::jittered(ctx.config.interval)) => {}
                Ok(()) = hup.changed() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        tracing::info!(stack = %self.manifest.stack, "no longer watching");
    }

    /// Whether the manifest file or its code changed on disk since they were loaded (an edit in
    /// progress, or an apply about to deploy it): remediation then waits for the next pass.
    fn sources_changed(&self) -> bool {
        let text = std::fs::read(&self.path).map(|b| sha256(&b)).unwrap_or_default();
        text != self.good_hash || sources::code_fingerprint(&self.manifest) != self.good_code
    }

    /// Picks up an edit of the manifest file (by content hash) or of the Lambda code it names (by
    /// [`sources::code_fingerprint`]), rebuilding the code artifacts. An invalid edit, a different
    /// stack name or a missing file is reported once, and the last good version keeps being watched.
    fn reload(&mut self) {
        let stack = self.manifest.stack.clone();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                let hash = sha256(format!("unreadable: {e}").as_bytes());
                if self.bad_hash != Some(hash) {
                    tracing::warn!(stack, manifest = %self.path.display(), error = %e, "cannot read the manifest; still watching its last good version");
                    self.bad_hash = Some(hash);
                }
                return;
            }
        };
        let text_hash = sha256(text.as_bytes());
        // Taken before the code is packaged, so an edit made while it is packaged is seen next time.
        let code = sources::code_fingerprint(&self.manifest);
        if text_hash == self.good_hash && code == self.good_code {
            // Back to the version in use: a later bad edit is news again.
            self.bad_hash = None;
            return;
        }
        let hash = sha256(&[text_hash, code].concat());
        if Some(hash) == self.bad_hash {
            return;
        }
        let code_only = text_hash == self.good_hash;
        match manifest::parse(&self.path, text) {
            Ok(m) if m.stack != stack => {
                tracing::warn!(
                    stack,
                    manifest = %self.path.display(),
                    new_stack = %m.stack,
                    "the manifest now names another stack; restart the watcher to follow it. Still watching the last good version"
                );
                self.bad_hash = Some(hash);
            }
            Ok(m) => {
                if code_only {
                    tracing::info!(stack, manifest = %self.path.display(), "code changed: rebuilt");
                } else {
                    tracing::info!(stack, manifest = %self.path.display(), resources = m.resources.len(), "manifest changed: reloaded");
                }
                // A new manifest may name other code: fingerprint what it names (before it was packaged
                // when only the code changed).
                self.good_code = if code_only { code } else { sources::code_fingerprint(&m) };
                self.manifest = m;
                self.good_hash = text_hash;
                self.bad_hash = None;
            }
            Err(e) => {
                let location = e.diagnostics().first().map(|d| d.location.to_string()).unwrap_or_else(|| self.path.display().to_string());
                tracing::warn!(
                    stack,
                    manifest = %self.path.display(),
                    location,
                    error = %e,
                    "manifest edit is invalid; still watching its last good version"
                );
                self.bad_hash = Some(hash);
            }
        }
    }

    fn remediate(&self, ctx: &Ctx) -> bool {
        ctx.config.remediate || self.manifest.remediate
    }

    /// One pass, logged as one line with its duration and AWS calls.
    async fn pass(&mut self, ctx: &Ctx, stop: &mut watch::Receiver<bool>) -> PassEnd {
        let stack = self.manifest.stack.clone();
        let started = Instant::now();
        let before = ctx.aws.calls.total();
        let mut stats = PassStats::default();
        ctx.metrics.pass_started(&stack);
        let tracker = Tracker::default();
        let result = {
            let inner = self.pass_inner(ctx, stop, &mut stats, &tracker);
            tokio::pin!(inner);
            // A pass that takes long (AWS slow or unreachable, retries) says what it waits on.
            let every = ctx.config.interval.clamp(Duration::from_secs(5), Duration::from_secs(60));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    r = &mut inner => break r,
                    _ = tick.tick() => {
                        let (phase, waiting) = tracker.snapshot();
                        let now = ctx.aws.calls.total();
                        tracing::warn!(
                            stack,
                            running_s = started.elapsed().as_secs(),
                            phase,
                            waiting_on = %waiting.join(", "),
                            aws_calls = now.calls - before.calls,
                            aws_errors = now.errors - before.errors,
                            "pass still running: {phase}, waiting on {}",
                            if waiting.is_empty() { "AWS".to_string() } else { waiting.join(", ") }
                        );
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        let after = ctx.aws.calls.total();
        let (calls, errors) = (after.calls - before.calls, after.errors - before.errors);
        let end = match result {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(stack, error = %e, "pass failed");
                PassEnd::Partial
            }
        };
        if end == PassEnd::Cancelled {
            tracing::info!(stack, duration_ms = elapsed.as_millis() as u64, "pass cancelled");
            return end;
        }
        let drift = match ctx.store.open_drift_counts(&stack).await {
            Ok(counts) => {
                let mut all: BTreeMap<String, u64> = self.manifest.resources.iter().map(|r| (r.name.clone(), 0)).collect();
                all.extend(counts);
                Some(all)
            }
            Err(e) => {
                tracing::warn!(stack, error = %e, "reading open drift");
                None
            }
        };
        ctx.metrics.pass(&stack, elapsed, end == PassEnd::Complete, drift);
        tracing::info!(
            stack,
            duration_ms = elapsed.as_millis() as u64,
            aws_calls = calls,
            aws_errors = errors,
            resources_read = stats.read,
            unreadable = stats.unreadable,
            drift_open = stats.open,
            drift_new = stats.opened,
            drift_resolved = stats.resolved,
            remediated = stats.remediated,
            complete = end == PassEnd::Complete,
            "pass finished"
        );
        end
    }

    async fn pass_inner(
        &mut self,
        ctx: &Ctx,
        stop: &mut watch::Receiver<bool>,
        stats: &mut PassStats,
        tracker: &Tracker,
    ) -> Result<PassEnd, StateError> {
        let stack = self.manifest.stack.clone();
        if !self.check_identity(ctx).await {
            return Ok(PassEnd::Partial);
        }
        tracker.phase("reading the state");
        let state = ctx.store.load(&stack).await?;
        let destroyed = state.last_operation.as_deref() == Some(crate::state::DESTROY);
        ctx.metrics.destroyed(&stack, destroyed);
        let now = Instant::now();
        let cadence = &self.cadence;
        tracker.phase("reading AWS");
        let observe = observe::observe(&self.manifest, &state, &ctx.aws, |r| cadence.due(r, now), tracker);
        let obs = tokio::select! {
            obs = observe => obs,
            _ = stop.wait_for(|s| *s) => return Ok(PassEnd::Cancelled),
        };
        let mut end = PassEnd::Complete;
        for (resource, read) in &obs.reads {
            match read {
                Ok(_) => {
                    stats.read += 1;
                    self.cadence.succeeded(resource);
                }
                Err(e) => {
                    stats.unreadable += 1;
                    end = PassEnd::Partial;
                    let wait = self.cadence.failed(resource, Instant::now());
                    tracing::warn!(
                        stack,
                        resource,
                        error = %e,
                        failures = self.cadence.failures(resource),
                        retry_in_s = wait.as_secs(),
                        "read failed; this resource backs off, the others are still watched"
                    );
                }
            }
        }
        self.cadence.retain(|r| state.resources.contains_key(r));
        if self.cadence.backing_off() {
            end = PassEnd::Partial;
        }
        // An apply that wrote the state while we read makes this pass's view stale: drop it.
        let serial = ctx.store.load(&stack).await?.serial;
        if serial != state.serial {
            tracing::info!(stack, "the state changed during the pass (an apply ran); its results are not recorded");
            return Ok(PassEnd::Partial);
        }

        tracker.phase("recording drift");
        let found = findings::findings(&obs.plan, &state, |r| obs.was_read(r));
        let delta = ctx.store.record_drift(&stack, &found.drift, &found.checked, &found.managed).await?;
        stats.opened = delta.opened.len();
        stats.resolved = delta.resolved.len();
        for d in &delta.opened {
            tracing::warn!(
                stack,
                resource = %d.resource,
                resource_type = %d.kind,
                field = %d.field,
                expected = %d.expected,
                actual = %d.actual,
                "drift detected"
            );
        }
        for (e, how) in &delta.resolved {
            tracing::info!(stack, resource = %e.resource, field = %e.field, how = how.as_str(), first_seen = %e.first_seen, "drift resolved");
        }
        self.tell_once(&stack, &found.not_applied, "not applied yet: in the manifest, not in the state (not drift)", "not-applied");
        self.tell_once(&stack, &found.removed, "removed from the manifest: `reconcile apply` deletes it; watch never does", "removed");
        self.tell_once(
            &stack,
            &found.needs_replacement,
            "drifted on a field that forces replacement: watch does not replace; run `reconcile apply`",
            "replace",
        );

        let destroyed_names: Vec<String> = if destroyed && self.remediate(ctx) { vec![String::new()] } else { Vec::new() };
        self.tell_once(
            &stack,
            &destroyed_names,
            "destroyed: the last operation on this stack was `reconcile destroy`; not remediated until the next apply",
            "destroyed",
        );
        if self.remediate(ctx) && !destroyed && !*stop.borrow() {
            let fix = findings::remediation(&obs.plan, &state, |r| obs.was_read(r));
            self.tell_once(
                &stack,
                &fix.deferred,
                "not remediated this pass: it needs a value known only after a change remediation does not make (a replacement); a later pass or `reconcile apply` finishes it",
                "deferred",
            );
            if fix.plan.has_changes() {
                stats.remediated = self.remediate_now(ctx, &fix.plan, &state, tracker).await?;
            }
        }
        stats.open = ctx.store.open_drift_counts(&stack).await?.values().sum::<u64>() as usize;
        Ok(end)
    }

    /// Whether the credentials and region in use are where the stack lives. A stack pinned elsewhere
    /// is refused on its own (logged when it starts or its reason changes, shown by /readyz and the
    /// `reconcile_stack_refused` gauge); the other stacks go on.
    async fn check_identity(&mut self, ctx: &Ctx) -> bool {
        let stack = self.manifest.stack.clone();
        match crate::identity::check(&ctx.store, &stack, &ctx.aws).await {
            Ok(_) => {
                if self.refused.take().is_some() {
                    tracing::info!(stack, "the stack is no longer refused: watching it");
                }
                ctx.metrics.refused(&stack, None);
                true
            }
            Err(e) if e.is_refusal() => {
                let message = e.to_string();
                if self.refused.as_deref() != Some(message.as_str()) {
                    tracing::error!(stack, reason = e.reason(), error = %message, "stack refused: not watched until this is fixed; the other stacks go on");
                    self.refused = Some(message.clone());
                }
                ctx.metrics.refused(&stack, Some((e.reason(), &message)));
                false
            }
            Err(e) => {
                tracing::warn!(stack, error = %e, "cannot check the stack's account and region; skipping this pass");
                false
            }
        }
    }

    /// Pins the stack where the watcher works before remediation writes (it may create a stack that
    /// was never applied), as apply does.
    async fn pin_before_writing(&self, ctx: &Ctx) -> bool {
        let stack = &self.manifest.stack;
        let pinned = match ctx.aws.identity().await {
            Ok(here) => crate::identity::pin(&ctx.store, stack, &here).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = &pinned {
            tracing::warn!(stack, error = %e, "cannot pin the stack to its account and region; not remediating");
        }
        pinned.is_ok()
    }

    /// Logs `what` once for each resource while it stays in `names` (an empty name: the stack itself).
    fn tell_once(&mut self, stack: &str, names: &[String], what: &str, tag: &'static str) {
        self.told.retain(|(n, t)| *t != tag || names.contains(n));
        for n in names {
            if self.told.insert((n.clone(), tag)) {
                if n.is_empty() {
                    tracing::info!(stack, "{what}");
                } else {
                    tracing::info!(stack, resource = %n, "{what}");
                }
            }
        }
    }

    /// Carries out `fix` under the stack's lock, then reads back what it wrote; returns how many
    /// resources the read confirms are back to the manifest. Only those events are resolved
    /// (`remediated`); a write AWS did not keep leaves its events open.
    async fn remediate_now(
        &self,
        ctx: &Ctx,
        fix: &plan::Plan,
        state: &crate::state::StackState,
        tracker: &Tracker,
    ) -> Result<usize, StateError> {
        let stack = &self.manifest.stack;
        let pending = ctx.store.pending_operations(stack).await?;
        if !pending.is_empty() {
            tracing::warn!(
                stack,
                pending = pending.len(),
                "an interrupted apply left work in the journal; run `reconcile apply`; not remediating"
            );
            return Ok(0);
        }
        tracker.phase("waiting for the stack's lock");
        let lock = match ctx.store.lock(stack, "watch --remediate", ctx.config.lock_timeout).await {
            Ok(lock) => lock,
            Err(StateError::Locked { holder, .. }) => {
                tracing::warn!(
                    stack,
                    holder = %holder.operation,
                    pid = holder.pid,
                    host = %holder.host,
                    since = %holder.acquired_at,
                    "stack is locked by {} (pid {}); skipping remediation this pass",
                    holder.operation,
                    holder.pid
                );
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let result: Result<Option<apply::Report>, StateError> = async {
            // The plan was made from the state as read and from the files as loaded; if an apply moved
            // the state since, or the manifest or its code changed (an apply may be about to deploy
            // them), remediating now could undo it: wait for the next pass.
            let now = ctx.store.load(stack).await?;
            if now.serial != state.serial || now.last_operation != state.last_operation {
                tracing::info!(
                    stack,
                    "the state changed since the pass read it (an apply or destroy ran); remediation waits for the next pass"
                );
                return Ok(None);
            }
            if self.sources_changed() {
                tracing::info!(stack, "the manifest or its code changed during the pass; remediation waits for the next pass");
                return Ok(None);
            }
            let changes: Vec<_> = fix.resources.iter().filter(|c| c.action != plan::Action::NoOp).map(|c| c.name.as_str()).collect();
            tracing::info!(stack, resources = %changes.join(", "), "remediating");
            if !self.pin_before_writing(ctx).await {
                return Ok(None);
            }
            tracker.phase("remediating");
            let options = Options { parallelism: ctx.config.parallelism };
            let reporter = LogReporter { stack, tracker };
            Ok(Some(apply::execute(fix, state, &ctx.store, &ctx.aws, options, &reporter).await))
        }
        .await;
        if let Err(e) = ctx.store.unlock(stack, &lock.id).await {
            tracing::error!(stack, error = %e, "releasing the stack lock");
        }
        let Some(report) = result? else { return Ok(0) };
        let done: BTreeSet<String> = report.outcomes.iter().filter(|o| o.status == Status::Done).map(|o| o.name.clone()).collect();
        if done.is_empty() {
            return Ok(0);
        }

        // Read back what was written: only what AWS now shows as the manifest says is remediated.
        tracker.phase("reading back what remediation wrote");
        let after = ctx.store.load(stack).await?;
        let check = observe::observe(&self.manifest, &after, &ctx.aws, |r| done.contains(r), tracker).await;
        let found = findings::findings(&check.plan, &after, |r| check.was_read(r));
        let still: BTreeSet<(&str, &str)> = found.drift.iter().map(|d| (d.resource.as_str(), d.field.as_str())).collect();
        let mut fixed = 0;
        for name in &done {
            if !check.was_read(name) {
                tracing::warn!(stack, resource = %name, "remediation wrote it but it could not be read back; its drift stays open");
                continue;
            }
            let left: Vec<&str> = still.iter().filter(|(r, _)| r == name).map(|(_, f)| *f).collect();
            if left.is_empty() {
                fixed += 1;
            } else {
                tracing::warn!(
                    stack,
                    resource = %name,
                    fields = %left.join(", "),
                    "remediation wrote it but AWS still differs from the manifest; its drift stays open"
                );
            }
        }
        let physical = |name: &str| after.resources.get(name).map(|r| r.physical_id.clone()).unwrap_or_default();
        for e in ctx.store.drift_events(Some(stack), false).await? {
            if !done.contains(&e.resource) || !check.was_read(&e.resource) || still.contains(&(e.resource.as_str(), e.field.as_str())) {
                continue;
            }
            if ctx.store.resolve_drift_event(e.id, Resolution::Remediated).await?.is_none() {
                continue;
            }
            let id = physical(&e.resource);
            // A resource deleted outside reconcile was recreated: name what exists now, not the old id.
            let to = if e.field == DELETED { format!("{id} exists") } else { e.expected.to_string() };
            tracing::info!(
                stack,
                resource = %e.resource,
                field = %e.field,
                physical_id = %id,
                reverted_from = %e.actual,
                to = %to,
                "drift remediated"
            );
        }
        ctx.metrics.remediated(stack, fixed as u64);
        Ok(fixed)
    }
}

/// Remediation progress as log lines (and what a long pass waits on).
struct LogReporter<'a> {
    stack: &'a str,
    tracker: &'a Tracker,
}

impl Reporter for LogReporter<'_> {
    fn event(&self, event: Event<'_>) {
        let stack = self.stack;
        match event {
            Event::Started { name, action } => {
                self.tracker.waiting(name, true);
                tracing::info!(stack, resource = name, action = action.verb(), "remediation started")
            }
            Event::Finished { name, action, elapsed } => {
                self.tracker.waiting(name, false);
                tracing::info!(stack, resource = name, action = action.verb(), elapsed_ms = elapsed.as_millis() as u64, "remediation done")
            }
            Event::Failed { name, action, error } => {
                self.tracker.waiting(name, false);
                tracing::warn!(stack, resource = name, action = action.verb(), error, "remediation failed")
            }
            Event::Skipped { name, because, .. } => tracing::warn!(stack, resource = name, because, "remediation skipped"),
        }
    }
}
