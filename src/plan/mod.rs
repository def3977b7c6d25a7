//! Plan layer: manifest vs state vs live AWS → a [`Plan`], plain data that renders for people
//! ([`render`]) and serialises as a stable JSON document. The plan decides everything apply does:
//! each change carries the ids, live values, unresolved attributes and code hash its action needs.

pub mod diff;
pub mod render;
pub mod saved;

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::manifest::refs::{self, UNKNOWN};
use crate::manifest::{Artifact, Kind, Manifest};
use crate::providers::resource::NameCheck;
use crate::providers::{self, Aws, Live, ProviderError};
use crate::state::{JournalAction, PendingOperation, ResourceState, StackState};

/// Version of the JSON plan document; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    /// A new physical resource for the old one: created first when both can exist at once (see
    /// [`ResourceChange::create_before_destroy`]), otherwise the old one is deleted first.
    Replace,
    Delete,
    /// Leaves the resource in AWS and drops it from the state (`retain_on_delete`, or a region-wide
    /// setting): its ownership tags are removed where the kind has tags, so `import` can adopt it.
    Forget,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::NoOp => "no change",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Forget => "forget",
        }
    }
}

/// One field's change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// `memory_size`, or `tags.env` for one key of a map.
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub forces_replacement: bool,
}

/// What happens to one resource. (Deserialised only to show a saved plan: `desired` is not read back.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceChange {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub action: Action,
    pub physical_id: Option<String>,
    /// Why, for display: "not in state", "deleted outside reconcile", "removed from the manifest"…
    pub reason: Option<String>,
    pub changes: Vec<FieldChange>,
    pub depends_on: Vec<String>,
    /// Physical id of a resource an interrupted run created and this run adopts into the state.
    pub adopt: Option<String>,
    /// The change deletes a previous physical resource left over by an interrupted replacement;
    /// the state's record of the resource is left as it is.
    pub deposed: bool,
    /// For a replacement: the new one is created first, dependents move to it, then the old one is
    /// deleted (its physical name differs from the old one's, or AWS assigns it). When false, the
    /// new one takes the old one's name, so the old one is deleted first.
    pub create_before_destroy: bool,
    /// The resource's previous key in the manifest: the state's record under that key (and the
    /// physical resource) now belongs to this key, so nothing is deleted or created for the rename.
    pub moved_from: Option<String>,
    /// The live attributes the update starts from (and, for a delete, what shows whose it is). Left
    /// out of the JSON document: AWS's values may include secrets the manifest does not mark.
    #[serde(skip)]
    pub current: Option<Map<String, Value>>,
    /// For a create, update or replacement (and any change of a resource the manifest declares): its
    /// attributes as the manifest gives them, `${resource.output}` references unresolved; apply
    /// resolves them against this run's outputs. `None` for what the manifest no longer has.
    #[serde(skip_serializing_if = "Option::is_none", default, deserialize_with = "skip_desired")]
    pub desired: Option<Unresolved>,
    /// The code artifact's hash (Lambda's `CodeSha256`) for kinds that carry code: apply takes the
    /// bytes from [`Plan::artifacts`] by it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub artifact_sha256: Option<String>,
    /// `protect = true` in the manifest: apply refuses to delete or replace it.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub protect: bool,
    /// `retain_on_delete = true` in the manifest (for what the manifest declares), or as the state
    /// recorded it (for what it no longer declares, whose change is then [`Action::Forget`]).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub retain_on_delete: bool,
    /// Only the state's record of `retain_on_delete` changes (apply writes it; no AWS call).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub records_retain: bool,
    /// Differences in fields the manifest's `ignore_changes` names: shown, never carried out (watch
    /// records them as ignored drift).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub ignored: Vec<FieldChange>,
}

/// The masked `desired` attributes of a plan document are for reading, not for carrying out: a
/// plan read back (to show it) has none.
fn skip_desired<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Unresolved>, D::Error> {
    serde::de::IgnoredAny::deserialize(d)?;
    Ok(None)
}

/// A resource's attributes as the manifest gives them, `${resource.output}` references unresolved.
/// Serialised with the kind's secret fields masked.
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    pub kind: Kind,
    pub attrs: Map<String, Value>,
}

impl Serialize for Unresolved {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let secret = |k: &str| self.kind.schema().is_secret(k);
        let masked: Map<String, Value> =
            self.attrs.iter().map(|(k, v)| (k.clone(), if secret(k) { diff::redact_map(v) } else { v.clone() })).collect();
        masked.serialize(serializer)
    }
}

impl ResourceChange {
    /// A change of `action` with nothing else known yet.
    pub fn new(name: &str, kind: Kind, action: Action) -> ResourceChange {
        ResourceChange {
            name: name.to_string(),
            kind,
            action,
            physical_id: None,
            reason: None,
            changes: Vec::new(),
            depends_on: Vec::new(),
            adopt: None,
            deposed: false,
            create_before_destroy: false,
            moved_from: None,
            current: None,
            desired: None,
            artifact_sha256: None,
            protect: false,
            retain_on_delete: false,
            records_retain: false,
            ignored: Vec::new(),
        }
    }

    /// How a replacement goes, as the plan chose it; `None` for any other action.
    pub fn replace_order(&self) -> Option<ReplaceOrder> {
        (self.action == Action::Replace && !self.deposed).then_some(if self.create_before_destroy {
            ReplaceOrder::CreateBeforeDestroy
        } else {
            ReplaceOrder::DeleteBeforeCreate
        })
    }
}

/// The order of a replacement's two halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplaceOrder {
    /// Both can exist at once: the new one is created, dependents move to it, then the old one is deleted.
    CreateBeforeDestroy,
    /// The new one takes the old one's name: the old one is deleted first.
    DeleteBeforeCreate,
}

/// What happens to one stack output (`[outputs]`): recorded by apply, with or without resource changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChange {
    pub name: String,
    /// `create` (new output), `update` (its value changes) or `delete` (removed from the manifest).
    pub action: Action,
    pub before: Option<String>,
    /// `None` when removed, or when its value is only known after apply.
    pub after: Option<String>,
    /// The value depends on a resource this plan creates or replaces.
    pub known_after_apply: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub adopt: usize,
    pub moved: usize,
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    /// Left in AWS, dropped from the state (`retain_on_delete`, region-wide settings).
    pub forget: usize,
    pub no_op: usize,
}

/// The whole plan: everything apply needs to carry it out (apply never reads the manifest).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    pub format_version: u32,
    pub stack: String,
    /// The state serial this plan was computed against.
    pub state_serial: i64,
    pub summary: Summary,
    pub resources: Vec<ResourceChange>,
    /// Stack outputs as far as they are known before apply.
    pub outputs: BTreeMap<String, String>,
    /// How the recorded stack outputs change (added, changed, removed `[outputs]` entries).
    pub output_changes: Vec<OutputChange>,
    /// Journal entries of interrupted runs that this plan reconciles (apply closes them).
    pub interrupted_operations: Vec<i64>,
    /// Outputs of resources that exist and are not being replaced: what references resolve to.
    #[serde(skip)]
    pub known_outputs: HashMap<String, BTreeMap<String, String>>,
    /// What AWS already has in the way of this plan's creates (see [`check_blockers`]): `plan` shows
    /// them and exits 1, `apply` refuses the plan before any write.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocker>,
    /// The manifest's `[outputs]` as written (references unresolved): apply records them resolved
    /// against what the run made.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub output_expressions: BTreeMap<String, String>,
    /// A plan that destroys the stack: apply records the stack's outputs as gone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub destroy: bool,
    /// The code artifacts of the plan's creates and updates, by hash ([`ResourceChange::artifact_sha256`]);
    /// built at plan time, never serialised.
    #[serde(skip)]
    pub artifacts: BTreeMap<String, Artifact>,
    /// What the plan found odd but not wrong (a `[[moved]]` entry that matches nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Only part of the stack was planned (`--target`): the changes of the targets and of what they
    /// depend on; other differences between the manifest and AWS may remain.
    pub partial: bool,
    /// The `--target` names a partial plan was made for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

/// What a [`Blocker`] found (`conflict` or `account_logging` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// What the create would make already exists in AWS and this state does not own it: that create
    /// fails without an AWS call (and what depends on it is skipped).
    Conflict,
    /// The stage logs but the region's account setting names no CloudWatch role: apply refuses the plan.
    AccountLogging,
}

