//! Plan layer: manifest vs state vs live AWS → a [`Plan`], plain data that renders for people
//! ([`render`]) and serialises as a stable JSON document.

pub mod diff;
pub mod render;

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::manifest::refs::{self, UNKNOWN};
use crate::manifest::{Kind, Manifest};
use crate::providers::{self, Aws, Live, ProviderError};
use crate::state::{PendingOperation, ResourceState, StackState};

/// Version of the JSON plan document; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    NoOp,
    Create,
    Update,
    /// Delete, then create (the physical name is fixed, so both cannot exist at once).
    Replace,
    Delete,
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::NoOp => "no change",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// One field's change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// `memory_size`, or `tags.env` for one key of a map.
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub forces_replacement: bool,
}

/// What happens to one resource.
#[derive(Debug, Clone, Serialize)]
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
    /// The live attributes the update starts from (and, for a delete, what shows whose it is).
    #[serde(skip)]
    pub current: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub adopt: usize,
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub no_op: usize,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub stack: String,
    /// The state serial this plan was computed against.
    pub state_serial: i64,
    pub summary: Summary,
    pub resources: Vec<ResourceChange>,
    /// Stack outputs as far as they are known before apply.
    pub outputs: BTreeMap<String, String>,
    /// Journal entries of interrupted runs that this plan reconciles (apply closes them).
    pub interrupted_operations: Vec<i64>,
    /// Outputs of resources that exist and are not being replaced: what references resolve to.
    #[serde(skip)]
    pub known_outputs: HashMap<String, BTreeMap<String, String>>,
    /// What AWS already has in the way of this plan's creates (see [`check_blockers`]): `plan` shows
    /// them and exits 1, `apply` refuses the plan before any write.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<Blocker>,
}

/// A reason apply must not start, found by reading AWS at plan time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocker {
    pub resource: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// `conflict`: what the create would make already exists in AWS and this state does not own it;
    /// `account_logging`: the stage logs but the region's account setting names no CloudWatch role.
    pub problem: &'static str,
    /// The existing physical id, for a conflict.
    pub physical_id: Option<String>,
    pub message: String,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(|r| r.action != Action::NoOp || r.adopt.is_some())
    }

    fn finish(mut self) -> Plan {
        let mut s = Summary::default();
        for r in &self.resources {
            s.adopt += usize::from(r.adopt.is_some());
            match r.action {
                Action::NoOp => s.no_op += 1,
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
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
    #[error("reading {resource} ({kind} {id}) from AWS: {source}")]
    Refresh {
        resource: String,
        kind: Kind,
        id: String,
        #[source]
        source: ProviderError,
    },
}

/// Shown for settings that are forgotten, not deleted.
pub const RETAINED: &str = "a region-wide setting: reconcile stops managing it and leaves it as it is in AWS";

/// How many reads run at once while refreshing.
pub const REFRESH_CONCURRENCY: usize = 10;

/// Reads every resource the state owns from AWS, concurrently.
pub async fn refresh(aws: &Aws, state: &StackState) -> Result<HashMap<String, Option<Live>>, PlanError> {
    let reads = state.resources.values().map(|r| async move {
        let live = providers::read(aws, r.kind, &r.physical_id).await.map_err(|source| PlanError::Refresh {
            resource: r.name.clone(),
            kind: r.kind,
            id: r.physical_id.clone(),
            source,
        })?;
        Ok::<_, PlanError>((r.name.clone(), live))
    });
    let results: Vec<_> = futures::stream::iter(reads).buffer_unordered(REFRESH_CONCURRENCY).collect().await;
    results.into_iter().collect()
}

/// Like [`refresh`], but tolerant: reads the resources `due` says (by name) and returns each one's
/// own outcome, so one failing read does not hide the others.
pub async fn refresh_each(aws: &Aws, state: &StackState, due: impl Fn(&str) -> bool) -> BTreeMap<String, Result<Option<Live>, PlanError>> {
    // The futures are made before the stream, so it holds no closure over `due` (which would keep
    // the whole future from being `Send` for callers that spawn it).
    let reads: Vec<_> = state.resources.values().filter(|r| due(&r.name)).map(|r| read_one(aws, r)).collect();
    futures::stream::iter(reads).buffer_unordered(REFRESH_CONCURRENCY).collect().await
}

async fn read_one(aws: &Aws, r: &ResourceState) -> (String, Result<Option<Live>, PlanError>) {
    let live = providers::read(aws, r.kind, &r.physical_id).await.map_err(|source| PlanError::Refresh {
        resource: r.name.clone(),
        kind: r.kind,
        id: r.physical_id.clone(),
        source,
    });
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
pub async fn compute_tolerant(manifest: &Manifest, state: &StackState, aws: &Aws, due: impl Fn(&str) -> bool) -> Observation {
    let reads = refresh_each(aws, state, due).await;
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
    let unread = |c: &ResourceChange| state.resources.contains_key(&c.name) && !reads.get(&c.name).is_some_and(Result::is_ok);
    let plan = plan.restricted(|c| !unread(c));
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
            }
        }
        plan.resources.retain(|c| !c.deposed || c.action != Action::NoOp);
        plan.interrupted_operations.clear();
        plan.finish()
    }
}

