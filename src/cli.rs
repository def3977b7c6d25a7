//! The command line: the clap tree and its shared options (parsing only; `main` dispatches to `commands`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Declarative provisioning for serverless API stacks on AWS: API Gateway, Lambda, IAM,
/// CloudWatch Logs and WAFv2, from a TOML manifest.
///
/// AWS credentials, region and endpoint come from the standard AWS chain: environment
/// (AWS_PROFILE, AWS_REGION, AWS_ACCESS_KEY_ID…, AWS_ENDPOINT_URL), shared config and profiles.
/// A stack is pinned to the account and region of its first apply: other credentials or another
/// region are refused before anything is read or changed (a destroyed stack may move).
/// API Gateway, Lambda, CloudWatch Logs and WAFv2 calls are paced to their documented account limits
/// (RECONCILE_PACING=off turns that off, for emulators that do not enforce them).
/// Many resources of a kind are read with one listing call where AWS has one
/// (RECONCILE_COLLECTION_READS=off reads each on its own).
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
    /// The manifest to reconcile (by default `reconcile.toml` in the current folder).
    #[arg(short = 'f', long = "manifest", global = true, env = "RECONCILE_MANIFEST", default_value = crate::manifest::DEFAULT_MANIFEST)]
    pub manifest: PathBuf,
    /// The state: a SQLite file (created with mode 0600 if missing), or a shared PostgreSQL database
    /// as a `postgres://user@host/db?sslmode=require` URL (password in the URL, PGPASSWORD or PGPASSFILE).
    #[arg(long, global = true, env = "RECONCILE_STATE", default_value = "reconcile.db")]
    pub state: PathBuf,
    /// The key the state's fingerprints of secret values are made with (HMAC-SHA256; the state never
    /// holds it). Without it: RECONCILE_SECRET_KEY (the key itself; for a shared PostgreSQL state every
    /// team member supplies the same), else, for a SQLite state, `<state>.key` beside it (made, mode 0600,
    /// when missing). A PostgreSQL state without a key records no fingerprint, only `(sensitive)`.
    #[arg(long, global = true, value_name = "FILE", env = "RECONCILE_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// AWS region (overrides AWS_REGION and the profile's region).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and the final result.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// After plan/apply/destroy, show every AWS call made, by service and operation (and the total
    /// per service), how long the paced services' calls waited for pacing and how many throttling
    /// answers they met, and the rate each paced service was used at against this process's share.
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
    /// The share of each rate-limited AWS service's account limits (API Gateway, Lambda, CloudWatch
    /// Logs, WAFv2; IAM publishes none) this process may use, from 0.01 to 1: `watch` defaults to 0.5, every other command to 1. Processes whose
    /// shares add up to at most 1 never push the account over its request rate together, even when
    /// they share no state store (processes on one state store also pace from its shared record).
    /// Several watchers on one state split their share evenly among the live ones.
    #[arg(long, global = true, env = "RECONCILE_API_SHARE", value_name = "FRACTION", value_parser = parse_share)]
    pub api_share: Option<f64>,
    /// Log lines on stderr as text (`human`) or one JSON object per line (`json`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// Values of the manifest's `[variables]`, for every command that reads the manifest (and so finds
