//! Apply layer: executes a [`Plan`] over its dependency graph.
//!
//! The plan decides, apply executes: every operation is taken out of the plan ([`prepare`]) before
//! the first write, and a change that lacks what its action needs refuses the whole plan. Apply
//! resolves the planned attributes' references against this run's outputs; it never reads the manifest.
//!
//! Each operation starts as soon as its own dependencies are done (not in waves), at most
//! `parallelism` at once. State is written after every resource operation, with a journal entry
//! before each AWS write. A failure skips only the operations that depend on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::Value;

use crate::manifest::refs::{self, UNKNOWN};
use crate::manifest::{Artifact, Kind};
use crate::plan::{Action, Plan, Problem, ReplaceOrder, ResourceChange};
use crate::providers::{self, Aws, Desired, ProviderError};
use crate::state::{JournalAction, OperationOutcome, ResourceState, StackState, StateError, Store};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{action} {resource}: {source}")]
    Provider {
        resource: String,
        action: &'static str,
        #[source]
        source: ProviderError,
    },
    #[error("{resource}: recording state: {source}")]
    State {
        resource: String,
        #[source]
        source: StateError,
    },
    #[error("{}", crate::plan::protect_refusal(.resource, .action))]
    Protected { resource: String, action: &'static str },
    #[error("{resource}: `{field}` still refers to an unknown value after its dependencies ran")]
    Unresolved { resource: String, field: String },
    #[error("{resource}: refusing to delete {id}: it does not carry this stack's ownership tag ({found}); it was not made by this stack")]
    NotOwned { resource: String, id: String, found: String },
    /// The plan found that what AWS has under the recorded id is not what this state made.
    #[error("{resource}: refusing to {action} {id}: {message}; nothing was sent to AWS")]
    NotOurs { resource: String, action: &'static str, id: String, message: String },
    #[error(
        "update {resource}: AWS answered for {id} with the id `{now}`, but the state records `{recorded}`: it is not the resource \
         this state made (deleted and made again during the update?); the record is left as it was, so the next plan shows the conflict"
    )]
    IdChanged { resource: String, id: String, recorded: String, now: String },
    #[error(
        "{resource}: {name} already exists in AWS but this stack's state does not own it (made outside reconcile, or by another stack): \
         delete or rename it, rename ours, or adopt it with `reconcile import {resource} <id>` ({detail})"
    )]
    Conflict { resource: String, name: String, detail: String },
    #[error(
        "{resource}: the plan's {action} carries no {what}; nothing was sent to AWS (a plan this version computes always does: \
         please report it with `plan --json`)"
    )]
    MissingFromPlan { resource: String, action: &'static str, what: Missing },
    #[error(
        "create {resource}: {id} was made but not finished: {source}; it is recorded as incomplete, and the next apply finishes or replaces it"
    )]
    Incomplete {
        resource: String,
        id: String,
        #[source]
        source: ProviderError,
    },
}

/// What a plan's change lacked for apply to carry it out ([`ApplyError::MissingFromPlan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The physical id of what an update, replacement or delete acts on.
    PhysicalId,
    /// The attributes a create, update or replacement makes real.
    Desired,
    /// The live attributes an update starts from.
    Current,
    /// The code artifact with this hash.
    Artifact(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::PhysicalId => f.write_str("physical id"),
            Missing::Desired => f.write_str("desired attributes"),
            Missing::Current => f.write_str("current attributes"),
            Missing::Artifact(sha) => write!(f, "code artifact {sha}"),
        }
    }
}

/// Progress events, for whoever shows them.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Started { name: &'a str, action: Action },
    Finished { name: &'a str, action: Action, elapsed: Duration },
    Failed { name: &'a str, action: Action, error: &'a str },
    Skipped { name: &'a str, action: Action, because: &'a str },
}

pub trait Reporter: Sync {
    fn event(&self, event: Event<'_>);
}

/// A reporter that shows nothing.
pub struct Silent;
impl Reporter for Silent {
    fn event(&self, _: Event<'_>) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Done,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    pub action: Action,
    pub status: Status,
    pub error: Option<String>,
    /// When it started, from the start of the run.
    pub started_ms: Option<u128>,
    pub elapsed_ms: u128,
    /// The operations it waited for (names as in `name`).
    pub waited_for: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub outputs: BTreeMap<String, String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|o| o.status != Status::Done)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub parallelism: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { parallelism: 10 }
    }
}

struct Ctx<'a> {
    aws: &'a Aws,
    store: &'a Store,
    stack: &'a str,
    state: &'a StackState,
    outputs: Mutex<HashMap<String, BTreeMap<String, String>>>,
    /// Physical ids recorded by this run, by resource.
    recorded: Mutex<HashMap<String, String>>,
    /// Creates the plan found in conflict with what AWS has (resource → existing physical id): they
    /// fail without an AWS call.
    conflicts: HashMap<String, Option<String>>,
    /// Recorded resources the plan found are not what this state made (resource → why): nothing of
    /// theirs is written (see [`crate::plan::not_ours`]).
    not_ours: HashMap<String, String>,
}

impl Ctx<'_> {
    /// An error as it is reported and journaled: with the run's secret values masked (the provider
    /// layer masked its errors already; this covers every other text that reaches the journal, the
    /// report and `--json`).
    fn shown(&self, e: &dyn std::fmt::Display) -> String {
        self.aws.secrets().redact_string(e.to_string())
    }
}

/// One operation of the executor's graph.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub change: &'a ResourceChange,
    pub step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The change as planned.
    Whole,
    /// Create-before-destroy replacement, first half: the new resource.
    CreateNew,
    /// Create-before-destroy replacement, second half: the old resource, once its dependents moved.
    DeleteOld,
}

impl Node<'_> {
    pub fn label(&self) -> String {
        match self.step {
            Step::DeleteOld => format!("{} (previous)", self.change.name),
            _ => self.change.name.clone(),
        }
    }
    fn action(&self) -> Action {
        match self.step {
            Step::Whole => self.change.action,
            Step::CreateNew => Action::Create,
            Step::DeleteOld => Action::Delete,
        }
    }
}

