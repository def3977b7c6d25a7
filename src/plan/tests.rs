use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{Value, json};

use super::*;
use crate::manifest;
use crate::providers::Live;
use crate::state::{ResourceState, StackState};

fn manifest(text: &str) -> Manifest {
    manifest::parse(Path::new("/tmp/x/stack.toml"), text.to_string()).unwrap()
}

const M: &str = r#"
[stack]
name = "s"

[resources.role]
type = "aws_iam_role"
name = "r"
assume_role_policy = { Version = "2012-10-17" }

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "lg"
retention_in_days = 7
tags = { team = "${role.name}" }
"#;

fn live_of(m: &Manifest, name: &str, outputs: &[(&str, &str)]) -> Live {
    let r = m.resource(name).unwrap();
    let lookup = |res: &str, out: &str| Some(format!("{res}.{out}"));
    let (attrs, _) = manifest::refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
    Live { attrs: attrs.as_object().cloned().unwrap(), outputs: outputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
}

fn recorded(m: &Manifest, name: &str) -> ResourceState {
    let r = m.resource(name).unwrap();
    ResourceState {
        name: name.into(),
        kind: r.kind,
        physical_id: r.physical_name().unwrap().into(),
        attributes: Value::Object(r.attrs.clone()),
        outputs: BTreeMap::new(),
        depends_on: r.deps.iter().cloned().collect(),
    }
}

#[test]
fn empty_state_plans_creates_in_dependency_order_with_unknown_references() {
    let m = manifest(M);
    let plan = diff_all(&m, &StackState::default(), &HashMap::new());
    assert_eq!(plan.summary, Summary { create: 2, ..Summary::default() });
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    let tags = logs.changes.iter().find(|c| c.path == "tags").unwrap();
    assert_eq!(tags.after.as_ref().unwrap()["team"], json!(manifest::refs::UNKNOWN));
    assert_eq!(plan.resources[0].name, "role");
}

#[test]
fn in_sync_is_empty_and_drift_is_an_update_and_missing_is_a_create() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    live.insert("logs".to_string(), Some(live_of(&m, "logs", &[])));
    let plan = diff_all(&m, &state, &live);
    assert!(!plan.has_changes(), "{:#?}", plan.resources);

    // Out-of-band change of the retention: an update of exactly that field.
    let mut drifted = live_of(&m, "logs", &[]);
    drifted.attrs.insert("retention_in_days".into(), json!(30));
    live.insert("logs".to_string(), Some(drifted));
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Update);
    assert_eq!(logs.changes.len(), 1);
    assert_eq!((logs.changes[0].before.clone(), logs.changes[0].after.clone()), (Some(json!(30)), Some(json!(7))));

    // Deleted out of band: a create, with the reason.
    live.insert("logs".to_string(), None);
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Create);
    assert!(logs.reason.as_deref().unwrap().contains("deleted outside reconcile"));
}

#[test]
fn removed_from_manifest_is_a_delete_and_renamed_is_a_replace() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    let mut renamed = live_of(&m, "logs", &[]);
    renamed.attrs.insert("name".into(), json!("old-name"));
    live.insert("logs".to_string(), Some(renamed));
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Replace);

    let only_role = manifest(&M[..M.find("[resources.logs]").unwrap()]);
    let plan = diff_all(&only_role, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Delete);
    assert_eq!(plan.summary.delete, 1);
    let doc = serde_json::to_value(&plan).unwrap();
    assert_eq!(doc["format_version"], json!(FORMAT_VERSION));
    assert_eq!(doc["resources"][1]["action"], json!("delete"));
    assert_eq!(doc["resources"][1]["type"], json!("aws_cloudwatch_log_group"));
}

const API: &str = r#"
[stack]
name = "s"

[resources.api]
type = "aws_api_gateway_rest_api"
name = "a"
routes = [{ path = "/x", method = "GET", integration = { type = "MOCK" } }]

[resources.deployment]
type = "aws_api_gateway_deployment"
rest_api_id = "${api.id}"
triggers = { model = "${api.model_hash}" }

[resources.stage]
type = "aws_api_gateway_stage"
rest_api_id = "${api.id}"
stage_name = "prod"
deployment_id = "${deployment.id}"
"#;

/// The state and live attributes of `API` as applied.
fn api_applied(m: &Manifest) -> (StackState, HashMap<String, Option<Live>>) {
    let api = m.resource("api").unwrap();
    let hash = crate::providers::derived_outputs(api.kind, &api.attrs)["model_hash"].clone();
    let mut state = StackState::default();
    let mut live = HashMap::new();
    for (name, id, outputs) in [
        ("api", "a1", vec![("id", "a1"), ("model_hash", hash.as_str())]),
        ("deployment", "a1/d1", vec![("id", "d1")]),
        ("stage", "a1/prod", vec![("name", "prod")]),
    ] {
        let r = m.resource(name).unwrap();
        let lookup = |res: &str, out: &str| match (res, out) {
            ("api", "id") => Some("a1".to_string()),
            ("api", "model_hash") => Some(hash.clone()),
            ("deployment", "id") => Some("d1".to_string()),
            _ => None,
        };
        let (attrs, unknown) = manifest::refs::resolve(&Value::Object(r.attrs.clone()), &lookup);
        assert!(!unknown);
        let outputs: BTreeMap<String, String> = outputs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        state.resources.insert(
            name.into(),
            ResourceState {
                name: name.into(),
                kind: r.kind,
                physical_id: id.into(),
                attributes: attrs.clone(),
                outputs: outputs.clone(),
                depends_on: r.deps.iter().cloned().collect(),
            },
        );
        let mut live_attrs = attrs.as_object().cloned().unwrap();
        live_attrs.remove("triggers"); // not readable from AWS
        live.insert(name.to_string(), Some(Live { attrs: live_attrs, outputs }));
    }
    (state, live)
}

