//! A pass's reads: the plan layer's tolerant comparison ([`plan::compute_tolerant`]), with each read in
//! flight tracked, so a pass that takes long can say what it is waiting on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use crate::manifest::Manifest;
use crate::plan::{self, Observation, PlanError, ResourceChange};
use crate::providers::{self, Aws, Live};
use crate::state::{ResourceState, StackState};

/// What a pass is doing now: its phase and the resources it waits on.
#[derive(Debug, Default)]
pub struct Activity {
    pub phase: &'static str,
    pub waiting_on: BTreeSet<String>,
}

/// One pass's activity, shared with the task that reports a long pass.
#[derive(Debug, Clone, Default)]
pub struct Tracker(Arc<Mutex<Activity>>);

impl Tracker {
    fn with<T>(&self, f: impl FnOnce(&mut Activity) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn phase(&self, phase: &'static str) {
        self.with(|a| {
            a.phase = phase;
            a.waiting_on.clear();
        });
    }

    pub fn waiting(&self, resource: &str, on: bool) {
        self.with(|a| {
            if on {
                a.waiting_on.insert(resource.to_string());
            } else {
                a.waiting_on.remove(resource);
            }
        });
    }

    /// (phase, resources waited on).
    pub fn snapshot(&self) -> (&'static str, Vec<String>) {
        self.with(|a| (a.phase, a.waiting_on.iter().cloned().collect()))
    }
}

/// Like [`plan::compute_tolerant`]: reads the resources `due` says, and compares. A resource that was
/// not read stands in with what the state recorded and its own change is `NoOp`.
pub async fn observe(manifest: &Manifest, state: &StackState, aws: &Aws, due: impl Fn(&str) -> bool, tracker: &Tracker) -> Observation {
    // The futures are made before the stream, so it holds no closure over `due` (keeps it `Send`).
    let reads: Vec<_> = state.resources.values().filter(|r| due(&r.name)).map(|r| read_one(aws, r, tracker)).collect();
    let reads: BTreeMap<String, Result<Option<Live>, PlanError>> =
        futures::stream::iter(reads).buffer_unordered(plan::REFRESH_CONCURRENCY).collect().await;
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
    let plan = plan::diff_all(manifest, state, &live);
    let unread = |c: &ResourceChange| state.resources.contains_key(&c.name) && !reads.get(&c.name).is_some_and(Result::is_ok);
    let plan = plan.restricted(|c| !unread(c));
    Observation { plan, reads }
}

async fn read_one(aws: &Aws, r: &ResourceState, tracker: &Tracker) -> (String, Result<Option<Live>, PlanError>) {
    tracker.waiting(&r.name, true);
    let live = providers::read(aws, r.kind, &r.physical_id).await.map_err(|source| PlanError::Refresh {
        resource: r.name.clone(),
        kind: r.kind,
        id: r.physical_id.clone(),
        source,
    });
    tracker.waiting(&r.name, false);
    (r.name.clone(), live)
}