/// The operations and what each waits for: creates and updates after the operations on what they
/// reference; a delete after the operations on everything that depended on the deleted resource;
/// the old half of a create-before-destroy replacement after its dependents moved to the new one.
pub fn graph<'a>(plan: &'a Plan, state: &StackState) -> (Vec<Node<'a>>, Vec<Vec<usize>>) {
    let mut nodes = Vec::new();
    for change in plan.resources.iter().filter(|r| r.action != Action::NoOp || r.adopt.is_some() || r.moved_from.is_some()) {
        if change.deposed {
            nodes.push(Node { change, step: Step::DeleteOld });
        } else if change.action == Action::Replace && change.create_before_destroy {
            nodes.push(Node { change, step: Step::CreateNew });
            nodes.push(Node { change, step: Step::DeleteOld });
        } else {
            nodes.push(Node { change, step: Step::Whole });
        }
    }
    let main: HashMap<&str, usize> =
        nodes.iter().enumerate().filter(|(_, n)| n.step != Step::DeleteOld).map(|(i, n)| (n.change.name.as_str(), i)).collect();
    let deps = nodes
        .iter()
        .enumerate()
        .map(|(me, node)| {
            let r = node.change;
            let others = || nodes.iter().enumerate().filter(move |(i, o)| *i != me && o.step != Step::DeleteOld);
            let mut deps: Vec<usize> = match (node.step, r.action) {
                (Step::DeleteOld, _) => {
                    let main_node = main.get(r.name.as_str()).copied();
                    // A leftover holding the very name the new one is to have goes first: nothing uses
                    // it (the new one does not exist yet, and it was never recorded as the current one).
                    let in_the_way = r.deposed
                        && main_node.is_some_and(|m| {
                            nodes[m].change.kind == r.kind
                                && desired_physical_name(nodes[m].change).is_some_and(|p| Some(p) == r.physical_id.as_deref())
                        });
                    if in_the_way {
                        Vec::new()
                    } else {
                        let mut d: Vec<usize> = others().filter(|(_, o)| o.change.depends_on.contains(&r.name)).map(|(i, _)| i).collect();
                        d.extend(main_node);
                        d
                    }
                }
                (_, Action::Delete | Action::Forget) => others()
                    .filter(|(_, o)| {
                        // A renamed key's record is still under its previous key.
                        let recorded = o.change.moved_from.as_deref().unwrap_or(&o.change.name);
                        state.resources.get(recorded).is_some_and(|s| s.depends_on.contains(&r.name))
                    })
                    .map(|(i, _)| i)
                    .collect(),
                _ => {
                    let mut d: Vec<usize> = r.depends_on.iter().filter_map(|d| main.get(d.as_str()).copied()).collect();
                    // What holds the physical name this one is to have (a resource removed from the
                    // manifest, a leftover of an interrupted run) goes first.
                    if let Some(physical) = desired_physical_name(r) {
                        d.extend(
                            nodes
                                .iter()
                                .enumerate()
                                .filter(|(i, o)| {
                                    *i != me
                                        && o.change.action == Action::Delete
                                        && o.change.kind == r.kind
                                        && o.change.physical_id.as_deref() == Some(physical)
                                })
                                .map(|(i, _)| i),
                        );
                    }
                    d
                }
            };
            deps.sort();
            deps.dedup();
            deps
        })
        .collect();
    (nodes, deps)
}

fn desired_physical_name(r: &ResourceChange) -> Option<&str> {
    let field = r.kind.schema().physical_name;
    r.changes.iter().find(|c| c.path == field).and_then(|c| c.after.as_ref()).and_then(Value::as_str)
}

/// What a resource is made from: the manifest's attributes as planned (references unresolved) and
/// the code, for kinds that carry it.
#[derive(Debug, Clone, Copy)]
pub struct Make<'p> {
    pub attrs: &'p serde_json::Map<String, Value>,
    pub artifact: Option<&'p Artifact>,
}

/// One operation of the graph with everything it needs from the plan, taken out before anything runs.
#[derive(Debug, Clone, Copy)]
pub enum Op<'p> {
    /// Nothing to do beyond adopting or moving the record.
    NoOp,
    Create(Make<'p>),
    Update {
        id: &'p str,
        current: &'p serde_json::Map<String, Value>,
        make: Make<'p>,
    },
    /// Delete-before-create replacement: `id` is deleted, then the new one is created.
    Replace {
        id: &'p str,
        current: Option<&'p serde_json::Map<String, Value>>,
        make: Make<'p>,
    },
    /// Create-before-destroy replacement, first half: `old_id` is deleted by [`Op::DeleteOld`] once
    /// the new one exists and its dependents moved.
    CreateNew {
        old_id: &'p str,
        make: Make<'p>,
    },
    DeleteOld {
        id: &'p str,
    },
    Delete {
        id: &'p str,
        current: Option<&'p serde_json::Map<String, Value>>,
    },
    /// Left in AWS (its ownership tags removed where the kind has tags) and dropped from the state.
    Forget {
        id: &'p str,
        current: Option<&'p serde_json::Map<String, Value>>,
    },
}

/// The operation `node` stands for, with what the plan gives it; a change lacking what its action
/// needs (an update or delete without a physical id, a create without attributes, code not in the
/// plan's artifacts) is refused here, before any AWS call.
pub fn prepare<'p>(node: &Node<'p>, artifacts: &'p BTreeMap<String, Artifact>) -> Result<Op<'p>, ApplyError> {
    let c = node.change;
    let missing = |action: &'static str, what: Missing| ApplyError::MissingFromPlan { resource: c.name.clone(), action, what };
    let id = |action| c.physical_id.as_deref().ok_or_else(|| missing(action, Missing::PhysicalId));
    let make = |action| -> Result<Make<'p>, ApplyError> {
        let attrs = c.desired.as_ref().map(|d| &d.attrs).ok_or_else(|| missing(action, Missing::Desired))?;
        let artifact = match c.artifact_sha256.as_deref() {
            Some(sha) => Some(artifacts.get(sha).ok_or_else(|| missing(action, Missing::Artifact(sha.into())))?),
            None => None,
        };
        Ok(Make { attrs, artifact })
    };
    Ok(match node.step {
        Step::CreateNew => Op::CreateNew { old_id: id("replace")?, make: make("replace")? },
        Step::DeleteOld => Op::DeleteOld { id: id("delete previous")? },
        Step::Whole => match c.action {
            Action::NoOp => Op::NoOp,
            Action::Create => Op::Create(make("create")?),
            Action::Update => Op::Update {
                id: id("update")?,
                current: c.current.as_ref().ok_or_else(|| missing("update", Missing::Current))?,
                make: make("update")?,
            },
            Action::Replace => Op::Replace { id: id("replace")?, current: c.current.as_ref(), make: make("replace")? },
            Action::Delete => Op::Delete { id: id("delete")?, current: c.current.as_ref() },
            Action::Forget => Op::Forget { id: id("forget")?, current: c.current.as_ref() },
        },
    })
}

