use serde_json::json;

use crate::apply::{self, Options, Report, Status};
use crate::cli::{ApplyArgs, Exit, Global};
use crate::plan::{self, Plan};

use super::progress::Progress;
use super::{CliError, confirm, connect, load_manifest, open_state};

pub async fn apply(g: &Global, args: &ApplyArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let state = store.load(&manifest.stack).await?;
    let aws = connect(g).await?;
    let plan = plan::compute(&manifest, &state, &aws).await?;
    if !plan.has_changes() {
        return finish(g, &plan, None, &store).await;
    }
    if !g.json && !g.quiet {
        print!("{}", plan::render::human(&plan));
    }
    if !args.auto_approve {
        confirm("\nApply these changes?")?;
    }
    let progress = Progress { enabled: !g.json && !g.quiet };
    let report =
        apply::execute(&plan, Some(&manifest), &state, &store, &aws, Options { parallelism: args.parallelism.into() }, &progress).await;
    finish(g, &plan, Some(report), &store).await
}

pub async fn destroy(g: &Global, args: &ApplyArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let state = store.load(&manifest.stack).await?;
    let protected: Vec<&str> =
        manifest.resources.iter().filter(|r| r.protect && state.resources.contains_key(&r.name)).map(|r| r.name.as_str()).collect();
    if !protected.is_empty() {
        return Err(CliError::Refused(format!("refusing to destroy: `protect = true` on {}", protected.join(", "))));
    }
    let plan = plan::destroy(&manifest.stack, &state);
    if !plan.has_changes() {
        return finish(g, &plan, None, &store).await;
    }
    if !g.json && !g.quiet {
        print!("{}", plan::render::human(&plan));
    }
    if !args.auto_approve {
        confirm("\nDelete all of these resources?")?;
    }
    let aws = connect(g).await?;
    let progress = Progress { enabled: !g.json && !g.quiet };
    let report = apply::execute(&plan, None, &state, &store, &aws, Options { parallelism: args.parallelism.into() }, &progress).await;
    finish(g, &plan, Some(report), &store).await
}

async fn finish(g: &Global, plan: &Plan, report: Option<Report>, store: &crate::state::Store) -> Result<Exit, CliError> {
    let serial = store.load(&plan.stack).await.map(|s| s.serial).unwrap_or(plan.state_serial);
    store.close().await;
    let failed = report.as_ref().is_some_and(Report::failed);
    if g.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"plan": plan, "result": report, "state_serial": serial, "success": !failed}))
                .unwrap_or_default()
        );
    } else {
        match &report {
            None => print!("{}", plan::render::human(plan)),
            Some(r) => {
                let count = |s: Status| r.outcomes.iter().filter(|o| o.status == s).count();
                println!(
                    "\n{}: {} done, {} failed, {} skipped (state serial {serial}).",
                    if failed { "Apply failed" } else { "Apply complete" },
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
            }
        }
    }
    Ok(if failed { Exit::Error } else { Exit::Ok })
}
