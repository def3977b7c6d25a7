//! Saved plans on disk: `plan --out FILE` writes one, `show FILE` prints it, `apply FILE` carries it out
//! after proving that nothing it was computed from changed (see [`crate::plan::saved`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use super::{CliError, Exit, load_manifest, open_state};
use crate::cli::{ApplyArgs, Global, ShowArgs};
use crate::manifest::Manifest;
use crate::plan::saved::{self, Inputs, SAVED_FORMAT_VERSION, SavedPlan};
use crate::plan::{self, Choices, Plan};
use crate::providers::Live;
use crate::state::{Identity, Store};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The saved plan for `plan`, made from `manifest` against the state at `serial` of `lineage`; its
/// secrets' fingerprint is keyed with `key` (the state's secret key).
#[allow(clippy::too_many_arguments)]
pub(super) fn record(
    manifest: &Manifest,
    plan: &Plan,
    live: &HashMap<String, Option<Live>>,
    choices: &Choices,
    here: &Identity,
    serial: i64,
    lineage: Option<String>,
    key: Option<&crate::state::fingerprint::SecretKey>,
) -> SavedPlan {
    let inputs = Inputs::of(manifest, key);
    SavedPlan {
        saved_plan_format: SAVED_FORMAT_VERSION,
        reconcile_version: VERSION.to_string(),
        stack: manifest.stack.clone(),
        lineage,
        state_serial: serial,
        account_id: here.account_id.clone(),
        partition: here.partition.clone(),
        region: here.region.clone(),
        manifest_sha256: inputs.manifest_sha256,
        code_sha256: inputs.code_sha256,
        secrets_sha256: inputs.secrets_sha256,
        choices: choices.clone(),
        live: saved::live_digests(&saved::touched(plan, live), live, key),
        plan: serde_json::to_value(plan).unwrap_or_default(),
    }
}

/// Writes the saved plan: to a new file created with mode 0600 beside `path`, then renamed over it,
/// so the file never exists with wider permissions, nor half-written.
pub(super) fn write(path: &Path, saved: &SavedPlan) -> Result<(), CliError> {
    let text = serde_json::to_vec_pretty(saved).map_err(|e| CliError::Refused(format!("cannot encode the saved plan: {e}")))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plan".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(&text)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::Refused(format!("cannot write the saved plan to {}: {e}", path.display()))
    })
}

/// Reads a saved plan, refusing a file of another format.
fn read(path: &Path) -> Result<SavedPlan, CliError> {
    let text = std::fs::read(path).map_err(|e| CliError::Refused(format!("cannot read the saved plan {}: {e}", path.display())))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| CliError::Refused(format!("{} is not a saved plan (not JSON: {e})", path.display())))?;
    let format = doc.get("saved_plan_format").and_then(serde_json::Value::as_u64);
    match format {
        None => return Err(CliError::Refused(format!("{} is not a saved plan (no `saved_plan_format`)", path.display()))),
        Some(f) if f != u64::from(SAVED_FORMAT_VERSION) => {
            return Err(CliError::Refused(format!(
                "{} is a saved plan of format {f} (made by reconcile {}); this reconcile ({VERSION}) reads format {SAVED_FORMAT_VERSION}: \
                 make the plan again with this version",
                path.display(),
                doc.get("reconcile_version").and_then(serde_json::Value::as_str).unwrap_or("?")
            )));
        }
        Some(_) => {}
    }
    serde_json::from_value(doc).map_err(|e| CliError::Refused(format!("{} is not a valid saved plan: {e}", path.display())))
}

/// `reconcile show FILE`: the saved plan as `plan` prints it (or its JSON), with what it was made from.
pub(super) fn show(g: &Global, args: &ShowArgs) -> Result<Exit, CliError> {
    let saved = read(&args.file)?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&saved).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    let plan: Plan = serde_json::from_value(saved.plan.clone())
        .map_err(|e| CliError::Refused(format!("{}: the saved plan cannot be read: {e}", args.file.display())))?;
    plan::render::print(&plan);
    if !g.quiet {
        println!(
            "\nSaved plan for stack `{}` in {} ({}, {}), against state serial {}{}; made by reconcile {}.",
            saved.stack,
            saved.account_id,
            saved.partition,
            saved.region,
            saved.state_serial,
            saved.lineage.as_deref().map(|l| format!(" of lineage {l}")).unwrap_or_default(),
            saved.reconcile_version
        );
    }
    Ok(Exit::Ok)
}

/// Why a saved plan cannot be applied: the start of every refusal.
fn stale(why: String) -> CliError {
    CliError::Refused(format!("Saved plan is stale: {why}; nothing was changed. Run `reconcile plan --out FILE` again."))
}