/// A reason apply must not start, found by reading AWS at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocker {
    pub resource: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub problem: Problem,
    /// The existing physical id, for a conflict.
    pub physical_id: Option<String>,
    pub message: String,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(|r| r.action != Action::NoOp || r.adopt.is_some() || r.moved_from.is_some() || r.records_retain)
            || !self.output_changes.is_empty()
    }

    fn finish(mut self) -> Plan {
        let mut s = Summary::default();
        for r in &self.resources {
            s.adopt += usize::from(r.adopt.is_some());
            s.moved += usize::from(r.moved_from.is_some());
            match r.action {
                Action::NoOp => s.no_op += 1,
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::Forget => s.forget += 1,
            }
        }
        self.summary = s;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("looking for what an interrupted run made for {resource}: {source}")]
    Recovery {
        resource: String,
        #[source]
        source: ProviderError,
    },
    #[error(
        "{location}: `{resource}` ({kind}) is a region-wide setting, and stack `{owner_stack}` already manages it (its resource `{owner_resource}` in this state file); \
         a region-wide setting has one owner: remove `{resource}` (and the `depends_on` entries naming it) from this manifest, \
         or remove it from stack `{owner_stack}` and apply that stack first"
    )]
    SingletonOwned { resource: String, kind: Kind, location: String, owner_stack: String, owner_resource: String },
    #[error(
        "{location}: `[[moved]]` from `{from}` ({from_kind}, as the state records it) to `{to}` ({to_kind}): a move keeps the \
         resource, and a resource cannot change its type; give `{to}` the type {from_kind}, or drop the entry (then the \
         {from_kind} `{from}` is deleted and the {to_kind} `{to}` created)"
    )]
    MovedAcrossTypes { location: String, from: String, from_kind: Kind, to: String, to_kind: Kind },
    #[error(
        "{location}: `{resource}` ({kind}) is, once its references are resolved, the same resource in AWS as `{first}` ({first_location}): \
         {identity}; one resource has one owner: keep one declaration"
    )]
    SameIdentity { resource: String, kind: Kind, location: String, first: String, first_location: String, identity: String },
    /// What AWS has under the recorded physical id is not what this state made (see [`not_ours`]).
    #[error("{resource}: {message}")]
    NotOurs { resource: String, kind: Kind, message: String },
    #[error("reading {resource} ({kind} {id}) from AWS: {source}")]
    Refresh {
        resource: String,
        kind: Kind,
        id: String,
        #[source]
        source: ProviderError,
    },
}

/// Resources of the manifest whose physical identity (each kind's `KindSchema::identity`) is
/// another's once the references the state can answer are resolved (a literal function name and
/// `${fn.name}`): validate compared the expressions as written; this compares their values, before
/// any write. A field still unknown (its resource not made yet) is left to the state's own guard.
pub fn identity_conflicts(manifest: &Manifest, state: &StackState) -> Vec<PlanError> {
    let lookup = |res: &str, out: &str| state.resources.get(res).and_then(|s| s.outputs.get(out)).cloned();
    let mut seen: HashMap<(Kind, Vec<String>), &crate::manifest::Resource> = HashMap::new();
    let mut refused = Vec::new();
    for r in &manifest.resources {
        let identity = r.kind.schema().identity;
        let mut resolved = Map::new();
        let mut unknown = false;
        for f in identity.fields() {
            if let Some(v) = r.attrs.get(*f) {
                let (v, u) = refs::resolve(v, &lookup);
                unknown |= u;
                resolved.insert(f.to_string(), v);
            }
        }
        let Some(key) = identity.key(&resolved).filter(|_| !unknown) else { continue };
        match seen.get(&(r.kind, key.clone())) {
            None => {
                seen.insert((r.kind, key), r);
            }
            Some(first) => refused.push(PlanError::SameIdentity {
                resource: r.name.clone(),
                kind: r.kind,
                location: r.location.to_string(),
                first: first.name.clone(),
                first_location: first.location.to_string(),
                identity: identity.fields().iter().zip(&key).map(|(f, v)| format!("{f} {v}")).collect::<Vec<_>>().join(", "),
            }),
        }
    }
    refused
}

/// Region-wide singletons this manifest declares that another stack of the state file owns: one
/// refusal per such resource.
pub fn singleton_conflicts(manifest: &Manifest, state: &StackState) -> Vec<PlanError> {
    manifest
        .resources
        .iter()
        .filter(|r| r.kind.is_singleton())
        .filter_map(|r| {
            let owner = state.foreign_singletons.iter().find(|o| o.kind == r.kind)?;
            Some(PlanError::SingletonOwned {
                resource: r.name.clone(),
                kind: r.kind,
                location: r.location.to_string(),
                owner_stack: owner.stack.clone(),
                owner_resource: owner.resource.clone(),
            })
        })
        .collect()
}

/// Why a protected resource's deletion or replacement (`action`) is refused: the one message apply,
/// destroy and `--replace` give, whether the resource is switched on or off.
pub fn protect_refusal(resource: &str, action: &str) -> String {
    format!(
        "{resource}: `protect = true` refuses its {action} (switched on or off); remove the flag first if you mean it \
         (removing the resource from the manifest removes the flag too)"
    )
}

/// `[[moved]]` entries that would move the state's record of one type to a key the manifest gives
/// another type (as `state mv` refuses): type is part of a resource's identity. One refusal per entry,
/// at the entry's file:line:column; checked before any AWS call.
pub fn moved_type_conflicts(manifest: &Manifest, state: &StackState) -> Vec<PlanError> {
    manifest
        .moved
        .iter()
        .filter_map(|m| {
            let recorded = state.resources.get(&m.from)?;
            let to = manifest.resource(&m.to)?;
            (recorded.kind != to.kind).then(|| PlanError::MovedAcrossTypes {
                location: m.location.to_string(),
                from: m.from.clone(),
                from_kind: recorded.kind,
                to: m.to.clone(),
                to_kind: to.kind,
            })
        })
        .collect()
}

/// Shown for settings that are forgotten, not deleted.
pub const RETAINED: &str = "a region-wide setting: reconcile stops managing it and leaves it as it is in AWS";

/// Shown for resources with `retain_on_delete = true` that leave the state.
pub const RETAINED_RESOURCE: &str =
    "retain_on_delete: reconcile forgets it and leaves it in AWS, without its ownership tags (`reconcile import` adopts it again)";

/// Whether what the state records as `name` is forgotten rather than deleted, and why.
fn retained(state: &StackState, name: &str, kind: Kind) -> Option<&'static str> {
    if kind.schema().retain_on_delete {
        Some(RETAINED)
    } else if state.retained.contains(name) {
        Some(RETAINED_RESOURCE)
    } else {
        None
    }
}

/// How many reads of one AWS service run at once while refreshing.
pub const REFRESH_CONCURRENCY: usize = 10;

/// Runs `reads` (each with the AWS service it calls), at most [`REFRESH_CONCURRENCY`] at once per
/// service: the reads a service's pacing holds back (API Gateway's account rate, above all) never keep
/// another service's reads waiting for a slot, so every service's limit is used at once and a
/// refresh takes as long as its slowest service, not their sum.
async fn per_service<T, F: std::future::Future<Output = T>>(reads: Vec<(&'static str, F)>) -> Vec<T> {
    let mut by_service: BTreeMap<&'static str, Vec<F>> = BTreeMap::new();
    for (service, read) in reads {
        by_service.entry(service).or_default().push(read);
    }
    let streams =
        by_service.into_values().map(|reads| futures::stream::iter(reads).buffer_unordered(REFRESH_CONCURRENCY).collect::<Vec<T>>());
    futures::future::join_all(streams).await.into_iter().flatten().collect()
}

/// Reads every resource the state owns from AWS, concurrently.
pub async fn refresh(aws: &Aws, state: &StackState) -> Result<HashMap<String, Option<Live>>, PlanError> {
    let reads = state.resources.values().map(|r| {
        (r.kind.service(), async move {
            let live = providers::read(aws, r.kind, &r.physical_id).await.map_err(|source| PlanError::Refresh {
                resource: r.name.clone(),
                kind: r.kind,
                id: r.physical_id.clone(),
                source,
            })?;
            Ok::<_, PlanError>((r.name.clone(), live))
        })
    });
    let batch = batch_for(state.resources.values());
    let results: Vec<_> = providers::batch::scope(batch, per_service(reads.collect())).await;
    results.into_iter().collect()
}

/// The batch of collection reads that serves `reads` (the one in scope, e.g. a `watch` pass
/// window's, or a new one for this refresh), told what they read.
fn batch_for<'a>(reads: impl Iterator<Item = &'a ResourceState>) -> std::sync::Arc<providers::batch::Batch> {
    let batch = providers::batch::current().unwrap_or_default();
    for r in reads {
        batch.want(r.kind, &r.physical_id);
    }
    batch
}