/// The plan's operations in graph order, what each waits for, and what each does; or, when they
/// wait on each other in a cycle or one lacks what its action needs, the report of the refused plan
/// (every operation failed, nothing started). Never the case for a plan the planner made: refused
/// before any write rather than reporting every operation as waiting on a failure that never
/// happened, or failing half-way through.
pub fn schedule<'p>(plan: &'p Plan, state: &StackState, reporter: &dyn Reporter) -> Result<Schedule<'p>, Report> {
    let (nodes, deps) = graph(plan, state);
    let refuse = |error: String, own: &dyn Fn(usize) -> Option<String>| {
        let outcomes = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let error = own(i).unwrap_or_else(|| error.clone());
                reporter.event(Event::Failed { name: &node.label(), action: node.action(), error: &error });
                Outcome {
                    name: node.label(),
                    action: node.action(),
                    status: Status::Failed,
                    error: Some(error),
                    started_ms: None,
                    elapsed_ms: 0,
                    waited_for: deps[i].iter().map(|d| nodes[*d].label()).collect(),
                }
            })
            .collect();
        Report { outcomes, outputs: BTreeMap::new() }
    };
    if let Some(cycle) = find_cycle(&deps) {
        let path: Vec<String> = cycle.iter().map(|i| nodes[*i].label()).collect();
        let error = format!(
            "not started: the operations wait on each other in a cycle ({} → {}); nothing was changed. This is a bug: please report it with `plan --json`",
            path.join(" → "),
            path[0]
        );
        tracing::error!(%error, "refusing to apply a plan whose operations form a cycle");
        return Err(refuse(error, &|_| None));
    }
    let ops: Vec<Result<Op<'p>, ApplyError>> = nodes.iter().map(|n| prepare(n, &plan.artifacts)).collect();
    if let Some(Err(first)) = ops.iter().find(|op| op.is_err()) {
        let error = format!("not started: another operation of this plan is refused ({first}); nothing was changed");
        tracing::error!(error = %first, "refusing to apply a plan that lacks what an operation needs");
        return Err(refuse(error, &|i| ops[i].as_ref().err().map(ToString::to_string)));
    }
    let ops = ops.into_iter().filter_map(Result::ok).collect();
    Ok(Schedule { nodes, deps, ops })
}

/// What [`schedule`] makes of a plan: `nodes[i]` waits for `deps[i]` and does `ops[i]`.
#[derive(Debug)]
pub struct Schedule<'p> {
    pub nodes: Vec<Node<'p>>,
    pub deps: Vec<Vec<usize>>,
    pub ops: Vec<Op<'p>>,
}

/// Carries out the plan: only what the plan says, with references resolved against this run's
/// outputs (the manifest is not read).
pub async fn execute(plan: &Plan, state: &StackState, store: &Store, aws: &Aws, options: Options, reporter: &dyn Reporter) -> Report {
    let Schedule { nodes, deps, ops } = match schedule(plan, state, reporter) {
        Ok(schedule) => schedule,
        Err(refused) => return refused,
    };
    let conflicts =
        plan.blockers.iter().filter(|b| b.problem == Problem::Conflict).map(|b| (b.resource.clone(), b.physical_id.clone())).collect();
    let not_ours = plan
        .blockers
        .iter()
        .filter(|b| b.problem == Problem::Conflict)
        .filter(|b| plan.resources.iter().any(|c| c.name == b.resource && !c.deposed && c.action != Action::Create))
        .map(|b| (b.resource.clone(), b.message.clone()))
        .collect();
    let ctx = Ctx {
        aws,
        store,
        stack: &plan.stack,
        state,
        outputs: Mutex::new(plan.known_outputs.clone()),
        recorded: Mutex::new(HashMap::new()),
        conflicts,
        not_ours,
    };
    let began = Instant::now();
    let starts: Mutex<Vec<Option<Duration>>> = Mutex::new(vec![None; nodes.len()]);

    // Boxed with an explicit lifetime so the whole execution is `Send` (the watch daemon spawns it).
    type NodeFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (Result<(), String>, Duration)> + Send + 'a>>;
    let (ctx, starts, ops) = (&ctx, &starts, &ops);
    let outcomes = run_graph(&deps, options.parallelism.max(1), |i| -> NodeFuture<'_> {
        let (node, op) = (nodes[i], ops[i]);
        Box::pin(async move {
            let label = node.label();
            reporter.event(Event::Started { name: &label, action: node.action() });
            let start = Instant::now();
            if let Ok(mut s) = starts.lock() {
                s[i] = Some(start.duration_since(began));
            }
            let result =
                crate::providers::calls::RESOURCE.scope(label.as_str().into(), run(ctx, node, op)).await.map_err(|e| ctx.shown(&e));
            match &result {
                Ok(()) => reporter.event(Event::Finished { name: &label, action: node.action(), elapsed: start.elapsed() }),
                Err(e) => reporter.event(Event::Failed { name: &label, action: node.action(), error: e }),
            }
            (result, start.elapsed())
        })
    })
    .await;

    let mut report = Vec::with_capacity(nodes.len());
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let node = nodes[i];
        let (status, error, elapsed) = match outcome {
            NodeOutcome::Done(elapsed) => (Status::Done, None, elapsed),
            NodeOutcome::Failed(e, elapsed) => (Status::Failed, Some(e), elapsed),
            NodeOutcome::Skipped(because) => {
                let because = format!("skipped: depends on {} which failed", nodes[because].label());
                reporter.event(Event::Skipped { name: &node.label(), action: node.action(), because: &because });
                (Status::Skipped, Some(because), Duration::ZERO)
            }
        };
        let started_ms = starts.lock().ok().and_then(|s| s[i]).map(|d| d.as_millis());
        let waited_for = deps[i].iter().map(|d| nodes[*d].label()).collect();
        report.push(Outcome {
            name: node.label(),
            action: node.action(),
            status,
            error,
            started_ms,
            elapsed_ms: elapsed.as_millis(),
            waited_for,
        });
    }

    // The manifest's `retain_on_delete` of everything it declares, where the state records otherwise
    // (no AWS call: what is forgotten later depends on it).
    let flags: Vec<(String, bool)> =
        plan.resources.iter().filter(|c| !c.deposed && c.desired.is_some()).map(|c| (c.name.clone(), c.retain_on_delete)).collect();
    if !plan.destroy
        && !flags.is_empty()
        && let Err(e) = store.set_retain(&plan.stack, &flags).await
    {
        tracing::error!(error = %e, "recording retain_on_delete");
    }
    for id in &plan.interrupted_operations {
        if let Err(e) = store.finish_operation(*id, &OperationOutcome::Reconciled).await {
            tracing::error!(error = %e, "closing a journal entry of an interrupted run");
        }
    }
    let known = ctx.outputs.lock().map(|o| o.clone()).unwrap_or_default();
    let outputs = if plan.destroy { BTreeMap::new() } else { stack_outputs(&plan.output_expressions, &known) };
    // Outputs are recorded only from a consistent state: after a failure, what they resolved to may
    // not exist (or not be recorded), so the last good ones stay until an apply succeeds. And only
    // when the plan changes them (or destroys the stack): a remediation's plan, restricted to what
    // drifted, never rewrites them (what it leaves out would be unknown, and dropped).
    let all_done = report.iter().all(|o| o.status == Status::Done);
    let changes_outputs = plan.destroy || !plan.output_changes.is_empty();
    if all_done
        && changes_outputs
        && let Err(e) = store.set_outputs(&plan.stack, &outputs).await
    {
        tracing::error!(error = %e, "recording stack outputs");
    }
    Report { outcomes: report, outputs }
}

