//! What a plan says about drift. The plan layer is the one source of truth for "what differs"; this
//! module only sorts its changes: drift of resources the state owns, resources never applied,
//! resources removed from the manifest, and which changes remediation may carry out.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::manifest::refs::contains_unknown;
use crate::manifest::schema::SENSITIVE;
use crate::plan::{Action, Plan, ResourceChange};
use crate::state::{DELETED, Drift, StackState};

/// What one pass found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    /// Field changes (and out-of-band deletions) of resources the state owns and this pass read.
    pub drift: Vec<Drift>,
    /// In the manifest, never applied: not drift.
    pub not_applied: Vec<String>,
    /// Owned, removed from the manifest: `apply` deletes them; not drift, and never remediated.
    pub removed: Vec<String>,
    /// Owned and drifted on a field that forces replacement: reported, not remediated.
    pub needs_replacement: Vec<String>,
    /// Resources read this pass.
    pub checked: BTreeSet<String>,
    /// Resources in the manifest or in the state.
    pub managed: BTreeSet<String>,
}

/// Sorts the plan's changes. `read` says whether a resource the state owns was read this pass (a
/// resource not read has a `NoOp` change in a tolerant plan, and its open events stay as they are).
pub fn findings(plan: &Plan, state: &StackState, read: impl Fn(&str) -> bool) -> Findings {
    let mut out = Findings::default();
    for c in plan.resources.iter().filter(|c| !c.deposed) {
        out.managed.insert(c.name.clone());
        let Some(owned) = state.resources.get(&c.name) else {
            if c.action == Action::Create {
                out.not_applied.push(c.name.clone());
            }
            continue;
        };
        if !read(&c.name) {
            continue;
        }
        out.checked.insert(c.name.clone());
        // Drift in fields `ignore_changes` names: recorded, marked ignored.
        out.drift.extend(field_drift(c, &c.ignored).map(|d| Drift { ignored: true, ..d }));
        match c.action {
            Action::Delete | Action::Forget => out.removed.push(c.name.clone()),
            Action::Create => out.drift.push(Drift {
                resource: c.name.clone(),
                kind: c.kind,
                field: DELETED.into(),
                expected: Value::String(format!("{} exists", owned.physical_id)),
                actual: Value::String("deleted outside reconcile".into()),
                ignored: false,
            }),
            Action::Update | Action::Replace => {
                // A replacement forced only by values not known yet follows from another change (a
                // resource to recreate), not from drift of this one.
                let known_force = c.changes.iter().any(|f| f.forces_replacement && !f.after.as_ref().is_some_and(contains_unknown));
                if c.action == Action::Replace && known_force {
                    out.needs_replacement.push(c.name.clone());
                }
                out.drift.extend(field_drift(c, &c.changes));
            }
            Action::NoOp => {}
        }
    }
    out
}

/// One drift per changed field; a change whose new value is only known after apply follows from
/// another resource's drift (e.g. the ARN of a log group to recreate) and is not drift itself.
fn field_drift<'c>(c: &'c ResourceChange, changes: &'c [crate::plan::FieldChange]) -> impl Iterator<Item = Drift> + 'c {
    changes.iter().filter(|f| !f.after.as_ref().is_some_and(contains_unknown)).map(move |f| {
        let top = f.path.split('.').next().unwrap_or_default();
        let secret = c.kind.schema().is_secret(top);
        let show = |v: &Option<Value>| match v {
            // Redacted by the plan already; kept redacted here whatever the plan does.
            Some(_) if secret => Value::String(SENSITIVE.into()),
            Some(v) => v.clone(),
            None => Value::Null,
        };
        Drift {
            resource: c.name.clone(),
            kind: c.kind,
            field: f.path.clone(),
            expected: show(&f.after),
            actual: show(&f.before),
            ignored: false,
        }
    })
}

/// What remediation carries out this pass, and what it leaves for later.
#[derive(Debug, Clone)]
pub struct Remediation {
    pub plan: Plan,
    /// Changes remediation would make but cannot finish this pass: a value they need is only known
    /// once a change remediation does not make (a replacement) has run. Left to `apply`, or to a
    /// later pass once that value is known.
    pub deferred: Vec<String>,
}