#[test]
fn a_route_change_replaces_the_deployment_first_and_moves_the_stage() {
    let m = manifest(API);
    let (state, live) = api_applied(&m);
    assert!(!diff_all(&m, &state, &live).has_changes());

    let changed = manifest(&API.replace("path = \"/x\"", "path = \"/y\""));
    let plan = diff_all(&changed, &state, &live);
    let actions: Vec<_> = plan.resources.iter().map(|r| (r.name.as_str(), r.action)).collect();
    assert_eq!(actions, vec![("api", Action::Update), ("deployment", Action::Replace), ("stage", Action::Update)]);
    assert!(plan.resources[1].reason.as_deref().unwrap().contains("created first"));
    let stage = &plan.resources[2];
    assert_eq!(stage.changes[0].path, "deployment_id");
    assert_eq!(stage.changes[0].after, Some(json!(manifest::refs::UNKNOWN)));

    // The executor creates the new deployment, moves the stage, then deletes the old one.
    let (nodes, deps) = crate::apply::graph(&plan, &state);
    let labels: Vec<_> = nodes.iter().map(|n| n.label()).collect();
    assert_eq!(labels, vec!["api", "deployment", "deployment (previous)", "stage"]);
    assert_eq!(deps[1], vec![0]); // new deployment after the API update
    assert_eq!(deps[3], vec![0, 1]); // stage after the API update and the new deployment
    assert_eq!(deps[2], vec![1, 3]); // old deployment after the new one and the stage move
}

#[test]
fn an_unknown_route_value_makes_the_model_hash_unknown_so_the_deployment_is_still_replaced() {
    // The API's live outputs carry the old hash; its routes now refer to a log group being created.
    let m = manifest(
        &API.replace("integration = { type = \"MOCK\" }", "integration = { type = \"MOCK\", uri = \"${group.arn}\" }")
            .replace("[resources.api]", "[resources.group]\ntype = \"aws_cloudwatch_log_group\"\nname = \"x\"\n\n[resources.api]"),
    );
    let mut state = StackState::default();
    let mut live = HashMap::new();
    let api = m.resource("api").unwrap();
    let dep = m.resource("deployment").unwrap();
    let mut api_attrs = api.attrs.clone();
    api_attrs.insert("routes".into(), json!([]));
    let outputs: BTreeMap<String, String> = [("id", "a1"), ("model_hash", "old")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    state.resources.insert(
        "api".into(),
        ResourceState {
            name: "api".into(),
            kind: api.kind,
            physical_id: "a1".into(),
            attributes: Value::Object(api_attrs.clone()),
            outputs: outputs.clone(),
            depends_on: vec![],
        },
    );
    live.insert("api".to_string(), Some(Live { attrs: api_attrs, outputs }));
    let dep_attrs = json!({"rest_api_id": "a1", "description": "", "triggers": {"model": "old"}});
    state.resources.insert(
        "deployment".into(),
        ResourceState {
            name: "deployment".into(),
            kind: dep.kind,
            physical_id: "a1/d1".into(),
            attributes: dep_attrs.clone(),
            outputs: BTreeMap::from([("id".into(), "d1".into())]),
            depends_on: vec!["api".into()],
        },
    );
    let mut dep_live = dep_attrs.as_object().cloned().unwrap();
    dep_live.remove("triggers");
    live.insert("deployment".to_string(), Some(Live { attrs: dep_live, outputs: BTreeMap::from([("id".into(), "d1".into())]) }));
    let plan = diff_all(&m, &state, &live);
    let d = plan.resources.iter().find(|r| r.name == "deployment").unwrap();
    assert_eq!(d.action, Action::Replace, "{:#?}", plan.resources);
    // As docs/manifest.md ("Deployments and route changes") says: the trigger is known after apply and
    // the new deployment is made in this run, created first.
    assert_eq!(d.replace_order(), Some(ReplaceOrder::CreateBeforeDestroy));
    let text = render::human(&plan);
    assert!(text.contains("+/- deployment (aws_api_gateway_deployment) [a1/d1] will be replaced (new one created first)"), "{text}");
    assert!(text.contains("    ~ triggers.model = \"old\" → \"(known after apply)\"  # forces replacement"), "{text}");
    let reference = include_str!("../../docs/manifest.md");
    assert!(reference.contains("counts as changed and the plan replaces the deployment"), "docs/manifest.md no longer says what plan does");
}

#[test]
fn output_changes_are_planned_against_the_recorded_outputs() {
    let m = manifest(&format!("{M}\n[outputs]\nrole = \"${{role.name}}\"\nlogs = \"${{logs.name}}\"\nfixed = \"x\"\n"));
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    live.insert("logs".to_string(), Some(live_of(&m, "logs", &[("name", "lg")])));
    state.outputs =
        BTreeMap::from([("role".to_string(), "role.name".to_string()), ("logs".into(), "old".into()), ("gone".into(), "g".into())]);
    let plan = diff_all(&m, &state, &live);
    assert_eq!(plan.summary, Summary { no_op: 2, ..Summary::default() }, "{:#?}", plan.resources);
    assert!(plan.has_changes(), "output changes alone are changes");
    let got: Vec<_> = plan.output_changes.iter().map(|c| (c.name.as_str(), c.action, c.before.as_deref(), c.after.as_deref())).collect();
    assert_eq!(
        got,
        vec![
            ("fixed", Action::Create, None, Some("x")),
            ("gone", Action::Delete, Some("g"), None),
            ("logs", Action::Update, Some("old"), Some("lg")),
        ]
    );
    let text = render::human(&plan);
    assert!(text.contains("Outputs:\n  + fixed = \"x\"\n  - gone  = \"g\"\n  ~ logs  = \"old\" → \"lg\"\n"), "{text}");
    assert!(text.ends_with("0 to delete, 2 unchanged; 3 outputs to change.\n"), "{text}");

    // In sync: nothing to do; a value that depends on a new resource is known after apply.
    state.outputs = plan.outputs.clone();
    assert!(!diff_all(&m, &state, &live).has_changes());
    live.insert("logs".to_string(), None);
    let plan = diff_all(&m, &state, &live);
    let logs = plan.output_changes.iter().find(|c| c.name == "logs").unwrap();
    assert_eq!((logs.action, logs.after.as_deref(), logs.known_after_apply), (Action::Update, None, true));
    assert!(plan.restricted(|_| true).output_changes.is_empty(), "remediation never records outputs");
}

#[test]
fn a_singleton_another_stack_owns_is_refused_naming_the_owner() {
    let m = manifest(
        "[stack]\nname = \"s\"\n\n[resources.acct]\ntype = \"aws_api_gateway_account\"\ncloudwatch_role_arn = \"arn:aws:iam::1:role/x\"\n",
    );
    let mut state = StackState::default();
    assert!(singleton_conflicts(&m, &state).is_empty());
    state.foreign_singletons.push(crate::state::Owner {
        stack: "other".into(),
        resource: "account".into(),
        kind: Kind::ApiGatewayAccount,
        physical_id: "account".into(),
    });
    let refused = singleton_conflicts(&m, &state);
    assert_eq!(refused.len(), 1);
    let text = refused[0].to_string();
    assert!(text.starts_with("/tmp/x/stack.toml:4:12: `acct` (aws_api_gateway_account) is a region-wide setting"), "{text}");
    assert!(text.contains("stack `other` already manages it (its resource `account` in this state file)"), "{text}");
    assert!(text.contains("remove `acct` (and the `depends_on` entries naming it) from this manifest"), "{text}");
}

#[test]
fn a_permission_whose_function_reference_resolves_to_anothers_literal_is_refused_before_any_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    let text = String::from(
        "[stack]\nname = \"s\"\n\n[resources.fn]\ntype = \"aws_lambda_function\"\nfunction_name = \"Hello\"\nruntime = \"python3.13\"\n\
         handler = \"index.handler\"\nrole = \"arn:aws:iam::1:role/r\"\ncode = \"index.py\"\n\n\
         [resources.by_name]\ntype = \"aws_lambda_permission\"\nfunction_name = \"Hello\"\nstatement_id = \"Allow\"\nprincipal = \"apigateway.amazonaws.com\"\n\n\
         [resources.by_ref]\ntype = \"aws_lambda_permission\"\nfunction_name = \"${fn.name}\"\nstatement_id = \"Allow\"\nprincipal = \"apigateway.amazonaws.com\"\n",
    );
    let m = manifest::parse(&dir.path().join("stack.toml"), text).unwrap();
    let mut state = StackState::default();
    // The function is not made yet: its name is unknown, and the state's guard stands behind.
    assert!(identity_conflicts(&m, &state).is_empty());
    let mut f = recorded(&m, "fn");
    f.outputs.insert("name".into(), "Hello".into());
    state.resources.insert("fn".into(), f);
    let refused = identity_conflicts(&m, &state);
    assert_eq!(refused.len(), 1);
    let text = refused[0].to_string();
    assert!(
        text.contains("stack.toml:18:12: `by_ref` (aws_lambda_permission) is, once its references are resolved, the same resource in AWS as `by_name` (")
            && text.contains("stack.toml:12:12): function_name Hello, statement_id Allow"),
        "{text}"
    );
}

