//! The per-stack loop: one pass per tick ([`StackWatcher::reconcile`], a typed outcome or a typed
//! error), one policy for what an error means ([`StackWatcher::error_policy`]), and the one log line
//! and metrics of each pass.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::cadence::{self, Cadence};
use super::findings;
use super::lease::{self, Held};
use super::metrics::Metrics;
use super::observe::{self, Tracker};
use super::remediate;
use super::sources::{ManifestSource, READ_TIME_LIMIT};
use super::supervisor::Ctx;
use crate::identity::IdentityError;
use crate::manifest::Manifest;
use crate::state::StateError;
use crate::state::lease::Fence;

/// What a pass ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PassEnd {
    /// Every resource the state owns is seen (read now, none backing off) and the outcome recorded.
    Complete,
    /// It ran, but some resources are not seen (failed reads, backing off), or the state moved under it.
    Partial,
    /// Stopped by a signal before anything was recorded.
    Cancelled,
}

/// Counts for the one log line per pass.
#[derive(Debug, Default)]
pub(super) struct PassStats {
    read: usize,
    unreadable: usize,
    open: usize,
    opened: usize,
    resolved: usize,
    remediated: usize,
}

/// What stops a whole pass (a resource that cannot be read is not one: it backs off alone).
#[derive(Debug, thiserror::Error)]
pub(super) enum PassError {
    /// The stack is pinned to another account or region than the credentials in use.
    #[error(transparent)]
    Refused(IdentityError),
    /// Where the credentials in use are could not be checked now.
    #[error(transparent)]
    Identity(IdentityError),
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The `reason` of `reconcile_stack_refused` (and of `/readyz`) while the state file is gone.
pub(super) const STATE_FILE_LOST: &str = "state_file_lost";

/// The supervisor's check, once per interval, that the state file is still the one opened: `Err`
/// (logged) once it was deleted, moved or replaced. Every stack is recorded in it, so the watcher
/// then stops, with that error, rather than go on watching what it can no longer record.
pub(super) fn state_file_lost(ctx: &Ctx) -> Result<(), StateError> {
    match ctx.store.check_file() {
        Err(e @ StateError::Vanished { .. }) => {
            tracing::error!(error = %e, "the state file is gone from under this watcher: stopping every stack (nothing more is written)");
            Err(e)
        }
        _ => Ok(()),
    }
}

/// One stack: its manifest (last good version), read schedule, and what was already said once.
pub(super) struct StackWatcher {
    source: ManifestSource,
    cadence: Cadence,
    told: BTreeSet<(String, &'static str)>,
    /// Why the stack is refused (pinned to another account or region), as last logged.
    refused: Option<String>,
    /// When the watcher last showed it is not stuck (see [`Heartbeat`]).
    beat: Heartbeat,
    /// A read of the manifest and its code that overran [`READ_TIME_LIMIT`] and still runs.
    reading: Option<tokio::task::JoinHandle<ManifestSource>>,
    /// When each drift (resource, field) now seen was first seen, while it could not be recorded (the
    /// state unwritable): its event's `first_seen` once it is.
    unrecorded: BTreeMap<(String, String), String>,
}

/// Whether a stack's watcher is making progress: `Some(t)` while it works (a reload or a pass), `t`
/// being when it last showed it is alive; `None` while it waits between passes. The lease keeper
/// renews no lease for a watcher that has not shown it is alive for a whole TTL (a worker stuck in a
/// blocking call): another watcher can take the stack, and `/readyz` says so.
#[derive(Debug, Clone, Default)]
pub(super) struct Heartbeat(Arc<std::sync::Mutex<Option<Instant>>>);

impl Heartbeat {
    fn set(&self, v: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// Working, alive now.
    pub(super) fn beat(&self) {
        self.set(Some(Instant::now()));
    }

    /// Waiting between passes.
    pub(super) fn idle(&self) {
        self.set(None);
    }

    /// For how long the watcher has been working without showing it is alive.
    pub(super) fn silent_for(&self) -> Option<Duration> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed())
    }
}

impl StackWatcher {
    pub(super) fn new(path: PathBuf, manifest: Manifest, interval: Duration, settle: Duration) -> StackWatcher {
        StackWatcher {
            source: ManifestSource::new(path, manifest, settle),
            cadence: Cadence::new(interval),
            told: BTreeSet::new(),
            refused: None,
            beat: Heartbeat::default(),
            reading: None,
            unrecorded: BTreeMap::new(),
        }
    }

