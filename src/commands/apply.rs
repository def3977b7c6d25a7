use serde_json::json;

use super::Exit;
use crate::apply::{self, Options, Report, Status};
use crate::cli::{ApplyArgs, ApplyCommandArgs, Global};
use crate::identity;
use crate::manifest::Manifest;
use crate::plan::{self, Plan};
use crate::state::Store;

use super::progress::Progress;
use super::{CliError, calls_by_resource_json, confirm, connect_for, load_manifest, open_state, print_stats, stats_json};
use crate::providers::Aws;

pub async fn apply(g: &Global, command: &ApplyCommandArgs) -> Result<Exit, CliError> {
    if let Some(file) = &command.plan_file {
        return super::saved::apply(g, &command.run, file).await;
    }
    let args = &command.run;
    let choices = command.choices.choices();
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let result = store.with_lock(&manifest.stack, "apply", args.lock_timeout, |_| apply_locked(g, args, &choices, &manifest, &store)).await;
    store.close().await;
    result
}

pub async fn destroy(g: &Global, args: &ApplyArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let result = store.with_lock(&manifest.stack, "destroy", args.lock_timeout, |_| destroy_locked(g, args, &manifest, &store)).await;
    store.close().await;
    result
}

async fn apply_locked(g: &Global, args: &ApplyArgs, choices: &plan::Choices, manifest: &Manifest, store: &Store) -> Result<Exit, CliError> {
    // Names --target and --replace give are checked before any AWS call.
    choices.check(manifest, &store.load(&manifest.stack).await?).map_err(CliError::Refused)?;
    let aws = connect_for(g, manifest).await?;
    let here = identity::check(store, &manifest.stack, &aws).await?;
    let state = store.load(&manifest.stack).await?;
    let pending = store.pending_operations(&manifest.stack).await?;
    let (mut plan, _) = plan::compute_with(manifest, &state, &pending, &aws, choices, None).await?;
    if let Some(cycle) = apply::plan_cycle(&plan, &state) {
        return Err(CliError::Refused(apply::cycle_refusal(&cycle)));
    }
    if !plan.has_changes() && plan.blockers.is_empty() {
        // Nothing to confirm: the stack is meant to exist as it is (e.g. after a destroy whose deletes
        // all failed), so `watch --remediate` may repair it again.
        if state.last_operation == Some(crate::state::StackOperation::Destroy) {
            store.set_last_operation(&manifest.stack, crate::state::StackOperation::Apply).await?;
        }
        rekey_fingerprints(store, manifest).await;
        // What an interrupted run journaled turned out to be in place already (a replacement killed
        // after AWS made a child whose id its parent fixes, such as a stage's web ACL association):
        // nothing is left to do for those entries.
        for id in &plan.interrupted_operations {
            store.finish_operation(*id, &crate::state::OperationOutcome::Reconciled).await?;
        }
        return finish(g, "Apply", &plan, None, store, Some(&aws)).await;
    }
    plan::check_blockers(manifest, &state, &mut plan, &aws).await?;
    if !g.json && !g.quiet {
        plan::render::print(&plan);
    }
    refuse_blockers(&plan)?;
    if !args.auto_approve {
        confirm("\nApply these changes?")?;
    }
    run_plan(g, args, manifest, store, &state, &here, &plan, &aws).await
}

/// Carries out a plan computed (or recomputed from a saved one) under the stack's lock, once shown
/// and approved: refuses it whole if AWS has something in its way, pins the stack, runs it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_plan(
    g: &Global,
    args: &ApplyArgs,
    manifest: &Manifest,
    store: &Store,
    state: &crate::state::StackState,
    here: &crate::state::Identity,
    plan: &Plan,
    aws: &Aws,
) -> Result<Exit, CliError> {
    refuse_blockers(plan)?;
    identity::pin(store, &manifest.stack, here).await?;
    // From here on the stack is meant to exist again: `watch --remediate` may repair it.
    if state.last_operation != Some(crate::state::StackOperation::Apply) {
        store.set_last_operation(&manifest.stack, crate::state::StackOperation::Apply).await?;
    }
    let progress = Progress { enabled: !g.json && !g.quiet };
    let options = Options { parallelism: args.parallelism.into() };
    let report = apply::execute(plan, state, store, aws, options, &progress).await;
    rekey_fingerprints(store, manifest).await;
    let exit = finish(g, "Apply", plan, Some(report), store, Some(aws)).await?;
    // A resource that is not ours and has nothing to change runs no operation, but the apply did not
    // bring the stack to what it should be: it says so and fails.
    let refused: Vec<&plan::Blocker> = plan
        .blockers
        .iter()
        .filter(|b| b.problem == plan::Problem::Conflict)
        .filter(|b| plan.resources.iter().any(|c| c.name == b.resource && !c.deposed && c.action == plan::Action::NoOp))
        .collect();
    for b in &refused {
        eprintln!("error: {}: {}", b.resource, b.message);
    }
    Ok(if refused.is_empty() { exit } else { Exit::Error })
}

/// Re-keys the secret fingerprints an older version left unkeyed in the stack's state, from the
/// manifest's values (see [`crate::state::fingerprint`]); a failure only warns (nothing depends on them).
async fn rekey_fingerprints(store: &Store, manifest: &Manifest) {
    let desired = manifest.resources.iter().map(|r| (r.name.clone(), r.attrs.clone())).collect();
    if let Err(e) = store.rekey_fingerprints(&manifest.stack, &desired).await {
        tracing::warn!(error = %e, "re-keying the state's secret fingerprints; the next apply tries again");
    }
}