/// Computes the plan from the manifest, the state, the journal of interrupted runs and what AWS has now.
pub async fn compute(manifest: &Manifest, state: &StackState, pending: &[PendingOperation], aws: &Aws) -> Result<Plan, PlanError> {
    let inspection = inspect(manifest, state, pending, aws).await?;
    let mut plan = diff_all(manifest, &inspection.state, &inspection.live);
    for change in &mut plan.resources {
        if let Some(id) = inspection.adopted.get(&change.name) {
            change.adopt = Some(id.clone());
            change.reason = Some(match &change.reason {
                Some(r) => format!("made by an interrupted run, adopted; {r}"),
                None => "made by an interrupted run, adopted".into(),
            });
        }
    }
    plan.resources.extend(inspection.deposed_changes());
    plan.interrupted_operations = inspection.pending.clone();
    Ok(plan.finish())
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
                name: name.clone(),
                kind: *kind,
                action: Action::Delete,
                physical_id: Some(id.clone()),
                reason: Some("a previous one left by an interrupted replacement".into()),
                changes: Vec::new(),
                depends_on: Vec::new(),
                adopt: None,
                deposed: true,
                current: None,
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
        match op.action.as_str() {
            "create" if !insp.state.resources.contains_key(&op.resource) => {
                let Some(r) = manifest.resource(&op.resource).filter(|r| r.kind == kind) else { continue };
                let known: HashMap<&str, &BTreeMap<String, String>> =
                    insp.live.iter().filter_map(|(n, l)| l.as_ref().map(|l| (n.as_str(), &l.outputs))).collect();
                let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
                let (desired, unknown) = refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
                let Some(desired) = desired.as_object().filter(|_| !unknown) else { continue };
                let taken = insp.state.resources.values().map(|s| s.physical_id.clone()).collect();
                let found = providers::find(aws, kind, desired, &taken)
                    .await
                    .map_err(|source| PlanError::Recovery { resource: r.name.clone(), source })?;
                let Some((id, live)) = found else { continue };
                if kind.schema().taggable && !owned_by(&live.attrs, desired) {
                    continue;
                }
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
            "delete-previous" => {
                let Some(old) = op.physical_name.clone() else { continue };
                let current = insp.state.resources.get(&op.resource).map(|s| s.physical_id.as_str());
                if current != Some(old.as_str()) {
                    // Its own delete closes the entry once the old one is gone.
                    insp.pending.retain(|id| *id != op.id);
                    if !insp.deposed.iter().any(|(_, _, id)| *id == old) {
                        insp.deposed.push((op.resource.clone(), kind, old));
                    }
                }
            }
            _ => {}
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
    let owned: std::collections::HashSet<(Kind, &str)> = state.resources.values().map(|r| (r.kind, r.physical_id.as_str())).collect();
    let known = plan.known_outputs.clone();
    let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
    let mut blockers = Vec::new();
    let mut rest_apis: Vec<(String, String)> = Vec::new();
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
            problem: "conflict",
            message: format!(
                "conflict: {} `{id}` exists in AWS, not in this state (another state file, a lost one, or made by hand); \
                 adopt it with `reconcile import {} {id}`, or delete or rename it",
                r.kind, r.name
            ),
            physical_id: Some(id),
        };
        match r.kind {
            // A region-wide setting, always there: its create adopts it. Deployments have no name.
            Kind::ApiGatewayAccount | Kind::Deployment => {}
            Kind::RestApi if !providers::str_attr(desired, "name").contains(UNKNOWN) => {
                rest_apis.push((r.name.clone(), providers::str_attr(desired, "name").to_string()))
            }
            Kind::RestApi => {}
            Kind::WebAcl => {
                let (scope, name) = (providers::str_attr(desired, "scope"), providers::str_attr(desired, "name"));
                if scope.contains(UNKNOWN) || name.contains(UNKNOWN) {
                    continue;
                }
                match providers::wafv2::web_acl::find(aws, scope, name).await {
                    Ok(found) => {
                        if let Some((id, _)) = found.filter(|(id, _)| !owned.contains(&(r.kind, id.as_str()))) {
                            blockers.push(conflict(id));
                        }
                    }
                    Err(e) => unchecked(r, name, &e),
                }
            }
            kind => {
                let Some(id) = providers::physical_id_of(kind, desired)
                    .filter(|id| !id.contains(UNKNOWN) && !refs::contains_unknown(&Value::String(id.clone())))
                else {
                    continue;
                };
                if owned.contains(&(kind, id.as_str())) {
                    continue;
                }
                match providers::read(aws, kind, &id).await {
                    Ok(Some(_)) => blockers.push(conflict(id)),
                    Ok(None) => {}
                    Err(e) => unchecked(r, &id, &e),
                }
            }
        }
    }
    if !rest_apis.is_empty() {
        let existing = providers::apigateway::rest_api::list_names(aws).await.map_err(|source| PlanError::Refresh {
            resource: rest_apis[0].0.clone(),
            kind: Kind::RestApi,
            id: "(all REST APIs)".into(),
            source,
        })?;
        for (resource, name) in rest_apis {
            let taken = existing.iter().find(|(id, n)| *n == name && !owned.contains(&(Kind::RestApi, id.as_str())));
            if let Some((id, _)) = taken {
                let mut b = Blocker {
                    resource: resource.clone(),
                    kind: Kind::RestApi,
                    problem: "conflict",
                    physical_id: Some(id.clone()),
                    message: String::new(),
                };
                b.message = format!(
                    "conflict: a REST API named `{name}` exists in AWS ({id}), not in this state (another state file, a lost one, or \
                     made by hand); AWS does not keep REST API names unique, so creating it would make a second one; adopt it with \
                     `reconcile import {resource} {id}`, or delete or rename it"
                );
                blockers.push(b);
            }
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
        let role = account.as_ref().map(|l| providers::str_attr(&l.attrs, "cloudwatch_role_arn").to_string()).unwrap_or_default();
        if role.is_empty() {
            for (resource, kind) in logging_stages {
                blockers.push(Blocker {
                    resource,
                    kind,
                    problem: "account_logging",
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
    for b in &blockers {
        if let Some(change) = plan.resources.iter_mut().find(|c| c.name == b.resource) {
            change.reason = Some(b.message.clone());
        }
    }
    plan.blockers = blockers;
    Ok(())
}

/// A conflict check that could not read: for these kinds AWS keeps names unique, so the create itself
/// still cannot duplicate anything (it fails as a conflict); the plan goes on. (REST API names are not
/// unique: a failed `GetRestApis` fails the plan instead.)
fn unchecked(r: &crate::manifest::Resource, id: &str, e: &ProviderError) {
    tracing::warn!(resource = %r.name, id, error = %e, "could not check whether it already exists in AWS; its create will tell");
}

/// Whether live tags say the resource belongs to this stack and this resource.
pub fn owned_by(live: &Map<String, Value>, desired: &Map<String, Value>) -> bool {
    let tag = |m: &Map<String, Value>, k: &str| m.get("tags").and_then(|t| t.get(k)).and_then(Value::as_str).map(str::to_string);
    [crate::manifest::TAG_STACK, crate::manifest::TAG_RESOURCE].iter().all(|k| tag(live, k).is_some() && tag(live, k) == tag(desired, k))
}

/// The pure part of planning: no I/O.
pub fn diff_all(manifest: &Manifest, state: &StackState, live: &HashMap<String, Option<Live>>) -> Plan {
    let mut known: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let mut changes = Vec::new();
    for r in topo_order(manifest) {
        let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
        let (desired, _) = refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
        let desired = desired.as_object().cloned().unwrap_or_default();
        let depends_on: Vec<String> = r.deps.iter().cloned().collect();
        let recorded = state.resources.get(&r.name);
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
        let change = match (recorded, current) {
            (None, _) => ResourceChange {
                name: r.name.clone(),
                kind: r.kind,
                action: Action::Create,
                physical_id: None,
                reason: None,
                changes: diff::creation(r.kind, &desired),
                depends_on,
                adopt: None,
                deposed: false,
                current: None,
            },
            (Some(s), _) if s.kind != r.kind => ResourceChange {
                name: r.name.clone(),
                kind: r.kind,
                action: Action::Replace,
                physical_id: Some(s.physical_id.clone()),
                reason: Some(format!("type changed from {} to {}", s.kind, r.kind)),
                changes: diff::creation(r.kind, &desired),
                depends_on,
                adopt: None,
                deposed: false,
                current: None,
            },
            (Some(s), None) => ResourceChange {
                name: r.name.clone(),
                kind: r.kind,
                action: Action::Create,
                physical_id: None,
                reason: Some(format!("{} was deleted outside reconcile", s.physical_id)),
                changes: diff::creation(r.kind, &desired),
                depends_on,
                adopt: None,
                deposed: false,
                current: None,
            },
            (Some(s), Some(l)) => {
                let mut current = l.attrs.clone();
                crate::manifest::schema::split_secrets(r.kind, &mut current, &desired);
                // What AWS cannot tell us (e.g. the code path) is taken as last applied.
                if let Some(recorded) = s.attributes.as_object() {
                    for (k, v) in recorded {
                        current.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                let fields = diff::fields(r.kind, &current, &desired);
                let replace = fields.iter().any(|f| f.forces_replacement);
                let action = if replace {
                    Action::Replace
                } else if fields.is_empty() {
                    Action::NoOp
                } else {
                    Action::Update
                };
                if !replace {
                    let mut outputs = l.outputs.clone();
                    if derived_unknown {
                        for key in providers::derived_outputs(r.kind, &desired).keys() {
                            outputs.remove(key);
                        }
                    }
                    outputs.extend(derived);
                    known.insert(r.name.clone(), outputs);
                }
                let reason = (replace && r.kind.schema().create_before_destroy)
                    .then(|| "the new one is created first, dependents move to it, then the old one is deleted".to_string());
                ResourceChange {
                    name: r.name.clone(),
                    kind: r.kind,
                    action,
                    physical_id: Some(s.physical_id.clone()),
                    reason,
                    changes: fields,
                    depends_on,
                    adopt: None,
                    deposed: false,
                    current: Some(current),
                }
            }
        };
        changes.push(change);
    }
    // Owned resources no longer in the manifest.
    for s in state.resources.values() {
        if manifest.resource(&s.name).is_none() {
            let gone = live.get(&s.name).is_some_and(Option::is_none);
            changes.push(ResourceChange {
                name: s.name.clone(),
                kind: s.kind,
                action: Action::Delete,
                physical_id: Some(s.physical_id.clone()),
                reason: Some(if s.kind.schema().retain_on_delete {
                    RETAINED.into()
                } else if gone {
                    "removed from the manifest (already gone from AWS)".into()
                } else {
                    "removed from the manifest".into()
                }),
                changes: Vec::new(),
                depends_on: s.depends_on.clone(),
                adopt: None,
                deposed: false,
                current: live.get(&s.name).and_then(Option::as_ref).map(|l| l.attrs.clone()),
            });
        }
    }
    let lookup = |res: &str, out: &str| known.get(res).and_then(|o| o.get(out)).cloned();
    let outputs = manifest
        .outputs
        .iter()
        .map(|(k, v)| {
            let (resolved, _) = refs::resolve(&Value::String(v.clone()), &lookup);
            (k.clone(), resolved.as_str().unwrap_or(UNKNOWN).to_string())
        })
        .collect();
    Plan {
        format_version: FORMAT_VERSION,
        stack: manifest.stack.clone(),
        state_serial: state.serial,
        summary: Summary::default(),
        resources: changes,
        outputs,
        interrupted_operations: Vec::new(),
        known_outputs: known,
        blockers: Vec::new(),
    }
    .finish()
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
            let reason = if s.kind.schema().retain_on_delete {
                Some(RETAINED.to_string())
            } else if live.contains_key(&s.name) && current.is_none() {
                Some("already gone from AWS".to_string())
            } else {
                None
            };
            ResourceChange {
                name: s.name.clone(),
                kind: s.kind,
                action: Action::Delete,
                physical_id: Some(s.physical_id.clone()),
                reason,
                changes: Vec::new(),
                depends_on: s.depends_on.clone(),
                adopt: inspection.adopted.get(&s.name).cloned(),
                deposed: false,
                current: current.map(|l| l.attrs.clone()),
            }
        })
        .collect();
    resources.extend(inspection.deposed_changes());
    Plan {
        format_version: FORMAT_VERSION,
        stack: stack.to_string(),
        state_serial: inspection.state.serial,
        summary: Summary::default(),
        resources,
        outputs: BTreeMap::new(),
        interrupted_operations: inspection.pending.clone(),
        known_outputs: HashMap::new(),
        blockers: Vec::new(),
    }
    .finish()
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
