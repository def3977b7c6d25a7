//! The command line: the clap tree and its shared options (parsing only; `main` dispatches to `commands`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative provisioning for serverless API stacks on AWS: API Gateway, Lambda, IAM,
/// CloudWatch Logs and WAFv2, from a TOML manifest.
///
/// AWS credentials, region and endpoint come from the standard AWS chain: environment
/// (AWS_PROFILE, AWS_REGION, AWS_ACCESS_KEY_ID…, AWS_ENDPOINT_URL), shared config and profiles.
/// A stack is pinned to the account and region of its first apply: other credentials or another
/// region are refused before anything is read or changed (a destroyed stack may move).
/// API Gateway calls are paced to its account limits (RECONCILE_PACING=off turns that off, for
/// emulators that do not enforce them).
#[derive(Debug, Parser)]
#[command(name = "reconcile", version, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The manifest to reconcile.
    #[arg(short = 'f', long = "manifest", global = true, env = "RECONCILE_MANIFEST", default_value = "manifests/apigw-lambda-basic.toml")]
    pub manifest: PathBuf,
    /// The state file (SQLite); created with mode 0600 if missing.
    #[arg(long, global = true, env = "RECONCILE_STATE", default_value = "reconcile.db")]
    pub state: PathBuf,
    /// AWS region (overrides AWS_REGION and the profile's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// After plan/apply/destroy, show every AWS call made, by service and operation.
    #[arg(long, global = true)]
    pub stats: bool,
    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Also take Lambda code from this folder, outside the manifest's own folder tree (which is the
    /// only place code comes from otherwise; a manifest cannot widen it). Repeatable; the variable
    /// takes a `:`-separated list.
    #[arg(long, global = true, value_name = "DIR", env = "RECONCILE_ALLOW_CODE_FROM", value_delimiter = ':')]
    pub allow_code_from: Vec<PathBuf>,
    /// Log lines on stderr as text (`human`) or one JSON object per line (`json`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the manifest (types, fields, references, cycles, AWS's rules for names and sizes, code
    /// paths inside the manifest's folder) without calling AWS.
    Validate,
    /// Show what apply would change, field by field (manifest vs state vs live AWS).
    Plan(PlanArgs),
    /// Create, update and delete resources so AWS matches the manifest.
    Apply(ApplyArgs),
    /// Delete every resource the state owns, in reverse dependency order.
    Destroy(ApplyArgs),
    /// Show the stack's outputs as recorded by the last apply (no AWS call).
    Output(OutputArgs),
    /// Break the stack's lock left by a process that died (needs the lock id the error showed; a
    /// holder still running on this host is refused without --force).
    ForceUnlock(ForceUnlockArgs),
    /// Adopt an existing AWS resource as a manifest resource (recorded in state as AWS has it; the
    /// next plan shows what differs from the manifest). Refused if another stack's tags are on it, if a
    /// resource of any stack in the state file already records it, or (deployments, permissions, WAF
    /// associations) if its REST API, function or stage belongs to another stack.
    Import(ImportArgs),
    /// Watch stacks for drift until stopped: re-read AWS every interval, record drift events in the
    /// state file, serve /healthz, /readyz and /metrics; with --remediate, put the manifest back.
    /// SIGTERM, SIGQUIT or Ctrl-C stop it (a remediation in flight finishes); SIGHUP re-reads the
    /// manifests and their code now.
    Watch(WatchArgs),
    /// List drift recorded by `watch` (open drift; with --all, resolved drift too). No AWS call.
    Drift(DriftArgs),
    /// Pin the stack by hand to the AWS account and region (--region) it lives in. No AWS call.
    ///
    /// A stack is pinned by its first apply, and every command that calls AWS refuses credentials or a
    /// region other than its pin. This is for a state written before pinning whose regional resources
    /// cannot be found to prove where it lives (the refusal says so and prints this command).
    Pin(PinArgs),
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The 12-digit id of the account the stack's resources live in.
    #[arg(long)]
    pub account: String,
    /// The partition (default: from --region: `aws-cn` for cn-*, `aws-us-gov` for us-gov-*, else `aws`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Replace a pin to another account or region (only if the stack's resources really are there).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Manifests to watch, or directories whose *.toml files are manifests (default: -f).
    pub paths: Vec<PathBuf>,
    /// Time between passes (with ±10% jitter), e.g. `60s`, `5m`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Address of the /healthz, /readyz and /metrics endpoint; port 0 picks a free one (printed).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Repair drift (updates and creates through the same executor as apply; never deletes, never
    /// undoes a newer apply, and leaves a stack whose last operation was destroy alone until the next
    /// apply). Without it (and without `[stack] remediate = true`), watch never writes to AWS.
    #[arg(long)]
    pub remediate: bool,
    /// How long remediation waits for the stack's lock (held by an apply) before skipping the pass.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// How many resource operations one remediation runs at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: u16,
    /// /readyz answers 503 once a stack's passes have been failing (partial, or one still running) for
    /// this long since its last complete pass (default: 3 intervals, at least 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub unready_after: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// Also list resolved drift, with when and how it ended (and drift in ignored fields).
    #[arg(long)]
    pub all: bool,
    /// Also list open drift in fields the manifest's `ignore_changes` names (it never counts as open drift).
    #[arg(long)]
    pub ignored: bool,
    /// Only this stack (default: every stack in the state file).
    #[arg(long)]
    pub stack: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The manifest resource it becomes.
    pub resource: String,
    /// Its physical id (a role or log group name, a function name, a REST API id,
    /// `<api id>/<stage>`, `<scope>/<name>/<id>` for a web ACL…; see the manifest reference).
    pub id: String,
    /// How long to wait for the stack's lock.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The lock id, as printed by the command that found the stack locked.
    pub lock_id: String,
    /// Break it even though its holder is still running on this host.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 0 when there are no changes, 2 when there are changes (to resources or to outputs), 1 on
    /// error. (A plan apply would refuse, e.g. a create that conflicts with what AWS has, exits 1 with or
    /// without this flag.)
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many resource operations run at once (each starts as soon as its own dependencies are done).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallelism: u16,
    /// How long to wait for another apply/destroy of the same stack to finish (e.g. `30s`, `5m`).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// One output's name; prints its bare value.
    pub name: Option<String>,
}
