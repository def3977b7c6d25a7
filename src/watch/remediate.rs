//! Remediation: carrying out a pass's repairs under the stack's lock, and counting only what a read
//! afterwards confirms.

use std::collections::BTreeSet;

use super::findings;
use super::observe::{self, Tracker};
use super::sources::ManifestSource;
use super::supervisor::Ctx;
use crate::apply::{self, Event, Options, Reporter, Status};
use crate::plan;
use crate::state::lease::Fence;
use crate::state::{DELETED, Resolution, StateError, Store};

/// Carries out `fix` under the stack's lock, then reads back what it wrote; returns how many
/// resources the read confirms are back to the manifest. Only those events are resolved
/// (`remediated`); a write AWS did not keep leaves its events open.
///
/// `store` is fenced with the stack's watch lease (`fence`): the lease is checked under the lock
/// before anything is written, and again in the transaction of every state write (the journal entry
/// before each AWS write, the records after it, the resolved events), so a watcher that lost the
/// stack mid-pass stops before its next AWS write, and a drift is remediated once.
pub(super) async fn remediate(
    ctx: &Ctx,
    store: &Store,
    fence: &Fence,
    source: &ManifestSource,
    fix: &plan::Plan,
    state: &crate::state::StackState,
    tracker: &Tracker,
) -> Result<usize, StateError> {
    let stack = &source.manifest.stack;
    // A watcher that held the stack before us and died (or stalled) in a remediation left its lock.
    if let Some(lock) = store.break_stale_remediation_lock(fence).await? {
        tracing::warn!(
            stack,
            pid = lock.pid,
            host = %lock.host,
            since = %lock.acquired_at,
            "broke the stack lock a remediation of the stack's previous watcher left (that watcher no longer holds the stack)"
        );
    }
    let pending = store.pending_operations(stack).await?;
    if !pending.is_empty() {
        tracing::warn!(
            stack,
            pending = pending.len(),
            "an interrupted apply left work in the journal; run `reconcile apply`; not remediating"
        );
        return Ok(0);
    }
    tracker.phase("waiting for the stack's lock");
    let remediation = store.with_lock(stack, crate::state::lease::REMEDIATION_LOCK, ctx.config.lock_timeout, |_| async {
        if !store.fence_holds(fence).await? {
            tracing::info!(stack, "another watcher took the stack over during the pass; it remediates, this one does not");
            return Ok(None);
        }
        // The plan was made from the state as read and from the files as loaded; if an apply moved
        // the state since, or the manifest or its code changed (an apply may be about to deploy
        // them), remediating now could undo it: wait for the next pass.
        let now = store.load(stack).await?;
        if now.serial != state.serial || now.last_operation != state.last_operation {
            tracing::info!(
                stack,
                "the state changed since the pass read it (an apply or destroy ran); remediation waits for the next pass"
            );
            return Ok(None);
        }
        // Read off the async workers (bounded regular-file reads).
        let copy = source.clone();
        if tokio::task::spawn_blocking(move || copy.changed()).await.unwrap_or(true) {
            tracing::info!(stack, "the manifest or its code changed during the pass; remediation waits for the next pass");
            return Ok(None);
        }
        let changes: Vec<_> = fix.resources.iter().filter(|c| c.action != plan::Action::NoOp).map(|c| c.name.as_str()).collect();
        tracing::info!(stack, resources = %changes.join(", "), "remediating");
        if !pin_before_writing(ctx, store, stack).await {
            return Ok(None);
        }
        tracker.phase("remediating");
        let options = Options { parallelism: ctx.config.parallelism };
        let reporter = LogReporter { stack, tracker };
        // The stack's secret values are kept out of every error the remediation reports or journals.
        let aws = ctx.aws.with_secrets(source.manifest.secrets());
        Ok::<_, StateError>(Some(apply::execute(fix, state, store, &aws, options, &reporter).await))
    });
    let report = match remediation.await {
        Ok(Some(report)) => report,
        Ok(None) => return Ok(0),
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
    let done: BTreeSet<String> = report.outcomes.iter().filter(|o| o.status == Status::Done).map(|o| o.name.clone()).collect();
    if done.is_empty() {
        return Ok(0);
    }

    // Read back what was written: only what AWS now shows as the manifest says is remediated.
    tracker.phase("reading back what remediation wrote");
    let after = store.load(stack).await?;
    let check = observe::observe(&source.manifest, &after, &ctx.aws, |r| done.contains(r), tracker).await;
    let found = findings::findings(&check.plan, &after, |r| check.was_read(r));
    // Drift in ignored fields is never remediated, so it does not count against what was.
    let still: BTreeSet<(&str, &str)> =
        found.drift.iter().filter(|d| !d.ignored).map(|d| (d.resource.as_str(), d.field.as_str())).collect();
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
    for e in store.drift_events(Some(stack), false).await? {
        if !done.contains(&e.resource) || !check.was_read(&e.resource) || still.contains(&(e.resource.as_str(), e.field.as_str())) {
            continue;
        }
        if store.resolve_drift_event(e.id, Resolution::Remediated).await?.is_none() {
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

/// Pins the stack where the watcher works before remediation writes (it may create a stack that
/// was never applied), as apply does.
async fn pin_before_writing(ctx: &Ctx, store: &Store, stack: &str) -> bool {
    let pinned = match ctx.aws.identity().await {
        Ok(here) => crate::identity::pin(store, stack, &here).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = &pinned {
        tracing::warn!(stack, error = %e, "cannot pin the stack to its account and region; not remediating");
    }
    pinned.is_ok()
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