/// Resolves the manifest's `[outputs]` (as the plan carries them) with what is known; unresolved ones are left out.
pub fn stack_outputs(
    expressions: &BTreeMap<String, String>,
    known: &HashMap<String, BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
    expressions
        .iter()
        .filter_map(|(k, v)| {
            let (resolved, unknown) = refs::resolve(&Value::String(v.clone()), &lookup);
            (!unknown).then(|| (k.clone(), resolved.as_str().unwrap_or_default().to_string()))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeOutcome {
    Done(Duration),
    Failed(String, Duration),
    /// Skipped because of the failure of this node.
    Skipped(usize),
}

/// Runs a dependency graph: `deps[i]` lists what node `i` waits for. Every node starts as soon as
/// its own dependencies are done, at most `parallelism` at once; a failed node's dependents
/// (transitively) are skipped, everything else still runs.
///
/// When more nodes are ready than there are free slots, the deepest goes first (the longest chain of
/// dependencies behind it), the earliest ready among equals: chains under way are carried through
/// before new ones start. With API Gateway's per-operation limits this keeps the slowest limited
/// operation (`CreateDeployment`, one per 5 s) fed, instead of queueing every deployment behind every
/// `CreateRestApi` of a many-stack run.
pub async fn run_graph<F, Fut>(deps: &[Vec<usize>], parallelism: usize, mut run: F) -> Vec<NodeOutcome>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = (Result<(), String>, Duration)>,
{
    let n = deps.len();
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let depth = depths(deps, &dependents);
    let mut outcomes: Vec<Option<NodeOutcome>> = vec![None; n];
    // Max-heap on (depth, earliest ready); `seq` counts readiness.
    let mut seq = 0usize;
    let mut ready = std::collections::BinaryHeap::new();
    let mut make_ready = |ready: &mut std::collections::BinaryHeap<(usize, std::cmp::Reverse<usize>, usize)>, i: usize| {
        ready.push((depth[i], std::cmp::Reverse(seq), i));
        seq += 1;
    };
    for i in (0..n).filter(|i| remaining[*i] == 0) {
        make_ready(&mut ready, i);
    }
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < parallelism {
            let Some((_, _, i)) = ready.pop() else { break };
            let fut = run(i);
            running.push(async move { (i, fut.await) });
        }
        let Some((i, (result, elapsed))) = running.next().await else {
            break;
        };
        match result {
            Ok(()) => {
                outcomes[i] = Some(NodeOutcome::Done(elapsed));
                for &d in &dependents[i] {
                    remaining[d] -= 1;
                    if remaining[d] == 0 && outcomes[d].is_none() {
                        make_ready(&mut ready, d);
                    }
                }
            }
            Err(e) => {
                outcomes[i] = Some(NodeOutcome::Failed(e, elapsed));
                let mut stack = dependents[i].clone();
                while let Some(d) = stack.pop() {
                    if outcomes[d].is_none() {
                        outcomes[d] = Some(NodeOutcome::Skipped(i));
                        stack.extend(dependents[d].iter().copied());
                    }
                }
            }
        }
    }
    // A node never reached is only possible with a cycle (which `execute` refuses before running):
    // say so, rather than blame a failure that never happened.
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| NodeOutcome::Failed("never started: it waits on a dependency cycle".into(), Duration::ZERO)))
        .collect()
}

/// The plan's operations that would wait on each other in a cycle (`a → b → a`), if any: such a plan
/// cannot run, and is refused by `plan` and `apply` before any write.
pub fn plan_cycle(plan: &Plan, state: &StackState) -> Option<String> {
    let (nodes, deps) = graph(plan, state);
    let cycle = find_cycle(&deps)?;
    let path: Vec<String> = cycle.iter().chain(cycle.first()).map(|i| nodes[*i].label()).collect();
    Some(path.join(" → "))
}

/// What `plan` and `apply` say about a plan with a cycle, and how to get out of it.
pub fn cycle_refusal(cycle: &str) -> String {
    format!(
        "refusing this plan: its operations would wait on each other ({cycle}), so none could start. A key renamed in the \
         manifest is taken over by the new key only when its type and physical name stay the same in that edit: rename the key \
         alone first (apply), then change the rest"
    )
}

/// One cycle of the graph (node indexes, in dependency order), if there is any.
pub fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0: not visited, 1: on the current path, 2: done.
    let mut mark = vec![0u8; deps.len()];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..deps.len() {
        if mark[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, index of the next dependency to look at).
        let mut stack = vec![(start, 0usize)];
        mark[start] = 1;
        path.push(start);
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&d) = deps[node].get(*next) {
                *next += 1;
                match mark[d] {
                    0 => {
                        mark[d] = 1;
                        path.push(d);
                        stack.push((d, 0));
                    }
                    1 => {
                        let from = path.iter().position(|n| *n == d).unwrap_or(0);
                        return Some(path[from..].to_vec());
                    }
                    _ => {}
                }
            } else {
                mark[node] = 2;
                path.pop();
                stack.pop();
            }
        }
    }
    None
}