/// its stack by name). Precedence, lowest first: the declared default, `RECONCILE_VAR_<name>` in the
/// environment, each --var-file in order, each --var in order.
#[derive(Debug, Args)]
#[command(next_help_heading = "Variables")]
pub struct VarArgs {
    /// Set a variable: `name=value` (read as the variable's type: `512`, `true`, `["a","b"]`,
    /// `{ k = "v" }`). `name=@FILE` reads the value from a file (one trailing newline dropped; `@@` is
    /// a literal `@`), to keep secrets off the command line. Repeatable, before and after the
    /// subcommand alike (in command-line order).
    #[arg(long, global = true, value_name = "NAME=VALUE")]
    pub var: Vec<String>,
    /// Read variable values from a TOML file (`name = value` lines). Repeatable (before and after the
    /// subcommand alike); later files win.
    /// Precedence, lowest first: the default, RECONCILE_VAR_<name>, var files, --var.
    #[arg(long, global = true, value_name = "FILE")]
    pub var_file: Vec<PathBuf>,
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
    /// Create, update and delete resources so AWS matches the manifest, or carry out a plan saved by
    /// `plan --out FILE` (`apply FILE`: exactly that plan, without asking; refused, with nothing
    /// changed, if the state, the manifest, its code or secrets, or what the plan touches in AWS
    /// changed since).
    Apply(ApplyCommandArgs),
    /// Delete every resource the state owns, in reverse dependency order.
    Destroy(ApplyArgs),
    /// Show the stack's outputs as recorded by the last apply (no AWS call).
    Output(OutputArgs),
    /// Print a plan saved by `plan --out FILE`, as `plan` prints it (or `--json`), with what it was
    /// made from. No manifest, state or AWS call needed.
    Show(ShowArgs),
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
    /// Read or edit the state's records of the stack: list, show (read-only: no lock, no AWS call),
    /// rm (forget a resource, leaving it in AWS) and mv (move a record to a new key); rm and mv take
    /// the stack lock and make no AWS call.
    #[command(subcommand)]
    State(StateCommand),
    /// Print the manifest's dependency graph as DOT (Graphviz): one node per resource (key and type),
    /// an edge from each resource to what it depends on. No AWS call unless --plan.
    Graph(GraphArgs),
    /// Print a shell completion script: `reconcile completions bash > /etc/bash_completion.d/reconcile`.
    Completions(CompletionsArgs),
    /// Print the manifest's JSON Schema (for editors: taplo / Even Better TOML), generated from the
    /// tables that validate manifests.
    Schema,
    /// Probe the applied stack: GET each route of each stage (smoke), invoke each function
    /// concurrently (concurrency), and, only when named, push a stage protected by a web ACL past its
    /// rate-based rule's limit (rate-limit).
    ///
    /// Targets come from the state (the stages, functions and web ACL associations the last apply
    /// recorded) and expectations from the manifest (routes, the rate rule's limit). Traffic goes only
    /// to the stages' invoke URLs (https://<api-id>.execute-api.<region>.amazonaws.com/<stage>) or to
    /// --target-url; with a custom AWS endpoint (an emulator) the HTTP probes need --target-url. Every
    /// probe is bounded in count (flags) and time (--time-limit).
    #[command(after_help = VERIFY_EXIT_CODES)]
    Verify(VerifyArgs),
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the resources the state records for the stack: key, type, physical id. No lock, no AWS call.
    List,
    /// Show one resource's record: type, physical id, attributes as last applied (secret values as
    /// `(sensitive)`), outputs and dependencies. No lock, no AWS call.
    Show(StateShowArgs),
    /// Forget a resource without deleting it: it stays in AWS, no longer managed. While the manifest
    /// still declares it, the next plan shows its create as a conflict with the `import` that adopts it
    /// again. Takes the stack lock; no AWS call.
    Rm(StateRmArgs),
    /// Move a resource's record to another key (a key renamed in the manifest), so the resource is kept,
    /// not replaced. Refuses a NEW key the state already has, or that the manifest gives another type.
    /// Takes the stack lock; no AWS call.
    Mv(StateMvArgs),
    /// Copy every stack of this state (--state) to another state: a SQLite file or a `postgres://` URL.
    /// Copies each stack's resources, outputs, journal, drift history, pin and serial, holding its lock
    /// in both; refuses a target that already has one of the stacks; reads the copy back to check it and
    /// prints what it moved. The source is left as it was. No manifest needed, no AWS call.
    Migrate(StateMigrateArgs),
}

#[derive(Debug, Args)]
pub struct StateMigrateArgs {
    /// The state to copy into: a SQLite file path (created if missing) or a `postgres://` URL.
    #[arg(long)]
    pub to: PathBuf,
}

