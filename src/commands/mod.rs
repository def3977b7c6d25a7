//! One module per subcommand; each is a thin shell over the manifest, plan, apply and state layers.

mod apply;
mod drift;
mod graph;
mod output;
mod plan;
mod progress;
mod saved;
mod state;
mod verify;
mod watch;

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::{Cli, Command, Global};
use crate::manifest::{self, Manifest, ManifestError};
use crate::plan::PlanError;
use crate::providers::{Aws, ProviderError};
use crate::state::{StateError, Store};

/// Exit statuses a script can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success; for `plan --detailed-exitcode`, no changes.
    Ok = 0,
    /// Any error (bad manifest, AWS error, failed operation, refused confirmation).
    Error = 1,
    /// `plan --detailed-exitcode`: changes present; `drift --exit-code`: open drift.
    Changes = 2,
    /// `verify`: an expectation failed.
    ExpectationFailed = 3,
    /// `verify`: nothing failed, but a probe could not tell.
    Inconclusive = 4,
}

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
    #[error(transparent)]
    Identity(#[from] Box<crate::identity::IdentityError>),
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
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
        Command::Show(args) => saved::show(g, args),
        Command::Destroy(args) => apply::destroy(g, args).await,
        Command::Output(args) => output::run(g, args).await,
        Command::ForceUnlock(args) => force_unlock(g, &args.lock_id, args.force).await,
        Command::Import(args) => import(g, args).await,
        Command::Watch(args) => watch::run(g, args).await,
        Command::Drift(args) => drift::run(g, args).await,
        Command::Pin(args) => pin(g, args).await,
        Command::State(command) => state::run(g, command).await,
        Command::Graph(args) => graph::run(g, args).await,
        Command::Completions(args) => completions(args.shell),
        Command::Schema => schema(),
        Command::Verify(args) => verify::run(g, args).await,
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
    match e {
        // Each diagnostic line already says `FILE:LINE:COLUMN: error: …`: `error:` once per line.
        CliError::Manifest(ManifestError::Invalid(_)) => eprintln!("{e}"),
        _ => eprintln!("error: {e}"),
    }
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

/// `reconcile completions SHELL`: the script, generated from the clap tree.
fn completions(shell: clap_complete::Shell) -> Result<Exit, CliError> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "reconcile", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(Exit::Ok)
}

/// `reconcile schema`: the manifest's JSON Schema.
fn schema() -> Result<Exit, CliError> {
    std::io::stdout().write_all(manifest::json_schema::text().as_bytes())?;
    Ok(Exit::Ok)
}

impl From<crate::identity::IdentityError> for CliError {
    fn from(e: crate::identity::IdentityError) -> Self {
        CliError::Identity(Box::new(e))
    }
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
    let result = store
        .with_lock(&manifest.stack, "import", args.lock_timeout, |_| async {
            let state = store.load(&manifest.stack).await?;
            if let Some(existing) = state.resources.get(&resource.name) {
                return Err(CliError::Refused(format!("`{}` is already in the state as {}", resource.name, existing.physical_id)));
            }
            refuse_owned_in_state(&store, &manifest.stack, resource, &args.id).await?;
            let aws = connect(g).await?;
            let here = crate::identity::check(&store, &manifest.stack, &aws).await?;
            let live = crate::providers::read(&aws, resource.kind, &args.id)
                .await?
                .ok_or_else(|| CliError::Refused(format!("no {} `{}` in AWS", resource.kind, args.id)))?;
            refuse_owned_parent(&store, &aws, &manifest.stack, resource, &args.id).await?;
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
            crate::identity::pin(&store, &manifest.stack, &here).await?;
            store.put_resource(&manifest.stack, &record).await?;
            if !g.quiet {
                println!(
                    "Imported {} `{}` as `{}`; `reconcile plan` shows how it differs from the manifest.",
                    resource.kind, args.id, resource.name
                );
            }
            Ok(Exit::Ok)
        })
        .await;
    store.close().await;
    result
}