#[test]
fn an_incomplete_resource_is_finished_even_when_no_field_differs() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    state.incomplete.insert("logs".into(), "logs:PutRetentionPolicy: InvalidParameterException: no".into());
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    live.insert("logs".to_string(), Some(live_of(&m, "logs", &[])));
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Update);
    assert!(logs.changes.is_empty());
    assert_eq!(
        logs.reason.as_deref(),
        Some("incomplete: finishing (its create did not finish: logs:PutRetentionPolicy: InvalidParameterException: no)")
    );
    assert_eq!(plan.summary, Summary { update: 1, no_op: 1, ..Summary::default() });
    assert!(render::human(&plan).contains("~ logs (aws_cloudwatch_log_group) [lg] will be updated in place: incomplete: finishing"));
}

#[test]
fn an_incomplete_function_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    let text = "[stack]\nname = \"s\"\n\n[resources.f]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\n\
                handler = \"index.handler\"\nrole = \"arn:aws:iam::123456789012:role/r\"\ncode = \"index.py\"\n";
    let m = manifest::parse(&dir.path().join("stack.toml"), text.to_string()).unwrap();
    let mut state = StackState::default();
    state.resources.insert("f".into(), recorded(&m, "f"));
    state.incomplete.insert("f".into(), "lambda:GetFunction (until Active): timed out".into());
    let live = HashMap::from([(
        "f".to_string(),
        Some(Live { attrs: state.resources["f"].attributes.as_object().cloned().unwrap(), outputs: BTreeMap::new() }),
    )]);
    let plan = diff_all(&m, &state, &live);
    assert_eq!(plan.resources[0].action, Action::Replace, "{:#?}", plan.resources);
    assert!(plan.resources[0].reason.as_deref().unwrap().starts_with("incomplete: replacing"));
}

/// A function whose `secret_environment` held DB_PASS when last applied (the state keeps its hash)
/// and whose live environment still has the value.
fn secret_function(env: &str) -> (tempfile::TempDir, Manifest, StackState, HashMap<String, Option<Live>>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.py"), "def handler(e, c): pass\n").unwrap();
    let text = format!(
        "[stack]\nname = \"s\"\n\n[resources.f]\ntype = \"aws_lambda_function\"\nfunction_name = \"f\"\nruntime = \"python3.13\"\n\
         handler = \"index.handler\"\nrole = \"arn:aws:iam::123456789012:role/r\"\ncode = \"index.py\"\n{env}\n"
    );
    let m = manifest::parse(&dir.path().join("stack.toml"), text).unwrap();
    let r = m.resource("f").unwrap();
    let mut attrs = r.attrs.clone();
    attrs.insert("environment".into(), json!({"KEEP": "1"}));
    attrs.insert("secret_environment".into(), json!({"DB_PASS": "plain-secret-value"}));
    crate::state::fingerprint::fingerprint_secrets(r.kind, &mut attrs, None);
    let mut state = StackState::default();
    state.resources.insert(
        "f".into(),
        ResourceState {
            name: "f".into(),
            kind: r.kind,
            physical_id: "f".into(),
            attributes: Value::Object(attrs.clone()),
            outputs: BTreeMap::new(),
            depends_on: vec![],
        },
    );
    let mut live = attrs;
    live.remove("secret_environment");
    live.insert("environment".into(), json!({"KEEP": "1", "DB_PASS": "plain-secret-value"}));
    let live = HashMap::from([("f".to_string(), Some(Live { attrs: live, outputs: BTreeMap::new() }))]);
    (dir, m, state, live)
}

