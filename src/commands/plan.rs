use super::Exit;
use crate::cli::{Global, PlanArgs};
use crate::plan;

use super::{CliError, connect, load_manifest, open_state};

pub async fn run(g: &Global, args: &PlanArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let state = store.load(&manifest.stack).await?;
    let aws = connect(g).await?;
    crate::identity::check(&store, &manifest.stack, &aws).await?;
    let pending = store.pending_operations(&manifest.stack).await?;
    let mut plan = plan::compute(&manifest, &state, &pending, &aws).await?;
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
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        plan::render::print(&plan);
    }
    super::print_stats(g, Some(&aws));
    store.close().await;
    Ok(if !plan.blockers.is_empty() {
        // Like a validation error: the plan cannot be applied as it is.
        Exit::Error
    } else if args.detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
