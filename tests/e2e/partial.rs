//! Creates that fail part-way; writes that fail are failures (end to end against moto).

#[allow(unused_imports)]
use super::*;

const PARTIAL_STACK: &str = "partial-role";

/// A role with an inline policy (`effect` is its statement's Effect) and a log group beside it.
fn role_manifest(effect: &str) -> String {
    format!(
        r#"[stack]
name = "{PARTIAL_STACK}"

[resources.worker_role]
type = "aws_iam_role"
name = "PartialWorkerRole"

[resources.worker_role.assume_role_policy]
Version = "2012-10-17"
Statement = [{{ Effect = "Allow", Principal = {{ Service = "lambda.amazonaws.com" }}, Action = "sts:AssumeRole" }}]

[resources.worker_role.inline_policies.read-logs]
Version = "2012-10-17"
Statement = [{{ Effect = "{effect}", Action = ["logs:GetLogEvents"], Resource = ["*"] }}]

[resources.worker_logs]
type = "aws_cloudwatch_log_group"
name = "PartialWorkerLogs"
retention_in_days = 7
"#
    )
}

async fn incomplete_in_state(cli: &Cli, stack: &str) -> std::collections::BTreeMap<String, String> {
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    let state = store.load(stack).await.unwrap();
    store.close().await;
    state.incomplete
}

fn plan_entry<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["resources"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name} not in the plan: {plan}"))
}