#[derive(Debug, Args)]
pub struct StateShowArgs {
    /// The resource's key.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct StateRmArgs {
    /// The resource's key.
    pub name: String,
    /// How long to wait for the stack's lock (default: fail at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct StateMvArgs {
    /// The key the state records.
    pub old: String,
    /// The key it moves to.
    pub new: String,
    /// How long to wait for the stack's lock (default: fail at once).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Also compute the plan (reads AWS, as `plan` does) and colour each node with its action:
    /// green create, yellow update, orange replace, red delete, grey forget (retain_on_delete), blue moved, white no change.
    #[arg(long)]
    pub plan: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Exit statuses of `verify` (also in README).
pub const VERIFY_EXIT_CODES: &str = "Exit status: 0 every probe met its expectations; 1 error (manifest, state, AWS, \
a refusal such as a custom endpoint without --target-url; nothing or not everything was probed); 2 bad arguments; \
3 an expectation failed (a smoke check, an invocation error or throttle, 403s too early, too late or never); \
4 nothing failed but a probe could not tell (functions cannot run at this endpoint, the rate-limit probe could not \
reach the rate that crosses the limit, a time limit was reached).";

/// A probe of `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Probe {
    /// One GET per GET route of each stage: status, headers, JSON body.
    Smoke,
    /// Rounds of concurrent direct invocations of each function.
    Concurrency,
    /// Requests to the stage a web ACL protects until its rate-based rule answers 403. Blocks this
    /// machine's IP from that stage for minutes and costs thousands of invocations: runs only when
    /// named, and always last.
    RateLimit,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The probes to run (default: smoke and concurrency, each if the stack has stages or functions).
    /// rate-limit runs only when named, and last.
    #[arg(value_enum, value_name = "PROBE")]
    pub probes: Vec<Probe>,
    /// Send the HTTP probes here instead of the stages' invoke URLs: each request goes to this URL
    /// followed by the route's path; `{api_id}`, `{stage}` and `{region}` are replaced by the stage's
    /// (e.g. `http://127.0.0.1:8080/{stage}`).
    #[arg(long, value_name = "URL")]
    pub target_url: Option<String>,
    /// Only this stage (its resource name, e.g. `prod_stage`), for smoke and rate-limit. Repeatable.
    #[arg(long = "stage", value_name = "RESOURCE")]
    pub stages: Vec<String>,
    /// smoke: the status every GET must answer.
    #[arg(long, default_value_t = 200, value_name = "CODE")]
    pub expect_status: u16,
    /// smoke: a header every answer must carry, `Name` or `Name: value`. Repeatable; replaces the
    /// default, `Access-Control-Allow-Origin` (the CORS header the seed's handler sets).
    #[arg(long = "expect-header", value_name = "HEADER")]
    pub expect_headers: Vec<String>,
    /// smoke: accept any body (by default the body must be JSON).
    #[arg(long)]
    pub any_body: bool,
    /// concurrency: invocations of each function at once, per round.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// concurrency: rounds of --concurrency invocations, one after the other.
    #[arg(long, default_value_t = 3, value_name = "R", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// concurrency: only this function (resource or function name). Repeatable.
    #[arg(long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
    /// concurrency: the event each invocation sends: JSON text, or @FILE.
    #[arg(long, default_value = "{}", value_name = "JSON|@FILE")]
    pub payload: String,
    /// rate-limit: the most requests to send (default: twice the rule's limit). The probe stops
    /// earlier once blocking is confirmed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub requests: Option<u64>,
    /// rate-limit: connections, i.e. requests in flight at once.
    #[arg(long, default_value_t = 50, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub connections: u32,
    /// rate-limit: how far from the limit (in percent) the first 403 may be.
    #[arg(long, default_value_t = 10, value_name = "PCT", value_parser = clap::value_parser!(u32).range(0..=100))]
    pub tolerance: u32,
    /// rate-limit: how long WAF may take to start blocking once the limit is crossed (AWS: "usually
    /// below 30 seconds"); the requests sent meanwhile, at the probe's rate, are allowed past the limit.
    #[arg(long, default_value = "30s", value_name = "D", value_parser = humantime::parse_duration)]
    pub block_delay: std::time::Duration,
    /// Timeout of each request and each invocation.
    #[arg(long, default_value = "30s", value_name = "D", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// The most each probe may take; it stops there and says so.
    #[arg(long, default_value = "10m", value_name = "D", value_parser = humantime::parse_duration)]
    pub time_limit: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The 12-digit id of the account the stack's resources live in.
    #[arg(long)]
    pub account: String,
    /// The partition (default: from --region: `aws-cn` for cn-*, `aws-us-gov` for us-gov-*, else `aws`).
    #[arg(long)]
    pub partition: Option<String>,
    /// Replace a pin to another account or region (only if the stack's resources really are there: a
    /// pin that an ARN the state recorded contradicts is refused, with or without --force).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Manifests to watch, or directories whose *.toml files are manifests (default: the -f manifest,
    /// reconcile.toml unless named). A TOML file without a `[stack]` table in a directory (a var file)
    /// is skipped.
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
    /// Watch every manifest in this environment: var files (comma-separated) read after --var-file
    /// and before --var. Repeatable: `--var-set dev.toml --var-set prod.toml` watches two stacks of
    /// one manifest. TOML files without a `[stack]` table in a watched directory (var files) are skipped.
    #[arg(long = "var-set", value_name = "FILE[,FILE...]")]
    pub var_sets: Vec<String>,
    /// How long a stack's watch lease lasts without renewal. Several watchers on one state share the
    /// stacks (one watches each); when one dies, another takes its stacks within --lease-ttl plus
    /// --lease-renew (25s with the defaults).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub lease_ttl: std::time::Duration,
    /// How often the leases held are renewed and stacks nobody holds are tried (shorter than --lease-ttl).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub lease_renew: std::time::Duration,
    /// A manifest (with its var files and code) is used only once it has settled: the same content on
    /// two reads at least this far apart (a file being written is never planned or remediated).
    #[arg(long, default_value = "2s", value_name = "D", value_parser = humantime::parse_duration)]
    pub settle: std::time::Duration,
    /// The HTTP endpoint closes a connection that has not sent a whole request header within this
    /// (an idle keep-alive connection too). At most 10s.
    #[arg(long, default_value = "5s", value_name = "D", value_parser = humantime::parse_duration)]
    pub http_header_timeout: std::time::Duration,
    /// The HTTP endpoint closes a connection that moves no byte either way for this long.
    #[arg(long, default_value = "30s", value_name = "D", value_parser = humantime::parse_duration)]
    pub http_idle_timeout: std::time::Duration,
    /// The most connections the HTTP endpoint keeps open (lowered to at most half the open-file limit,
    /// and 128 files below it); at the cap a new connection closes the oldest one not serving a request.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub http_max_connections: u32,
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
    /// Exit 2 while open drift exists, 0 when there is none, 1 on error (for cron and CI).
    #[arg(long)]
    pub exit_code: bool,
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
    /// Save the plan to FILE (created with mode 0600; no secret value in it) for `apply FILE`, with
    /// what it was computed from: the state's lineage and serial, the account and region, hashes of
    /// the manifest, code and secrets, and a digest of what AWS had for each resource it touches.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub choices: ChoiceArgs,
}

