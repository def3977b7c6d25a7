//! State surgery (`state list|show|rm|mv`), `graph`, `schema`, `completions` and `drift --exit-code`
//! (end to end against moto).

#[allow(unused_imports)]
use super::*;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

const STACK: &str = "apigw-lambda-basic";

/// The seed manifest's text with `f` applied, written back in place.
fn edit_seed(cli: &Cli, f: impl Fn(String) -> String) {
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = f(text.clone());
    assert_ne!(text, edited, "the edit changed nothing");
    std::fs::write(&path, edited).unwrap();
}

fn json_of(out: &support::Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn state_rm_forgets_without_deleting_and_the_next_plan_names_the_import_that_adopts_it() {
    let (moto, cli) = seeded();
    edit_seed(&cli, |t| {
        t.replace(
            "timeout = 10\n",
            "timeout = 10\nenvironment = { MODE = \"demo\" }\nsecret_environment = { API_KEY = \"s3cr3t-value-42\" }\n",
        )
    });
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;

    // list: every record, key, type and physical id.
    let out = cli.run(&["-f", SEED, "state", "list"]);
    out.assert_success();
    assert_eq!(out.stdout.lines().count(), 17, "{out}");
    let line = out.stdout.lines().find(|l| l.starts_with("prod_access_logs ")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["prod_access_logs", "aws_cloudwatch_log_group", "ProdLogGroupAccessLog"]);
    let rows = json_of(&cli.run(&["-f", SEED, "--json", "state", "list"]));
    assert_eq!(rows.as_array().unwrap().len(), 17);
    assert!(rows.as_array().unwrap().iter().any(|r| r["name"] == "hello_function" && r["physical_id"] == "HelloLambdaTest"), "{rows}");

    // show: the record, secret values as `(sensitive)` and never their hash, in text and JSON.
    let text = cli.run(&["-f", SEED, "state", "show", "hello_function"]);
    text.assert_success();
    let json = cli.run(&["-f", SEED, "--json", "state", "show", "hello_function"]);
    json.assert_success();
    for out in [&text, &json] {
        assert!(!out.combined().contains("s3cr3t") && !out.combined().contains("sha256:"), "a secret (or its hash) is shown:\n{out}");
    }
    assert!(text.stdout.starts_with("hello_function (aws_lambda_function)\n  physical id: HelloLambdaTest\n"), "{text}");
    assert!(text.stdout.contains("secret_environment = {\"API_KEY\":\"(sensitive)\"}"), "{text}");
    assert!(text.stdout.contains("environment = {\"MODE\":\"demo\"}"), "{text}");
    assert!(text.stdout.contains("depends on: hello_lambda_role"), "{text}");
    let doc = json_of(&json);
    assert_eq!(doc["attributes"]["secret_environment"]["API_KEY"], "(sensitive)");
    assert_eq!(doc["physical_id"], "HelloLambdaTest");
    assert_eq!(doc["outputs"]["arn"], "arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest");
    let missing = cli.run(&["-f", SEED, "state", "show", "nope"]);
    missing.assert_status(1);
    assert!(missing.stderr.contains("the state of stack `apigw-lambda-basic` has no resource `nope`; it records: "), "{missing}");

    // While another process holds the stack lock, rm and mv are refused and change nothing; list and
    // show (read-only) still answer.
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    let held = store.lock(STACK, "apply", std::time::Duration::ZERO).await.unwrap();
    for args in [["state", "rm", "prod_access_logs"].as_slice(), ["state", "mv", "prod_access_logs", "prod_logs"].as_slice()] {
        let out = cli.run(&[&["-f", SEED], args].concat());
        out.assert_status(1);
        assert!(out.stderr.contains(&format!("stack `{STACK}` is locked by apply")), "{out}");
    }
    cli.run(&["-f", SEED, "state", "list"]).assert_success();
    cli.run(&["-f", SEED, "state", "show", "prod_access_logs"]).assert_success();
    let state = store.load(STACK).await.unwrap();
    assert!(state.resources.contains_key("prod_access_logs") && !state.resources.contains_key("prod_logs"));
    store.unlock(STACK, &held.id).await.unwrap();
    store.close().await;

    // rm: forgotten, still in AWS, and the output says how to adopt it again.
    let out = cli.run(&["-f", SEED, "state", "rm", "prod_access_logs"]);
    out.assert_success();
    assert!(out.stdout.contains("Removed `prod_access_logs` (aws_cloudwatch_log_group `ProdLogGroupAccessLog`)"), "{out}");
    assert!(out.stdout.contains("`reconcile import prod_access_logs ProdLogGroupAccessLog` adopts it again"), "{out}");
    assert!(log_group(&aws, "ProdLogGroupAccessLog").await.is_some(), "state rm must not delete");
    assert!(!cli.run(&["-f", SEED, "state", "list"]).stdout.contains("prod_access_logs"));
    let again = cli.run(&["-f", SEED, "state", "rm", "prod_access_logs"]);
    again.assert_status(1);
    assert!(again.stderr.contains("has no resource `prod_access_logs`"), "{again}");

    // The next plan: the create collides with the group still in AWS, with the exact import to run.
    let plan = cli.run(&["-f", SEED, "plan"]);
    plan.assert_status(1);
    assert!(plan.stdout.contains("conflict: aws_cloudwatch_log_group `ProdLogGroupAccessLog` exists in AWS, not in this state"), "{plan}");
    let doc = json_of(&cli.run(&["-f", SEED, "--json", "plan"]));
    let blockers = doc["blockers"].as_array().unwrap();
    assert_eq!(blockers.len(), 1, "{doc}");
    assert_eq!((&blockers[0]["resource"], &blockers[0]["physical_id"]), (&json!("prod_access_logs"), &json!("ProdLogGroupAccessLog")));
    // Running the command the plan printed adopts it: the plan is empty again, nothing was made twice.
    let start = plan.stdout.find("`reconcile import ").unwrap_or_else(|| panic!("{plan}")) + 1;
    let command = &plan.stdout[start..start + plan.stdout[start..].find('`').unwrap()];
    assert_eq!(command, "reconcile import prod_access_logs ProdLogGroupAccessLog");
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    cli.run(&[&["-f", SEED], args.as_slice()].concat()).assert_success();
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    let groups = aws.logs.describe_log_groups().log_group_name_prefix("ProdLogGroupAccessLog").send().await.unwrap();
    assert_eq!(groups.log_groups().len(), 1);
}

/// The deployment HelloApiGw's `dev` stage serves.
async fn dev_deployment(aws: &Aws) -> String {
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    let hello = apis.items().iter().find(|a| a.name() == Some("HelloApiGw")).and_then(|a| a.id()).unwrap();
    let stage = aws.apigw.get_stage().rest_api_id(hello).stage_name("dev").send().await.unwrap();
    stage.deployment_id().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn state_mv_moves_records_to_renamed_keys_so_the_resources_are_kept() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let deployment = dev_deployment(&aws).await;
    let url = cli.run(&["-f", SEED, "output", "hello_api_dev_url"]).stdout;

    // Two keys renamed in the manifest, references included: a deployment (its id is AWS's, so
    // without a move the plan makes a new one) and a log group (named, tagged).
    edit_seed(&cli, |t| {
        t.replace("[resources.hello_deployment]", "[resources.books_deployment]")
            .replace("${hello_deployment.", "${books_deployment.")
            .replace("[resources.prod_access_logs]", "[resources.prod_logs]")
            .replace("${prod_access_logs.", "${prod_logs.")
    });
    let before: Vec<String> = changes(&plan_json(&cli, SEED)).into_iter().map(|(name, action, _)| format!("{name} {action}")).collect();
    assert!(before.contains(&"books_deployment create".to_string()), "{before:?}");

    // Refused: a NEW key the state has, one the manifest gives another type, one that is not a key, an
    // OLD key the state does not have.
    let out = cli.run(&["-f", SEED, "state", "mv", "hello_deployment", "hello_function"]);
    out.assert_status(1);
    assert!(out.stderr.contains("already has `hello_function` (aws_lambda_function `HelloLambdaTest`)"), "{out}");
    let out = cli.run(&["-f", SEED, "state", "mv", "dev_access_logs", "books_deployment"]);
    out.assert_status(1);
    assert!(out.stderr.contains("the manifest gives `books_deployment` the type aws_api_gateway_deployment"), "{out}");
    let out = cli.run(&["-f", SEED, "state", "mv", "hello_deployment", "books deployment"]);
    out.assert_status(1);
    assert!(out.stderr.contains("`books deployment` is not a resource key"), "{out}");
    let out = cli.run(&["-f", SEED, "state", "mv", "nope", "books_deployment"]);
    out.assert_status(1);
    assert!(out.stderr.contains("has no resource `nope`"), "{out}");

    let out = cli.run(&["-f", SEED, "state", "mv", "hello_deployment", "books_deployment"]);
    out.assert_success();
    assert!(out.stdout.contains("Moved `hello_deployment` to `books_deployment` (aws_api_gateway_deployment `"), "{out}");
    let out = cli.run(&["-f", SEED, "state", "mv", "prod_access_logs", "prod_logs"]);
    out.assert_success();
    assert!(out.stdout.contains("Its `reconcile:resource` tag keeps naming `prod_access_logs`"), "{out}");

    // Nothing is created, replaced, deleted or updated: the ownership tag names the key a resource was
    // created under, so the moves leave the plan empty; the deployment's record keeps AWS's id.
    assert_eq!(changes(&plan_json(&cli, SEED)), vec![]);
    let shown = json_of(&cli.run(&["-f", SEED, "--json", "state", "show", "books_deployment"]));
    assert!(shown["physical_id"].as_str().unwrap().ends_with(&deployment), "{shown}");
    // What recorded a dependency on the old key now names the new one.
    let stage = json_of(&cli.run(&["-f", SEED, "--json", "state", "show", "dev_stage"]));
    assert!(stage["depends_on"].as_array().unwrap().contains(&json!("books_deployment")), "{stage}");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_eq!(dev_deployment(&aws).await, deployment, "the stage still serves the same deployment");
    assert_eq!(cli.run(&["-f", SEED, "output", "hello_api_dev_url"]).stdout, url);
    let group = log_group(&aws, "ProdLogGroupAccessLog").await.unwrap();
    let tags = aws.logs.list_tags_for_resource().resource_arn(group.log_group_arn().unwrap()).send().await.unwrap();
    assert_eq!(tags.tags().unwrap().get("reconcile:resource").map(String::as_str), Some("prod_access_logs"));
}

/// A parsed DOT digraph: node id → attributes, and edges as (from id, to id).
#[derive(Debug, Default)]
struct Dot {
    nodes: BTreeMap<String, BTreeMap<String, String>>,
    edges: Vec<(String, String)>,
}

/// Parses the DOT subset Graphviz reads and `reconcile graph` writes: `digraph { ... }` with one
/// statement per line, `ID [ attrs ]` or `ID -> ID [ attrs ]`, attrs `key = value` separated by `,`,
/// values bare words or double-quoted strings with `\` escapes. Panics on anything else.
fn parse_dot(text: &str) -> Dot {
    fn tokens(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                ' ' | '\t' => {}
                '[' | ']' | '=' | ',' | ';' | '{' | '}' => out.push(c.to_string()),
                '-' if chars.peek() == Some(&'>') => {
                    chars.next();
                    out.push("->".into());
                }
                '"' => {
                    let mut s = String::from("\"");
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next().expect("escape at end of line") {
                                'n' => s.push('\n'),
                                c => s.push(c),
                            },
                            Some('"') => break,
                            Some(c) => s.push(c),
                            None => panic!("unterminated string in {line:?}"),
                        }
                    }
                    out.push(s);
                }
                c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => {
                    let mut s = c.to_string();
                    while let Some(&n) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_' || **n == '.') {
                        s.push(n);
                        chars.next();
                    }
                    out.push(s);
                }
                other => panic!("unexpected {other:?} in {line:?}"),
            }
        }
        out
    }
    let unquote = |s: &str| s.strip_prefix('"').unwrap_or(s).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first().map(|l| l.trim()), Some("digraph {"), "{text}");
    assert_eq!(lines.last().map(|l| l.trim()), Some("}"), "{text}");
    let mut dot = Dot::default();
    for line in &lines[1..lines.len() - 1] {
        let t = tokens(line);
        let (head, rest) = match t.iter().position(|x| x == "[") {
            Some(i) => (&t[..i], &t[i..]),
            None => (&t[..], &t[t.len()..]),
        };
        let mut attrs = BTreeMap::new();
        if !rest.is_empty() {
            assert_eq!(rest.last().map(String::as_str), Some("]"), "{line}");
            for pair in rest[1..rest.len() - 1].split(|x| x == "," || x == ";").filter(|p| !p.is_empty()) {
                assert!(pair.len() == 3 && pair[1] == "=", "attribute `{pair:?}` in {line}");
                attrs.insert(pair[0].clone(), unquote(&pair[2]));
            }
        }
        match head {
            [id] => {
                assert!(dot.nodes.insert(unquote(id), attrs).is_none(), "node declared twice: {line}");
            }
            [from, arrow, to] if arrow == "->" => dot.edges.push((unquote(from), unquote(to))),
            _ => panic!("not a node or edge statement: {line}"),
        }
    }
    for (from, to) in &dot.edges {
        assert!(dot.nodes.contains_key(from) && dot.nodes.contains_key(to), "edge {from} -> {to} to an undeclared node");
    }
    dot
}

