//! A pass's reads: the plan layer's tolerant comparison ([`plan::compute_tolerant`]), with each read in
//! flight tracked, so a pass that takes long can say what it is waiting on.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::manifest::Manifest;
use crate::plan::{self, Observation};
use crate::providers::Aws;
use crate::state::StackState;

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

/// What a pass in `phase` waits on when no AWS call is in flight: the state database while it reads
/// or writes the state or waits for the stack's lock, AWS otherwise.
pub fn waits_on(phase: &str) -> &'static str {
    match phase {
        "reading the state" | "recording drift" | "waiting for the stack's lock" => "the state database",
        _ => "AWS",
    }
}

/// [`plan::compute_tolerant`] (reads the resources `due` says, and compares; a resource that was not
/// read stands in with what the state recorded and its own change is `NoOp`), with each read in
/// flight tracked.
pub async fn observe(manifest: &Manifest, state: &StackState, aws: &Aws, due: impl Fn(&str) -> bool, tracker: &Tracker) -> Observation {
    let hook = |resource: &str, on: bool| tracker.waiting(resource, on);
    plan::compute_tolerant(manifest, state, aws, due, &hook).await
}

#[cfg(test)]
mod tests {
    use super::waits_on;

    #[test]
    fn a_pass_without_aws_calls_in_flight_waits_on_what_its_phase_uses() {
        assert_eq!(waits_on("waiting for the stack's lock"), "the state database");
        assert_eq!(waits_on("reading the state"), "the state database");
        assert_eq!(waits_on("recording drift"), "the state database");
        assert_eq!(waits_on("reading AWS"), "AWS");
    }
}