/// The role is created (and tagged) before AWS refuses its inline policy: it is recorded as incomplete,
/// the plan says so, and once the manifest is fixed the next apply finishes it in place (no conflict,
/// no `import`), after which the plan is empty.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_whose_inline_policy_is_refused_is_recorded_and_converges_after_the_fix() {
    let (moto, cli) = setup();
    cli.write_file("stack.toml", &role_manifest("Allo"));
    let out = cli.run(&["-f", "stack.toml", "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stdout.contains("Apply failed: 1 done, 1 failed"), "{out}");
    assert!(
        out.stdout.contains("create worker_role: PartialWorkerRole was made but not finished: iam:PutRolePolicy: MalformedPolicyDocument"),
        "the error names the resource, what was made and the refused call:\n{out}"
    );
    let aws = aws(&moto).await;
    let role = aws.iam.get_role().role_name("PartialWorkerRole").send().await.unwrap().role.unwrap();
    assert!(role.tags().iter().any(|t| t.key() == "reconcile:stack" && t.value() == PARTIAL_STACK), "the role was made and tagged");
    let incomplete = incomplete_in_state(&cli, PARTIAL_STACK).await;
    assert_eq!(incomplete.keys().collect::<Vec<_>>(), ["worker_role"], "the role is in the state, marked incomplete");
    assert!(incomplete["worker_role"].contains("MalformedPolicyDocument"), "{incomplete:?}");

    // Fixed manifest: the plan finishes the role (its missing policy), it does not create it again.
    cli.write_file("stack.toml", &role_manifest("Allow"));
    let plan = plan_json(&cli, "stack.toml");
    let role_change = plan_entry(&plan, "worker_role");
    assert_eq!(role_change["action"], "update", "{plan}");
    assert!(role_change["reason"].as_str().unwrap().starts_with("incomplete: finishing"), "{plan}");
    assert_eq!(changes(&plan), [("worker_role".to_string(), "update".to_string(), vec!["inline_policies.read-logs".to_string()])]);
    let human = cli.run(&["-f", "stack.toml", "plan"]);
    assert!(
        human.stdout.contains("worker_role (aws_iam_role) [PartialWorkerRole] will be updated in place: incomplete: finishing"),
        "{human}"
    );

    let out = cli.run(&["-f", "stack.toml", "apply", "--auto-approve"]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 1 done, 0 failed"), "{out}");
    let policy = aws.iam.get_role_policy().role_name("PartialWorkerRole").policy_name("read-logs").send().await.unwrap();
    assert!(policy.policy_document().contains("Allow"), "{policy:?}");
    assert!(incomplete_in_state(&cli, PARTIAL_STACK).await.is_empty(), "finished: no longer incomplete");
    cli.run(&["-f", "stack.toml", "plan", "--detailed-exitcode"]).assert_status(0);
}

/// `destroy` deletes a resource whose create did not finish (it is tagged as ours and in the state).
#[tokio::test(flavor = "multi_thread")]
async fn destroy_deletes_a_role_whose_create_did_not_finish() {
    let (moto, cli) = setup();
    cli.write_file("stack.toml", &role_manifest("Allo"));
    cli.run(&["-f", "stack.toml", "apply", "--auto-approve"]).assert_status(1);
    let aws = aws(&moto).await;
    assert!(aws.iam.get_role().role_name("PartialWorkerRole").send().await.is_ok());

    let out = cli.run(&["-f", "stack.toml", "destroy", "--auto-approve"]);
    out.assert_success();
    let gone = aws.iam.get_role().role_name("PartialWorkerRole").send().await;
    assert!(gone.is_err_and(|e| e.into_service_error().is_no_such_entity_exception()), "the incomplete role was deleted");
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    let state = store.load(PARTIAL_STACK).await.unwrap();
    store.close().await;
    assert!(state.resources.is_empty() && state.incomplete.is_empty(), "{state:?}");
}

/// A stage whose follow-up `UpdateStage` (access logs, logging, data trace) fails is recorded as
/// incomplete; the next apply finishes its settings and converges (moto accepts every UpdateStage,
/// so the fault proxy refuses the first one).
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_whose_settings_update_fails_is_recorded_and_the_next_apply_finishes_it() {
    let (moto, cli) = seeded();
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    proxy.configure(
        r#"{"fail": [{"service": "apigateway", "operation": "UpdateStage", "nth": 1, "status": 400,
            "code": "BadRequestException", "message": "Invalid ARN specified in the request"}]}"#,
    );
    let through_proxy = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &through_proxy);
    out.assert_status(1);
    assert_eq!(proxy.stats()["failed_by_rule"], serde_json::json!([1]), "exactly one UpdateStage was failed");
    assert!(out.stdout.contains("was made but not finished: apigateway:UpdateStage: BadRequestException: Invalid ARN"), "{out}");
    let incomplete = incomplete_in_state(&cli, STACK).await;
    let names: Vec<&String> = incomplete.keys().collect();
    assert!(names == ["dev_stage"] || names == ["prod_stage"], "one stage recorded as incomplete: {incomplete:?}");
    let stage = names[0].clone();
    let stage_name = if stage == "dev_stage" { "dev" } else { "prod" };

    // The stage exists without its settings, and the plan finishes it rather than creating it again.
    let aws = aws(&moto).await;
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    let api_id = apis.items().iter().find(|a| a.name() == Some("HelloApiGw")).and_then(|a| a.id()).unwrap().to_string();
    let live = aws.apigw.get_stage().rest_api_id(&api_id).stage_name(stage_name).send().await.unwrap();
    assert!(live.access_log_settings().is_none(), "{live:?}");
    let plan = plan_json(&cli, SEED);
    let change = plan_entry(&plan, &stage);
    assert_eq!(change["action"], "update", "{plan}");
    assert!(change["reason"].as_str().unwrap().starts_with("incomplete: finishing"), "{plan}");

    // The endpoint takes UpdateStage again: the next apply converges, without `import`.
    proxy.configure(r#"{"fail": []}"#);
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &through_proxy);
    out.assert_success();
    assert!(!out.combined().contains("already exists"), "{out}");
    let live = aws.apigw.get_stage().rest_api_id(&api_id).stage_name(stage_name).send().await.unwrap();
    assert!(live.access_log_settings().and_then(|a| a.destination_arn()).is_some_and(|a| a.ends_with("AccessLog")), "{live:?}");
    assert_eq!(live.method_settings().and_then(|m| m.get("*/*")).and_then(|s| s.logging_level()), Some("INFO"));
    assert!(incomplete_in_state(&cli, STACK).await.is_empty());
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_seed_exactly_once(&aws).await;
}

