//! One module per subcommand; each is a thin shell over the manifest, plan, apply and state layers.

mod apply;
mod drift;
mod output;
mod plan;
mod progress;
mod watch;

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::{Cli, Command, Exit, Global};
use crate::manifest::{self, Manifest, ManifestError};
use crate::plan::PlanError;
use crate::providers::{Aws, ProviderError};
use crate::state::{StateError, Store};

/// Everything a command can fail with, reported once at the edge.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    // (PlanError is boxed: it carries a whole provider error and would make every Result large.)
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Aws(#[from] ProviderError),
    #[error(transparent)]
    Plan(#[from] Box<PlanError>),
    #[error("{0}")]
    Refused(String),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(cli: Cli) -> Exit {
    let g = &cli.global;
    let result = match &cli.command {
        Command::Validate => validate(g),
        Command::Plan(args) => plan::run(g, args).await,
        Command::Apply(args) => apply::apply(g, args).await,
        Command::Destroy(args) => apply::destroy(g, args).await,
        Command::Output(args) => output::run(g, args).await,
        Command::ForceUnlock(args) => force_unlock(g, &args.lock_id, args.force).await,
        Command::Import(args) => import(g, args).await,
        Command::Watch(args) => watch::run(g, args).await,
        Command::Drift(args) => drift::run(g, args).await,
    };
    match result {
        Ok(exit) => exit,
        Err(e) => {
            report_error(g, &e);
            Exit::Error
        }
    }
}

fn report_error(g: &Global, e: &CliError) {
    if g.json {
        let diagnostics = match e {
            CliError::Manifest(m) => serde_json::to_value(m.diagnostics()).unwrap_or_default(),
            _ => serde_json::Value::Array(vec![]),
        };
        let doc = serde_json::json!({"error": e.to_string(), "diagnostics": diagnostics});
        println!("{doc}");
    }
    eprintln!("error: {e}");
}

fn validate(g: &Global) -> Result<Exit, CliError> {
    let m = load_manifest(g)?;
    if g.json {
        let resources: Vec<_> =
            m.resources.iter().map(|r| serde_json::json!({"name": r.name, "type": r.kind, "depends_on": r.deps})).collect();
        println!("{}", serde_json::json!({"valid": true, "stack": m.stack, "resources": resources}));
    } else if !g.quiet {
        println!("{}: stack `{}` is valid ({} resources).", m.path.display(), m.stack, m.resources.len());
    }
    Ok(Exit::Ok)
}

impl From<PlanError> for CliError {
    fn from(e: PlanError) -> Self {
        CliError::Plan(Box::new(e))
    }
}

async fn import(g: &Global, args: &crate::cli::ImportArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let resource = manifest
        .resource(&args.resource)
        .ok_or_else(|| CliError::Refused(format!("no resource `{}` in {}", args.resource, manifest.path.display())))?;
    let store = open_state(g).await?;
    let lock = store.lock(&manifest.stack, "import", args.lock_timeout).await?;
    let result = async {
        let state = store.load(&manifest.stack).await?;
        if let Some(existing) = state.resources.get(&resource.name) {
            return Err(CliError::Refused(format!("`{}` is already in the state as {}", resource.name, existing.physical_id)));
        }
        let aws = connect(g).await?;
        let live = crate::providers::read(&aws, resource.kind, &args.id)
            .await?
            .ok_or_else(|| CliError::Refused(format!("no {} `{}` in AWS", resource.kind, args.id)))?;
        let mut live = live;
        crate::manifest::schema::split_secrets(resource.kind, &mut live.attrs, &resource.attrs);
        let owner = live.attrs.get("tags").and_then(|t| t.get(crate::manifest::TAG_STACK)).and_then(serde_json::Value::as_str);
        if let Some(owner) = owner.filter(|o| *o != manifest.stack) {
            return Err(CliError::Refused(format!(
                "{} `{}` belongs to stack `{owner}` (its `{}` tag); refusing to import it",
                resource.kind,
                args.id,
                crate::manifest::TAG_STACK
            )));
        }
        let record = crate::state::ResourceState {
            name: resource.name.clone(),
            kind: resource.kind,
            physical_id: args.id.clone(),
            attributes: serde_json::Value::Object(live.attrs),
            outputs: live.outputs,
            depends_on: resource.deps.iter().cloned().collect(),
        };
        store.put_resource(&manifest.stack, &record).await?;
        if !g.quiet {
            println!(
                "Imported {} `{}` as `{}`; `reconcile plan` shows how it differs from the manifest.",
                resource.kind, args.id, resource.name
            );
        }
        Ok(Exit::Ok)
    }
    .await;
    store.unlock(&manifest.stack, &lock.id).await?;
    store.close().await;
    result
}

async fn force_unlock(g: &Global, id: &str, force: bool) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let store = open_state(g).await?;
    let held = store.force_unlock(&manifest.stack, id, force).await;
    store.close().await;
    let held = held?;
    if !g.quiet {
        println!("Broke the lock of stack `{}` held by {}.", manifest.stack, held.describe());
    }
    Ok(Exit::Ok)
}

/// The AWS call counts as JSON (for `--json` documents) when `--stats` asked for them.
pub(crate) fn stats_json(g: &Global, aws: Option<&Aws>) -> Option<serde_json::Value> {
    (g.stats).then(|| serde_json::Value::Array(aws.map(|a| a.calls.rows()).unwrap_or_default()))
}

/// AWS calls made for each resource operation of an apply, when `--stats` asked for them.
pub(crate) fn calls_by_resource_json(g: &Global, aws: Option<&Aws>) -> Option<serde_json::Value> {
    (g.stats).then(|| serde_json::json!(aws.map(|a| a.calls.by_resource()).unwrap_or_default()))
}

/// Prints the AWS call counts on stderr, for people.
pub(crate) fn print_stats(g: &Global, aws: Option<&Aws>) {
    if !g.stats || g.json {
        return;
    }
    let Some(aws) = aws else {
        eprintln!("\nAWS calls: none");
        return;
    };
    let total = aws.calls.total();
    eprintln!("\nAWS calls: {} ({} errors, {} throttled)", total.calls, total.errors, total.throttled);
    for ((service, op), c) in aws.calls.snapshot() {
        eprintln!(
            "  {:<40} {:>5}{}",
            format!("{service}:{op}"),
            c.calls,
            if c.errors > 0 { format!("  ({} errors)", c.errors) } else { String::new() }
        );
    }
}

pub(crate) fn load_manifest(g: &Global) -> Result<Manifest, CliError> {
    Ok(manifest::load(&g.manifest)?)
}

pub(crate) async fn open_state(g: &Global) -> Result<Store, CliError> {
    Ok(Store::open(&g.state).await?)
}

pub(crate) async fn connect(g: &Global) -> Result<Aws, CliError> {
    Ok(Aws::connect(g.region.clone()).await?)
}

/// Asks on the terminal; refuses when stdin is not one.
pub(crate) fn confirm(question: &str) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::Refused(
            "refusing to make changes without confirmation: stdin is not a terminal; pass --auto-approve".into(),
        ));
    }
    eprint!("{question} Only 'yes' will be accepted: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() == "yes" { Ok(()) } else { Err(CliError::Refused("cancelled: nothing was changed".into())) }
}