/// Like [`refresh`], but tolerant: reads the resources `due` says (by name) and returns each one's
/// own outcome, so one failing read does not hide the others.
pub async fn refresh_each(
    aws: &Aws,
    state: &StackState,
    due: impl Fn(&str) -> bool,
    hook: ReadHook<'_>,
) -> BTreeMap<String, Result<Option<Live>, PlanError>> {
    // The futures are made before the stream, so it holds no closure over `due` (which would keep
    // the whole future from being `Send` for callers that spawn it).
    let batch = batch_for(state.resources.values().filter(|r| due(&r.name)));
    let reads: Vec<_> = state.resources.values().filter(|r| due(&r.name)).map(|r| (r.kind.service(), read_one(aws, r, hook))).collect();
    providers::batch::scope(batch, per_service(reads)).await.into_iter().collect()
}

/// Told when each read of a tolerant refresh starts (`true`) and ends (`false`), by resource name: the
/// watcher uses it to say what a long pass is waiting on.
pub type ReadHook<'a> = &'a (dyn Fn(&str, bool) + Sync);

async fn read_one(aws: &Aws, r: &ResourceState, hook: ReadHook<'_>) -> (String, Result<Option<Live>, PlanError>) {
    hook(&r.name, true);
    let live = providers::read(aws, r.kind, &r.physical_id).await.map_err(|source| PlanError::Refresh {
        resource: r.name.clone(),
        kind: r.kind,
        id: r.physical_id.clone(),
        source,
    });
    hook(&r.name, false);
    (r.name.clone(), live)
}

/// A plan computed from what could be read, and how each read went.
#[derive(Debug)]
pub struct Observation {
    /// Resources the state owns that were not read (left out, or their read failed) are `NoOp`
    /// here, whatever they are in AWS: nothing is known about them this time.
    pub plan: Plan,
    /// Each resource read: what AWS has (`None`: gone), or why the read failed.
    pub reads: BTreeMap<String, Result<Option<Live>, PlanError>>,
}

impl Observation {
    /// Whether `resource` was read successfully (or is not in the state, so needed no read).
    pub fn was_read(&self, resource: &str) -> bool {
        self.reads.get(resource).is_some_and(Result::is_ok)
    }
}

/// The plan as [`compute`] makes it, from a tolerant refresh of the resources `due` says: a resource
/// that was not read stands in with what the state recorded (so what references it still resolves)
/// and its own change is `NoOp`. The journal of interrupted runs is not looked at (`compute` does
/// that for apply).
pub async fn compute_tolerant(
    manifest: &Manifest,
    state: &StackState,
    aws: &Aws,
    due: impl Fn(&str) -> bool,
    hook: ReadHook<'_>,
) -> Observation {
    let mut reads = refresh_each(aws, state, due, hook).await;
    let live: HashMap<String, Option<Live>> = state
        .resources
        .values()
        .map(|s| {
            let live = match reads.get(&s.name) {
                Some(Ok(live)) => live.clone(),
                _ => Some(Live { attrs: s.attributes.as_object().cloned().unwrap_or_default(), outputs: s.outputs.clone() }),
            };
            (s.name.clone(), live)
        })
        .collect();
    let plan = diff_all(manifest, state, &live);
    // A singleton another stack owns is never planned: it stands as a failed read that names the owner.
    let mut refused = std::collections::HashSet::new();
    let refusals = singleton_conflicts(manifest, state)
        .into_iter()
        .chain(moved_type_conflicts(manifest, state))
        .chain(identity_conflicts(manifest, state));
    for e in refusals {
        let resource = match &e {
            PlanError::SingletonOwned { resource, .. } | PlanError::SameIdentity { resource, .. } => resource.clone(),
            PlanError::MovedAcrossTypes { to, .. } => to.clone(),
            PlanError::Recovery { .. } | PlanError::Refresh { .. } | PlanError::NotOurs { .. } => continue,
        };
        refused.insert(resource.clone());
        reads.insert(resource, Err(e));
    }
    // Nor is what is not ours (another stack's tag, a re-made resource): it stands as a failed read
    // that says why, and is never remediated.
    for b in &plan.blockers {
        refused.insert(b.resource.clone());
        reads
            .insert(b.resource.clone(), Err(PlanError::NotOurs { resource: b.resource.clone(), kind: b.kind, message: b.message.clone() }));
    }
    let unread = |c: &ResourceChange| {
        refused.contains(&c.name) || state.resources.contains_key(&c.name) && !reads.get(&c.name).is_some_and(Result::is_ok)
    };
    let mut plan = plan.restricted(|c| !unread(c));
    // Those stand as failed reads now, and their changes as `NoOp`.
    plan.blockers.retain(|b| !refused.contains(&b.resource));
    Observation { plan, reads }
}

impl Plan {
    /// This plan with only the changes `keep` accepts; the others become `NoOp` without field changes.
    pub fn restricted(&self, keep: impl Fn(&ResourceChange) -> bool) -> Plan {
        let mut plan = self.clone();
        for c in &mut plan.resources {
            if !keep(c) {
                c.action = Action::NoOp;
                c.changes.clear();
                c.adopt = None;
                c.moved_from = None;
            }
            // Only apply records the state's lifecycle flags.
            c.records_retain = false;
        }
        plan.resources.retain(|c| !c.deposed || c.action != Action::NoOp);
        plan.interrupted_operations.clear();
        // Only apply records outputs.
        plan.output_changes.clear();
        plan.finish()
    }
}

/// Computes the plan from the manifest, the state, the journal of interrupted runs and what AWS has now.
pub async fn compute(manifest: &Manifest, state: &StackState, pending: &[PendingOperation], aws: &Aws) -> Result<Plan, PlanError> {
    Ok(compute_with(manifest, state, pending, aws, &Choices::default(), None).await?.0)
}

/// What the command line asks of a plan beyond the manifest: `--target` and `--replace`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choices {
    /// Plan only these resources (manifest keys, or state keys of resources removed from the
    /// manifest) and what they depend on.
    pub targets: Vec<String>,
    /// Replace these resources even if nothing differs.
    pub replace: Vec<String>,
}

/// Reason given to a replacement `--replace` asked for.
pub const REQUESTED_REPLACE: &str = "requested by --replace";

impl Choices {
    /// Refuses names that are neither in the manifest nor in the state (with the closest one), and
    /// `--replace` of what cannot be replaced.
    pub fn check(&self, manifest: &Manifest, state: &StackState) -> Result<(), String> {
        let known: Vec<&str> =
            manifest.resources.iter().map(|r| r.name.as_str()).chain(state.resources.keys().map(String::as_str)).collect();
        for (flag, names) in [("--target", &self.targets), ("--replace", &self.replace)] {
            for name in names {
                if !known.contains(&name.as_str()) {
                    let hint = crate::manifest::suggest::did_you_mean(name, known.iter().copied(), str::to_string);
                    return Err(format!(
                        "{flag} {name}: no resource `{name}` in the manifest or the state of stack `{}`{hint}",
                        manifest.stack
                    ));
                }
            }
        }
        for name in &self.replace {
            let Some(r) = manifest.resource(name) else {
                return Err(format!(
                    "--replace {name}: `{name}` is no longer in the manifest, so it cannot be replaced (the plan deletes it)"
                ));
            };
            if r.kind.is_singleton() {
                return Err(format!("--replace {name}: {} is a region-wide setting, not a resource that can be replaced", r.kind));
            }
            if r.protect {
                return Err(format!("--replace {}", protect_refusal(name, "replacement")));
            }
        }
        Ok(())
    }
}

