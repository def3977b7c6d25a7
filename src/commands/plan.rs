use super::Exit;
use crate::cli::{Global, PlanArgs};
use crate::plan;

use super::{CliError, load_manifest, open_state};

pub async fn run(g: &Global, args: &PlanArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let choices = args.choices.choices();
    let store = open_state(g).await?;
    let state = store.load(&manifest.stack).await?;
    // Names --target and --replace give are checked before any AWS call.
    choices.check(&manifest, &state).map_err(CliError::Refused)?;
    let aws = super::connect_for(g, &manifest).await?;
    let here = crate::identity::check(&store, &manifest.stack, &aws).await?;
    let pending = store.pending_operations(&manifest.stack).await?;
    let (mut plan, live) = plan::compute_with(&manifest, &state, &pending, &aws, &choices, None).await?;
    if let Some(cycle) = crate::apply::plan_cycle(&plan, &state) {
        return Err(CliError::Refused(crate::apply::cycle_refusal(&cycle)));
    }
    plan::check_blockers(&manifest, &state, &mut plan, &aws).await?;
    if g.json {
        let mut doc = serde_json::to_value(&plan).unwrap_or_default();
        if let (Some(calls), Some(obj)) = (super::stats_json(g, Some(&aws)), doc.as_object_mut()) {
            obj.insert("aws_calls".into(), calls);
            obj.insert("aws_calls_by_service".into(), super::service_stats_json(g, Some(&aws)).unwrap_or_default());
            obj.insert("pacing".into(), super::pacing_json(g, Some(&aws)).unwrap_or_default());
            obj.insert("api_budget".into(), super::budget_json(g, Some(&aws)).unwrap_or_default());
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        plan::render::print(&plan);
    }
    super::print_stats(g, Some(&aws));
    let lineage = store.lineage(&manifest.stack).await;
    store.close().await;
    if !plan.blockers.is_empty() {
        if args.out.is_some() {
            eprintln!("The plan was not saved: apply would refuse it as it is.");
        }
        // Like a validation error: the plan cannot be applied as it is.
        return Ok(Exit::Error);
    }
    if let Some(out) = &args.out {
        if store.secret_key().is_none() && !manifest.secrets().is_empty() {
            return Err(CliError::Refused(
                "the plan was not saved: a saved plan proves its secret values unchanged with a fingerprint keyed with the state's \
                 secret key, and this PostgreSQL state has none; give it with --secret-key-file, RECONCILE_SECRET_KEY_FILE or \
                 RECONCILE_SECRET_KEY"
                    .into(),
            ));
        }
        let saved = super::saved::record(&manifest, &plan, &live, &choices, &here, state.serial, lineage?, store.secret_key());
        super::saved::write(out, &saved)?;
        if !g.quiet {
            eprintln!("\nSaved the plan to {}: `reconcile apply {}` carries out exactly this plan.", out.display(), out.display());
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() { Exit::Changes } else { Exit::Ok })
}
