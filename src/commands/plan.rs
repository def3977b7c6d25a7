use crate::cli::{Exit, Global, PlanArgs};
use crate::plan;

use super::{CliError, connect, load_manifest, open_state};

pub async fn run(g: &Global, args: &PlanArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let state = store.load(&manifest.stack).await?;
    let aws = connect(g).await?;
    let plan = plan::compute(&manifest, &state, &aws).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default());
    } else {
        print!("{}", plan::render::human(&plan));
    }
    store.close().await;
    Ok(if args.detailed_exitcode && plan.has_changes() { Exit::Changes } else { Exit::Ok })
}