/// [`compute`] with `--target`/`--replace` ([`Choices`]), also returning what was read from AWS, by
/// state key (`None`: gone). With `only`, and no interrupted run to look into, only those state keys
/// are read: every other resource the state records stands in with what the state recorded and is
/// left unchanged (a saved plan is carried out that way: only what it touches is read again).
pub async fn compute_with(
    manifest: &Manifest,
    state: &StackState,
    pending: &[PendingOperation],
    aws: &Aws,
    choices: &Choices,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<(Plan, HashMap<String, Option<Live>>), PlanError> {
    if let Some(refused) = singleton_conflicts(manifest, state).into_iter().chain(moved_type_conflicts(manifest, state)).next() {
        return Err(refused);
    }
    if let Some(refused) = identity_conflicts(manifest, state).into_iter().next() {
        return Err(refused);
    }
    let inspection = match only {
        Some(only) if pending.is_empty() => {
            let subset = StackState {
                resources: state.resources.iter().filter(|(k, _)| only.contains(*k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
                ..StackState::default()
            };
            let mut live = refresh(aws, &subset).await?;
            for s in state.resources.values().filter(|s| !only.contains(&s.name)) {
                live.insert(
                    s.name.clone(),
                    Some(Live { attrs: s.attributes.as_object().cloned().unwrap_or_default(), outputs: s.outputs.clone() }),
                );
            }
            Inspection { state: state.clone(), live, ..Inspection::default() }
        }
        _ => inspect(manifest, state, pending, aws).await?,
    };
    let replace: std::collections::BTreeSet<String> = choices.replace.iter().cloned().collect();
    let mut plan = diff_all_with(manifest, &inspection.state, &inspection.live, &replace);
    for change in &mut plan.resources {
        if let Some(id) = inspection.adopted.get(&change.name) {
            change.adopt = Some(id.clone());
            change.reason = Some(match &change.reason {
                Some(r) => format!("made by an interrupted run, adopted; {r}"),
                None => "made by an interrupted run, adopted".into(),
            });
        }
    }
    // A leftover of a protected resource is not deleted either.
    plan.resources
        .extend(inspection.deposed_changes().into_iter().map(|c| ResourceChange { protect: manifest.protected.contains(&c.name), ..c }));
    plan.interrupted_operations = inspection.pending.clone();
    if let Some(only) = only {
        // What was not read again is left as the state has it.
        for c in &mut plan.resources {
            let key = c.moved_from.as_deref().unwrap_or(&c.name);
            if state.resources.contains_key(key) && !only.contains(key) && !c.deposed {
                c.action = Action::NoOp;
                c.changes.clear();
                c.ignored.clear();
                c.reason = None;
                c.create_before_destroy = false;
            }
        }
    }
    let mut plan = plan.finish();
    if !choices.targets.is_empty() {
        plan = plan.targeted(manifest, &state.outputs, &choices.targets);
    }
    let live = inspection.live;
    Ok((plan, live))
}

impl Plan {
    /// The plan restricted to `targets` and what they depend on, transitively (through the
    /// manifest's references and `depends_on`, or, for what the manifest no longer has, through what
    /// the state recorded): every other change is left out, and the plan says it is partial. A
    /// resource removed from the manifest is only in it when targeted by its state key. Only the
    /// stack outputs made of targeted resources change; the others keep what was recorded.
    pub fn targeted(mut self, manifest: &Manifest, recorded: &BTreeMap<String, String>, targets: &[String]) -> Plan {
        let mut keep: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        let mut todo: Vec<String> = targets.to_vec();
        while let Some(name) = todo.pop() {
            if !keep.insert(name.clone()) {
                continue;
            }
            match manifest.resource(&name) {
                Some(r) => todo.extend(r.deps.iter().cloned()),
                None => todo.extend(self.resources.iter().filter(|c| c.name == name).flat_map(|c| c.depends_on.clone())),
            }
        }
        // A dependency no longer in the manifest is not planned just because something depended on it.
        let targeted = |c: &ResourceChange| {
            keep.contains(&c.name) && (manifest.resource(&c.name).is_some() || targets.contains(&c.name))
                || c.moved_from.as_ref().is_some_and(|old| targets.contains(old))
        };
        self.resources.retain(|c| targeted(c));
        let kept: std::collections::BTreeSet<&str> = self.resources.iter().map(|c| c.name.as_str()).collect();
        self.blockers.retain(|b| kept.contains(b.resource.as_str()));
        let in_scope = |expression: &str| {
            let mut found = Vec::new();
            refs::collect(&Value::String(expression.to_string()), &mut found);
            found.iter().all(|r| keep.contains(&r.resource))
        };
        let untargeted: Vec<String> = self.output_expressions.iter().filter(|(_, e)| !in_scope(e)).map(|(name, _)| name.clone()).collect();
        for name in &untargeted {
            // Kept as recorded: apply records it as a literal (`${` escaped), shown with its recorded value.
            match recorded.get(name) {
                Some(value) => {
                    self.output_expressions.insert(name.clone(), value.replace("${", "$${"));
                    self.outputs.insert(name.clone(), value.clone());
                }
                None => {
                    self.output_expressions.remove(name);
                    self.outputs.remove(name);
                }
            }
        }
        // An output removed from the manifest is not a target's either: it stays recorded.
        for (name, value) in recorded.iter().filter(|(n, _)| !manifest.outputs.contains_key(*n)) {
            self.output_expressions.insert(name.clone(), value.replace("${", "$${"));
        }
        self.output_changes.retain(|c| manifest.outputs.get(&c.name).is_some_and(|e| in_scope(e)));
        self.interrupted_operations.clear();
        self.partial = true;
        self.targets = targets.to_vec();
        self.finish()
    }
}

/// What AWS and the journal say beyond the state: live attributes of everything the state owns,
/// resources interrupted creates made (found by name or ownership tags, to adopt), and previous
/// physical resources an interrupted replacement left (to delete).
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// The state with the adopted resources added.
    pub state: StackState,
    pub live: HashMap<String, Option<Live>>,
    /// Resource name → physical id adopted.
    pub adopted: BTreeMap<String, String>,
    /// (resource, kind, physical id) of previous resources to delete.
    pub deposed: Vec<(String, Kind, String)>,
    /// Journal entries looked at.
    pub pending: Vec<i64>,
}

impl Inspection {
    fn deposed_changes(&self) -> Vec<ResourceChange> {
        self.deposed
            .iter()
            .map(|(name, kind, id)| ResourceChange {
                physical_id: Some(id.clone()),
                reason: Some("a previous one left by an interrupted replacement".into()),
                deposed: true,
                ..ResourceChange::new(name, *kind, Action::Delete)
            })
            .collect()
    }
}

/// Reads AWS for everything the state owns and reconciles the journal of interrupted runs.
pub async fn inspect(manifest: &Manifest, state: &StackState, pending: &[PendingOperation], aws: &Aws) -> Result<Inspection, PlanError> {
    let live = refresh(aws, state).await?;
    let mut insp = Inspection { state: state.clone(), live, pending: pending.iter().map(|p| p.id).collect(), ..Inspection::default() };
    for op in pending {
        let Some(kind) = Kind::from_type_name(&op.kind) else { continue };
        match op.action {
            JournalAction::Create if !insp.state.resources.contains_key(&op.resource) => {
                let Some(r) = manifest.resource(&op.resource).filter(|r| r.kind == kind) else { continue };
                let known: HashMap<&str, &BTreeMap<String, String>> =
                    insp.live.iter().filter_map(|(n, l)| l.as_ref().map(|l| (n.as_str(), &l.outputs))).collect();
                let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
                let (desired, unknown) = refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
                let Some(desired) = desired.as_object() else { continue };
                let taken = insp.state.resources.values().map(|s| s.physical_id.clone()).collect();
                let found = match unknown {
                    true => None,
                    false => providers::find(aws, kind, desired, &taken)
                        .await
                        .map_err(|source| PlanError::Recovery { resource: r.name.clone(), source })?,
                };
                let Some((id, live)) = found.filter(|(_, live)| !kind.schema().taggable || owned_by(&live.attrs, desired)) else {
                    // Nothing of ours under the name the manifest wants now: the interrupted run may have
                    // made it under the name it journaled (the manifest was edited since). That one is
                    // ours only if it carries this stack's and this resource's tags; it is deleted.
                    if let Some(id) = leftover_under_journaled_name(aws, kind, desired, op, &taken).await? {
                        tracing::info!(resource = %r.name, id, "deleting what an interrupted create made under a name the manifest no longer has");
                        insp.deposed.push((r.name.clone(), kind, id));
                    }
                    continue;
                };
                tracing::info!(resource = %r.name, id, "adopting what an interrupted run created");
                insp.state.resources.insert(
                    r.name.clone(),
                    ResourceState {
                        name: r.name.clone(),
                        kind,
                        physical_id: id.clone(),
                        attributes: Value::Object(live.attrs.clone()),
                        outputs: live.outputs.clone(),
                        depends_on: r.deps.iter().cloned().collect(),
                    },
                );
                insp.live.insert(r.name.clone(), Some(live));
                insp.adopted.insert(r.name.clone(), id);
            }
            JournalAction::Create => {
                // The state holds the resource, yet a create for it never finished: a create-before-
                // destroy replacement (or a re-create) was interrupted between AWS making the new one
                // and the state recording it. Otherwise (the new one's id is AWS's to assign, or the
                // manifest no longer has it) what it made is found the way a lost create is, from what the
                // state recorded with the new physical name, and deleted; this run plans again.
                if insp.adopted.contains_key(&op.resource) {
                    continue;
                }
                let Some(s) = insp.state.resources.get(&op.resource).filter(|s| s.kind == kind).cloned() else { continue };
                let mut taken: std::collections::HashSet<String> = insp.state.resources.values().map(|s| s.physical_id.clone()).collect();
                taken.extend(insp.deposed.iter().map(|(_, _, id)| id.clone()));
                // What the manifest wants now, resolved against what the state records now: after an
                // interrupted replacement of a parent (a REST API), the new parent, not the one the
                // child's record names.
                let wanted = manifest.resource(&op.resource).filter(|r| r.kind == kind).and_then(|r| {
                    let known: HashMap<&str, &BTreeMap<String, String>> =
                        insp.live.iter().filter_map(|(n, l)| l.as_ref().map(|l| (n.as_str(), &l.outputs))).collect();
                    let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
                    let (desired, unknown) = refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
                    desired.as_object().filter(|_| !unknown).cloned().map(|d| (r, d))
                });
                // Where the manifest fixes the new one's physical id, what AWS has under it is adopted as
                // the current one (it is what this run would make), and the recorded one is deleted
                // once its dependents moved, as the interrupted run would have done.
                if let Some((r, desired)) = &wanted {
                    let want = providers::physical_id_of(kind, desired).map(|id| (id, desired.clone()));
                    if let Some((same, live)) = want
                        .as_ref()
                        .filter(|(id, _)| *id == s.physical_id)
                        .and_then(|(_, d)| Some((d, insp.live.get(&op.resource)?.clone()?)))
                    {
                        // The same name (a replacement that deletes first): what AWS has there now is
                        // what the interrupted run made, if it carries this stack's and this resource's
                        // tags; it is adopted, with the id AWS gave it (so it is not taken for a
                        // resource re-made by someone else).
                        let made = providers::assigned_id(kind, &s.outputs);
                        let now = providers::assigned_id(kind, &live.outputs);
                        if kind.schema().taggable && made.is_some() && now != made && owned_by(&live.attrs, same) {
                            tracing::info!(resource = %r.name, id = s.physical_id, "adopting what an interrupted replacement created under the same name");
                            insp.state.resources.insert(
                                r.name.clone(),
                                ResourceState {
                                    attributes: Value::Object(live.attrs.clone()),
                                    outputs: live.outputs.clone(),
                                    depends_on: r.deps.iter().cloned().collect(),
                                    ..s.clone()
                                },
                            );
                            insp.adopted.insert(r.name.clone(), s.physical_id.clone());
                        }
                        continue;
                    }
                    if let Some((want, desired)) = want.filter(|(id, _)| *id != s.physical_id) {
                        if taken.contains(&want) {
                            continue;
                        }
                        let live = providers::read(aws, kind, &want)
                            .await
                            .map_err(|source| PlanError::Recovery { resource: r.name.clone(), source })?;
                        let Some(live) = live.filter(|l| !kind.schema().taggable || owned_by(&l.attrs, &desired)) else { continue };
                        tracing::info!(resource = %r.name, id = want, "adopting what an interrupted replacement created");
                        insp.deposed.push((r.name.clone(), kind, s.physical_id.clone()));
                        insp.state.resources.insert(
                            r.name.clone(),
                            ResourceState {
                                name: r.name.clone(),
                                kind,
                                physical_id: want.clone(),
                                attributes: Value::Object(live.attrs.clone()),
                                outputs: live.outputs.clone(),
                                depends_on: r.deps.iter().cloned().collect(),
                            },
                        );
                        insp.live.insert(r.name.clone(), Some(live));
                        insp.adopted.insert(r.name.clone(), want);
                        continue;
                    }
                }
                // What the killed run made is looked for as the manifest has it now (under the parent
                // the state records now), else as the state recorded it.
                let mut desired = match wanted {
                    Some((_, desired)) => desired,
                    None => s.attributes.as_object().cloned().unwrap_or_default(),
                };
                let field = kind.schema().physical_name;
                if let Some(name) = op.physical_name.as_ref().filter(|_| !field.is_empty()) {
                    desired.insert(field.to_string(), Value::String(name.clone()));
                }
                // The replacement was tagged with the key it was created under, which the record's
                // own tag need not name (a renamed key keeps the tag it was created with).
                if let Some(tags) = desired.get_mut("tags").and_then(Value::as_object_mut) {
                    tags.insert(crate::manifest::TAG_RESOURCE.to_string(), Value::String(op.resource.clone()));
                }
                let found = providers::find(aws, kind, &desired, &taken)
                    .await
                    .map_err(|source| PlanError::Recovery { resource: op.resource.clone(), source })?;
                let Some((id, live)) = found else { continue };
                if taken.contains(&id) || (kind.schema().taggable && !owned_by(&live.attrs, &desired)) {
                    continue;
                }
                tracing::info!(resource = %op.resource, id, "deleting what an interrupted replacement created");
                insp.deposed.push((op.resource.clone(), kind, id));
            }
            JournalAction::DeletePrevious => {
                let Some(old) = op.physical_name.clone() else { continue };
                let current = insp.state.resources.get(&op.resource).map(|s| s.physical_id.as_str());
                // A resource the state records, under this key or any other, is never a leftover.
                let recorded = insp.state.resources.values().any(|s| s.kind == kind && s.physical_id == old);
                if current != Some(old.as_str()) && !recorded {
                    // Its own delete closes the entry once the old one is gone.
                    insp.pending.retain(|id| *id != op.id);
                    if !insp.deposed.iter().any(|(_, _, id)| *id == old) {
                        insp.deposed.push((op.resource.clone(), kind, old));
                    }
                }
            }
            // An interrupted update or delete left nothing to adopt or delete: the refresh shows
            // where the resource stands, and the plan takes it from there.
            JournalAction::Update | JournalAction::Delete => {}
        }
    }
    Ok(insp)
}

/// Looks in AWS for what would stand in the way of the plan's creates, before anything is written:
///
/// - a **conflict**: the physical resource a create would make already exists, and neither this
///   stack's state nor an interrupted run of it accounts for it (another state file of the same stack,
///   a lost state file, or something made by hand). For kinds with a fixed name this is one read of
///   that name; REST API names are not unique in AWS, so one paged `GetRestApis` serves every REST
///   API create, and a same-named API is a conflict. Adopting it is `reconcile import`.
/// - **account logging**: a stage that logs is created or gets logging turned on while the manifest
///   manages no `aws_api_gateway_account` and the region's setting names no CloudWatch role (one
///   `GetAccount`): API Gateway would refuse its logging settings.
///
/// A plan without creates or logging changes makes no call here.
pub async fn check_blockers(manifest: &Manifest, state: &StackState, plan: &mut Plan, aws: &Aws) -> Result<(), PlanError> {
    // What this stack accounts for: its state, and what this plan adopts from or deletes after an
    // interrupted run (a deposed leftover's delete is ordered before a create that takes its name).
    let owned: std::collections::HashSet<(Kind, String)> = state
        .resources
        .values()
        .map(|r| (r.kind, r.physical_id.clone()))
        .chain(plan.resources.iter().filter(|c| c.deposed).filter_map(|c| Some((c.kind, c.physical_id.clone()?))))
        .chain(plan.resources.iter().filter_map(|c| Some((c.kind, c.adopt.clone()?))))
        .collect();
    let known = plan.known_outputs.clone();
    let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
    let mut blockers = Vec::new();
    let mut listed: Vec<(String, Kind, String, &'static str)> = Vec::new();
    let mut logging_stages: Vec<(String, Kind)> = Vec::new();
    for change in &plan.resources {
        let Some(r) = manifest.resource(&change.name).filter(|r| r.kind == change.kind) else { continue };
        let (desired, _) = refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
        let Some(desired) = desired.as_object() else { continue };
        let logging_change = match change.action {
            Action::Create | Action::Replace => true,
            Action::Update => change
                .changes
                .iter()
                .any(|c| ["access_log_destination_arn", "logging_level", "data_trace_enabled"].iter().any(|f| c.path.starts_with(f))),
            _ => false,
        };
        if r.kind == Kind::Stage && logging_change && crate::manifest::stage_logs(desired) {
            logging_stages.push((r.name.clone(), r.kind));
        }
        if change.action != Action::Create || change.adopt.is_some() || change.deposed {
            continue;
        }
        let conflict = |id: String| Blocker {
            resource: r.name.clone(),
            kind: r.kind,
            problem: Problem::Conflict,
            message: format!(
                "conflict: {} `{id}` exists in AWS, not in this state (another state file, a lost one, or made by hand); \
                 adopt it with `reconcile import {} {id}`, or delete or rename it",
                r.kind, r.name
            ),
            physical_id: Some(id),
        };
        let unknown = |s: &str| s.contains(UNKNOWN) || refs::contains_unknown(&Value::String(s.to_string()));
        // Each kind says how its names are checked; a spec that cannot be read yet (a value still
        // unknown) is left to the create, which fails as a conflict where AWS keeps names unique.
        let check = match r.kind.provider().name_check(desired) {
            Ok(check) => check,
            Err(e) => {
                unchecked(r, &r.name, &e);
                continue;
            }
        };
        match check {
            NameCheck::Nothing => {}
            NameCheck::Listed { name, noun } => {
                if !unknown(&name) {
                    listed.push((r.name.clone(), r.kind, name, noun));
                }
            }
            NameCheck::Find => {
                let name = desired.get(r.kind.schema().physical_name).and_then(Value::as_str).unwrap_or_default();
                if unknown(name) {
                    continue;
                }
                match providers::find(aws, r.kind, desired, &std::collections::HashSet::new()).await {
                    Ok(found) => {
                        if let Some((id, _)) = found.filter(|(id, _)| !owned.contains(&(r.kind, id.clone()))) {
                            blockers.push(conflict(id));
                        }
                    }
                    Err(e) => unchecked(r, name, &e),
                }
            }
            NameCheck::Read(id) => {
                if unknown(&id) || owned.contains(&(r.kind, id.clone())) {
                    continue;
                }
                match providers::read(aws, r.kind, &id).await {
                    Ok(Some(_)) => blockers.push(conflict(id)),
                    Ok(None) => {}
                    Err(e) => unchecked(r, &id, &e),
                }
            }
        }
    }
    // Kinds whose names AWS does not keep unique: one listing per kind for the whole plan.
    let mut listings: HashMap<Kind, Vec<(String, String)>> = HashMap::new();
    for (resource, kind, name, noun) in listed {
        let existing = match listings.entry(kind) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let all = kind.provider().list_names(aws).await.map_err(|source| PlanError::Refresh {
                    resource: resource.clone(),
                    kind,
                    id: format!("(all {noun}s)"),
                    source,
                })?;
                e.insert(all)
            }
        };
        let taken = existing.iter().find(|(id, n)| *n == name && !owned.contains(&(kind, id.clone())));
        if let Some((id, _)) = taken {
            blockers.push(Blocker {
                resource: resource.clone(),
                kind,
                problem: Problem::Conflict,
                physical_id: Some(id.clone()),
                message: format!(
                    "conflict: a {noun} named `{name}` exists in AWS ({id}), not in this state (another state file, a lost one, or \
                     made by hand); AWS does not keep {noun} names unique, so creating it would make a second one; adopt it with \
                     `reconcile import {resource} {id}`, or delete or rename it"
                ),
            });
        }
    }
    let manages_account = manifest.resources.iter().any(|r| r.kind == Kind::ApiGatewayAccount);
    if !logging_stages.is_empty() && !manages_account {
        let account = providers::read(aws, Kind::ApiGatewayAccount, "account").await.map_err(|source| PlanError::Refresh {
            resource: logging_stages[0].0.clone(),
            kind: Kind::ApiGatewayAccount,
            id: "account".into(),
            source,
        })?;
        let role = account
            .as_ref()
            .map(|l| l.attrs.get("cloudwatch_role_arn").and_then(Value::as_str).unwrap_or_default().to_string())
            .unwrap_or_default();
        if role.is_empty() {
            for (resource, kind) in logging_stages {
                blockers.push(Blocker {
                    resource,
                    kind,
                    problem: Problem::AccountLogging,
                    physical_id: None,
                    message: format!(
                        "the stage logs (access logs or execution logging), but API Gateway's account setting in {} names no \
                         CloudWatch Logs role, and API Gateway refuses logging settings until it does; add an \
                         `aws_api_gateway_account` resource with `cloudwatch_role_arn` (a role apigateway.amazonaws.com can \
                         assume, with AmazonAPIGatewayPushToCloudWatchLogs) to the manifest, or turn logging off",
                        aws.region
                    ),
                });
            }
        }
    }
    show_blockers(&mut plan.resources, &blockers);
    // What the diff found (recorded resources that are not ours) stays; these come after.
    plan.blockers.retain(|b| !blockers.iter().any(|n| n.resource == b.resource && n.problem == b.problem));
    plan.blockers.extend(blockers);
    Ok(())
}

/// A conflict check that could not read: for these kinds AWS keeps names unique, so the create itself
/// still cannot duplicate anything (it fails as a conflict); the plan goes on. (REST API names are not
/// unique: a failed `GetRestApis` fails the plan instead.)
fn unchecked(r: &crate::manifest::Resource, id: &str, e: &ProviderError) {
    tracing::warn!(resource = %r.name, id, error = %e, "could not check whether it already exists in AWS; its create will tell");
}

/// What an interrupted create journaled under `op.physical_name`, when that is not the name `desired`
/// has now, and AWS has it with this stack's and this resource's ownership tags (kinds without tags
/// prove nothing, so none is returned for them).
async fn leftover_under_journaled_name(
    aws: &Aws,
    kind: Kind,
    desired: &Map<String, Value>,
    op: &PendingOperation,
    taken: &std::collections::HashSet<String>,
) -> Result<Option<String>, PlanError> {
    let field = kind.schema().physical_name;
    let Some(name) = op.physical_name.as_ref().filter(|_| kind.schema().taggable && !field.is_empty()) else { return Ok(None) };
    if desired.get(field).and_then(Value::as_str) == Some(name.as_str()) {
        return Ok(None);
    }
    let mut then = desired.clone();
    then.insert(field.to_string(), Value::String(name.clone()));
    let found =
        providers::find(aws, kind, &then, taken).await.map_err(|source| PlanError::Recovery { resource: op.resource.clone(), source })?;
    Ok(found.filter(|(id, live)| !taken.contains(id) && owned_by(&live.attrs, &then)).map(|(id, _)| id))
}

/// Whether live tags say the resource belongs to this stack and this resource.
pub fn owned_by(live: &Map<String, Value>, desired: &Map<String, Value>) -> bool {
    let tag = |m: &Map<String, Value>, k: &str| m.get("tags").and_then(|t| t.get(k)).and_then(Value::as_str).map(str::to_string);
    [crate::manifest::TAG_STACK, crate::manifest::TAG_RESOURCE].iter().all(|k| tag(live, k).is_some() && tag(live, k) == tag(desired, k))
}

/// Why what AWS has under a recorded resource's physical id (`live`) is not the resource this state
/// made, if it is not: its `reconcile:stack` tag names another stack; or the state recorded this
/// stack's ownership tags and AWS has none (a kind with tags); or the id AWS gave it when it was made
/// (its RoleId, creation time, REST API id… see [`providers::assigned_id`]) is not the one the state
/// recorded, so it was deleted and re-made outside reconcile, tags or not. Such a resource is not
/// updated, replaced, deleted or remediated: the plan shows the conflict and names `import`.
pub fn not_ours(stack: &str, recorded: &ResourceState, live: &Live) -> Option<String> {
    let kind = recorded.kind;
    let tag = |attrs: Option<&Map<String, Value>>| {
        attrs.and_then(|m| m.get("tags")).and_then(|t| t.get(crate::manifest::TAG_STACK)).and_then(Value::as_str).map(str::to_string)
    };
    let why = if kind.schema().taggable {
        match (tag(Some(&live.attrs)), tag(recorded.attributes.as_object())) {
            (Some(other), _) if other != stack => Some(format!("its `{}` tag says stack `{other}`", crate::manifest::TAG_STACK)),
            (None, Some(ours)) if ours == stack => {
                Some(format!("it has no `{}` tag, and the one this state made had this stack's", crate::manifest::TAG_STACK))
            }
            _ => None,
        }
    } else {
        None
    };
    let why = why.or_else(|| {
        let made = providers::assigned_id(kind, &recorded.outputs)?;
        let now = providers::assigned_id(kind, &live.outputs)?;
        (made != now).then(|| {
            format!("AWS gave it the id `{now}` when it was made, and the one this state made had `{made}` (deleted and made again outside reconcile)")
        })
    })?;
    let (name, id) = (&recorded.name, &recorded.physical_id);
    Some(format!(
        "not ours: {kind} `{id}` in AWS is not the one this state recorded: {why}; reconcile neither changes nor deletes it. \
         If this stack is to manage it, adopt it with `reconcile state rm {name}` and then `reconcile import {name} {id}`; \
         otherwise `reconcile state rm {name}` forgets the record and leaves it alone"
    ))
}

/// The conflict [`not_ours`] found for `recorded`, as the plan shows it.
fn not_ours_blocker(stack: &str, recorded: &ResourceState, live: &Live, resource: &str) -> Option<Blocker> {
    not_ours(stack, recorded, live).map(|message| Blocker {
        resource: resource.to_string(),
        kind: recorded.kind,
        problem: Problem::Conflict,
        physical_id: Some(recorded.physical_id.clone()),
        message,
    })
}

/// Each blocked change says why (its reason is the blocker's message).
fn show_blockers(changes: &mut [ResourceChange], blockers: &[Blocker]) {
    for b in blockers {
        if let Some(change) = changes.iter_mut().find(|c| c.name == b.resource && !c.deposed) {
            change.reason = Some(b.message.clone());
        }
    }
}

/// The pure part of planning: no I/O.
pub fn diff_all(manifest: &Manifest, state: &StackState, live: &HashMap<String, Option<Live>>) -> Plan {
    diff_all_with(manifest, state, live, &std::collections::BTreeSet::new())
}

/// [`diff_all`], replacing the resources `replace` names (`--replace`) that exist, even where nothing differs.
pub fn diff_all_with(
    manifest: &Manifest,
    state: &StackState,
    live: &HashMap<String, Option<Live>>,
    replace: &std::collections::BTreeSet<String>,
) -> Plan {
    let mut known: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut changes = Vec::new();
    // State keys no longer in the manifest whose physical resource a new key takes over.
    let mut moved: HashMap<String, String> = HashMap::new();
    let mut warnings = Vec::new();
    // What AWS has under a recorded id that is not what this state made.
    let mut blockers = Vec::new();
    // Explicit `[[moved]]` entries first: they take precedence over moves found by physical name.
    let mut explicit: HashMap<&str, &str> = HashMap::new();
    for m in &manifest.moved {
        match (state.resources.contains_key(&m.from), state.resources.contains_key(&m.to)) {
            (true, false) => {
                explicit.insert(m.to.as_str(), m.from.as_str());
                moved.insert(m.from.clone(), m.to.clone());
            }
            (true, true) => warnings.push(format!(
                "{}: `[[moved]]` from `{}` to `{}`: the state records both keys, so nothing is moved (`{}` is planned like any resource removed from the manifest)",
                m.location, m.from, m.to, m.from
            )),
            // Already moved by an earlier apply: the entry may stay in the manifest.
            (false, true) => {}
            (false, false) => warnings.push(format!(
                "{}: `[[moved]]` from `{}` to `{}` matches nothing: the state records neither key",
                m.location, m.from, m.to
            )),
        }
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    for r in topo_order(manifest) {
        let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
        let (desired, _) = refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
        let desired = desired.as_object().cloned().unwrap_or_default();
        let depends_on: Vec<String> = r.deps.iter().cloned().collect();
        let mut recorded = state.resources.get(&r.name);
        let mut moved_from = None;
        if recorded.is_none()
            && let Some(old) = explicit.get(r.name.as_str()).and_then(|from| state.resources.get(*from))
        {
            moved_from = Some(old.name.clone());
            recorded = Some(old);
        } else if recorded.is_none()
            && let Some(old) = moved_candidate(manifest, state, r.kind, &desired, &moved)
        {
            moved.insert(old.name.clone(), r.name.clone());
            moved_from = Some(old.name.clone());
            recorded = Some(old);
        }
        // Outputs that follow from the manifest alone are known even before apply.
        // When the manifest side is not fully known yet, neither are they: the old values must not stand in.
        let mut derived = providers::derived_outputs(r.kind, &desired);
        let derived_unknown = refs::contains_unknown(&Value::Object(desired.clone()));
        if derived_unknown {
            derived.clear();
        }
        if !derived.is_empty() {
            known.insert(r.name.clone(), derived.clone());
        }
        let current = recorded.and_then(|s| live.get(&s.name)).and_then(Option::as_ref);
        // What apply needs from the manifest, carried by the change whatever its action.
        let planned = |action| ResourceChange {
            depends_on: depends_on.clone(),
            desired: Some(Unresolved { kind: r.kind, attrs: r.attrs.clone() }),
            artifact_sha256: r.artifact.as_ref().map(|a| a.sha256.clone()),
            protect: r.protect,
            retain_on_delete: r.retain_on_delete,
            records_retain: recorded.is_some_and(|s| s.kind == r.kind && state.retained.contains(&s.name) != r.retain_on_delete),
            ..ResourceChange::new(&r.name, r.kind, action)
        };
        let change = match (recorded, current) {
            (None, _) => ResourceChange { changes: diff::creation(r.kind, &desired), ..planned(Action::Create) },
            (Some(s), _) if s.kind != r.kind => ResourceChange {
                physical_id: Some(s.physical_id.clone()),
                reason: Some(format!("type changed from {} to {}", s.kind, r.kind)),
                changes: diff::creation(r.kind, &desired),
                ..planned(Action::Replace)
            },
            (Some(s), None) => ResourceChange {
                reason: Some(format!("{} was deleted outside reconcile", s.physical_id)),
                changes: diff::creation(r.kind, &desired),
                ..planned(Action::Create)
            },
            (Some(s), Some(l)) => {
                blockers.extend(not_ours_blocker(&manifest.stack, s, l, &r.name));
                // `reconcile:resource` names the key the resource was created (or adopted) under: a
                // renamed key keeps it, so a move writes nothing to AWS.
                let mut desired = desired.clone();
                let mut desired_attrs = r.attrs.clone();
                if let Some(tag) = s.attributes.get("tags").and_then(|t| t.get(crate::manifest::TAG_RESOURCE)).filter(|t| t.is_string()) {
                    for attrs in [&mut desired, &mut desired_attrs] {
                        if let Some(Value::Object(tags)) = attrs.get_mut("tags")
                            && tags.contains_key(crate::manifest::TAG_RESOURCE)
                        {
                            tags.insert(crate::manifest::TAG_RESOURCE.into(), tag.clone());
                        }
                    }
                }
                let mut current = l.attrs.clone();
                // Keys the state recorded as secret stay secret (masked) even once they left `secret_environment`.
                crate::manifest::schema::split_secrets_known(r.kind, &mut current, &desired, s.attributes.as_object());
                // What AWS cannot tell us (e.g. the code path) is taken as last applied; only what the
                // kind's schema still knows (a state written by an older version may hold more).
                if let Some(recorded) = s.attributes.as_object() {
                    let schema = r.kind.schema();
                    for (k, v) in recorded.iter().filter(|(k, _)| schema.field(k).is_some() || *k == crate::manifest::schema::CODE_SHA256) {
                        current.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                let all_fields = diff::fields(r.kind, &current, &desired);
                // Fields `ignore_changes` names stay as AWS has them: not planned, and the attributes
                // apply starts from take AWS's values for them (a create still sends the manifest's).
                let (ignored, fields): (Vec<FieldChange>, Vec<FieldChange>) =
                    all_fields.into_iter().partition(|f| r.ignore_changes.covers(&f.path));
                for f in &ignored {
                    keep_current(&mut desired_attrs, &current, &f.path);
                }
                // A create that did not finish: finished by an update (even with no field to change,
                // e.g. a function to wait for), or replaced where the kind cannot be finished.
                let incomplete = state.incomplete.get(&r.name);
                let requested = replace.contains(&r.name);
                let replace = requested
                    || fields.iter().any(|f| f.forces_replacement)
                    || incomplete.is_some() && !providers::finishes_incomplete(r.kind);
                let action = if replace {
                    Action::Replace
                } else if fields.is_empty() && incomplete.is_none() {
                    Action::NoOp
                } else {
                    Action::Update
                };
                if !replace {
                    let mut outputs = l.outputs.clone();
                    if action == Action::Update {
                        for key in providers::unknown_after_update(r.kind, &current, &desired) {
                            outputs.remove(key);
                        }
                    }
                    if derived_unknown {
                        for key in providers::derived_outputs(r.kind, &desired).keys() {
                            outputs.remove(key);
                        }
                    }
                    outputs.extend(derived);
                    known.insert(r.name.clone(), outputs);
                }
                let create_first = replace && create_before_destroy(r.kind, &s.physical_id, &current, &desired);
                // A replacement is a new resource: it is tagged with the key it is created under.
                if replace
                    && let Some(Value::Object(tags)) = desired_attrs.get_mut("tags")
                    && tags.contains_key(crate::manifest::TAG_RESOURCE)
                {
                    tags.insert(crate::manifest::TAG_RESOURCE.into(), Value::String(r.name.clone()));
                }
                let reason = match (incomplete, replace, create_first) {
                    (Some(why), true, _) => Some(format!("incomplete: replacing (its create did not finish: {why})")),
                    (Some(why), false, _) => Some(format!("incomplete: finishing (its create did not finish: {why})")),
                    (None, true, true) => {
                        Some("the new one is created first, dependents move to it, then the old one is deleted".to_string())
                    }
                    (None, true, false) => {
                        Some("it keeps its name, so the old one is deleted first, then the new one is created".to_string())
                    }
                    _ => None,
                };
                let reason = match reason {
                    Some(why) if requested => Some(format!("{REQUESTED_REPLACE}; {why}")),
                    other => other,
                };
                ResourceChange {
                    physical_id: Some(s.physical_id.clone()),
                    reason,
                    changes: fields,
                    create_before_destroy: create_first,
                    current: Some(current),
                    ignored,
                    desired: Some(Unresolved { kind: r.kind, attrs: desired_attrs }),
                    ..planned(action)
                }
            }
        };
        let mut change = change;
        if let Some(old) = moved_from {
            change.reason = Some(match change.reason.take() {
                Some(r) => format!("renamed from `{old}` in the manifest: it takes over `{old}`'s resource; {r}"),
                None => format!("renamed from `{old}` in the manifest: it takes over `{old}`'s resource, nothing is deleted"),
            });
            change.moved_from = Some(old);
        }
        changes.push(change);
    }
    // Owned resources no longer in the manifest (or switched off).
    for s in state.resources.values() {
        if manifest.resource(&s.name).is_none() && !moved.contains_key(&s.name) {
            let gone = live.get(&s.name).is_some_and(Option::is_none);
            if let Some(l) = live.get(&s.name).and_then(Option::as_ref) {
                blockers.extend(not_ours_blocker(&manifest.stack, s, l, &s.name));
            }
            let retain = retained(state, &s.name, s.kind);
            // Switched off, the resource is still declared: its `protect = true` still holds.
            let protect = retain.is_none() && manifest.protected.contains(&s.name);
            let reason = match (retain, manifest.disabled.contains(&s.name)) {
                (Some(why), true) => format!("switched off in the manifest (`enabled = false`); {why}"),
                (Some(why), false) => why.into(),
                (None, true) => "switched off in the manifest (`enabled = false`)".into(),
                (None, false) if gone => "removed from the manifest (already gone from AWS)".into(),
                (None, false) => "removed from the manifest".into(),
            };
            let reason = if protect { format!("{reason}; refused: `protect = true` (apply refuses its deletion)") } else { reason };
            changes.push(ResourceChange {
                physical_id: Some(s.physical_id.clone()),
                reason: Some(reason),
                depends_on: s.depends_on.clone(),
                current: live.get(&s.name).and_then(Option::as_ref).map(|l| l.attrs.clone()),
                retain_on_delete: retain.is_some(),
                protect,
                ..ResourceChange::new(&s.name, s.kind, if retain.is_some() { Action::Forget } else { Action::Delete })
            });
        }
    }
    show_blockers(&mut changes, &blockers);
    let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
    let outputs: BTreeMap<String, String> = manifest
        .outputs
        .iter()
        .map(|(k, v)| {
            let (resolved, _) = refs::resolve(&Value::String(v.clone()), &lookup);
            (k.clone(), resolved.as_str().unwrap_or(UNKNOWN).to_string())
        })
        .collect();
    let output_changes = output_changes(&state.outputs, &outputs);
    Plan {
        format_version: FORMAT_VERSION,
        stack: manifest.stack.clone(),
        state_serial: state.serial,
        summary: Summary::default(),
        resources: changes,
        outputs,
        output_changes,
        interrupted_operations: Vec::new(),
        known_outputs: known,
        blockers,
        output_expressions: manifest.outputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        destroy: false,
        artifacts: manifest.resources.iter().filter_map(|r| r.artifact.as_ref()).map(|a| (a.sha256.clone(), a.clone())).collect(),
        warnings,
        partial: false,
        targets: Vec::new(),
    }
    .finish()
}

/// Puts AWS's value (from `current`) for one ignored field path into the attributes apply starts
/// from: the whole field, or one key of a table field (`tags.owner`); a key AWS does not have is
/// dropped, so the update neither sets nor removes it.
fn keep_current(attrs: &mut Map<String, Value>, current: &Map<String, Value>, path: &str) {
    let top = path.split('.').next().unwrap_or(path);
    let map_field = top != path && attrs.get(top).is_some_and(Value::is_object);
    if !map_field {
        match current.get(path) {
            Some(v) => attrs.insert(path.to_string(), v.clone()),
            None => attrs.remove(path),
        };
        return;
    }
    let key = &path[top.len() + 1..];
    let have = current.get(top).and_then(|m| m.get(key)).cloned();
    if let Some(Value::Object(map)) = attrs.get_mut(top) {
        match have {
            Some(v) => map.insert(key.to_string(), v),
            None => map.remove(key),
        };
    }
}

/// Whether a replacement creates the new one first: when the desired physical name (or, for kinds
/// without one, the physical id) differs from the old one's, or AWS assigns it, both can exist at
/// once; the same name must be freed first. A kind whose schema says so always creates first.
fn create_before_destroy(kind: Kind, old_id: &str, current: &Map<String, Value>, desired: &Map<String, Value>) -> bool {
    let schema = kind.schema();
    if schema.create_before_destroy {
        return true;
    }
    if !schema.physical_name.is_empty() {
        return current.get(schema.physical_name) != desired.get(schema.physical_name);
    }
    providers::physical_id_of(kind, desired).is_none_or(|id| id != old_id)
}

/// The state's record, under a key no longer in the manifest, of the physical resource a key not in
/// the state describes (same kind, same physical id, or same physical name where AWS assigns ids):
/// the key was renamed, and the new key takes the resource over instead of deleting and re-creating
/// it (which could not work for a fixed name anyway).
fn moved_candidate<'s>(
    manifest: &Manifest,
    state: &'s StackState,
    kind: Kind,
    desired: &Map<String, Value>,
    moved: &HashMap<String, String>,
) -> Option<&'s ResourceState> {
    let known = |v: &str| !v.is_empty() && !v.contains(UNKNOWN);
    let id = providers::physical_id_of(kind, desired).filter(|id| known(id));
    let field = kind.schema().physical_name;
    let name = desired.get(field).and_then(Value::as_str).filter(|n| !field.is_empty() && known(n));
    state.resources.values().filter(|s| s.kind == kind && manifest.resource(&s.name).is_none() && !moved.contains_key(&s.name)).find(|s| {
        match (&id, name) {
            (Some(id), _) => s.physical_id == *id,
            (None, Some(name)) => s.attributes.get(field).and_then(Value::as_str) == Some(name),
            (None, None) => false,
        }
    })
}

/// A plan that deletes everything the state owns, plus what interrupted runs left behind.
pub fn destroy(stack: &str, inspection: &Inspection) -> Plan {
    let live = &inspection.live;
    let mut resources: Vec<ResourceChange> = inspection
        .state
        .resources
        .values()
        .map(|s| {
            let current = live.get(&s.name).and_then(Option::as_ref);
            let retain = retained(&inspection.state, &s.name, s.kind);
            let reason = if let Some(why) = retain {
                Some(why.to_string())
            } else if live.contains_key(&s.name) && current.is_none() {
                Some("already gone from AWS".to_string())
            } else {
                None
            };
            ResourceChange {
                physical_id: Some(s.physical_id.clone()),
                reason,
                depends_on: s.depends_on.clone(),
                adopt: inspection.adopted.get(&s.name).cloned(),
                current: current.map(|l| l.attrs.clone()),
                retain_on_delete: retain.is_some(),
                ..ResourceChange::new(&s.name, s.kind, if retain.is_some() { Action::Forget } else { Action::Delete })
            }
        })
        .collect();
    let blockers: Vec<Blocker> =
        inspection.state.resources.values().filter_map(|s| not_ours_blocker(stack, s, live.get(&s.name)?.as_ref()?, &s.name)).collect();
    show_blockers(&mut resources, &blockers);
    resources.extend(inspection.deposed_changes());
    Plan {
        format_version: FORMAT_VERSION,
        stack: stack.to_string(),
        blockers,
        state_serial: inspection.state.serial,
        summary: Summary::default(),
        resources,
        outputs: BTreeMap::new(),
        output_changes: Vec::new(),
        interrupted_operations: inspection.pending.clone(),
        destroy: true,
        ..Plan::default()
    }
    .finish()
}

/// The recorded outputs (`before`) against the manifest's as planned (`after`, unknown ones as
/// [`UNKNOWN`]), by name.
pub fn output_changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<OutputChange> {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let old = before.get(name);
            let new = after.get(name);
            let unknown = new.is_some_and(|v| refs::contains_unknown(&Value::String(v.clone())));
            let action = match (old, new) {
                (None, Some(_)) => Action::Create,
                (Some(_), None) => Action::Delete,
                (Some(o), Some(n)) if o != n || unknown => Action::Update,
                _ => return None,
            };
            Some(OutputChange {
                name: name.clone(),
                action,
                before: old.cloned(),
                after: new.filter(|_| !unknown).cloned(),
                known_after_apply: unknown,
            })
        })
        .collect()
}

/// Manifest resources with dependencies first (the manifest has no cycles: validation refused them).
pub fn topo_order(manifest: &Manifest) -> Vec<&crate::manifest::Resource> {
    let mut done: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(manifest.resources.len());
    while out.len() < manifest.resources.len() {
        let before = out.len();
        for r in &manifest.resources {
            if !done.contains(r.name.as_str()) && r.deps.iter().all(|d| done.contains(d.as_str())) {
                done.insert(&r.name);
                out.push(r);
            }
        }
        if out.len() == before {
            // Unreachable for a validated manifest; keep the rest in file order rather than loop.
            out.extend(manifest.resources.iter().filter(|r| !done.contains(r.name.as_str())));
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests;
