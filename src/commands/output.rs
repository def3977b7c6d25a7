use super::Exit;
use crate::cli::{Global, OutputArgs};

use super::{CliError, load_manifest, open_state};

pub async fn run(g: &Global, args: &OutputArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let state = store.load(&manifest.stack).await?;
    store.close().await;
    match &args.name {
        Some(name) => {
            let value = state.outputs.get(name).ok_or_else(|| {
                let known: Vec<_> = state.outputs.keys().map(String::as_str).collect();
                CliError::Refused(format!("no output `{name}` in the state of stack `{}`; known: {}", manifest.stack, known.join(", ")))
            })?;
            if g.json { println!("{}", serde_json::json!(value)) } else { println!("{value}") }
        }
        None if g.json => println!("{}", serde_json::to_string_pretty(&state.outputs).unwrap_or_default()),
        None => {
            for (k, v) in &state.outputs {
                println!("{k} = {v}");
            }
        }
    }
    Ok(Exit::Ok)
}