/// The graph by resource key: key → (type, action and fill colour if any), and edges by key.
type Named = (BTreeMap<String, (String, Option<(String, String)>)>, BTreeSet<(String, String)>);

fn by_key(dot: &Dot) -> Named {
    let mut names = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    for (id, attrs) in &dot.nodes {
        // The label is `key\ntype[\n(action)]`.
        let label: Vec<&str> = attrs["label"].split('\n').collect();
        let (key, kind) = (label[0].to_string(), label[1].to_string());
        let action = label
            .get(2)
            .map(|a| (a.trim_start_matches('(').trim_end_matches(')').to_string(), attrs.get("fillcolor").cloned().unwrap_or_default()));
        assert!(label.len() <= 3, "{label:?}");
        names.insert(id.clone(), key.clone());
        nodes.insert(key, (kind, action));
    }
    let edges = dot.edges.iter().map(|(a, b)| (names[a].clone(), names[b].clone())).collect();
    (nodes, edges)
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_prints_the_manifest_dependencies_as_dot_and_plan_colours_the_nodes() {
    let (_moto, cli) = seeded();
    // No AWS call without --plan: an unreachable endpoint does not matter.
    let out = cli.run_with_env(&["-f", SEED, "graph"], &[("AWS_ENDPOINT_URL", Some("http://127.0.0.1:9"))]);
    out.assert_success();
    let (nodes, edges) = by_key(&parse_dot(&out.stdout));
    assert_eq!(nodes.len(), 17, "{out}");
    assert_eq!(nodes["hello_function"], ("aws_lambda_function".into(), None));
    assert_eq!(nodes["waf_prod_association"].0, "aws_wafv2_web_acl_association");
    // Exactly the dependencies validate reports (references and depends_on), dependent → dependency.
    let validated = json_of(&cli.run(&["-f", SEED, "--json", "validate"]));
    let expected: BTreeSet<(String, String)> = validated["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let name = r["name"].as_str().unwrap().to_string();
            r["depends_on"].as_array().unwrap().iter().map(move |d| (name.clone(), d.as_str().unwrap().to_string())).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(edges, expected);
    for (from, to) in [("hello_function", "hello_lambda_role"), ("waf_prod_association", "waf_acl"), ("waf_prod_association", "prod_stage")]
    {
        assert!(edges.contains(&(from.into(), to.into())), "{from} -> {to} missing: {edges:?}");
    }
    assert!(!edges.contains(&("hello_lambda_role".into(), "hello_function".into())));

    // --plan before any apply: everything is a create, filled green.
    let out = cli.run(&["-f", SEED, "graph", "--plan"]);
    out.assert_success();
    let (nodes, plan_edges) = by_key(&parse_dot(&out.stdout));
    assert_eq!(plan_edges, expected);
    assert!(nodes.values().all(|(_, a)| a == &Some(("create".into(), "palegreen".into()))), "{nodes:?}");

    // After apply: one update, one delete (with the dependencies the state recorded), the rest unchanged.
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    edit_seed(&cli, |t| {
        let start = t.find("[resources.waf_prod_association]").unwrap();
        let end = start + t[start..].find("\n[outputs]").unwrap() + 1;
        format!("{}{}", &t[..start], &t[end..]).replace("memory_size = 512", "memory_size = 1024")
    });
    let out = cli.run(&["-f", SEED, "graph", "--plan"]);
    out.assert_success();
    let (nodes, edges) = by_key(&parse_dot(&out.stdout));
    assert_eq!(nodes["hello_function"].1, Some(("update".into(), "khaki".into())), "{out}");
    assert_eq!(nodes["waf_prod_association"].1, Some(("delete".into(), "lightcoral".into())), "{out}");
    assert_eq!(nodes["hello_lambda_role"].1, Some(("no change".into(), "white".into())), "{out}");
    assert_eq!(nodes.values().filter(|(_, a)| a.as_ref().is_some_and(|(w, _)| w == "no change")).count(), 15, "{out}");
    assert!(edges.contains(&("waf_prod_association".into(), "waf_acl".into())), "{edges:?}");
    let doc = json_of(&cli.run(&["-f", SEED, "--json", "graph", "--plan"]));
    assert!(doc["nodes"].as_array().unwrap().iter().any(|n| n["name"] == "hello_function" && n["action"] == "update"), "{doc}");
}

#[test]
fn schema_prints_the_kept_copy_and_completions_name_the_subcommands() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reconcile")).args(args).env("NO_COLOR", "1").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let schema = run(&["schema"]);
    let kept = std::fs::read_to_string(support::repo_dir().join("docs/manifest.schema.json")).unwrap();
    assert!(
        schema == kept,
        "docs/manifest.schema.json differs from `reconcile schema`; regenerate it with `cargo run -- schema > docs/manifest.schema.json`"
    );
    let doc: Value = serde_json::from_str(&schema).unwrap();
    // A number field: an integer, or a `${var.NAME}` string (as validate accepts).
    let memory = &doc["definitions"]["aws_lambda_function"]["properties"]["memory_size"];
    assert_eq!(memory["type"], serde_json::json!(["integer", "string"]), "{memory}");
    assert_eq!(memory["pattern"], "^\\$\\{var\\.[A-Za-z_][A-Za-z0-9_]*\\}$", "{memory}");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let script = run(&["completions", shell]);
        for sub in ["plan", "apply", "state", "graph", "completions", "schema", "drift"] {
            assert!(script.contains(sub), "{shell}: `{sub}` missing");
        }
        assert!(script.contains("exit-code") && script.contains("detailed-exitcode"), "{shell}: flags missing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_exit_code_is_2_while_drift_is_open_and_0_when_there_is_none() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let out = cli.run(&["drift", "--exit-code"]);
    out.assert_status(0);
    assert!(out.stdout.contains("No open drift."), "{out}");

    aws(&moto).await.lambda.update_function_configuration().function_name("HelloLambdaTest").memory_size(256).send().await.unwrap();
    let (w, _port) = start_watch(&cli, &[]);
    support::poll_until(
        WATCH_DEADLINE,
        "the memory drift",
        || event(&drift_events(&cli, false), "hello_function", "memory_size").map(|_| ()),
        || w.stderr(),
    );
    stop_watch_cleanly(&cli, w, 2).await;

    let out = cli.run(&["drift", "--exit-code"]);
    out.assert_status(2);
    assert!(out.stdout.contains("hello_function.memory_size: expected 512, actual 256"), "{out}");
    cli.run(&["--json", "drift", "--exit-code"]).assert_status(2);
    cli.run(&["drift", "--exit-code", "--stack", "some-other-stack"]).assert_status(0);
    cli.run(&["drift"]).assert_status(0);

    // Repaired and seen in sync by the next pass: resolved, so 0 again, also when --all lists it.
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let (w, _port) = start_watch(&cli, &[]);
    support::poll_until(WATCH_DEADLINE, "the drift resolved", || drift_events(&cli, false).is_empty().then_some(()), || w.stderr());
    stop_watch_cleanly(&cli, w, 0).await;
    cli.run(&["drift", "--exit-code"]).assert_status(0);
    let out = cli.run(&["drift", "--all", "--exit-code"]);
    out.assert_status(0);
    assert!(out.stdout.contains("resolved"), "{out}");

    // An error is 1: a state file that cannot be opened.
    let out = cli.run(&["--state", "no-such-dir/state.db", "drift", "--exit-code"]);
    out.assert_status(1);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_rm_forgets_what_an_interrupted_replacement_journaled_so_no_later_run_deletes_it() {
    if !cfg!(feature = "test-hooks") {
        panic!("RECONCILE_CRASH_AT is compiled in only with --features test-hooks: run scripts/test");
    }
    let (moto, cli) = setup();
    let manifest = |logs: Option<&str>| {
        let logs = logs.map_or(String::new(), |name| {
            format!("[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"{name}\"\nretention_in_days = 7\n\n")
        });
        format!("[stack]\nname = \"rm-journal\"\n\n{logs}[resources.keep]\ntype = \"aws_cloudwatch_log_group\"\nname = \"keep-me\"\n")
    };
    cli.write_file("m.toml", &manifest(Some("old-logs")));
    cli.run(&["-f", "m.toml", "apply", "--auto-approve"]).assert_success();

    // A new name replaces the group, the new one first; the run dies right after creating it, so the
    // journal still says the old group is to be deleted.
    cli.write_file("m.toml", &manifest(Some("new-logs")));
    let killed = cli.run_with_env(&["-f", "m.toml", "apply", "--auto-approve"], &[("RECONCILE_CRASH_AT", Some("after-write:1"))]);
    assert!(killed.stderr.contains("RECONCILE_CRASH_AT: aborting"), "not our crash:\n{killed}");
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    let lock = store.lock_info("rm-journal").await.unwrap().expect("the killed run's lock");
    store.force_unlock("rm-journal", &lock.id, true).await.unwrap();
    let pending = store.pending_operations("rm-journal").await.unwrap();
    store.close().await;
    assert!(pending.iter().any(|p| p.resource == "logs"), "the replacement is journaled: {pending:?}");

    // The user forgets the resource and drops it from the manifest: both groups stay, unmanaged.
    let out = cli.run(&["-f", "m.toml", "state", "rm", "logs"]);
    out.assert_success();
    assert!(out.stdout.contains("Also forgotten, as interrupted runs left them"), "{out}");
    cli.write_file("m.toml", &manifest(None));
    let plan = cli.run(&["-f", "m.toml", "plan", "--detailed-exitcode"]);
    plan.assert_status(0);
    cli.run(&["-f", "m.toml", "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    assert!(log_group(&aws, "old-logs").await.is_some(), "the group the user kept was deleted");
    assert!(log_group(&aws, "new-logs").await.is_some(), "what the interrupted run made was deleted");
}
