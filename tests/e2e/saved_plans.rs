//! Saved plans (`plan --out`, `apply FILE`, `show FILE`), `--target` and `--replace` (end to end
//! against moto).

#[allow(unused_imports)]
use super::*;

/// Requests moto has answered so far.
fn requests(moto: &Moto) -> usize {
    moto.log().lines().filter(|l| l.contains("HTTP/1.1\"")).count()
}

/// Rewrites the copied seed manifest with `from` replaced by `to`.
fn edit_seed(cli: &Cli, from: &str, to: &str) {
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "the seed has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

async fn memory(aws: &Aws) -> i32 {
    aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap().memory_size().unwrap()
}

/// Lambda writes moto answered (its REST API writes with PUT, POST or DELETE; reads are GET).
fn lambda_writes(moto: &Moto) -> usize {
    moto.log()
        .lines()
        .filter(|l| ["\"PUT /2015-03-31/", "\"POST /2015-03-31/", "\"DELETE /2015-03-31/"].iter().any(|m| l.contains(m)))
        .count()
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

const SECRET: &str = "s3cr3t-saved-plan-5e1d";

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_is_shown_and_applied_exactly_without_asking_and_holds_no_secret() {
    use std::os::unix::fs::PermissionsExt;
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    edit_seed(&cli, "memory_size = 512", &format!("memory_size = 256\nsecret_environment = {{ DB_PASS = \"{SECRET}\" }}"));

    let out = cli.run(&["-f", SEED, "plan", "--out", "change.plan"]);
    out.assert_success();
    assert!(out.stderr.contains("Saved the plan to change.plan"), "{out}");
    let file = cli.join("change.plan");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600, "the plan file is private");
    let bytes = std::fs::read(&file).unwrap();
    assert!(!holds(&bytes, SECRET), "the plan file holds the secret value");
    assert!(holds(&bytes, "DB_PASS"), "the secret's key is in the plan, masked");
    // Made again over an existing file, it is still private (never widened, then narrowed).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    cli.run(&["-f", SEED, "plan", "--out", "change.plan"]).assert_success();
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    // `show` needs neither the manifest, nor the state, nor AWS.
    let serial_then = serial(&cli);
    let before = requests(&moto);
    let shown = cli.run(&["-f", "nowhere.toml", "--state", "nowhere.db", "show", "change.plan"]);
    shown.assert_success();
    assert!(shown.stdout.contains("hello_function (aws_lambda_function) [HelloLambdaTest] will be updated in place"), "{shown}");
    assert!(shown.stdout.lines().any(|l| l.trim_start().starts_with("~ memory_size") && l.ends_with("= 512 → 256")), "{shown}");
    assert!(shown.stdout.contains("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete"), "{shown}");
    assert!(shown.stdout.contains("Saved plan for stack `apigw-lambda-basic` in 123456789012 (aws, us-east-1)"), "{shown}");
    assert!(!shown.stdout.contains(SECRET), "{shown}");
    let doc: Value = serde_json::from_str(&cli.run(&["show", "change.plan", "--json"]).stdout).unwrap();
    assert_eq!(doc["stack"], "apigw-lambda-basic");
    assert_eq!(doc["saved_plan_format"], 1);
    assert!(doc["lineage"].as_str().is_some_and(|l| l.len() == 36), "{doc}");
    assert_eq!(doc["state_serial"], serial_then);
    assert_eq!(
        changes(&doc["plan"]),
        vec![("hello_function".into(), "update".into(), vec!["memory_size".into(), "secret_environment.DB_PASS".into()])]
    );
    assert_eq!(doc["live"].as_object().unwrap().keys().collect::<Vec<_>>(), ["hello_function"], "only what the plan touches: {doc}");
    assert_eq!(requests(&moto), before, "show called AWS");
    assert!(!std::fs::read_to_string(cli.join("reconcile.db")).unwrap_or_default().contains(SECRET));

    // A file of another format, or for another region: refused, nothing changed.
    let mut other: Value = serde_json::from_slice(&bytes).unwrap();
    other["saved_plan_format"] = serde_json::json!(99);
    cli.write_file("future.plan", &other.to_string());
    let out = cli.run(&["-f", SEED, "apply", "future.plan"]);
    out.assert_status(1);
    assert!(out.stderr.contains("future.plan is a saved plan of format 99"), "{out}");
    let out = cli.run(&["-f", SEED, "--region", "eu-west-1", "apply", "change.plan"]);
    out.assert_status(1);
    assert!(out.stderr.contains("us-east-1") && out.stderr.contains("eu-west-1"), "{out}");
    assert_eq!(memory(&aws).await, 512);

    // stdin is not a terminal: a plain `apply` would refuse to ask; `apply FILE` does not ask.
    let out = cli.run(&["-f", SEED, "apply", "change.plan"]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 1 done, 0 failed, 0 skipped"), "{out}");
    assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET), "{out}");
    assert_eq!(memory(&aws).await, 256);
    let env = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(env.environment().and_then(|e| e.variables()).and_then(|v| v.get("DB_PASS")).map(String::as_str), Some(SECRET));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    // Once applied, the state moved on: the same file is refused.
    let again = cli.run(&["-f", SEED, "apply", "change.plan"]);
    again.assert_status(1);
    assert!(
        again.stderr.contains("Saved plan is stale: the state of stack `apigw-lambda-basic` changed since the plan was made"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_is_refused_when_the_state_aws_or_the_inputs_changed_and_nothing_is_changed() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;

    // Another apply after the plan was saved: refused before any AWS call.
    edit_seed(&cli, "memory_size = 512", "memory_size = 256");
    cli.run(&["-f", SEED, "plan", "--out", "p1"]).assert_success();
    edit_seed(&cli, "memory_size = 256", "memory_size = 384");
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    edit_seed(&cli, "memory_size = 384", "memory_size = 256");
    let serial_now = serial(&cli);
    let before = requests(&moto);
    let out = cli.run(&["-f", SEED, "apply", "p1"]);
    out.assert_status(1);
    assert!(out.stderr.contains("Saved plan is stale: the state of stack `apigw-lambda-basic` changed since the plan was made"), "{out}");
    assert!(out.stderr.contains("nothing was changed"), "{out}");
    assert_eq!(requests(&moto), before, "a stale plan called AWS");
    assert_eq!(memory(&aws).await, 384);
    assert_eq!(serial(&cli), serial_now);

    // An out-of-band change to a resource the plan touches: refused, nothing written.
    cli.run(&["-f", SEED, "plan", "--out", "p2"]).assert_success();
    aws.lambda.update_function_configuration().function_name("HelloLambdaTest").timeout(42).send().await.unwrap();
    let (puts_before, all_before) = (lambda_writes(&moto), requests(&moto));
    assert!(puts_before > 0, "the applies' Lambda writes are in moto's log:\n{}", moto.log());
    let out = cli.run(&["-f", SEED, "apply", "p2"]);
    out.assert_status(1);
    assert_eq!(lambda_writes(&moto), puts_before, "no Lambda write");
    assert!(requests(&moto) > all_before, "what the plan touches was read again");
    assert!(out.stderr.contains("Saved plan is stale: `hello_function` changed in AWS since the plan was made"), "{out}");
    let f = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!((f.memory_size(), f.timeout()), (Some(384), Some(42)), "nothing was written");
    assert_eq!(serial(&cli), serial_now);

    // The manifest, the secrets and the stack must be those the plan was made from.
    cli.run(&["-f", SEED, "plan", "--out", "p3"]).assert_success();
    edit_seed(&cli, "timeout = 10", "timeout = 11");
    let out = cli.run(&["-f", SEED, "apply", "p3"]);
    out.assert_status(1);
    assert!(out.stderr.contains("Saved plan is stale: the manifest (after any variable substitution) differs"), "{out}");
    edit_seed(&cli, "timeout = 11", &format!("timeout = 10\nsecret_environment = {{ DB_PASS = \"{SECRET}\" }}"));
    cli.run(&["-f", SEED, "plan", "--out", "p4"]).assert_success();
    edit_seed(&cli, SECRET, "another-value");
    let out = cli.run(&["-f", SEED, "apply", "p4"]);
    out.assert_status(1);
    assert!(out.stderr.contains("Saved plan is stale: the secret values given now differ"), "{out}");
    edit_seed(&cli, "another-value", SECRET);
    let other = std::fs::read_to_string(cli.join(SEED)).unwrap().replacen(
        "name = \"${var.prefix}apigw-lambda-basic\"",
        "name = \"other-stack\"",
        1,
    );
    assert!(other.contains("name = \"other-stack\""), "the seed's stack name line changed: {other}");
    cli.write_file("manifests/other.toml", &other);
    let out = cli.run(&["-f", "manifests/other.toml", "apply", "p4"]);
    out.assert_status(1);
    assert!(
        out.stderr.contains("the saved plan p4 is for stack `apigw-lambda-basic`, but manifests/other.toml is stack `other-stack`"),
        "{out}"
    );
    let f = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!((f.memory_size(), f.timeout()), (Some(384), Some(42)), "nothing was written");
    assert_eq!(serial(&cli), serial_now);

    // A change outside what the plan touches does not stop it, and is left alone: exactly the plan runs.
    aws.logs.put_retention_policy().log_group_name("ProdLogGroupAccessLog").retention_in_days(7).send().await.unwrap();
    let out = cli.run(&["-f", SEED, "apply", "p4"]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 1 done, 0 failed, 0 skipped"), "{out}");
    let f = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!((f.memory_size(), f.timeout()), (Some(256), Some(10)));
    assert_eq!(changes(&plan_json(&cli, SEED)), vec![("prod_access_logs".into(), "update".into(), vec!["retention_in_days".into()])]);
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn target_plans_and_applies_only_the_named_resource_and_what_it_depends_on() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;

    // A misspelt name: an error with the closest name, before any AWS call.
    let before = requests(&moto);
    let out = cli.run(&["-f", SEED, "plan", "--target", "api_dmeo_prod"]);
    out.assert_status(1);
    assert!(out.stderr.contains("--target api_dmeo_prod: no resource `api_dmeo_prod`"), "{out}");
    assert!(out.stderr.contains("did you mean `api_demo_prod`?"), "{out}");
    assert_eq!(requests(&moto), before, "a bad --target called AWS");

    let wanted = ["api_demo", "api_demo_deployment", "api_demo_prod", "hello_function", "hello_lambda_role"];
    let out = cli.run(&["-f", SEED, "--json", "plan", "--target", "api_demo_prod"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["partial"], true);
    assert_eq!(doc["targets"], serde_json::json!(["api_demo_prod"]));
    let mut planned: Vec<String> = changes(&doc).into_iter().map(|(n, a, _)| format!("{n}:{a}")).collect();
    planned.sort();
    assert_eq!(planned, wanted.iter().map(|n| format!("{n}:create")).collect::<Vec<_>>());
    let text = cli.run(&["-f", SEED, "plan", "--target", "api_demo_prod"]);
    assert!(text.stdout.contains("Warning: partial plan (--target `api_demo_prod`)"), "{text}");
    assert!(text.stdout.contains("Plan: 5 to create, 0 to update, 0 to replace, 0 to delete"), "{text}");

    let out = cli.run(&["-f", SEED, "--json", "--stats", "apply", "--auto-approve", "--target", "api_demo_prod"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut done: Vec<&str> = doc["result"]["outcomes"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    done.sort();
    assert_eq!(done, wanted);
    let calls = doc["aws_calls"].as_array().unwrap();
    for untouched in ["CreateLogGroup", "CreateWebACL", "AssociateWebACL", "UpdateAccount", "AddPermission"] {
        assert_eq!(calls_to(calls, untouched), 0, "{untouched} was called: {calls:?}");
    }
    assert_eq!(calls_to(calls, "CreateRole"), 1, "only the function's role: {calls:?}");
    assert_eq!(calls_to(calls, "CreateRestApi"), 1, "only ApiGwDemo: {calls:?}");
    // What is in moto: the target and its dependencies, nothing else.
    let demo = api_id(&aws, "ApiGwDemo").await;
    assert!(aws.apigw.get_stage().rest_api_id(&demo).stage_name("prod").send().await.is_ok());
    assert!(aws.iam.get_role().role_name("ApiGwInvokeLambda").send().await.is_err());
    assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_none());
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    assert!(!apis.items().iter().any(|a| a.name() == Some("HelloApiGw")));

    cli.run(&["-f", SEED, "plan", "--target", "api_demo_prod", "--detailed-exitcode"]).assert_status(0);
    // A resource removed from the manifest is deleted only when targeted by its key.
    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let start = text.find("[resources.api_demo_prod]").unwrap();
    let end = start + text[start..].find("\n# HelloApiGw").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..]);
    let output = text.find("api_demo_prod_url = ").unwrap();
    let line_end = output + text[output..].find('\n').unwrap() + 1;
    std::fs::write(cli.join(SEED), format!("{}{}", &text[..output], &text[line_end..])).unwrap();
    let doc = plan_json_args(&cli, &["--target", "api_demo_deployment"]);
    assert_eq!(changes(&doc), vec![], "the stage is not deleted by a plan that does not target it");
    let doc = plan_json_args(&cli, &["--target", "api_demo_prod"]);
    assert_eq!(changes(&doc), vec![("api_demo_prod".into(), "delete".into(), vec![])]);
    cli.run(&["-f", SEED, "apply", "--auto-approve", "--target", "api_demo_prod"]).assert_success();
    assert!(aws.apigw.get_stage().rest_api_id(&demo).stage_name("prod").send().await.is_err());
    cli.run(&["-f", SEED, "plan", "--target", "api_demo_deployment", "--detailed-exitcode"]).assert_status(0);
}

fn plan_json_args(cli: &Cli, extra: &[&str]) -> Value {
    let mut args = vec!["-f", SEED, "--json", "plan"];
    args.extend(extra);
    let out = cli.run(&args);
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("plan --json is not JSON ({e}):\n{out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_gives_a_rest_api_a_new_id_and_updates_only_what_refers_to_it() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let old = api_id(&aws, "ApiGwDemo").await;
    let hello = api_id(&aws, "HelloApiGw").await;

    let before = requests(&moto);
    let out = cli.run(&["-f", SEED, "plan", "--replace", "hello_fnction"]);
    out.assert_status(1);
    assert!(out.stderr.contains("did you mean `hello_function`?"), "{out}");
    assert_eq!(requests(&moto), before);

    let doc = plan_json_args(&cli, &["--replace", "api_demo"]);
    let api = doc["resources"].as_array().unwrap().iter().find(|r| r["name"] == "api_demo").unwrap();
    assert_eq!(api["action"], "replace");
    assert!(api["reason"].as_str().unwrap().starts_with("requested by --replace"), "{api}");
    let mut planned: Vec<(String, String)> = changes(&doc).into_iter().map(|(n, a, _)| (n, a)).collect();
    planned.sort();
    let touched: Vec<&str> = planned.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(touched, ["api_demo", "api_demo_deployment", "api_demo_invoke_permission", "api_demo_prod"], "{planned:?}");

    let out = cli.run(&["-f", SEED, "--json", "--stats", "apply", "--auto-approve", "--replace", "api_demo"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut ran: Vec<&str> = doc["result"]["outcomes"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    ran.sort();
    // The REST API keeps its name, so the plan deletes the old one first (its replace order); its
    // deployment and stage, on the new id, are created first and the old ones deleted after.
    assert_eq!(
        ran,
        [
            "api_demo",
            "api_demo_deployment",
            "api_demo_deployment (previous)",
            "api_demo_invoke_permission",
            "api_demo_prod",
            "api_demo_prod (previous)"
        ]
    );
    let calls = doc["aws_calls"].as_array().unwrap();
    for untouched in [
        "CreateRole",
        "DeleteRole",
        "PutRolePolicy",
        "UpdateFunctionConfiguration",
        "UpdateFunctionCode",
        "CreateLogGroup",
        "UpdateWebACL",
        "AssociateWebACL",
        "UpdateAccount",
    ] {
        assert_eq!(calls_to(calls, untouched), 0, "{untouched} was called: {calls:?}");
    }
    assert_eq!((calls_to(calls, "CreateRestApi"), calls_to(calls, "DeleteRestApi")), (1, 1), "{calls:?}");
    let new = api_id(&aws, "ApiGwDemo").await;
    assert_ne!(new, old, "a new REST API");
    assert!(aws.apigw.get_rest_api().rest_api_id(&old).send().await.is_err(), "the old one is deleted");
    assert_eq!(api_id(&aws, "HelloApiGw").await, hello, "the other API is untouched");
    let stage = aws.apigw.get_stage().rest_api_id(&new).stage_name("prod").send().await.unwrap();
    assert!(stage.deployment_id().is_some());
    let policy = aws.lambda.get_policy().function_name("HelloLambdaTest").send().await.unwrap();
    let policy = policy.policy().unwrap();
    assert!(policy.contains(&format!("{new}/*/GET/order")) && !policy.contains(&old), "the permission names the new API: {policy}");
    let outputs = cli.run(&["-f", SEED, "output", "api_demo_prod_url"]);
    assert!(outputs.stdout.contains(&new), "{outputs}");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_of_a_role_deletes_it_first_and_a_saved_targeted_plan_carries_its_choices() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let before = aws.iam.get_role().role_name("ApiGwInvokeLambda").send().await.unwrap().role.unwrap().role_id().to_string();

    let out = cli.run(&["-f", SEED, "plan", "--replace", "api_invoke_role", "--target", "api_invoke_role", "--out", "role.plan"]);
    out.assert_success();
    assert!(out.stdout.contains("requested by --replace; it keeps its name, so the old one is deleted first"), "{out}");
    assert!(out.stdout.contains("partial plan"), "{out}");
    let shown = cli.run(&["show", "role.plan"]);
    assert!(shown.stdout.contains("partial plan") && shown.stdout.contains("requested by --replace"), "{shown}");
    // The choices are the file's: --target and --replace do not go with a plan file.
    cli.run(&["-f", SEED, "apply", "role.plan", "--target", "hello_api"]).assert_status(2);
    let out = cli.run(&["-f", SEED, "apply", "role.plan"]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 1 done, 0 failed, 0 skipped"), "{out}");
    let after = aws.iam.get_role().role_name("ApiGwInvokeLambda").send().await.unwrap().role.unwrap();
    assert_ne!(after.role_id(), before, "a new role of the same name");
    let policies = aws.iam.list_role_policies().role_name("ApiGwInvokeLambda").send().await.unwrap();
    assert_eq!(policies.policy_names().len(), 2, "with its inline policies");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_made_before_the_first_apply_creates_the_stack_once() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "plan", "--out", "first.plan"]).assert_success();
    cli.run(&["-f", SEED, "plan", "--out", "second.plan"]).assert_success();
    let doc: Value = serde_json::from_str(&cli.run(&["show", "first.plan", "--json"]).stdout).unwrap();
    assert_eq!((doc["state_serial"].as_i64(), doc["lineage"].is_null()), (Some(0), true), "no state yet: {doc}");
    assert_eq!(doc["live"], serde_json::json!({}), "nothing to read again");

    let out = cli.run(&["-f", SEED, "apply", "first.plan"]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 17 done, 0 failed, 0 skipped"), "{out}");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    // The other plan of the same empty state would create everything a second time: refused.
    let before = requests(&moto);
    let out = cli.run(&["-f", SEED, "apply", "second.plan"]);
    out.assert_status(1);
    assert!(
        out.stderr.contains("Saved plan is stale: the state of stack `apigw-lambda-basic` changed since the plan was made (serial 0 then"),
        "{out}"
    );
    assert_eq!(requests(&moto), before);
    let aws = aws(&moto).await;
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    assert_eq!(apis.items().iter().filter(|a| a.name() == Some("ApiGwDemo")).count(), 1, "one ApiGwDemo");
}

/// A name taken in AWS after the plan was saved (here a REST API, whose names AWS does not keep
/// unique) refuses the saved plan as a plain apply would refuse to go on: nothing is created, not a
/// second API of that name.
#[tokio::test(flavor = "multi_thread")]
async fn a_saved_plan_is_refused_when_a_name_it_creates_was_taken_since() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "plan", "--out", "p"]).assert_success();
    let aws = aws(&moto).await;
    aws.apigw.create_rest_api().name("ApiGwDemo").send().await.unwrap();
    let out = cli.run(&["-f", SEED, "apply", "p"]);
    out.assert_status(1);
    assert!(out.stderr.contains("Saved plan is stale: AWS now has something the plan would conflict with"), "{out}");
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    assert_eq!(apis.items().iter().filter(|a| a.name() == Some("ApiGwDemo")).count(), 1, "no second ApiGwDemo");
    assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_err(), "nothing was created");
}
