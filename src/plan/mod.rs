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
use crate::state::StackState;

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
    /// The live attributes the update starts from.
    #[serde(skip)]
    pub current: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
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
    /// Outputs of resources that exist and are not being replaced: what references resolve to.
    #[serde(skip)]
    pub known_outputs: HashMap<String, BTreeMap<String, String>>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.resources.iter().any(|r| r.action != Action::NoOp)
    }

    fn finish(mut self) -> Plan {
        let mut s = Summary::default();
        for r in &self.resources {
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

/// Computes the plan from the manifest, the state and what AWS has now.
pub async fn compute(manifest: &Manifest, state: &StackState, aws: &Aws) -> Result<Plan, PlanError> {
    let live = refresh(aws, state).await?;
    Ok(diff_all(manifest, state, &live))
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
                current: None,
            },
            (Some(s), Some(l)) => {
                let mut current = l.attrs.clone();
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
                current: None,
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
        known_outputs: known,
    }
    .finish()
}

/// A plan that deletes everything the state owns.
pub fn destroy(stack: &str, state: &StackState) -> Plan {
    let resources = state
        .resources
        .values()
        .map(|s| ResourceChange {
            name: s.name.clone(),
            kind: s.kind,
            action: Action::Delete,
            physical_id: Some(s.physical_id.clone()),
            reason: s.kind.schema().retain_on_delete.then(|| RETAINED.to_string()),
            changes: Vec::new(),
            depends_on: s.depends_on.clone(),
            current: None,
        })
        .collect();
    Plan {
        format_version: FORMAT_VERSION,
        stack: stack.to_string(),
        state_serial: state.serial,
        summary: Summary::default(),
        resources,
        outputs: BTreeMap::new(),
        known_outputs: HashMap::new(),
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