#[test]
fn a_key_that_was_secret_stays_masked_once_removed_or_moved_to_the_plain_environment() {
    // Removed from the manifest: its removal is a secret change, the live value never shows.
    let (_dir, m, state, live) = secret_function("environment = { KEEP = \"1\" }");
    let plan = diff_all(&m, &state, &live);
    let f = &plan.resources[0];
    assert_eq!(f.action, Action::Update);
    let paths: Vec<_> = f.changes.iter().map(|c| (c.path.as_str(), c.before.clone(), c.after.clone())).collect();
    assert_eq!(paths, vec![("secret_environment.DB_PASS", Some(json!(manifest::schema::SENSITIVE)), None)]);
    let shown = format!("{}{}", serde_json::to_string(&plan).unwrap(), render::human(&plan));
    assert!(!shown.contains("plain-secret-value"), "{shown}");

    // Moved to `environment`: the old (secret) value is masked, the new plain one is shown.
    let (_dir, m, state, live) = secret_function("environment = { KEEP = \"1\", DB_PASS = \"now-plain\" }");
    let plan = diff_all(&m, &state, &live);
    let shown = format!("{}{}", serde_json::to_string(&plan).unwrap(), render::human(&plan));
    assert!(!shown.contains("plain-secret-value"), "{shown}");
    let paths: Vec<_> = plan.resources[0].changes.iter().map(|c| (c.path.as_str(), c.before.clone(), c.after.clone())).collect();
    assert_eq!(
        paths,
        vec![
            ("environment.DB_PASS", None, Some(json!("now-plain"))),
            ("secret_environment.DB_PASS", Some(json!(manifest::schema::SENSITIVE)), None),
        ]
    );

    // Still secret: in sync.
    let (_dir, m, state, live) =
        secret_function("environment = { KEEP = \"1\" }\nsecret_environment = { DB_PASS = \"plain-secret-value\" }");
    assert!(!diff_all(&m, &state, &live).has_changes());
}

#[test]
fn a_replacement_creates_first_only_when_the_new_one_has_another_name() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    // Renamed log group: a new name, so the new one is created first.
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    let mut renamed = live_of(&m, "logs", &[]);
    renamed.attrs.insert("name".into(), json!("old-name"));
    live.insert("logs".to_string(), Some(renamed));
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!((logs.action, logs.create_before_destroy), (Action::Replace, true));
    // Same role name, a new path: the name must be freed first.
    let mut role = live_of(&m, "role", &[("name", "role.name")]);
    role.attrs.insert("path".into(), json!("/old/"));
    live.insert("role".to_string(), Some(role));
    let plan = diff_all(&m, &state, &live);
    let role = plan.resources.iter().find(|r| r.name == "role").unwrap();
    assert_eq!((role.action, role.create_before_destroy), (Action::Replace, false));
    assert!(role.reason.as_deref().unwrap().contains("deleted first"));
}

#[test]
fn a_renamed_key_with_the_same_physical_name_moves_instead_of_delete_and_create() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    live.insert("logs".to_string(), Some(live_of(&m, "logs", &[])));
    let renamed = manifest(&M.replace("[resources.logs]", "[resources.log_group]"));
    let plan = diff_all(&renamed, &state, &live);
    assert_eq!(plan.resources.len(), 2, "no delete of the old key: {:#?}", plan.resources);
    let moved = plan.resources.iter().find(|r| r.name == "log_group").unwrap();
    assert_eq!(moved.moved_from.as_deref(), Some("logs"));
    assert_eq!(moved.physical_id.as_deref(), Some("lg"));
    // Nothing changes in AWS: the ownership tag keeps naming the key it was created under.
    assert_eq!(moved.action, Action::NoOp, "{moved:#?}");
    assert!(moved.changes.is_empty());
    assert!(plan.has_changes());
    assert_eq!(plan.summary.moved, 1);
    // Another physical name is no move: a create and a delete.
    let other = manifest(&M.replace("[resources.logs]", "[resources.log_group]").replace("name = \"lg\"", "name = \"lg2\""));
    let plan = diff_all(&other, &state, &live);
    assert_eq!(plan.summary.moved, 0);
    assert_eq!((plan.summary.create, plan.summary.delete), (1, 1));
}

#[test]
fn a_replacement_is_planned_create_first_or_delete_first_and_shown_that_way() {
    // A forced replacement of a deployment (its triggers change): the new one is created first.
    let m = manifest(API);
    let (state, live) = api_applied(&m);
    let plan = diff_all(&manifest(&API.replace("path = \"/x\"", "path = \"/y\"")), &state, &live);
    let deployment = plan.resources.iter().find(|r| r.name == "deployment").unwrap();
    assert_eq!(deployment.replace_order(), Some(ReplaceOrder::CreateBeforeDestroy));
    let text = render::human(&plan);
    assert!(text.contains("+/- deployment (aws_api_gateway_deployment) [a1/d1] will be replaced (new one created first)"), "{text}");
    let doc = serde_json::to_value(&plan).unwrap();
    let d = doc["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployment").unwrap();
    assert_eq!((&d["action"], &d["create_before_destroy"]), (&json!("replace"), &json!(true)));
    // Apply runs it as the plan says: two operations, the old one last.
    let (nodes, _) = crate::apply::graph(&plan, &state);
    let steps: Vec<_> = nodes.iter().filter(|n| n.change.name == "deployment").map(|n| n.step).collect();
    assert_eq!(steps, vec![crate::apply::Step::CreateNew, crate::apply::Step::DeleteOld]);

    // A role replaced under the same name (a new path forces it): the name must be freed first.
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut role = live_of(&m, "role", &[("name", "role.name")]);
    role.attrs.insert("path".into(), json!("/old/"));
    let live = HashMap::from([("role".to_string(), Some(role)), ("logs".to_string(), Some(live_of(&m, "logs", &[])))]);
    let plan = diff_all(&m, &state, &live);
    let role = plan.resources.iter().find(|r| r.name == "role").unwrap();
    assert_eq!(role.replace_order(), Some(ReplaceOrder::DeleteBeforeCreate));
    let text = render::human(&plan);
    assert!(text.contains("-/+ role (aws_iam_role) [r] will be replaced (old one deleted first)"), "{text}");
    let doc = serde_json::to_value(role).unwrap();
    assert_eq!((&doc["action"], &doc["create_before_destroy"]), (&json!("replace"), &json!(false)));
    let (nodes, _) = crate::apply::graph(&plan, &state);
    let steps: Vec<_> = nodes.iter().filter(|n| n.change.name == "role").map(|n| n.step).collect();
    assert_eq!(steps, vec![crate::apply::Step::Whole]);
    // Nothing else is a replacement.
    assert!(plan.resources.iter().filter(|r| r.name != "role").all(|r| r.replace_order().is_none()));
}