    /// The heartbeat the stack's lease keeper checks.
    pub(super) fn heartbeat(&self) -> Heartbeat {
        self.beat.clone()
    }

    /// Re-reads the manifest and its code off the async workers (files are read in a blocking task,
    /// bounded in size, and given [`READ_TIME_LIMIT`]): a read that overruns is left to finish on its
    /// own while the last good version is watched, and no second read starts meanwhile.
    async fn reload(&mut self, metrics: &Metrics, remediating: bool) {
        let stack = self.source.manifest.stack.clone();
        let handle = match self.reading.take() {
            Some(h) if !h.is_finished() => {
                self.reading = Some(h);
                return;
            }
            Some(h) => h,
            None => {
                self.source.remediating = remediating;
                let mut copy = self.source.clone();
                tokio::task::spawn_blocking(move || {
                    copy.reload();
                    copy
                })
            }
        };
        let mut handle = handle;
        // Waiting on the read is progress (the watcher is not stuck): it says so to the lease keeper.
        let deadline = tokio::time::Instant::now() + READ_TIME_LIMIT;
        let mut alive = tokio::time::interval(Duration::from_secs(1));
        let read = loop {
            tokio::select! {
                done = &mut handle => break Ok(done),
                _ = alive.tick() => self.beat.beat(),
                _ = tokio::time::sleep_until(deadline) => break Err(()),
            }
        };
        match read {
            Ok(Ok(source)) => self.source = source,
            Ok(Err(e)) => {
                tracing::error!(stack, error = %e, "reading the manifest failed unexpectedly; still watching its last good version")
            }
            Err(_) => {
                let message = format!(
                    "reading {} and its code took longer than {} s (a hung file system?)",
                    self.source.path.display(),
                    READ_TIME_LIMIT.as_secs()
                );
                self.source.unreadable(message);
                self.reading = Some(handle);
            }
        }
        let problem = self.source.problem().map(|p| (p.reason, p.message.as_str()));
        metrics.manifest_problem(&stack, problem, remediating);
    }

    /// SHA-256 (hex) of the manifest file in use.
    pub(super) fn manifest_hash(&self) -> String {
        self.source.hash_hex()
    }