/// A physical resource has one owner: refuses to import what a resource of any stack in this state
/// file (this one included) already records, and a region-wide singleton another stack owns.
async fn refuse_owned_in_state(store: &Store, stack: &str, resource: &manifest::Resource, id: &str) -> Result<(), CliError> {
    let owner = store.owners_of(resource.kind, id).await?.into_iter().next();
    let singleton = || async {
        let owners = store.singleton_owners().await?;
        Ok::<_, CliError>(owners.into_iter().find(|o| o.kind == resource.kind && resource.kind.is_singleton() && o.stack != stack))
    };
    let owner = match owner {
        Some(o) => Some(o),
        None => singleton().await?,
    };
    let Some(o) = owner else { return Ok(()) };
    Err(CliError::Refused(format!(
        "{} `{id}` is already owned by {} (recorded as `{}` in {}); a physical resource has one owner: refusing to import it as `{}`",
        resource.kind,
        owner_name(&o.stack, &o.resource, stack),
        o.physical_id,
        store.path().display(),
        resource.name
    )))
}

/// Resources without tags (deployments, permissions, associations) belong to whoever owns what they
/// belong to: refuses the import when the REST API, function or stage above them is owned by another
/// stack, by this state file's records or by its ownership tag.
async fn refuse_owned_parent(store: &Store, aws: &Aws, stack: &str, resource: &manifest::Resource, id: &str) -> Result<(), CliError> {
    if resource.kind.schema().taggable {
        return Ok(());
    }
    let refuse = |parent_kind: manifest::Kind, parent: &str, whose: String| {
        CliError::Refused(format!(
            "{} `{id}` belongs to {parent_kind} `{parent}`, which {whose} owns; refusing to import it as `{}` (its owner would lose it)",
            resource.kind, resource.name
        ))
    };
    let mut next = crate::providers::parent_of(resource.kind, id);
    while let Some((kind, parent)) = next {
        if let Some(o) = store.owners_of(kind, &parent).await?.into_iter().next() {
            if o.stack == stack {
                return Ok(());
            }
            return Err(refuse(kind, &parent, owner_name(&o.stack, &o.resource, stack)));
        }
        let live = crate::providers::read(aws, kind, &parent).await?;
        let tag =
            live.as_ref().and_then(|l| l.attrs.get("tags")).and_then(|t| t.get(manifest::TAG_STACK)).and_then(serde_json::Value::as_str);
        match tag {
            Some(owner) if owner == stack => return Ok(()),
            Some(owner) => return Err(refuse(kind, &parent, format!("stack `{owner}` (its `{}` tag)", manifest::TAG_STACK))),
            None => next = crate::providers::parent_of(kind, &parent),
        }
    }
    Ok(())
}

fn owner_name(owner_stack: &str, owner_resource: &str, stack: &str) -> String {
    if owner_stack == stack {
        format!("resource `{owner_resource}` of this stack")
    } else {
        format!("resource `{owner_resource}` of stack `{owner_stack}`")
    }
}