#[test]
fn an_update_carries_its_physical_id_current_values_and_unresolved_attributes() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut drifted = live_of(&m, "logs", &[]);
    drifted.attrs.insert("retention_in_days".into(), json!(30));
    let live =
        HashMap::from([("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")]))), ("logs".to_string(), Some(drifted))]);
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Update);
    assert_eq!(logs.physical_id.as_deref(), Some("lg"));
    assert_eq!(logs.current.as_ref().unwrap()["retention_in_days"], json!(30));
    let desired = &logs.desired.as_ref().unwrap().attrs;
    assert_eq!((&desired["retention_in_days"], &desired["tags"]["team"]), (&json!(7), &json!("${role.name}")));
    assert_eq!((logs.artifact_sha256.as_deref(), logs.protect), (None, false));
    // The JSON document shows what the update makes, references unresolved; AWS's values stay out.
    let doc = serde_json::to_value(logs).unwrap();
    assert_eq!(doc["desired"]["tags"]["team"], json!("${role.name}"));
    assert!(doc.get("current").is_none(), "{doc}");

    // Apply takes the update from the plan alone.
    let node = crate::apply::Node { change: logs, step: crate::apply::Step::Whole };
    let crate::apply::Op::Update { id, current, make } = crate::apply::prepare(&node, &plan.artifacts).unwrap() else {
        panic!("not an update")
    };
    assert_eq!((id, &current["retention_in_days"], &make.attrs["tags"]["team"]), ("lg", &json!(30), &json!("${role.name}")));
    assert!(make.artifact.is_none());

    // A delete carries its id, and what the manifest no longer has carries no attributes.
    let plan = diff_all(&manifest(&M.replace("[resources.logs]", "[resources.logs]\nprotect = true")), &state, &live);
    assert!(plan.resources.iter().find(|r| r.name == "logs").unwrap().protect);
    let without_logs = manifest(M.split("[resources.logs]").next().unwrap());
    let plan = diff_all(&without_logs, &state, &live);
    let gone = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!((gone.action, gone.physical_id.as_deref(), gone.desired.is_none()), (Action::Delete, Some("lg"), true));
    let node = crate::apply::Node { change: gone, step: crate::apply::Step::Whole };
    assert!(matches!(crate::apply::prepare(&node, &plan.artifacts), Ok(crate::apply::Op::Delete { id: "lg", current: Some(_) })));
}

#[test]
fn a_function_change_carries_its_code_hash_and_apply_takes_the_code_from_the_plan() {
    let (_dir, m, state, live) = secret_function("environment = { KEEP = \"1\" }\nsecret_environment = { DB_PASS = \"rotated-value\" }");
    let plan = diff_all(&m, &state, &live);
    let f = &plan.resources[0];
    assert_eq!(f.action, Action::Update);
    let sha = m.resource("f").unwrap().artifact.as_ref().unwrap().sha256.clone();
    assert_eq!(f.artifact_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(plan.artifacts.keys().collect::<Vec<_>>(), vec![&sha]);
    // In JSON: the hash, never the zip, and the secret masked.
    let doc = serde_json::to_value(&plan).unwrap();
    assert_eq!(doc["resources"][0]["artifact_sha256"], json!(sha));
    assert_eq!(doc["resources"][0]["desired"]["secret_environment"]["DB_PASS"], json!(manifest::schema::SENSITIVE));
    assert_eq!(doc["resources"][0]["desired"]["environment"]["KEEP"], json!("1"));
    let text = doc.to_string();
    assert!(!text.contains("rotated-value") && !text.contains("plain-secret-value") && !text.contains("\"artifacts\""), "{text}");

    let node = crate::apply::Node { change: f, step: crate::apply::Step::Whole };
    let crate::apply::Op::Update { make, .. } = crate::apply::prepare(&node, &plan.artifacts).unwrap() else { panic!("not an update") };
    assert_eq!(make.artifact.map(|a| a.sha256.as_str()), Some(sha.as_str()));
    assert_eq!(make.attrs["secret_environment"]["DB_PASS"], json!("rotated-value"));
    // Code the plan does not carry is refused, not looked for elsewhere.
    let err = crate::apply::prepare(&node, &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(&err, crate::apply::ApplyError::MissingFromPlan { action: "update", what: crate::apply::Missing::Artifact(s), .. } if *s == sha),
        "{err}"
    );
}

#[test]
fn apply_refuses_a_change_without_the_id_it_acts_on_before_any_call() {
    use crate::apply::{ApplyError, Missing, Node, Step, prepare};
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut drifted = live_of(&m, "logs", &[]);
    drifted.attrs.insert("retention_in_days".into(), json!(30));
    let live =
        HashMap::from([("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")]))), ("logs".to_string(), Some(drifted))]);
    let plan = diff_all(&m, &state, &live);
    let mut update = plan.resources.iter().find(|r| r.name == "logs").unwrap().clone();
    update.physical_id = None;
    let err = prepare(&Node { change: &update, step: Step::Whole }, &plan.artifacts).unwrap_err();
    assert!(
        matches!(&err, ApplyError::MissingFromPlan { resource, action: "update", what: Missing::PhysicalId } if resource == "logs"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "logs: the plan's update carries no physical id; nothing was sent to AWS (a plan this version computes always does: \
         please report it with `plan --json`)"
    );
    // The executor refuses the whole plan before its first operation starts (it holds no AWS client
    // or state store at that point): every operation fails, the one lacking its id says why.
    assert!(crate::apply::schedule(&plan, &state, &crate::apply::Silent).is_ok());
    let mut broken = plan.clone();
    broken.resources.iter_mut().find(|r| r.name == "logs").unwrap().physical_id = None;
    broken.resources.iter_mut().find(|r| r.name == "role").unwrap().action = Action::Update;
    let refused = crate::apply::schedule(&broken, &state, &crate::apply::Silent).unwrap_err();
    let outcomes: Vec<_> = refused.outcomes.iter().map(|o| (o.name.as_str(), o.status, o.started_ms, o.error.clone().unwrap())).collect();
    assert_eq!(
        outcomes,
        vec![
            (
                "role",
                crate::apply::Status::Failed,
                None,
                format!("not started: another operation of this plan is refused ({err}); nothing was changed")
            ),
            ("logs", crate::apply::Status::Failed, None, err.to_string()),
        ]
    );
    assert!(refused.failed() && refused.outputs.is_empty());

    // Never an empty id in its place, for any action that acts on one.
    let mut delete = ResourceChange::new("old", Kind::LogGroup, Action::Delete);
    let err = prepare(&Node { change: &delete, step: Step::Whole }, &plan.artifacts).unwrap_err();
    assert!(matches!(err, ApplyError::MissingFromPlan { action: "delete", what: Missing::PhysicalId, .. }), "{err}");
    delete.physical_id = Some("lg".into());
    assert!(prepare(&Node { change: &delete, step: Step::Whole }, &plan.artifacts).is_ok());
    let mut replace = update.clone();
    replace.action = Action::Replace;
    replace.create_before_destroy = true;
    for step in [Step::CreateNew, Step::DeleteOld] {
        let err = prepare(&Node { change: &replace, step }, &plan.artifacts).unwrap_err();
        assert!(matches!(err, ApplyError::MissingFromPlan { what: Missing::PhysicalId, .. }), "{err}");
    }
    // An update without the live values it starts from, or a create without attributes, is refused too.
    let mut blind = plan.resources.iter().find(|r| r.name == "logs").unwrap().clone();
    blind.current = None;
    let err = prepare(&Node { change: &blind, step: Step::Whole }, &plan.artifacts).unwrap_err();
    assert!(matches!(err, ApplyError::MissingFromPlan { what: Missing::Current, .. }), "{err}");
    let empty = ResourceChange::new("new", Kind::LogGroup, Action::Create);
    let err = prepare(&Node { change: &empty, step: Step::Whole }, &plan.artifacts).unwrap_err();
    assert!(matches!(err, ApplyError::MissingFromPlan { action: "create", what: Missing::Desired, .. }), "{err}");
}