/// A refused write fails its resource (non-zero exit, the reason), the state keeps what was there,
/// and the change stays in the plan; once the endpoint takes the write, the next apply converges.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_endpoint_refuses_fails_its_resource_and_the_next_apply_converges() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let path = cli.join(SEED);
    let original = std::fs::read_to_string(&path).unwrap();

    // moto answers REST API TagResource with HTTP 404 (HTML): that is a failure, not a warning.
    std::fs::write(&path, original.replace("name = \"ApiGwDemo\"\n", "name = \"ApiGwDemo\"\ntags = { team = \"payments\" }\n")).unwrap();
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stdout.contains("Apply failed: 0 done, 1 failed"), "{out}");
    assert!(
        out.stdout.contains("update api_demo: apigateway:TagResource: the endpoint refused TagResource on arn:aws:apigateway:"),
        "{out}"
    );
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(2);
    std::fs::write(&path, &original).unwrap();
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    // Through the fault proxy: a stage tag write refused, a log group change beside it goes through.
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    proxy.configure(r#"{"fail": [{"service": "apigateway", "operation": "TagResource", "status": 400, "code": "BadRequestException", "message": "Refused"}]}"#);
    let through_proxy = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    let changed = original
        .replace("stage_name = \"dev\"\n", "stage_name = \"dev\"\ntags = { team = \"payments\" }\n")
        .replace("name = \"DevLogGroupAccessLog\"\nretention_in_days = 731", "name = \"DevLogGroupAccessLog\"\nretention_in_days = 365");
    std::fs::write(&path, &changed).unwrap();
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &through_proxy);
    out.assert_status(1);
    assert!(out.stdout.contains("Apply failed: 1 done, 1 failed"), "{out}");
    assert!(out.stdout.contains("update dev_stage: apigateway:TagResource: BadRequestException: Refused"), "{out}");
    let plan = plan_json(&cli, SEED);
    assert_eq!(changes(&plan), [("dev_stage".to_string(), "update".to_string(), vec!["tags.team".to_string()])], "{plan}");

    proxy.configure(r#"{"fail": []}"#);
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &through_proxy);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 1 done, 0 failed"), "{out}");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    let aws = aws(&moto).await;
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    let api_id = apis.items().iter().find(|a| a.name() == Some("HelloApiGw")).and_then(|a| a.id()).unwrap().to_string();
    let stage = aws.apigw.get_stage().rest_api_id(&api_id).stage_name("dev").send().await.unwrap();
    assert_eq!(stage.tags().and_then(|t| t.get("team")).map(String::as_str), Some("payments"));
}

/// A function whose wait until Active fails (the fault proxy refuses the waiter's first GetFunction) is
/// recorded as incomplete; the next plan replaces it and the apply converges with one function.
#[tokio::test(flavor = "multi_thread")]
async fn a_function_that_never_became_active_is_recorded_and_replaced_by_the_next_apply() {
    let (moto, cli) = seeded();
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    // The first GetFunction is the plan's check that no function of that name exists yet; the second,
    // the waiter's first, is refused.
    proxy.configure(r#"{"fail": [{"service": "lambda", "operation": "GetFunction", "nth": 2, "status": 400, "code": "InvalidParameterValueException", "message": "Refused"}]}"#);
    let through_proxy = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &through_proxy);
    out.assert_status(1);
    assert!(
        out.stdout.contains("create hello_function: HelloLambdaTest was made but not finished: lambda:GetFunction (until Active)"),
        "{out}"
    );
    let incomplete = incomplete_in_state(&cli, STACK).await;
    assert_eq!(incomplete.keys().collect::<Vec<_>>(), ["hello_function"], "{incomplete:?}");

    let plan = plan_json(&cli, SEED);
    let change = plan_entry(&plan, "hello_function");
    assert_eq!(change["action"], "replace", "{plan}");
    assert!(change["reason"].as_str().unwrap().starts_with("incomplete: replacing"), "{plan}");

    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &through_proxy);
    out.assert_success();
    assert!(incomplete_in_state(&cli, STACK).await.is_empty());
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_seed_exactly_once(&aws(&moto).await).await;
}