/// `--target` and `--replace`, on plan and apply.
#[derive(Debug, Args)]
pub struct ChoiceArgs {
    /// Plan only this resource and what it depends on (transitively); the plan says it is partial.
    /// A resource removed from the manifest is deleted only when targeted by its key. Repeatable.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Replace this resource even if nothing differs (a new one of the same name, deleted first, for
    /// kinds whose id is their name); what refers to it is updated in the same apply. Repeatable.
    #[arg(long = "replace", value_name = "NAME")]
    pub replace: Vec<String>,
}

impl ChoiceArgs {
    pub fn choices(&self) -> crate::plan::Choices {
        crate::plan::Choices { targets: self.targets.clone(), replace: self.replace.clone() }
    }
}

#[derive(Debug, Args)]
pub struct ApplyCommandArgs {
    /// A plan saved by `plan --out FILE`: applied exactly, without asking (the manifest, code and
    /// secrets must be given again, as they were to `plan`).
    #[arg(value_name = "FILE", conflicts_with_all = ["targets", "replace"])]
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub run: ApplyArgs,
    #[command(flatten)]
    pub choices: ChoiceArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The saved plan.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
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

/// The share of the account's limits that `watch` uses unless `--api-share` says otherwise: it leaves
/// the other half to applies and plans (which use all of it by default).
pub const WATCH_API_SHARE: f64 = 0.5;

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.01..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a share between 0.01 and 1 (e.g. 0.5 for half the account's limits)")),
        Err(_) => Err(format!("`{s}` is not a number between 0.01 and 1 (e.g. 0.5)")),
    }
}