#[test]
fn a_key_an_older_state_recorded_that_the_schema_no_longer_knows_stays_out_of_the_update() {
    let m = manifest(M);
    let mut state = StackState::default();
    let mut logs = recorded(&m, "logs");
    logs.attributes.as_object_mut().unwrap().insert("retired_field".into(), json!("x"));
    state.resources.insert("logs".into(), logs);
    let mut drifted = live_of(&m, "logs", &[]);
    drifted.attrs.insert("retention_in_days".into(), json!(30));
    let live = HashMap::from([("logs".to_string(), Some(drifted))]);
    let plan = diff_all(&m, &state, &live);
    let change = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(change.action, Action::Update);
    let current = change.current.as_ref().expect("an update carries the current values");
    assert!(!current.contains_key("retired_field"), "{current:?}");
    crate::providers::Kind::LogGroup.provider().normalize(current).expect("the update's current values fit the kind's spec");
}

#[test]
fn ignored_fields_are_not_planned_and_apply_starts_from_aws_values() {
    let text = M.replace("retention_in_days = 7", "retention_in_days = 7\nignore_changes = [\"retention_in_days\", \"tags.owner\"]");
    let m = manifest(&text);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    let mut drifted = live_of(&m, "logs", &[]);
    drifted.attrs.insert("retention_in_days".into(), json!(30));
    drifted.attrs["tags"].as_object_mut().unwrap().insert("owner".into(), json!("ops"));
    live.insert("logs".to_string(), Some(drifted.clone()));
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::NoOp, "{logs:#?}");
    let ignored: Vec<_> = logs.ignored.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(ignored, vec!["retention_in_days", "tags.owner"]);
    assert!(!plan.has_changes());

    // With a change that is not ignored, the update starts from AWS's values for the ignored ones.
    drifted.attrs["tags"].as_object_mut().unwrap().insert("team".into(), json!("other"));
    live.insert("logs".to_string(), Some(drifted));
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Update);
    let paths: Vec<_> = logs.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, vec!["tags.team"]);
    let desired = &logs.desired.as_ref().unwrap().attrs;
    assert_eq!(desired["retention_in_days"], json!(30));
    assert_eq!(desired["tags"]["owner"], json!("ops"));
    assert_eq!(desired["tags"]["team"], json!("${role.name}"));

    // A create sends the manifest's values.
    live.insert("logs".to_string(), None);
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Create);
    assert_eq!(logs.desired.as_ref().unwrap().attrs["retention_in_days"], json!(7));
}

#[test]
fn an_explicit_moved_entry_moves_any_kind_and_wins_over_a_match_by_name() {
    let m = manifest(API);
    let (state, live) = api_applied(&m);
    // Without an entry, a renamed REST API key with a new name (AWS assigns its id) is a create and a delete.
    let renamed =
        API.replace("[resources.api]", "[resources.public_api]").replace("name = \"a\"", "name = \"b\"").replace("${api.", "${public_api.");
    let plan = diff_all(&manifest(&renamed), &state, &live);
    assert_eq!((plan.summary.create, plan.summary.delete, plan.summary.moved), (1, 1, 0), "{:#?}", plan.resources);
    // With one, it moves.
    let with = format!("{renamed}\n[[moved]]\nfrom = \"api\"\nto = \"public_api\"\n");
    let plan = diff_all(&manifest(&with), &state, &live);
    assert_eq!((plan.summary.create, plan.summary.delete, plan.summary.moved), (0, 0, 1), "{:#?}", plan.resources);
    let api = plan.resources.iter().find(|r| r.name == "public_api").unwrap();
    assert_eq!((api.moved_from.as_deref(), api.physical_id.as_deref(), api.action), (Some("api"), Some("a1"), Action::Update));
    assert!(plan.warnings.is_empty());
    // An entry that matches nothing is a warning.
    let stray = format!("{API}\n[[moved]]\nfrom = \"nothing\"\nto = \"api\"\n");
    let mut empty = state.clone();
    empty.resources.clear();
    let plan = diff_all(&manifest(&stray), &empty, &HashMap::new());
    assert_eq!(plan.warnings.len(), 1);
    assert!(plan.warnings[0].contains("matches nothing"), "{:?}", plan.warnings);
    assert!(crate::plan::render::human(&plan).contains("Warning: /tmp/x/stack.toml:"));
}

