//! `reconcile state list|show|rm|mv`: the state's records of a stack, read and edited by hand. None of
//! them calls AWS; `rm` and `mv` write, under the stack lock.

use serde_json::{Value, json};

use super::{CliError, Exit, load_manifest, open_existing_state};
use crate::cli::{Global, StateCommand, StateMigrateArgs, StateMvArgs, StateRmArgs};
use crate::manifest::{Manifest, refs, schema::SENSITIVE};
use crate::state::{ResourceState, StackState, Store};

pub async fn run(g: &Global, command: &StateCommand) -> Result<Exit, CliError> {
    if let StateCommand::Migrate(args) = command {
        return migrate(g, args).await;
    }
    let manifest = load_manifest(g)?;
    let store = open_existing_state(g).await?;
    let result = match command {
        StateCommand::List => store.load(&manifest.stack).await.map_err(CliError::from).and_then(|s| list(g, &manifest, &s)),
        StateCommand::Show(args) => {
            store.load(&manifest.stack).await.map_err(CliError::from).and_then(|s| show(g, &manifest, &s, &args.name))
        }
        StateCommand::Rm(args) => rm(g, &manifest, &store, args).await,
        StateCommand::Mv(args) => mv(g, &manifest, &store, args).await,
        StateCommand::Migrate(args) => migrate(g, args).await,
    };
    store.close().await;
    result
}