/// `reconcile apply FILE`.
pub(super) async fn apply(g: &Global, args: &ApplyArgs, file: &Path) -> Result<Exit, CliError> {
    let saved = read(file)?;
    if saved.reconcile_version != VERSION {
        return Err(CliError::Refused(format!(
            "the saved plan {} was made by reconcile {}, this is reconcile {VERSION}: apply it with the version that made it, \
             or make the plan again; nothing was changed",
            file.display(),
            saved.reconcile_version
        )));
    }
    let manifest = load_manifest(g)?;
    if manifest.stack != saved.stack {
        return Err(CliError::Refused(format!(
            "the saved plan {} is for stack `{}`, but {} is stack `{}`; nothing was changed",
            file.display(),
            saved.stack,
            manifest.path.display(),
            manifest.stack
        )));
    }
    // What is given now must be what the plan was made from: checked before anything else is read.
    let key = super::secret_key(g)?;
    let inputs = Inputs::of(&manifest, key.as_ref());
    for (what, then, now) in [
        (
            "the manifest (after any variable substitution) differs from the one the plan was made from",
            &saved.manifest_sha256,
            &inputs.manifest_sha256,
        ),
        ("the Lambda code differs from the code the plan was made with", &saved.code_sha256, &inputs.code_sha256),
        (
            "the secret values given now differ from those the plan was made with (or the state's secret key is not the one it was made with)",
            &saved.secrets_sha256,
            &inputs.secrets_sha256,
        ),
    ] {
        if then != now {
            return Err(stale(what.to_string()));
        }
    }
    let store = open_state(g).await?;
    let result = store.with_lock(&manifest.stack, "apply", args.lock_timeout, |_| apply_locked(g, args, &saved, &manifest, &store)).await;
    store.close().await;
    result
}

async fn apply_locked(g: &Global, args: &ApplyArgs, saved: &SavedPlan, manifest: &Manifest, store: &Store) -> Result<Exit, CliError> {
    let state = store.load(&manifest.stack).await?;
    let lineage = store.lineage(&manifest.stack).await?;
    if state.serial != saved.state_serial {
        return Err(stale(format!(
            "the state of stack `{}` changed since the plan was made (serial {} then, {} now)",
            manifest.stack, saved.state_serial, state.serial
        )));
    }
    if lineage != saved.lineage {
        return Err(stale(format!(
            "the state of stack `{}` is not the one the plan was made against (lineage {} then, {} now)",
            manifest.stack,
            saved.lineage.as_deref().unwrap_or("none"),
            lineage.as_deref().unwrap_or("none")
        )));
    }
    let aws = super::connect_for(g, manifest).await?;
    let here = crate::identity::check(store, &manifest.stack, &aws).await?;
    if (&here.account_id, &here.partition, &here.region) != (&saved.account_id, &saved.partition, &saved.region) {
        return Err(CliError::Refused(format!(
            "the saved plan is for account {} ({}, {}), but the credentials and region in use are {here}; nothing was changed",
            saved.account_id, saved.partition, saved.region
        )));
    }
    let pending = store.pending_operations(&manifest.stack).await?;
    // Only what the plan touches is read again.
    let only = saved.live.keys().cloned().collect();
    let (mut plan, live) = plan::compute_with(manifest, &state, &pending, &aws, &saved.choices, Some(&only)).await?;
    for (name, then) in &saved.live {
        let now = saved::live_digest(live.get(name).and_then(Option::as_ref), store.secret_key());
        if now != *then {
            let how = match (then, &now) {
                (Some(_), None) => "was deleted",
                (None, Some(_)) => "appeared",
                _ => "changed",
            };
            return Err(stale(format!("`{name}` {how} in AWS since the plan was made")));
        }
    }
    let now = serde_json::to_value(&plan).unwrap_or_default();
    let (then, now) = (saved::comparable(&saved.plan), saved::comparable(&now));
    if then != now {
        return Err(stale(format!("the plan computed now differs from the saved one ({})", saved::first_difference(&then, &now))));
    }
    if let Some(cycle) = crate::apply::plan_cycle(&plan, &state) {
        return Err(CliError::Refused(crate::apply::cycle_refusal(&cycle)));
    }
    if !plan.has_changes() {
        return super::apply::finish(g, "Apply", &plan, None, store, Some(&aws)).await;
    }
    // What a plan-time check would refuse now (a name taken since, e.g. a REST API of the same name,
    // which AWS lets exist twice; a logging stage whose account role went away) refuses the saved
    // plan too, before any write.
    plan::check_blockers(manifest, &state, &mut plan, &aws).await?;
    if !plan.blockers.is_empty() {
        if !g.json && !g.quiet {
            plan::render::print(&plan);
        }
        return Err(stale("AWS now has something the plan would conflict with (see above)".into()));
    }
    if !g.json && !g.quiet {
        plan::render::print(&plan);
    }
    super::apply::run_plan(g, args, manifest, store, &state, &here, &plan, &aws).await
}