/// Parses the process's command line; bad arguments (and `--help`, `--version`) end the process with
/// clap's message, as [`Cli::parse`] does.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `argv` so that every occurrence of a global option counts, wherever it stands.
///
/// clap keeps only the occurrences of a `global = true` option found after the (deepest) subcommand,
/// dropping those before it without a word: `--var a=1 plan --var b=2` would plan without `a`. So the
/// command line is parsed a second time with a tree in which each command level has its own copy of
/// the global options, and the occurrences of every level are put together: a repeatable option's
/// values in command-line order, a count summed; a single-valued option given at two levels with
/// different values is refused, naming it (never one of them silently dropped).
pub fn try_parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // The real tree first: its errors, help and version are the ones to show.
    let mut cli = Cli::try_parse_from(&argv)?;
    let globals: Vec<clap::Arg> = Cli::command().get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    let split = per_level(Cli::command(), &globals).try_get_matches_from(&argv)?;
    let mut levels = vec![&split];
    while let Some((_, sub)) = levels.last().and_then(|m| m.subcommand()) {
        levels.push(sub);
    }
    for arg in &globals {
        let id = arg.get_id().as_str();
        let given: Vec<&ArgMatches> = levels.iter().copied().filter(|m| m.value_source(id) == Some(ValueSource::CommandLine)).collect();
        if given.len() < 2 {
            // Given at one level at most: clap's own parse has it right.
            continue;
        }
        let option = arg.get_long().map_or_else(|| id.to_string(), |l| format!("--{l}"));
        match arg.get_action() {
            ArgAction::Append => match id {
                "var" => cli.global.vars.var = in_order(&given, id),
                "var_file" => cli.global.vars.var_file = in_order(&given, id),
                "allow_code_from" => cli.global.allow_code_from = in_order(&given, id),
                _ => return Err(both_sides(&option, "give all of its values on one side of the subcommand")),
            },
            ArgAction::Count => match id {
                "verbose" => cli.global.verbose = given.iter().map(|m| m.get_count(id)).fold(0u8, u8::saturating_add),
                _ => return Err(both_sides(&option, "give it on one side of the subcommand")),
            },
            ArgAction::SetTrue | ArgAction::SetFalse => {}
            _ => {
                let mut values: Vec<String> = Vec::new();
                for m in &given {
                    for v in m.get_raw(id).into_iter().flatten() {
                        let v = v.to_string_lossy().into_owned();
                        if !values.contains(&v) {
                            values.push(v);
                        }
                    }
                }
                if values.len() > 1 {
                    let shown: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
                    return Err(both_sides(
                        &option,
                        &format!("with different values ({}); it takes one value: give it once", shown.join(", ")),
                    ));
                }
            }
        }
    }
    Ok(cli)
}

/// `command` with the global options made local and copied into every subcommand, so each level's
/// matches hold only what was given at that level (with its position on the command line).
fn per_level(command: clap::Command, globals: &[clap::Arg]) -> clap::Command {
    let mut command = command;
    for arg in globals {
        command = command.mut_arg(arg.get_id().clone(), |a| a.global(false));
    }
    fn copy_into(command: clap::Command, globals: &[clap::Arg]) -> clap::Command {
        let names: Vec<String> = command.get_subcommands().map(|s| s.get_name().to_string()).collect();
        let mut command = command;
        for name in names {
            command = command.mut_subcommand(name, |sub| copy_into(sub.args(globals.iter().map(|a| a.clone().global(false))), globals));
        }
        command
    }
    copy_into(command, globals)
}

/// The values of `id` given at `levels`, in command-line order: each level's in the order given
/// (the options before a subcommand's name are all its parent's).
fn in_order<T: Clone + Send + Sync + 'static>(levels: &[&ArgMatches], id: &str) -> Vec<T> {
    levels.iter().filter_map(|m| m.get_many::<T>(id)).flat_map(|given| given.cloned()).collect()
}