#[test]
fn explicit_move_takes_precedence_over_a_physical_name_match() {
    // Two old keys could be taken over by name; the entry decides which key moves where.
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    live.insert("logs".to_string(), Some(live_of(&m, "logs", &[])));
    let text = format!("{}\n[[moved]]\nfrom = \"logs\"\nto = \"log_group\"\n", M.replace("[resources.logs]", "[resources.log_group]"));
    let plan = diff_all(&manifest(&text), &state, &live);
    let moved = plan.resources.iter().find(|r| r.name == "log_group").unwrap();
    assert_eq!(moved.moved_from.as_deref(), Some("logs"));
    assert_eq!(plan.summary.moved, 1);
}

#[test]
fn retained_resources_are_forgotten_not_deleted() {
    let text = M.replace("retention_in_days = 7", "retention_in_days = 7\nretain_on_delete = true");
    let m = manifest(&text);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    live.insert("logs".to_string(), Some(live_of(&m, "logs", &[])));
    // The state does not record it yet: a state-only change.
    let plan = diff_all(&m, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert!(logs.records_retain && logs.retain_on_delete && logs.action == Action::NoOp);
    assert!(plan.has_changes());
    assert!(crate::plan::render::human(&plan).contains("will be recorded as retain_on_delete"));
    state.retained.insert("logs".into());
    let plan = diff_all(&m, &state, &live);
    assert!(!plan.has_changes());
    // Removed from the manifest: forgotten.
    let only_role = manifest(&M[..M.find("[resources.logs]").unwrap()]);
    let plan = diff_all(&only_role, &state, &live);
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Forget);
    assert_eq!((plan.summary.delete, plan.summary.forget), (0, 1));
    let text = crate::plan::render::human(&plan);
    assert!(text.contains("logs (aws_cloudwatch_log_group) [lg] will be forgotten (left in AWS, not deleted)"), "{text}");
    assert_eq!(serde_json::to_value(&plan).unwrap()["resources"][1]["action"], json!("forget"));
    // Destroyed: forgotten too, the role deleted.
    let insp = Inspection { state: state.clone(), live: live.clone(), ..Inspection::default() };
    let plan = destroy("s", &insp);
    let action = |n: &str| plan.resources.iter().find(|r| r.name == n).unwrap().action;
    assert_eq!((action("logs"), action("role")), (Action::Forget, Action::Delete));
}

#[test]
fn replace_forces_a_replacement_without_a_diff_and_what_refers_to_it_follows() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    let mut live = HashMap::new();
    live.insert("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name")])));
    live.insert("logs".to_string(), Some(live_of(&m, "logs", &[])));
    let replace = std::collections::BTreeSet::from(["role".to_string()]);
    let plan = diff_all_with(&m, &state, &live, &replace);
    let role = plan.resources.iter().find(|r| r.name == "role").unwrap();
    assert_eq!(role.action, Action::Replace);
    assert!(role.changes.is_empty(), "nothing differs: {:?}", role.changes);
    // Same name: the old one goes first.
    assert_eq!(role.replace_order(), Some(ReplaceOrder::DeleteBeforeCreate));
    assert_eq!(
        role.reason.as_deref(),
        Some("requested by --replace; it keeps its name, so the old one is deleted first, then the new one is created")
    );
    // The log group's tag refers to the role's name: known only after the replacement.
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!(logs.action, Action::Update, "{logs:?}");
    assert_eq!(logs.changes.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["tags.team"]);
}

#[test]
fn a_targeted_plan_holds_the_targets_and_their_dependencies_only() {
    let text = format!(
        "{M}\n[resources.other]\ntype = \"aws_cloudwatch_log_group\"\nname = \"other\"\nretention_in_days = 7\n\n[outputs]\nlogs = \"${{logs.arn}}\"\nother = \"${{other.arn}}\"\n"
    );
    let m = manifest(&text);
    let mut state = StackState::default();
    let mut gone = ResourceState { name: "gone".into(), physical_id: "gone-lg".into(), ..recorded(&m, "other") };
    gone.attributes["name"] = json!("gone-lg");
    let mut gone_live = live_of(&m, "other", &[]);
    gone_live.attrs.insert("name".into(), json!("gone-lg"));
    state.resources.insert("gone".into(), gone);
    state.outputs.insert("other".into(), "arn:recorded".into());
    let mut live = HashMap::new();
    live.insert("gone".to_string(), Some(gone_live));
    let plan = diff_all(&m, &state, &live).finish();
    let targeted = plan.clone().targeted(&m, &state.outputs, &["logs".to_string()]);
    let names: Vec<&str> = targeted.resources.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["role", "logs"], "the target and what it depends on; not `other`, nor the delete of `gone`");
    assert!(targeted.partial);
    assert_eq!(targeted.targets, ["logs"]);
    assert_eq!(targeted.summary, Summary { create: 2, ..Summary::default() });
    // Only the target's output changes; the other keeps what was recorded.
    assert_eq!(targeted.output_changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["logs"]);
    assert_eq!(targeted.output_expressions["other"], "arn:recorded");
    // A resource removed from the manifest is deleted when targeted by its state key.
    let gone = plan.targeted(&m, &state.outputs, &["gone".to_string()]);
    assert_eq!(gone.resources.iter().map(|c| (c.name.as_str(), c.action)).collect::<Vec<_>>(), [("gone", Action::Delete)]);
}

#[test]
fn choices_name_known_resources_or_say_which_was_meant() {
    let m = manifest(M);
    let choices = Choices { targets: vec!["lgos".into()], replace: vec![] };
    let e = choices.check(&m, &StackState::default()).unwrap_err();
    assert!(e.contains("--target lgos: no resource `lgos`") && e.contains("did you mean `logs`?"), "{e}");
    let mut state = StackState::default();
    state.resources.insert("old".into(), ResourceState { name: "old".into(), ..recorded(&m, "logs") });
    assert!(Choices { targets: vec!["old".into()], replace: vec![] }.check(&m, &state).is_ok(), "a state key is a target");
    let e = Choices { targets: vec![], replace: vec!["old".into()] }.check(&m, &state).unwrap_err();
    assert!(e.contains("no longer in the manifest"), "{e}");
}