fn refuse_blockers(plan: &Plan) -> Result<(), CliError> {
    // A conflicting create fails on its own (and skips what depends on it), without an AWS call; a
    // logging stage the region cannot take refuses the whole plan before anything is created.
    let refused: Vec<String> =
        plan.blockers.iter().filter(|b| b.problem != plan::Problem::Conflict).map(|b| format!("{}: {}", b.resource, b.message)).collect();
    if !refused.is_empty() {
        return Err(CliError::Refused(format!("refusing to apply; nothing was changed:\n  {}", refused.join("\n  "))));
    }
    Ok(())
}

async fn destroy_locked(g: &Global, args: &ApplyArgs, manifest: &Manifest, store: &Store) -> Result<Exit, CliError> {
    let state = store.load(&manifest.stack).await?;
    // The state's key for each manifest resource: its own, or the key a `[[moved]]` entry not applied
    // yet moves from (protect and retain_on_delete follow the resource, whatever its key).
    let recorded_as = |name: &str| -> Option<String> {
        if state.resources.contains_key(name) {
            return Some(name.to_string());
        }
        manifest.moved.iter().find(|m| m.to == name && state.resources.contains_key(&m.from)).map(|m| m.from.clone())
    };
    // Every declared resource with the flag, switched on or off.
    let protected: Vec<String> =
        manifest.protected.iter().filter(|name| recorded_as(name).is_some()).map(|name| plan::protect_refusal(name, "deletion")).collect();
    if !protected.is_empty() {
        return Err(CliError::Refused(format!("refusing to destroy; nothing was changed:\n  {}", protected.join("\n  "))));
    }
    let aws = connect_for(g, manifest).await?;
    identity::check(store, &manifest.stack, &aws).await?;
    let pending = store.pending_operations(&manifest.stack).await?;
    let mut inspection = plan::inspect(manifest, &state, &pending, &aws).await?;
    // What the manifest declares is retained as it says now (even if no apply recorded it yet).
    for r in &manifest.resources {
        let key = recorded_as(&r.name).unwrap_or_else(|| r.name.clone());
        if r.retain_on_delete {
            inspection.state.retained.insert(key);
        } else {
            inspection.state.retained.remove(&key);
        }
    }
    let plan = plan::destroy(&manifest.stack, &inspection);
    if !plan.has_changes() {
        if state.serial > 0 {
            mark_destroyed(store, &manifest.stack, &state).await?;
        }
        return finish(g, "Destroy", &plan, None, store, Some(&aws)).await;
    }
    if !g.json && !g.quiet {
        plan::render::print(&plan);
    }
    if !args.auto_approve {
        confirm("\nDelete all of these resources?")?;
    }
    // Before the first delete, so a watcher never recreates what this destroy removed (even if it stops half-way).
    mark_destroyed(store, &manifest.stack, &state).await?;
    let progress = Progress { enabled: !g.json && !g.quiet };
    let options = Options { parallelism: args.parallelism.into() };
    let report = apply::execute(&plan, &state, store, &aws, options, &progress).await;
    if let Err(e) = identity::release_if_empty(store, &manifest.stack).await {
        tracing::warn!(error = %e, "unpinning the destroyed stack");
    }
    finish(g, "Destroy", &plan, Some(report), store, Some(&aws)).await
}

/// Records that the stack's last operation is a destroy: `watch --remediate` leaves it alone until the next apply.
async fn mark_destroyed(store: &Store, stack: &str, state: &crate::state::StackState) -> Result<(), CliError> {
    if state.last_operation != Some(crate::state::StackOperation::Destroy) {
        store.set_last_operation(stack, crate::state::StackOperation::Destroy).await?;
    }
    Ok(())
}

/// Prints the outcome; `what` is `Apply` or `Destroy`.
pub(super) async fn finish(
    g: &Global,
    what: &str,
    plan: &Plan,
    report: Option<Report>,
    store: &Store,
    aws: Option<&Aws>,
) -> Result<Exit, CliError> {
    let serial = store.load(&plan.stack).await.map(|s| s.serial).unwrap_or(plan.state_serial);
    let failed = report.as_ref().is_some_and(Report::failed);
    print_stats(g, aws);
    if g.json {
        let mut doc = json!({"plan": plan, "result": report, "state_serial": serial, "success": !failed});
        if let (Some(calls), Some(by_resource), Some(obj)) = (stats_json(g, aws), calls_by_resource_json(g, aws), doc.as_object_mut()) {
            obj.insert("aws_calls".into(), calls);
            obj.insert("aws_calls_by_service".into(), super::service_stats_json(g, aws).unwrap_or_default());
            obj.insert("aws_calls_by_resource".into(), by_resource);
            obj.insert("pacing".into(), super::pacing_json(g, aws).unwrap_or_default());
            obj.insert("api_budget".into(), super::budget_json(g, aws).unwrap_or_default());
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(if failed { Exit::Error } else { Exit::Ok });
    }
    let Some(r) = &report else {
        plan::render::print(plan);
        return Ok(Exit::Ok);
    };
    let count = |s: Status| r.outcomes.iter().filter(|o| o.status == s).count();
    println!(
        "\n{what} {}: {} done, {} failed, {} skipped (state serial {serial}).",
        if failed { "failed" } else { "complete" },
        count(Status::Done),
        count(Status::Failed),
        count(Status::Skipped)
    );
    for o in r.outcomes.iter().filter(|o| o.status == Status::Failed) {
        println!("  {}: {}", o.name, o.error.as_deref().unwrap_or_default());
    }
    if !r.outputs.is_empty() {
        println!("\nOutputs:");
        for (k, v) in &r.outputs {
            println!("  {k} = {v}");
        }
    }
    Ok(if failed { Exit::Error } else { Exit::Ok })
}