/// `reconcile pin`: records by hand where the stack lives (no AWS call).
async fn pin(g: &Global, args: &crate::cli::PinArgs) -> Result<Exit, CliError> {
    let manifest = load_manifest(g)?;
    let Some(region) = g.region.clone() else {
        return Err(CliError::Refused("`reconcile pin` needs the stack's region as --region (AWS_REGION is not used here)".into()));
    };
    if !crate::providers::is_region_name(&region) {
        return Err(CliError::Refused(format!("--region `{region}` is not an AWS region name (like `us-east-1`)")));
    }
    if args.account.len() != 12 || !args.account.chars().all(|c| c.is_ascii_digit()) {
        return Err(CliError::Refused(format!("--account `{}` is not an AWS account id (12 digits)", args.account)));
    }
    let partition = args.partition.clone().unwrap_or_else(|| crate::providers::partition(&region).to_string());
    let wanted = crate::state::Identity { account_id: args.account.clone(), partition, region };
    let store = open_state(g).await?;
    let result = store.with_lock(&manifest.stack, "pin", std::time::Duration::ZERO, |_| async {
        if store.load(&manifest.stack).await?.resources.is_empty() {
            return Err(CliError::Refused(format!(
                "stack `{}` has no resources in {}: nothing to pin (its first apply pins it where it runs)",
                manifest.stack,
                store.path().display()
            )));
        }
        match store.identity(&manifest.stack).await? {
            Some(current) if current == wanted => {}
            Some(current) if !args.force => {
                return Err(CliError::Refused(format!(
                    "stack `{}` is already pinned to {current}; pass --force to pin it to {wanted} instead (only if its resources are there)",
                    manifest.stack
                )));
            }
            _ => store.set_identity(&manifest.stack, &wanted).await?,
        }
        if !g.quiet {
            println!("Stack `{}` is pinned to {wanted}.", manifest.stack);
        }
        Ok(Exit::Ok)
    })
    .await;
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

/// The AWS call counts per service as JSON, when `--stats` asked for them.
pub(crate) fn service_stats_json(g: &Global, aws: Option<&Aws>) -> Option<serde_json::Value> {
    (g.stats).then(|| serde_json::Value::Array(aws.map(|a| a.calls.service_rows()).unwrap_or_default()))
}

/// How the paced services' calls were paced (waits and throttling answers per limited operation),
/// when `--stats` asked.
pub(crate) fn pacing_json(g: &Global, aws: Option<&Aws>) -> Option<serde_json::Value> {
    (g.stats).then(|| serde_json::Value::Array(aws.map(|a| a.calls.pacing_rows()).unwrap_or_default()))
}

/// Per rate-limited service, this process's share of the account's limits and the rate it used,
/// when `--stats` asked.
pub(crate) fn budget_json(g: &Global, aws: Option<&Aws>) -> Option<serde_json::Value> {
    (g.stats).then(|| serde_json::Value::Array(aws.map(Aws::budget_rows).unwrap_or_default()))
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
    let services: Vec<String> = aws.calls.by_service().into_iter().map(|(service, c)| format!("{service} {}", c.calls)).collect();
    eprintln!("  by service: {}", services.join(", "));
    for ((service, op), c) in aws.calls.snapshot() {
        eprintln!(
            "  {:<40} {:>5}{}",
            format!("{service}:{op}"),
            c.calls,
            if c.errors > 0 { format!("  ({} errors)", c.errors) } else { String::new() }
        );
    }
    for row in aws.budget_rows() {
        // The account-wide rate, or (for a service limited per operation only) each operation's.
        let allowed = match row["rate_limit_per_s"].as_f64() {
            Some(rate) => format!("at most {rate:.2} per second"),
            None => row["operation_limits_per_s"]
                .as_object()
                .map(|ops| {
                    ops.iter()
                        .map(|(op, r)| format!("{op} at most {:.2} per second", r.as_f64().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        };
        eprintln!(
            "\n{}: {} calls in {:.1} s, {:.2} per second; this process's share of the account's limits {} ({allowed})",
            row["service"].as_str().unwrap_or_default(),
            row["calls"],
            row["elapsed_s"].as_f64().unwrap_or_default(),
            row["rate_per_s"].as_f64().unwrap_or_default(),
            row["share"],
        );
    }
    let pacing = aws.calls.pacing();
    if !pacing.is_empty() {
        eprintln!("\nPacing (time waited for the account's limits; throttling answers met although paced):");
        for ((service, op), c) in pacing {
            eprintln!(
                "  {:<40} {:>5} calls  waited {:>7.1} s (at most {:.1} s)  {} throttled",
                format!("{service}:{op}"),
                c.calls,
                c.waited_ms as f64 / 1000.0,
                c.max_wait_ms as f64 / 1000.0,
                c.throttled
            );
        }
    }
}

pub(crate) fn load_manifest(g: &Global) -> Result<Manifest, CliError> {
    Ok(manifest::load(&g.manifest)?)
}

pub(crate) async fn open_state(g: &Global) -> Result<Store, CliError> {
    Ok(Store::open(&g.state).await?)
}

/// Opens the state file for a command that only reads or edits records: a missing file is an error
/// (a mistyped `--state` must not read as "nothing recorded", nor leave a new empty file behind).
pub(crate) async fn open_existing_state(g: &Global) -> Result<Store, CliError> {
    // A PostgreSQL state is a database someone made on purpose: nothing is left behind by opening it.
    if !crate::state::is_postgres_url(&g.state.to_string_lossy()) && !g.state.exists() {
        return Err(CliError::Refused(format!(
            "no state file at {} (--state, RECONCILE_STATE): nothing was applied with it",
            g.state.display()
        )));
    }
    open_state(g).await
}

pub(crate) async fn connect(g: &Global) -> Result<Aws, CliError> {
    connect_sharing(g, 1.0).await
}

/// Connects using `--api-share` of the account's limits, `default` without it.
pub(crate) async fn connect_sharing(g: &Global, default: f64) -> Result<Aws, CliError> {
    Ok(Aws::connect(g.region.clone(), g.api_share.unwrap_or(default)).await?)
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