fn both_sides(option: &str, what: &str) -> clap::Error {
    let message = format!("`{option}` is given both before and after the subcommand {what}");
    clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{message}\n")).with_cmd(&Cli::command())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parsed command line holds for a repeatable global option, as strings.
    fn repeatable(cli: &Cli, id: &str) -> Vec<String> {
        let paths = |p: &[PathBuf]| p.iter().map(|p| p.display().to_string()).collect();
        match id {
            "var" => cli.global.vars.var.clone(),
            "var_file" => paths(&cli.global.vars.var_file),
            "allow_code_from" => paths(&cli.global.allow_code_from),
            "verbose" => vec![cli.global.verbose.to_string()],
            other => panic!("`{other}` is a new repeatable global option: put its values together in `try_parse_from` and here"),
        }
    }

    fn argv(parts: &[&[&str]]) -> Vec<String> {
        std::iter::once("reconcile").chain(parts.iter().flat_map(|p| p.iter().copied())).map(str::to_string).collect()
    }

    /// Command lines with one, two and three levels (the subcommand's own subcommand).
    const SUBCOMMANDS: [&[&str]; 3] = [&["validate"], &["plan"], &["state", "list"]];

    #[test]
    fn every_repeatable_global_option_counts_before_and_after_the_subcommand() {
        let command = Cli::command();
        let globals: Vec<&clap::Arg> = command
            .get_arguments()
            .filter(|a| a.is_global_set() && matches!(a.get_action(), ArgAction::Append | ArgAction::Count))
            .collect();
        let ids: Vec<&str> = globals.iter().map(|a| a.get_id().as_str()).collect();
        assert!(ids.len() >= 4 && ["var", "var_file", "allow_code_from", "verbose"].iter().all(|i| ids.contains(i)), "{ids:?}");
        for arg in globals {
            let id = arg.get_id().as_str();
            let flag = format!("--{}", arg.get_long().unwrap());
            let flag = flag.as_str();
            for sub in SUBCOMMANDS {
                let (first, last) = sub.split_at(1);
                let (line, expected): (Vec<String>, Vec<String>) = if matches!(arg.get_action(), ArgAction::Count) {
                    (argv(&[&[flag], first, &[flag], last, &[flag, flag]]), vec!["4".into()])
                } else {
                    (
                        argv(&[&[flag, "a=1"], first, &[flag, "b=2"], last, &[flag, "c=3"]]),
                        ["a=1", "b=2", "c=3"].iter().map(|s| s.to_string()).collect(),
                    )
                };
                let cli = try_parse_from(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
                assert_eq!(repeatable(&cli, id), expected, "{line:?}");
                // Only after the subcommand, and only before it: as given.
                let after = try_parse_from(argv(&[sub, &[flag, if id == "verbose" { "-v" } else { "z=9" }]]));
                let after = after.unwrap_or_else(|e| panic!("{e}"));
                let expected_after: Vec<String> = if id == "verbose" { vec!["2".into()] } else { vec!["z=9".into()] };
                assert_eq!(repeatable(&after, id), expected_after);
            }
        }
        // A delimited value keeps its place among the others.
        let cli = try_parse_from(argv(&[&["--allow-code-from", "a:b", "plan", "--allow-code-from", "c"]])).unwrap();
        assert_eq!(repeatable(&cli, "allow_code_from"), ["a", "b", "c"]);
    }

    #[test]
    fn a_single_valued_global_option_given_twice_with_different_values_is_refused() {
        let command = Cli::command();
        let single: Vec<&clap::Arg> =
            command.get_arguments().filter(|a| a.is_global_set() && matches!(a.get_action(), ArgAction::Set)).collect();
        assert!(single.len() >= 5, "{:?}", single.iter().map(|a| a.get_id()).collect::<Vec<_>>());
        for arg in single {
            let flag = format!("--{}", arg.get_long().unwrap());
            let names: Vec<String> = arg.get_possible_values().iter().map(|v| v.get_name().to_string()).collect();
            let (one, two) = match (names.as_slice(), arg.get_id().as_str()) {
                ([a, b, ..], _) => (a.clone(), b.clone()),
                (_, "api_share") => ("0.5".into(), "0.25".into()),
                _ => ("one".into(), "two".into()),
            };
            for sub in SUBCOMMANDS {
                let same = argv(&[&[&flag, &one], sub, &[&flag, &one]]);
                try_parse_from(&same).unwrap_or_else(|e| panic!("{same:?}: {e}"));
                let different = argv(&[&[&flag, &one], sub, &[&flag, &two]]);
                let e = try_parse_from(&different).map(|_| ()).unwrap_err();
                assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{different:?}");
                let text = e.to_string();
                assert!(text.contains(&format!("`{flag}` is given both before and after the subcommand")), "{text}");
                assert!(text.contains(&format!("`{one}`")) && text.contains(&format!("`{two}`")), "{text}");
            }
        }
        // Flags may be given on both sides.
        let cli = try_parse_from(argv(&[&["--json", "plan", "--json", "--quiet"]])).unwrap();
        assert!(cli.global.json && cli.global.quiet);
    }
}