    /// Runs passes while this process holds the stack's lease (`held`, kept by the stack's lease
    /// keeper); otherwise keeps the manifest fresh (its hash, in `hash`, is compared with the holder's)
    /// and waits. Dropping `hash` when it ends tells the keeper to release the lease.
    pub(super) async fn run(
        mut self,
        ctx: Arc<Ctx>,
        mut stop: watch::Receiver<bool>,
        mut hup: watch::Receiver<u64>,
        mut held: watch::Receiver<Option<Held>>,
        hash: watch::Sender<String>,
    ) {
        loop {
            if *stop.borrow() {
                break;
            }
            self.beat.beat();
            let remediating = self.remediate(&ctx);
            self.reload(&ctx.metrics, remediating).await;
            self.beat.idle();
            hash.send_if_modified(|h| {
                let now = self.source.hash_hex();
                (*h != now).then(|| *h = now).is_some()
            });
            let Some(fence) = lease::current(&held) else {
                // Another watcher holds the stack (or nobody yet): wait for the lease, re-reading the
                // manifest every interval.
                tokio::select! {
                    Ok(()) = held.changed() => {}
                    _ = tokio::time::sleep(ctx.config.interval) => {}
                    Ok(()) = hup.changed() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            };
            if let Some(from) = ctx.passes_from.get().filter(|from| std::time::Instant::now() < **from) {
                // Joining other watchers: they lower their parts of the API share first.
                tokio::select! {
                    _ = tokio::time::sleep_until((*from).into()) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
            if !self.source.settled() {
                // The version loaded at start (or a new one) is used once it has settled.
                let at = self.source.settle_at().unwrap_or_else(|| Instant::now() + ctx.config.interval);
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    Ok(()) = hup.changed() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
            self.beat.beat();
            let end = self.pass(&ctx, &mut stop, &fence).await;
            self.beat.idle();
            if end == PassEnd::Cancelled {
                break;
            }
            // An edit seen on disk is read again once it can have settled, not an interval later.
            let settle_at = self.source.settle_at();
            tokio::select! {
                _ = async { match settle_at { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => {}
                // The next pass at this stack's place in the interval, so many stacks' passes are
                // spread over it rather than bunched.
                _ = tokio::time::sleep_until(cadence::next_pass(
                    cadence::epoch(),
                    tokio::time::Instant::now().into_std(),
                    ctx.config.interval,
                    cadence::phase(&self.source.manifest.stack, ctx.config.interval),
                ).into()) => {}
                Ok(()) = hup.changed() => {}
                // Lost (or, after a restart of the keeper, taken again): the loop looks again.
                Ok(()) = held.changed() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        tracing::info!(stack = %self.source.manifest.stack, "no longer watching");
    }

    fn remediate(&self, ctx: &Ctx) -> bool {
        ctx.config.remediate || self.source.manifest.remediate
    }

    /// One pass, logged as one line with its duration and AWS calls.
    async fn pass(&mut self, ctx: &Ctx, stop: &mut watch::Receiver<bool>, fence: &Fence) -> PassEnd {
        let stack = self.source.manifest.stack.clone();
        let started = Instant::now();
        // This pass's own calls: other stacks' passes run at the same time on the same clients.
        let tally = crate::providers::calls::Tally::new();
        let mut stats = PassStats::default();
        ctx.metrics.pass_started(&stack);
        let tracker = Tracker::default();
        let beat = self.beat.clone();
        let result = {
            let inner = crate::providers::calls::TALLY.scope(tally.clone(), self.reconcile(ctx, stop, &mut stats, &tracker, fence));
            tokio::pin!(inner);
            // A pass that takes long (AWS slow or unreachable, retries) says what it waits on.
            let every = ctx.config.interval.clamp(Duration::from_secs(5), Duration::from_secs(60));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            let mut alive = tokio::time::interval(ctx.config.lease_renew.max(Duration::from_millis(100)));
            loop {
                tokio::select! {
                    r = &mut inner => break r,
                    _ = alive.tick() => beat.beat(),
                    _ = tick.tick() => {
                        let (phase, waiting) = tracker.snapshot();
                        let (calls, errors) = tally.get();
                        tracing::warn!(
                            stack,
                            running_s = started.elapsed().as_secs(),
                            phase,
                            waiting_on = %waiting.join(", "),
                            aws_calls = calls,
                            aws_errors = errors,
                            "pass still running: {phase}, waiting on {}",
                            if waiting.is_empty() { observe::waits_on(phase).to_string() } else { waiting.join(", ") }
                        );
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        let (calls, errors) = tally.get();
        let end = match result {
            Ok(end) => end,
            Err(e) => self.error_policy(&ctx.metrics, e),
        };
        if end == PassEnd::Cancelled {
            tracing::info!(stack, duration_ms = elapsed.as_millis() as u64, "pass cancelled");
            return end;
        }
        let drift = match ctx.store.open_drift_counts(&stack).await {
            Ok(counts) => {
                let mut all: BTreeMap<String, u64> = self.source.manifest.resources.iter().map(|r| (r.name.clone(), 0)).collect();
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

    /// One tick of the loop: reads what the state owns, records drift and, when remediation is on,
    /// repairs it. A resource that cannot be read backs off alone and makes the pass partial; what
    /// stops the whole pass is a [`PassError`], which [`StackWatcher::error_policy`] handles. Every
    /// state write of the pass (drift, remediation, its journal) is fenced with the stack's lease as
    /// it was when the pass started: a pass whose lease was taken over writes nothing more.
    pub(super) async fn reconcile(
        &mut self,
        ctx: &Ctx,
        stop: &mut watch::Receiver<bool>,
        stats: &mut PassStats,
        tracker: &Tracker,
        fence: &Fence,
    ) -> Result<PassEnd, PassError> {
        let stack = self.source.manifest.stack.clone();
        // A state file deleted or replaced under the watcher: nothing more of this pass (nor any other).
        ctx.store.check_file()?;
        let store = ctx.store.fenced(fence.clone());
        self.check_identity(ctx).await?;
        tracker.phase("reading the state");
        let state = ctx.store.load(&stack).await?;
        let destroyed = state.last_operation == Some(crate::state::StackOperation::Destroy);
        ctx.metrics.destroyed(&stack, destroyed);
        let now = Instant::now();
        let cadence = &self.cadence;
        tracker.phase("reading AWS");
        // Listings made for another stack's pass in this window serve this one too.
        let batch = ctx.reads.batch(&stack, state.serial);
        let aws = ctx.aws.with_secrets(self.source.manifest.secrets());
        let observe =
            crate::providers::batch::scope(batch, observe::observe(&self.source.manifest, &state, &aws, |r| cadence.due(r, now), tracker));
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
        tracker.phase("reading the state");
        let serial = ctx.store.load(&stack).await?.serial;
        if serial != state.serial {
            tracing::info!(stack, "the state changed during the pass (an apply ran); its results are not recorded");
            return Ok(PassEnd::Partial);
        }

        tracker.phase("recording drift");
        let found = findings::findings(&obs.plan, &state, |r| obs.was_read(r));
        let seen = crate::state::backend::now();
        self.unrecorded.retain(|(resource, field), _| found.drift.iter().any(|d| d.resource == *resource && d.field == *field));
        for d in &found.drift {
            self.unrecorded.entry((d.resource.clone(), d.field.clone())).or_insert_with(|| seen.clone());
        }
        let delta = store.record_drift_since(&stack, &found.drift, &found.checked, &found.managed, &self.unrecorded).await?;
        self.unrecorded.clear();
        stats.opened = delta.opened.iter().filter(|d| !d.ignored).count();
        stats.resolved = delta.resolved.iter().filter(|(e, _)| !e.ignored).count();
        for d in delta.opened.iter().filter(|d| d.ignored) {
            tracing::info!(
                stack,
                resource = %d.resource,
                resource_type = %d.kind,
                field = %d.field,
                expected = %d.expected,
                actual = %d.actual,
                "drift in a field ignore_changes names: recorded, not counted, not remediated"
            );
        }
        for d in delta.opened.iter().filter(|d| !d.ignored) {
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
        // While the manifest on disk cannot be used (invalid, unreadable, another stack), drift is
        // recorded against the last good version but not remediated: the file is what an apply would
        // use, and remediating towards an older version could undo what its author meant (logged once
        // per change by the source; shown by /readyz and `reconcile_remediation_paused`).
        if self.remediate(ctx) && !destroyed && self.source.problem().is_none() && !*stop.borrow() {
            let fix = findings::remediation(&obs.plan, &state, |r| obs.was_read(r));
            self.tell_once(
                &stack,
                &fix.deferred,
                "not remediated this pass: it needs a value known only after a change remediation does not make (a replacement); a later pass or `reconcile apply` finishes it",
                "deferred",
            );
            if fix.plan.has_changes() {
                stats.remediated = remediate::remediate(ctx, &store, fence, &self.source, &fix.plan, &state, tracker).await?;
            }
        }
        stats.open = ctx.store.open_drift_counts(&stack).await?.values().sum::<u64>() as usize;
        Ok(end)
    }

    /// Whether the credentials and region in use are where the stack lives (a stack pinned elsewhere is
    /// [`PassError::Refused`]). A stack no longer refused is watched again, and said so once.
    async fn check_identity(&mut self, ctx: &Ctx) -> Result<(), PassError> {
        let stack = self.source.manifest.stack.clone();
        match crate::identity::check(&ctx.store, &stack, &ctx.aws).await {
            Ok(_) => {
                if self.refused.take().is_some() {
                    tracing::info!(stack, "the stack is no longer refused: watching it");
                }
                ctx.metrics.refused(&stack, None);
                Ok(())
            }
            Err(e) if e.is_refusal() => Err(PassError::Refused(e)),
            Err(e) => Err(PassError::Identity(e)),
        }
    }

    /// What an error that stopped a pass means; the pass is partial either way (and /readyz turns 503
    /// once passes have been failing for longer than its threshold). A stack pinned elsewhere is refused
    /// on its own (logged when it starts or its reason changes, shown by /readyz and the
    /// `reconcile_stack_refused` gauge); the other stacks go on. A failed identity check or state read
    /// skips this pass; the next one tries again after the interval.
    fn error_policy(&mut self, metrics: &Metrics, error: PassError) -> PassEnd {
        let stack = self.source.manifest.stack.clone();
        match error {
            PassError::Refused(e) => {
                let message = e.to_string();
                if self.refused.as_deref() != Some(message.as_str()) {
                    tracing::error!(stack, reason = e.reason(), error = %message, "stack refused: not watched until this is fixed; the other stacks go on");
                    self.refused = Some(message.clone());
                }
                metrics.refused(&stack, Some((e.reason(), &message)));
            }
            PassError::Identity(e) => {
                tracing::warn!(stack, error = %e, "cannot check the stack's account and region; skipping this pass");
            }
            PassError::State(e @ StateError::Fenced { .. }) => {
                tracing::info!(stack, error = %e, "another watcher took the stack over during the pass; nothing more of it is recorded")
            }
            PassError::State(e @ StateError::Vanished { .. }) => {
                let message = e.to_string();
                if self.refused.as_deref() != Some(message.as_str()) {
                    tracing::error!(stack, error = %message, "the state file is gone from under this watcher: nothing more is written; stopping");
                    self.refused = Some(message.clone());
                }
                metrics.refused(&stack, Some((STATE_FILE_LOST, &message)));
            }
            PassError::State(e) => tracing::warn!(stack, error = %e, "pass failed"),
        }
        PassEnd::Partial
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Identity;

    fn watcher() -> StackWatcher {
        let text = "[stack]\nname = \"s\"\n\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"lg\"\n";
        let path = PathBuf::from("/nonexistent/stack.toml");
        let manifest = crate::manifest::parse(&path, text.to_string()).unwrap();
        StackWatcher::new(path, manifest, Duration::from_secs(60), Duration::from_secs(2))
    }

    fn here(account: &str) -> Identity {
        Identity { account_id: account.into(), partition: "aws".into(), region: "us-east-1".into() }
    }

    #[test]
    fn the_error_policy_refuses_a_stack_pinned_elsewhere_and_makes_other_errors_a_partial_pass() {
        let metrics = Metrics::default();
        let mut w = watcher();
        metrics.register("s");
        let mismatch = || IdentityError::Mismatch {
            stack: "s".into(),
            pinned: here("111111111111"),
            current: here("222222222222"),
            source_of_pin: "its first apply".into(),
            hint: "",
        };
        assert_eq!(w.error_policy(&metrics, PassError::Refused(mismatch())), PassEnd::Partial);
        assert_eq!(metrics.refusals().len(), 1, "refused, with its reason");
        assert!(metrics.refusals()[0].1.contains("222222222222"), "{:?}", metrics.refusals());
        assert!(w.refused.is_some(), "said once, remembered");
        assert!(!metrics.ready());

        // A state failure is a partial pass, not a refusal.
        let metrics = Metrics::default();
        metrics.register("s");
        let mut w = watcher();
        let state = StateError::Corrupt { path: PathBuf::from("x.db") };
        assert_eq!(w.error_policy(&metrics, PassError::State(state)), PassEnd::Partial);
        assert!(metrics.refusals().is_empty() && w.refused.is_none());

        // The state file gone from under the watcher: reported with its reason, the stack not ready.
        let gone = StateError::Vanished { path: PathBuf::from("x.db"), why: "it was deleted or moved away".into() };
        assert_eq!(w.error_policy(&metrics, PassError::State(gone)), PassEnd::Partial);
        assert_eq!(metrics.refusals().len(), 1);
        assert!(metrics.refusals()[0].1.contains("x.db is no longer the file this process opened"), "{:?}", metrics.refusals());
        assert!(!metrics.ready());
    }
}