/// The part of the plan remediation carries out: updates of owned resources that were read, and
/// creates (of resources deleted outside reconcile, and of resources never applied). Never a delete,
/// never a replacement; and only what it can finish: a change whose new values refer to something
/// unknown is kept only when every change it depends on is carried out too (so a create and the
/// updates that follow from it go together, in one pass).
pub fn remediation(plan: &Plan, state: &StackState, read: impl Fn(&str) -> bool) -> Remediation {
    let wanted = |c: &ResourceChange| match c.action {
        Action::Update => state.resources.contains_key(&c.name) && read(&c.name),
        Action::Create => !state.resources.contains_key(&c.name) || read(&c.name),
        Action::NoOp | Action::Replace | Action::Delete | Action::Forget => false,
    };
    let live = plan.resources.iter().filter(|c| !c.deposed);
    let mut keep: BTreeSet<&str> = live.clone().filter(|c| wanted(c)).map(|c| c.name.as_str()).collect();
    let pending: BTreeSet<&str> = live.clone().filter(|c| c.action != Action::NoOp).map(|c| c.name.as_str()).collect();
    let needs_unknown = |c: &ResourceChange| c.changes.iter().any(|f| f.after.as_ref().is_some_and(contains_unknown));
    let mut deferred = Vec::new();
    loop {
        let stuck: Vec<&str> = live
            .clone()
            .filter(|c| keep.contains(c.name.as_str()) && needs_unknown(c))
            .filter(|c| c.depends_on.iter().any(|d| pending.contains(d.as_str()) && !keep.contains(d.as_str())))
            .map(|c| c.name.as_str())
            .collect();
        if stuck.is_empty() {
            break;
        }
        for n in stuck {
            keep.remove(n);
            deferred.push(n.to_string());
        }
    }
    Remediation { plan: plan.restricted(|c| !c.deposed && keep.contains(c.name.as_str())), deferred }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::manifest::{self, Kind, Manifest};
    use crate::plan::diff_all;
    use crate::providers::Live;
    use crate::state::ResourceState;

    const M: &str = r#"
[stack]
name = "s"

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "lg"
retention_in_days = 7

[resources.other]
type = "aws_cloudwatch_log_group"
name = "other"

[resources.new]
type = "aws_cloudwatch_log_group"
name = "new"
tags = { about = "${logs.arn}" }
"#;

    fn manifest() -> Manifest {
        manifest::parse(Path::new("/tmp/x/stack.toml"), M.to_string()).unwrap()
    }

    fn owned(m: &Manifest, name: &str) -> ResourceState {
        let r = m.resource(name).unwrap();
        ResourceState {
            name: name.into(),
            kind: r.kind,
            physical_id: r.physical_name().unwrap().into(),
            attributes: Value::Object(r.attrs.clone()),
            outputs: BTreeMap::from([("arn".to_string(), format!("arn:{name}"))]),
            depends_on: vec![],
        }
    }

    #[test]
    fn drift_is_owned_field_changes_and_deletions_not_unapplied_or_removed_resources() {
        let m = manifest();
        let mut state = StackState::default();
        for n in ["logs", "other"] {
            state.resources.insert(n.into(), owned(&m, n));
        }
        let gone = ResourceState { name: "gone".into(), kind: Kind::LogGroup, physical_id: "gone".into(), ..owned(&m, "logs") };
        state.resources.insert("gone".into(), gone);
        let mut logs = m.resource("logs").unwrap().attrs.clone();
        logs.insert("retention_in_days".into(), json!(30));
        let live = HashMap::from([
            ("logs".to_string(), Some(Live { attrs: logs, outputs: BTreeMap::new() })),
            ("other".to_string(), None),
            ("gone".to_string(), Some(Live { attrs: Default::default(), outputs: BTreeMap::new() })),
        ]);
        let plan = diff_all(&m, &state, &live);
        let f = findings(&plan, &state, |_| true);
        assert_eq!(
            f.drift,
            vec![
                Drift {
                    resource: "logs".into(),
                    kind: Kind::LogGroup,
                    field: "retention_in_days".into(),
                    expected: json!(7),
                    actual: json!(30),
                    ignored: false,
                },
                Drift {
                    resource: "other".into(),
                    kind: Kind::LogGroup,
                    field: DELETED.into(),
                    expected: json!("other exists"),
                    actual: json!("deleted outside reconcile"),
                    ignored: false,
                },
            ]
        );
        assert_eq!(f.not_applied, vec!["new".to_string()]);
        assert_eq!(f.removed, vec!["gone".to_string()]);
        assert_eq!(f.checked.len(), 3);
        assert_eq!(f.managed.len(), 4);

        // Not read this pass: not checked, no drift claimed.
        let f = findings(&plan, &state, |n| n != "logs");
        assert!(!f.checked.contains("logs") && f.drift.iter().all(|d| d.resource != "logs"));

        // Remediation: the update and both creates, never the delete.
        let fix = remediation(&plan, &state, |_| true).plan;
        let actions: Vec<_> = fix.resources.iter().map(|c| (c.name.as_str(), c.action)).collect();
        assert_eq!(actions, vec![("logs", Action::Update), ("other", Action::Create), ("new", Action::Create), ("gone", Action::NoOp)]);
    }

    #[test]
    fn remediation_leaves_out_what_waits_for_a_change_it_does_not_make() {
        let m = manifest();
        let mut state = StackState::default();
        for n in ["logs", "other", "new"] {
            let mut r = owned(&m, n);
            if n == "new" {
                r.attributes = json!({"name": "new", "tags": {"about": "arn:logs"}});
            }
            state.resources.insert(n.into(), r);
        }
        // `logs` was renamed outside reconcile (a replacement: never remediated); `new` refers to its ARN.
        let mut logs = m.resource("logs").unwrap().attrs.clone();
        logs.insert("name".into(), json!("renamed"));
        let live = HashMap::from([
            ("logs".to_string(), Some(Live { attrs: logs, outputs: BTreeMap::new() })),
            ("other".to_string(), None),
            ("new".to_string(), None),
        ]);
        let plan = diff_all(&m, &state, &live);
        let fix = remediation(&plan, &state, |_| true);
        let actions: Vec<_> = fix.plan.resources.iter().map(|c| (c.name.as_str(), c.action)).collect();
        assert_eq!(actions, vec![("logs", Action::NoOp), ("other", Action::Create), ("new", Action::NoOp)]);
        assert_eq!(fix.deferred, vec!["new".to_string()]);
    }

    #[test]
    fn secret_fields_stay_redacted_in_drift() {
        let change = ResourceChange {
            name: "f".into(),
            kind: Kind::LambdaFunction,
            action: Action::Update,
            physical_id: Some("f".into()),
            reason: None,
            changes: vec![crate::plan::FieldChange {
                path: "secret_environment.DB_PASSWORD".into(),
                before: Some(json!("hunter2")),
                after: Some(json!("hunter3")),
                forces_replacement: false,
            }],
            depends_on: vec![],
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
            ignored: vec![],
        };
        let d: Vec<_> = field_drift(&change, &change.changes).collect();
        assert_eq!((d[0].expected.clone(), d[0].actual.clone()), (json!(SENSITIVE), json!(SENSITIVE)));
    }
}