/// The depth of each node: the number of nodes on its longest chain of dependencies (0 for a node
/// that waits for nothing; nodes on a cycle, never run, count 0).
fn depths(deps: &[Vec<usize>], dependents: &[Vec<usize>]) -> Vec<usize> {
    let mut depth = vec![0usize; deps.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut queue: Vec<usize> = (0..deps.len()).filter(|i| waiting[*i] == 0).collect();
    while let Some(i) = queue.pop() {
        for &d in &dependents[i] {
            depth[d] = depth[d].max(depth[i] + 1);
            waiting[d] -= 1;
            if waiting[d] == 0 {
                queue.push(d);
            }
        }
    }
    depth
}

async fn run(ctx: &Ctx<'_>, node: Node<'_>, op: Op<'_>) -> Result<(), ApplyError> {
    let change = node.change;
    let name = change.name.as_str();
    if node.step != Step::Whole && change.protect {
        return Err(ApplyError::Protected { resource: name.into(), action: "replacement" });
    }
    if let Some(message) = ctx.not_ours.get(name).filter(|_| !change.deposed) {
        let action = match op {
            // Nothing to write, but the run must not say all is well.
            Op::NoOp => Some("manage"),
            // Forgetting it drops the record only: its tags are not ours to remove.
            Op::Forget { id, .. } => return forget(ctx, name, change.kind, id, None).await,
            Op::Create(_) => Some("create"),
            Op::Update { .. } => Some("update"),
            Op::Replace { .. } | Op::CreateNew { .. } => Some("replace"),
            Op::DeleteOld { .. } | Op::Delete { .. } => Some("delete"),
        };
        if let Some(action) = action {
            let id = change.physical_id.clone().unwrap_or_default();
            return Err(ApplyError::NotOurs { resource: name.into(), action, id, message: message.clone() });
        }
    }
    if let Some(old) = change.moved_from.as_deref().filter(|_| node.step != Step::DeleteOld) {
        // A renamed key takes over the old key's record (and what depended on it follows) before
        // anything else happens to the resource.
        ctx.store.rename_resource(ctx.stack, old, name).await.map_err(|source| ApplyError::State { resource: name.into(), source })?;
        tracing::info!(resource = name, from = old, "state record moved to the renamed key");
    }
    if let Some(id) = change.adopt.as_deref().filter(|_| node.step == Step::Whole) {
        adopt(ctx, change, id).await?;
    }
    match op {
        Op::NoOp => Ok(()),
        Op::CreateNew { old_id, make } => {
            // Journaled before the new one exists, closed when the old one is gone: a crash in between
            // leaves an entry the next run uses to delete the old one.
            journal(ctx, name, recorded_kind(ctx, change), JournalAction::DeletePrevious, Some(old_id)).await?;
            create(ctx, change, make).await
        }
        Op::DeleteOld { id } => {
            if recorded_kind(ctx, change) == change.kind && ctx.recorded.lock().is_ok_and(|r| r.get(name).is_some_and(|new| new == id)) {
                // The new one turned out to have the old one's id (a name only known at apply time):
                // it replaced the old one already, and is not to be deleted.
                close_delete_previous(ctx, name, id).await;
                return Ok(());
            }
            if change.deposed {
                // Found through an entry this run closes (an interrupted create): journaled again, so a
                // failed or interrupted delete leaves the next run an entry to finish it.
                journal(ctx, name, change.kind, JournalAction::DeletePrevious, Some(id)).await?;
            }
            let result = providers::delete(ctx.aws, recorded_kind(ctx, change), id).await.map_err(|source| ApplyError::Provider {
                resource: name.into(),
                action: "delete previous",
                source,
            });
            if result.is_ok() {
                close_delete_previous(ctx, name, id).await;
            }
            result
        }
        Op::Create(make) => create(ctx, change, make).await,
        Op::Update { id, current, make } => {
            let (desired, artifact) = resolve(ctx, change, make)?;
            let op = journal(ctx, name, change.kind, JournalAction::Update, Some(id)).await?;
            let applied = providers::update(ctx.aws, change.kind, id, current, Desired { attrs: &desired, artifact })
                .await
                .map_err(|source| ApplyError::Provider { resource: name.into(), action: "update", source });
            let recorded = match applied {
                Ok(a) => match changed_id(ctx, change, id, &a.outputs) {
                    Some(e) => Err(e),
                    None => record(ctx, change, change.kind, a.physical_id, desired, a.outputs, change.depends_on.clone()).await,
                },
                Err(e) => Err(e),
            };
            finish(ctx, op, &recorded).await;
            recorded
        }
        Op::Replace { id, current, make } => {
            debug_assert_eq!(change.replace_order(), Some(ReplaceOrder::DeleteBeforeCreate));
            // Unresolvable attributes fail the replacement before the old one is deleted.
            resolve(ctx, change, make)?;
            if change.protect {
                return Err(ApplyError::Protected { resource: name.into(), action: "replacement" });
            }
            delete(ctx, name, recorded_kind(ctx, change), id, current).await?;
            create(ctx, change, make).await
        }
        Op::Delete { id, current } => {
            if change.protect {
                return Err(ApplyError::Protected { resource: name.into(), action: "deletion" });
            }
            delete(ctx, name, change.kind, id, current).await
        }
        Op::Forget { id, current } => forget(ctx, name, change.kind, id, current).await,
    }
}

/// The type the state records for what a change replaces (under its key, or the key it moves from),
/// or deletes: a delete goes to that type's provider, whatever type the manifest gives the key now.
/// (A leftover of an interrupted replacement carries the type its journal entry recorded.)
fn recorded_kind(ctx: &Ctx<'_>, change: &ResourceChange) -> Kind {
    if change.deposed {
        return change.kind;
    }
    let key = change.moved_from.as_deref().unwrap_or(&change.name);
    ctx.state.resources.get(key).map_or(change.kind, |s| s.kind)
}

/// An update's answer with another AWS-assigned id than the state records (see
/// [`providers::assigned_id`]): the record is not overwritten with it.
fn changed_id(ctx: &Ctx<'_>, change: &ResourceChange, id: &str, outputs: &BTreeMap<String, String>) -> Option<ApplyError> {
    if change.adopt.is_some() {
        // Adopted by this run: its record is what AWS has now.
        return None;
    }
    let key = change.moved_from.as_deref().unwrap_or(&change.name);
    let recorded = ctx.state.resources.get(key).or_else(|| ctx.state.resources.get(&change.name))?;
    let was = providers::assigned_id(recorded.kind, &recorded.outputs)?;
    let now = providers::assigned_id(change.kind, outputs)?;
    (was != now).then(|| ApplyError::IdChanged { resource: change.name.clone(), id: id.to_string(), recorded: was, now })
}

/// Leaves a resource in AWS and drops it from the state (`retain_on_delete`, region-wide settings).
/// Where the kind has tags and AWS still has it with this stack's ownership tags, those tags are
/// removed first, so a later `import` (by this stack or another) can adopt it; one that is not
/// tagged as this stack's is not touched.
async fn forget(
    ctx: &Ctx<'_>,
    name: &str,
    kind: Kind,
    id: &str,
    current: Option<&serde_json::Map<String, Value>>,
) -> Result<(), ApplyError> {
    let ownership = [crate::manifest::TAG_STACK, crate::manifest::TAG_MANAGED_BY, crate::manifest::TAG_RESOURCE];
    let tagged = |c: &serde_json::Map<String, Value>| {
        c.get("tags").and_then(Value::as_object).is_some_and(|t| ownership.iter().any(|k| t.contains_key(*k)))
    };
    if let Some(current) = current.filter(|c| kind.schema().taggable && tagged(c)) {
        if check_owned(ctx, name, kind, id, Some(current)).is_ok() {
            // What AWS cannot tell (a function's code path) is taken as last recorded, as planning does.
            let mut current = current.clone();
            if let Some(recorded) = ctx.state.resources.get(name).and_then(|s| s.attributes.as_object()) {
                let schema = kind.schema();
                for (k, v) in recorded.iter().filter(|(k, _)| schema.field(k).is_some() || *k == crate::manifest::schema::CODE_SHA256) {
                    current.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            let mut untagged = current.clone();
            if let Some(Value::Object(tags)) = untagged.get_mut("tags") {
                for k in ownership {
                    tags.remove(k);
                }
            }
            let op = journal(ctx, name, kind, JournalAction::Update, Some(id)).await?;
            let result = providers::update(ctx.aws, kind, id, &current, Desired { attrs: &untagged, artifact: None })
                .await
                .map(drop)
                .map_err(|source| ApplyError::Provider { resource: name.into(), action: "remove ownership tags", source });
            finish(ctx, op, &result).await;
            result?;
        } else {
            tracing::warn!(resource = name, id, "not tagged as this stack's: forgotten without touching its tags");
        }
    }
    ctx.store.delete_resource(ctx.stack, name).await.map_err(|source| ApplyError::State { resource: name.into(), source })?;
    tracing::info!(resource = name, id, "forgotten: left in AWS");
    if let Ok(mut o) = ctx.outputs.lock() {
        o.remove(name);
    }
    Ok(())
}

/// The planned attributes with every reference resolved against this run's outputs, and the code.
fn resolve<'p>(
    ctx: &Ctx<'_>,
    change: &ResourceChange,
    make: Make<'p>,
) -> Result<(serde_json::Map<String, Value>, Option<&'p Artifact>), ApplyError> {
    let known = ctx.outputs.lock().map(|o| o.clone()).unwrap_or_default();
    let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
    let mut attrs = serde_json::Map::new();
    for (k, v) in make.attrs {
        let (resolved, unknown) = refs::resolve(v, &lookup);
        if unknown || refs::contains_unknown(&resolved) && !refs::contains_unknown(v) {
            return Err(ApplyError::Unresolved { resource: change.name.clone(), field: k.clone() });
        }
        attrs.insert(k.clone(), resolved);
    }
    debug_assert!(!attrs.values().any(|v| v.as_str() == Some(UNKNOWN)));
    Ok((attrs, make.artifact))
}

/// Closes the journal entries that announced the deletion of a previous physical resource.
async fn close_delete_previous(ctx: &Ctx<'_>, name: &str, id: &str) {
    let pending = ctx.store.pending_operations(ctx.stack).await.unwrap_or_default();
    for op in pending
        .iter()
        .filter(|op| op.resource == name && op.action == JournalAction::DeletePrevious && op.physical_name.as_deref() == Some(id))
    {
        if let Err(e) = ctx.store.finish_operation(op.id, &OperationOutcome::Ok).await {
            tracing::error!(error = %e, "closing a journal entry");
        }
    }
}

async fn journal(ctx: &Ctx<'_>, name: &str, kind: Kind, action: JournalAction, physical: Option<&str>) -> Result<i64, ApplyError> {
    ctx.store
        .begin_operation(ctx.stack, name, kind, action, physical)
        .await
        .map_err(|source| ApplyError::State { resource: name.into(), source })
}

async fn finish<T>(ctx: &Ctx<'_>, op: i64, result: &Result<T, ApplyError>) {
    let outcome = match result {
        Ok(_) => OperationOutcome::Ok,
        // The AWS call went through but the state could not record it (the database gone, the lock
        // lost and the write fenced, a full disk): the entry stays open, as after a crash, so the next
        // run finds what the call made and adopts it instead of creating it again.
        Err(ApplyError::State { .. }) => {
            tracing::warn!(operation = op, "the state did not record what AWS did; its journal entry stays open for the next run to adopt");
            return;
        }
        Err(e) => OperationOutcome::Failed(ctx.shown(e)),
    };
    if let Err(e) = ctx.store.finish_operation(op, &outcome).await {
        tracing::error!(error = %e, "recording the end of an operation");
    }
}

async fn create(ctx: &Ctx<'_>, change: &ResourceChange, make: Make<'_>) -> Result<(), ApplyError> {
    let name = change.name.as_str();
    if let Some(existing) = ctx.conflicts.get(name) {
        return Err(ApplyError::Conflict {
            resource: name.into(),
            name: existing.clone().unwrap_or_else(|| "it".into()),
            detail: "found by the plan; nothing was sent to AWS".into(),
        });
    }
    let (desired, artifact) = resolve(ctx, change, make)?;
    let kind = change.kind;
    let physical = desired.get(kind.schema().physical_name).and_then(Value::as_str).map(str::to_string);
    let op = journal(ctx, name, kind, JournalAction::Create, physical.as_deref()).await?;
    let applied = providers::create(ctx.aws, kind, Desired { attrs: &desired, artifact }).await;
    let deps = change.depends_on.clone();
    // The journal entry is closed only once the state has the resource: a crash in between leaves it
    // open, and the next run adopts what was made.
    let recorded = match applied {
        Ok(a) => record(ctx, change, kind, a.physical_id, desired, a.outputs, deps).await,
        Err(ProviderError::Incomplete { id, outputs, source }) => {
            record_incomplete(ctx, resource_state(change, kind, id, desired, outputs, deps), *source).await
        }
        // Each kind classifies its create's "name taken" answer from the SDK's typed error.
        Err(source) if source.is_already_exists() => Err(ApplyError::Conflict {
            resource: name.into(),
            name: physical.clone().unwrap_or_else(|| "it".into()),
            detail: source.to_string(),
        }),
        Err(source) => Err(ApplyError::Provider { resource: name.into(), action: "create", source }),
    };
    finish(ctx, op, &recorded).await;
    recorded
}

async fn record(
    ctx: &Ctx<'_>,
    change: &ResourceChange,
    kind: Kind,
    physical_id: String,
    attributes: serde_json::Map<String, Value>,
    outputs: BTreeMap<String, String>,
    depends_on: Vec<String>,
) -> Result<(), ApplyError> {
    let state = resource_state(change, kind, physical_id, attributes, outputs, depends_on);
    let put = if change.desired.is_some() {
        ctx.store.put_resource_retaining(ctx.stack, &state, change.retain_on_delete).await
    } else {
        ctx.store.put_resource(ctx.stack, &state).await
    };
    put.map_err(|source| ApplyError::State { resource: change.name.clone(), source })?;
    if let Ok(mut r) = ctx.recorded.lock() {
        r.insert(change.name.clone(), state.physical_id.clone());
    }
    if let Ok(mut o) = ctx.outputs.lock() {
        o.insert(change.name.clone(), state.outputs);
    }
    Ok(())
}

/// A resource's state record.
fn resource_state(
    change: &ResourceChange,
    kind: Kind,
    physical_id: String,
    attributes: serde_json::Map<String, Value>,
    outputs: BTreeMap<String, String>,
    depends_on: Vec<String>,
) -> ResourceState {
    ResourceState { name: change.name.clone(), kind, physical_id, attributes: Value::Object(attributes), outputs, depends_on }
}

/// Records what a create made before one of its later calls failed, marked incomplete (the next plan
/// finishes or replaces it; `destroy` deletes it), and fails the resource with the reason. If even
/// the state cannot take it, the resource is deleted rather than left untracked.
async fn record_incomplete(ctx: &Ctx<'_>, state: ResourceState, source: ProviderError) -> Result<(), ApplyError> {
    let (name, kind, id) = (state.name.clone(), state.kind, state.physical_id.clone());
    tracing::warn!(resource = %name, id, error = %source, "created but not finished: recording it as incomplete");
    if let Err(e) = ctx.store.put_incomplete_resource(ctx.stack, &state, &ctx.shown(&source)).await {
        tracing::error!(resource = %name, id, error = %e, "cannot record the incomplete resource: deleting it");
        if let Err(d) = providers::delete(ctx.aws, kind, &id).await {
            tracing::error!(resource = %name, id, error = %d, "could not delete the incomplete resource either; delete it by hand");
        }
        return Err(ApplyError::State { resource: name, source: e });
    }
    Err(ApplyError::Incomplete { resource: name, id, source })
}

/// Records a resource an interrupted run made, as AWS has it, before the planned action runs.
async fn adopt(ctx: &Ctx<'_>, change: &ResourceChange, id: &str) -> Result<(), ApplyError> {
    let outputs = ctx.outputs.lock().ok().and_then(|o| o.get(&change.name).cloned()).unwrap_or_default();
    let attributes = change.current.clone().unwrap_or_default();
    record(ctx, change, change.kind, id.to_string(), attributes, outputs, change.depends_on.clone()).await
}

/// Deletes only what carries this stack's ownership tag (for kinds that have tags).
fn check_owned(
    ctx: &Ctx<'_>,
    name: &str,
    kind: Kind,
    id: &str,
    current: Option<&serde_json::Map<String, Value>>,
) -> Result<(), ApplyError> {
    let Some(current) = current.filter(|_| kind.schema().taggable) else { return Ok(()) };
    let tag = current.get("tags").and_then(|t| t.get(crate::manifest::TAG_STACK)).and_then(Value::as_str);
    if tag == Some(ctx.stack) {
        return Ok(());
    }
    let found =
        tag.map_or_else(|| format!("no `{}` tag", crate::manifest::TAG_STACK), |t| format!("`{}` = `{t}`", crate::manifest::TAG_STACK));
    Err(ApplyError::NotOwned { resource: name.into(), id: id.into(), found })
}

async fn delete(
    ctx: &Ctx<'_>,
    name: &str,
    kind: Kind,
    id: &str,
    current: Option<&serde_json::Map<String, Value>>,
) -> Result<(), ApplyError> {
    check_owned(ctx, name, kind, id, current)?;
    let op = journal(ctx, name, kind, JournalAction::Delete, Some(id)).await?;
    let result = providers::delete(ctx.aws, kind, id).await.map_err(|source| ApplyError::Provider {
        resource: name.into(),
        action: "delete",
        source,
    });
    let result = match result {
        Ok(()) => ctx
            .store
            .delete_resource(ctx.stack, name)
            .await
            .map(|_| ())
            .map_err(|source| ApplyError::State { resource: name.into(), source }),
        Err(e) => Err(e),
    };
    finish(ctx, op, &result).await;
    result?;
    if let Ok(mut o) = ctx.outputs.lock() {
        o.remove(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn done(elapsed: Duration) -> (Result<(), String>, Duration) {
        (Ok(()), elapsed)
    }

    #[tokio::test]
    async fn respects_dependency_order_and_starts_nodes_as_soon_as_ready() {
        // 0 ← 1 ← 2, and 3 independent.
        let deps = vec![vec![], vec![0], vec![1], vec![]];
        let log = Mutex::new(Vec::new());
        let out = run_graph(&deps, 4, |i| {
            log.lock().unwrap().push(i);
            async move { done(Duration::ZERO) }
        })
        .await;
        assert!(out.iter().all(|o| matches!(o, NodeOutcome::Done(_))));
        let order = log.into_inner().unwrap();
        let pos = |n| order.iter().position(|x| *x == n).unwrap();
        assert!(pos(0) < pos(1) && pos(1) < pos(2));
    }

    #[tokio::test]
    async fn a_failure_skips_only_its_dependents() {
        // 0 fails; 1 depends on 0; 2 depends on 1; 3 is independent; 4 depends on 3.
        let deps = vec![vec![], vec![0], vec![1], vec![], vec![3]];
        let out =
            run_graph(&deps, 2, |i| async move { if i == 0 { (Err("boom".to_string()), Duration::ZERO) } else { done(Duration::ZERO) } })
                .await;
        assert_eq!(out[0], NodeOutcome::Failed("boom".into(), Duration::ZERO));
        assert_eq!(out[1], NodeOutcome::Skipped(0));
        assert_eq!(out[2], NodeOutcome::Skipped(0));
        assert!(matches!(out[3], NodeOutcome::Done(_)));
        assert!(matches!(out[4], NodeOutcome::Done(_)));
    }

    #[tokio::test]
    async fn a_cycle_is_found_and_its_nodes_never_count_as_skipped_by_a_failure() {
        // 0 → 1 → 2 → 0, and 3 independent.
        let deps = vec![vec![2], vec![0], vec![1], vec![]];
        let cycle = find_cycle(&deps).unwrap();
        let mut sorted = cycle.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2]);
        assert_eq!(find_cycle(&[vec![], vec![0], vec![0, 1]]), None);
        let out = run_graph(&deps, 2, |_| async move { done(Duration::ZERO) }).await;
        assert!(matches!(&out[0], NodeOutcome::Failed(e, _) if e.contains("cycle")), "{out:?}");
        assert!(matches!(out[3], NodeOutcome::Done(_)));
    }

    fn change(
        name: &str,
        action: Action,
        physical_id: Option<&str>,
        depends_on: &[&str],
        changes: Vec<crate::plan::FieldChange>,
    ) -> ResourceChange {
        ResourceChange {
            physical_id: physical_id.map(str::to_string),
            changes,
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            ..ResourceChange::new(name, Kind::LogGroup, action)
        }
    }

    #[test]
    fn a_plan_whose_operations_wait_on_each_other_is_named_as_a_cycle() {
        // The old key renamed deadlock: `new` takes the physical name `old` frees, `user` moves to
        // `new`, and `old` is deleted only after what depended on it (`user`) ran.
        let name = crate::plan::FieldChange { path: "name".into(), before: None, after: Some(Value::from("lg")), forces_replacement: true };
        let plan = Plan {
            format_version: 1,
            stack: "s".into(),
            state_serial: 0,
            summary: Default::default(),
            resources: vec![
                change("new", Action::Create, None, &[], vec![name]),
                change("old", Action::Delete, Some("lg"), &[], vec![]),
                change("user", Action::Update, Some("u"), &["new"], vec![]),
            ],
            outputs: BTreeMap::new(),
            ..Plan::default()
        };
        let mut state = StackState::default();
        for (n, deps) in [("old", vec![]), ("user", vec!["old".to_string()])] {
            let r = ResourceState {
                name: n.into(),
                kind: Kind::LogGroup,
                physical_id: n.into(),
                attributes: Value::Null,
                outputs: BTreeMap::new(),
                depends_on: deps,
            };
            state.resources.insert(n.into(), r);
        }
        let cycle = plan_cycle(&plan, &state).expect("a cycle");
        assert_eq!(cycle.split(" → ").count(), 4, "{cycle}");
        assert!(cycle_refusal(&cycle).contains("rename the key alone first"));
        let mut acyclic = plan.clone();
        acyclic.resources[2].depends_on.clear();
        assert_eq!(plan_cycle(&acyclic, &state), None);
    }

    #[test]
    fn a_leftover_holding_the_new_name_is_deleted_before_the_new_one_is_created() {
        // An interrupted rename left `New` (never recorded); the replacement is planned again.
        let name = crate::plan::FieldChange {
            path: "name".into(),
            before: Some(Value::from("Old")),
            after: Some(Value::from("New")),
            forces_replacement: true,
        };
        let mut replace = change("logs", Action::Replace, Some("Old"), &[], vec![name]);
        replace.create_before_destroy = true;
        let mut leftover = change("logs", Action::Delete, Some("New"), &[], vec![]);
        leftover.deposed = true;
        let plan = Plan {
            format_version: 1,
            stack: "s".into(),
            state_serial: 0,
            summary: Default::default(),
            resources: vec![replace, leftover],
            outputs: BTreeMap::new(),
            ..Plan::default()
        };
        let (nodes, deps) = graph(&plan, &StackState::default());
        let labels: Vec<_> = nodes.iter().map(|n| (n.label(), n.step)).collect();
        assert_eq!(
            labels,
            vec![
                ("logs".into(), Step::CreateNew),
                ("logs (previous)".into(), Step::DeleteOld),
                ("logs (previous)".into(), Step::DeleteOld)
            ]
        );
        assert_eq!(deps, vec![vec![2], vec![0], vec![]], "the leftover first, then the new one, then the old one");
        assert_eq!(find_cycle(&deps), None);
    }

    #[test]
    fn depth_is_the_longest_chain_of_dependencies() {
        // 1 waits for 0; 2 for 1 and (a shortcut) 0; 3 for nothing; 4 for itself.
        let deps = vec![vec![], vec![0], vec![1, 0], vec![], vec![4]];
        let mut dependents = vec![Vec::new(); deps.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        assert_eq!(depths(&deps, &dependents), vec![0, 1, 2, 0, 0], "the longest chain counts; a cycle counts 0");
    }

    #[tokio::test]
    async fn when_slots_are_scarce_chains_under_way_go_before_new_ones() {
        // Three copies of a chain a → b → c (nodes 3k, 3k+1, 3k+2), one slot: first-come-first-served
        // would run every `a` before any `b`; deepest-first finishes each chain before the next starts.
        let deps: Vec<Vec<usize>> = (0..9).map(|i| if i % 3 == 0 { vec![] } else { vec![i - 1] }).collect();
        let log = Mutex::new(Vec::new());
        run_graph(&deps, 1, |i| {
            log.lock().unwrap().push(i);
            async move { done(Duration::ZERO) }
        })
        .await;
        assert_eq!(log.into_inner().unwrap(), vec![0, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[tokio::test]
    async fn never_runs_more_than_parallelism_at_once() {
        let deps = vec![vec![]; 12];
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        run_graph(&deps, 3, |_| {
            let (running, peak) = (&running, &peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                done(Duration::ZERO)
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