fn list(g: &Global, manifest: &Manifest, state: &StackState) -> Result<Exit, CliError> {
    if g.json {
        let rows: Vec<Value> = state
            .resources
            .values()
            .map(|r| {
                let mut row = json!({"name": r.name, "type": r.kind, "physical_id": r.physical_id});
                if let Some(why) = state.incomplete.get(&r.name) {
                    row["incomplete"] = json!(why);
                }
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    if state.resources.is_empty() {
        if !g.quiet {
            println!("The state records no resources for stack `{}`.", manifest.stack);
        }
        return Ok(Exit::Ok);
    }
    let width = |f: fn(&ResourceState) -> usize| state.resources.values().map(f).max().unwrap_or(0);
    let (name_w, kind_w) = (width(|r| r.name.len()), width(|r| r.kind.type_name().len()));
    for r in state.resources.values() {
        let incomplete = if state.incomplete.contains_key(&r.name) { "  (incomplete)" } else { "" };
        println!("{:<name_w$}  {:<kind_w$}  {}{incomplete}", r.name, r.kind.type_name(), r.physical_id);
    }
    Ok(Exit::Ok)
}

/// The recorded attributes with every secret field's values replaced by the sensitive marker (the
/// state holds their hashes, which are not to be shown either).
pub fn masked(r: &ResourceState) -> Value {
    let mut attributes = r.attributes.clone();
    if let Value::Object(map) = &mut attributes {
        for field in r.kind.schema().secret_fields() {
            match map.get_mut(field.name) {
                Some(Value::Object(values)) => values.values_mut().for_each(|v| *v = json!(SENSITIVE)),
                Some(Value::Null) | None => {}
                Some(v) => *v = json!(SENSITIVE),
            }
        }
    }
    attributes
}

fn show(g: &Global, manifest: &Manifest, state: &StackState, name: &str) -> Result<Exit, CliError> {
    let r = recorded(manifest, state, name)?;
    let incomplete = state.incomplete.get(name);
    if g.json {
        let mut doc = json!({
            "name": r.name,
            "type": r.kind,
            "physical_id": r.physical_id,
            "attributes": masked(r),
            "outputs": r.outputs,
            "depends_on": r.depends_on,
        });
        if let Some(why) = incomplete {
            doc["incomplete"] = json!(why);
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    let mut text = format!("{} ({})\n  physical id: {}\n", r.name, r.kind, r.physical_id);
    if let Some(why) = incomplete {
        text.push_str(&format!("  incomplete: {why}\n"));
    }
    if !r.depends_on.is_empty() {
        text.push_str(&format!("  depends on: {}\n", r.depends_on.join(", ")));
    }
    text.push_str("  attributes:\n");
    if let Value::Object(map) = masked(r) {
        for (k, v) in map {
            text.push_str(&format!("    {k} = {}\n", indent(&v)));
        }
    }
    if !r.outputs.is_empty() {
        text.push_str("  outputs:\n");
        for (k, v) in &r.outputs {
            text.push_str(&format!("    {k} = {v}\n"));
        }
    }
    print!("{text}");
    Ok(Exit::Ok)
}

/// A value on one line when it is short, else pretty JSON indented under its key.
fn indent(v: &Value) -> String {
    let line = v.to_string();
    if line.len() <= 80 { line } else { serde_json::to_string_pretty(v).unwrap_or_default().replace('\n', "\n    ") }
}

fn recorded<'a>(manifest: &Manifest, state: &'a StackState, name: &str) -> Result<&'a ResourceState, CliError> {
    state.resources.get(name).ok_or_else(|| {
        let known: Vec<&str> = state.resources.keys().map(String::as_str).collect();
        CliError::Refused(if known.is_empty() {
            format!("the state records no resources for stack `{}`", manifest.stack)
        } else {
            format!("the state of stack `{}` has no resource `{name}`; it records: {}", manifest.stack, known.join(", "))
        })
    })
}

async fn rm(g: &Global, manifest: &Manifest, store: &Store, args: &StateRmArgs) -> Result<Exit, CliError> {
    store
        .with_lock(&manifest.stack, "state rm", args.lock_timeout, |_| async {
            let state = store.load(&manifest.stack).await?;
            let r = recorded(manifest, &state, &args.name)?;
            let (_, closed) = store.forget_resource(&manifest.stack, &r.name).await?;
            let still_declared = manifest.resource(&r.name).is_some_and(|m| m.kind == r.kind);
            // What interrupted runs journaled for this key is forgotten too: no later run deletes or
            // adopts what they left (e.g. the previous resource of an unfinished replacement).
            let left: Vec<String> =
                closed.iter().map(|p| format!("{} ({})", p.action.as_str(), p.physical_name.as_deref().unwrap_or("no name recorded"))).collect();
            if g.json {
                println!(
                    "{}",
                    json!({"removed": r.name, "type": r.kind, "physical_id": r.physical_id, "forgotten_journal_entries": left})
                );
            } else if !g.quiet {
                println!(
                    "Removed `{}` ({} `{}`) from the state of stack `{}`; it is still in AWS, no longer managed.",
                    r.name, r.kind, r.physical_id, manifest.stack
                );
                if !left.is_empty() {
                    println!(
                        "Also forgotten, as interrupted runs left them (check AWS for them): {}.",
                        left.join(", ")
                    );
                }
                if still_declared {
                    println!(
                        "The manifest still declares it: the next plan shows its create as a conflict. `reconcile import {} {}` adopts it again.",
                        r.name, r.physical_id
                    );
                }
            }
            Ok(Exit::Ok)
        })
        .await
}

async fn mv(g: &Global, manifest: &Manifest, store: &Store, args: &StateMvArgs) -> Result<Exit, CliError> {
    let (old, new) = (args.old.as_str(), args.new.as_str());
    if !refs::is_ident(new) {
        return Err(CliError::Refused(format!(
            "`{new}` is not a resource key: it must start with a letter or `_` and hold only letters, digits, `_` and `-`"
        )));
    }
    if old == new {
        return Err(CliError::Refused(format!("`{old}` and `{new}` are the same key: nothing to move")));
    }
    store
        .with_lock(&manifest.stack, "state mv", args.lock_timeout, |_| async {
            let state = store.load(&manifest.stack).await?;
            let r = recorded(manifest, &state, old)?;
            if let Some(taken) = state.resources.get(new) {
                return Err(CliError::Refused(format!(
                    "the state of stack `{}` already has `{new}` ({} `{}`); `reconcile state rm {new}` first if it is to go",
                    manifest.stack, taken.kind, taken.physical_id
                )));
            }
            if let Some(declared) = manifest.resource(new).filter(|d| d.kind != r.kind) {
                return Err(CliError::Refused(format!(
                    "the manifest gives `{new}` the type {}, and `{old}` is a {}: a record keeps its type",
                    declared.kind, r.kind
                )));
            }
            store.rename_resource(&manifest.stack, old, new).await?;
            if g.json {
                println!("{}", json!({"moved": {"from": old, "to": new}, "type": r.kind, "physical_id": r.physical_id}));
            } else if !g.quiet {
                println!("Moved `{old}` to `{new}` ({} `{}`) in the state of stack `{}`.", r.kind, r.physical_id, manifest.stack);
                if r.kind.schema().taggable {
                    println!(
                        "Its `{}` tag keeps naming `{old}`, the key it was created under: nothing changes in AWS.",
                        crate::manifest::TAG_RESOURCE
                    );
                }
                if manifest.resource(new).is_none() {
                    println!("The manifest has no `{new}`: the next plan deletes it unless the manifest declares it.");
                }
            }
            Ok(Exit::Ok)
        })
        .await
}

/// `state migrate --to`: every stack of the current state, copied to another (see [`Store::migrate_to`]).
async fn migrate(g: &Global, args: &StateMigrateArgs) -> Result<Exit, CliError> {
    let source = open_existing_state(g).await?;
    let target = match Store::open(&args.to).await {
        Ok(t) => t,
        Err(e) => {
            source.close().await;
            return Err(e.into());
        }
    };
    let result = source.migrate_to(&target).await;
    let (from, to) = (source.path().display().to_string(), target.path().display().to_string());
    source.close().await;
    target.close().await;
    let moved = result?;
    if g.json {
        println!("{}", json!({"from": from, "to": to, "stacks": moved}));
    } else if !g.quiet {
        if moved.is_empty() {
            println!("{from} has no stacks: nothing to migrate.");
        }
        for m in &moved {
            println!(
                "Copied stack `{}` to {to}: {} resources, {} journal entries, {} drift events, serial {}{} (sha256 {}).",
                m.stack,
                m.resources,
                m.journal_entries,
                m.drift_events,
                m.serial,
                m.pinned_to.as_ref().map(|p| format!(", pinned to {p}")).unwrap_or_default(),
                &m.sha256[..16]
            );
        }
        if !moved.is_empty() {
            println!(
                "Checked: every copied row reads back as in {from}, which is left as it was. Point --state (RECONCILE_STATE) at {to} to use it."
            );
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    #[test]
    fn secret_values_are_masked_and_their_hashes_not_shown() {
        let r = ResourceState {
            name: "f".into(),
            kind: Kind::LambdaFunction,
            physical_id: "F".into(),
            attributes: json!({
                "function_name": "F",
                "environment": {"MODE": "prod"},
                "secret_environment": {"API_KEY": "sha256:0123abcd", "TOKEN": "sha256:4567ef"},
            }),
            outputs: Default::default(),
            depends_on: vec![],
        };
        let shown = masked(&r);
        assert_eq!(shown["secret_environment"], json!({"API_KEY": SENSITIVE, "TOKEN": SENSITIVE}));
        assert_eq!(shown["environment"], json!({"MODE": "prod"}));
        assert!(!shown.to_string().contains("sha256:"), "{shown}");
    }
}