#[test]
fn a_switched_off_protected_resource_is_planned_as_a_refused_delete() {
    let m = manifest(M);
    let state =
        StackState { resources: ["role", "logs"].map(|n| (n.to_string(), recorded(&m, n))).into_iter().collect(), ..StackState::default() };
    let off = manifest(&M.replace("[resources.logs]", "[resources.logs]\nprotect = true\nenabled = false"));
    let plan = diff_all(&off, &state, &HashMap::new());
    let logs = plan.resources.iter().find(|r| r.name == "logs").unwrap();
    assert_eq!((logs.action, logs.protect), (Action::Delete, true));
    assert!(logs.reason.as_deref().unwrap_or_default().contains("refused: `protect = true`"), "{:?}", logs.reason);
    // Without the flag, switching it off deletes it; removed from the manifest, the flag goes with it.
    let off = manifest(&M.replace("[resources.logs]", "[resources.logs]\nenabled = false"));
    let plan = diff_all(&off, &state, &HashMap::new());
    assert!(!plan.resources.iter().find(|r| r.name == "logs").unwrap().protect);
}

#[test]
fn a_move_to_a_key_of_another_type_is_refused_at_the_entry() {
    let m = manifest(M);
    let state = StackState { resources: [("logs".to_string(), recorded(&m, "logs"))].into_iter().collect(), ..StackState::default() };
    let text = "[stack]\nname = \"s\"\n\n[resources.audit]\ntype = \"aws_iam_role\"\nname = \"lg\"\nassume_role_policy = { Version = \"2012-10-17\" }\n\n[[moved]]\nfrom = \"logs\"\nto = \"audit\"\n";
    let refused = moved_type_conflicts(&manifest(text), &state);
    let [e] = refused.as_slice() else { panic!("{refused:?}") };
    assert!(
        e.to_string().starts_with(
            "/tmp/x/stack.toml:9:1: `[[moved]]` from `logs` (aws_cloudwatch_log_group, as the state records it) to `audit` (aws_iam_role)"
        ),
        "{e}"
    );
    // Of one type, the same entry is a move.
    let same = text.replace(
        "type = \"aws_iam_role\"\nname = \"lg\"\nassume_role_policy = { Version = \"2012-10-17\" }",
        "type = \"aws_cloudwatch_log_group\"\nname = \"lg\"",
    );
    assert!(moved_type_conflicts(&manifest(&same), &state).is_empty());
}

#[test]
fn a_recorded_resource_that_is_not_ours_is_a_conflict_whatever_its_action() {
    let m = manifest(M);
    let mut state = StackState::default();
    for n in ["role", "logs"] {
        state.resources.insert(n.into(), recorded(&m, n));
    }
    state.resources.get_mut("role").unwrap().outputs = BTreeMap::from([("id".to_string(), "AROAOURS".to_string())]);
    state.resources.get_mut("logs").unwrap().outputs = BTreeMap::from([("creation_time".to_string(), "1000".to_string())]);
    let in_sync = || {
        HashMap::from([
            ("role".to_string(), Some(live_of(&m, "role", &[("name", "role.name"), ("id", "AROAOURS")]))),
            ("logs".to_string(), Some(live_of(&m, "logs", &[("creation_time", "1000")]))),
        ])
    };
    let plan = diff_all(&m, &state, &in_sync());
    assert!(plan.blockers.is_empty() && !plan.has_changes(), "{:#?}", plan.blockers);

    // Another stack's tag on the log group (with a drift to update): a conflict, not an update to carry out.
    let mut live = in_sync();
    let logs = live.get_mut("logs").unwrap().as_mut().unwrap();
    logs.attrs["tags"]["reconcile:stack"] = json!("other");
    logs.attrs["retention_in_days"] = json!(30);
    let plan = diff_all(&m, &state, &live);
    assert_eq!(plan.blockers.iter().map(|b| (b.resource.as_str(), b.problem)).collect::<Vec<_>>(), vec![("logs", Problem::Conflict)]);
    let b = &plan.blockers[0];
    assert!(b.message.contains("its `reconcile:stack` tag says stack `other`"), "{}", b.message);
    assert!(b.message.contains("`reconcile state rm logs` and then `reconcile import logs lg`"), "{}", b.message);
    assert_eq!(plan.resources.iter().find(|c| c.name == "logs").unwrap().reason.as_deref(), Some(b.message.as_str()));

    // The role re-made by hand: no tags, another RoleId; and with our tags copied but another RoleId.
    let mut live = in_sync();
    let role = live.get_mut("role").unwrap().as_mut().unwrap();
    role.outputs.insert("id".into(), "AROAHAND".into());
    let copied = role.clone();
    role.attrs.remove("tags");
    let plan = diff_all(&m, &state, &live);
    assert_eq!(plan.blockers.len(), 1, "{:#?}", plan.blockers);
    assert!(plan.blockers[0].message.contains("it has no `reconcile:stack` tag"), "{}", plan.blockers[0].message);
    live.insert("role".into(), Some(copied));
    let plan = diff_all(&m, &state, &live);
    assert_eq!(plan.blockers.len(), 1, "{:#?}", plan.blockers);
    assert!(plan.blockers[0].message.contains("the id `AROAHAND`") && plan.blockers[0].message.contains("`AROAOURS`"));

    // An imported resource never tagged by us is not a loss of tags; a record without an assigned id
    // (written before ids were recorded) compares none.
    let mut imported = state.clone();
    let role = imported.resources.get_mut("role").unwrap();
    role.attributes.as_object_mut().unwrap().remove("tags");
    role.outputs.clear();
    let mut live = in_sync();
    live.get_mut("role").unwrap().as_mut().unwrap().attrs.remove("tags");
    let plan = diff_all(&m, &imported, &live);
    assert!(plan.blockers.is_empty(), "{:#?}", plan.blockers);
    assert_eq!(plan.resources.iter().find(|c| c.name == "role").unwrap().action, Action::Update, "its tags are put on");

    // Removed from the manifest, and destroyed: the same conflict.
    let mut live = in_sync();
    live.get_mut("logs").unwrap().as_mut().unwrap().outputs.insert("creation_time".into(), "2000".into());
    let only_role = manifest(&M[..M.find("[resources.logs]").unwrap()]);
    let plan = diff_all(&only_role, &state, &live);
    assert_eq!(plan.blockers.iter().map(|b| b.resource.as_str()).collect::<Vec<_>>(), vec!["logs"]);
    let inspection = Inspection { state: state.clone(), live, ..Inspection::default() };
    let plan = destroy("s", &inspection);
    assert_eq!(plan.blockers.iter().map(|b| b.resource.as_str()).collect::<Vec<_>>(), vec!["logs"]);
}
