//! Import ownership, region-wide singletons, output-only changes (end to end against moto).

#[allow(unused_imports)]
use super::*;

/// Physical ids of the seed stack's deployment, permission and WAF association, as `import` takes them.
async fn seed_untaggable_ids(aws: &Aws) -> (String, String, String, String) {
    let api = api_id(aws, "ApiGwDemo").await;
    let deployments = aws.apigw.get_deployments().rest_api_id(&api).send().await.unwrap();
    let deployment = deployments.items()[0].id().unwrap().to_string();
    let hello = api_id(aws, "HelloApiGw").await;
    let stage_arn = format!("arn:aws:apigateway:us-east-1::/restapis/{hello}/stages/prod");
    let acl = web_acl(aws).await;
    (format!("{api}/{deployment}"), "HelloLambdaTest/AllowApiGwDemoGetOrder".to_string(), stage_arn, acl.arn().to_string())
}

/// A second stack declaring a deployment, a permission and an association like the seed's.
fn thief_manifest(api: &str, stage_arn: &str, acl_arn: &str) -> String {
    format!(
        r#"[stack]
name = "thief"

[resources.dep]
type = "aws_api_gateway_deployment"
rest_api_id = "{api}"

[resources.perm]
type = "aws_lambda_permission"
function_name = "HelloLambdaTest"
statement_id = "AllowApiGwDemoGetOrder"
principal = "apigateway.amazonaws.com"

[resources.assoc]
type = "aws_wafv2_web_acl_association"
web_acl_arn = "{acl_arn}"
resource_arn = "{stage_arn}"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn import_refuses_what_another_stack_or_resource_already_owns() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (deployment, permission, association, acl_arn) = seed_untaggable_ids(&aws).await;
    let api = deployment.split('/').next().unwrap().to_string();
    cli.write_file("thief.toml", &thief_manifest(&api, &association, &acl_arn));
    let imports = [("dep", deployment.as_str()), ("perm", permission.as_str()), ("assoc", association.as_str())];

    // Another state file: the owner is known from the tags of the REST API, the function, the stage.
    let parents = [
        format!("aws_api_gateway_rest_api `{api}`"),
        "aws_lambda_function `HelloLambdaTest`".to_string(),
        format!("aws_api_gateway_stage `{}/prod`", api_id(&aws, "HelloApiGw").await),
    ];
    for ((name, id), parent) in imports.iter().zip(&parents) {
        let out = cli.run(&["-f", "thief.toml", "--state", "other.db", "import", name, id]);
        out.assert_status(1);
        assert!(
            out.stderr.contains(&format!("belongs to {parent}, which stack `apigw-lambda-basic` (its `reconcile:stack` tag) owns")),
            "{out}"
        );
        assert!(!out.stdout.contains("Imported"), "{out}");
    }

    // The same state file: the other stack's rows record those ids.
    let owners = ["api_demo_deployment", "api_demo_invoke_permission", "waf_prod_association"];
    for ((name, id), owner) in imports.iter().zip(owners) {
        let out = cli.run(&["-f", "thief.toml", "import", name, id]);
        out.assert_status(1);
        assert!(out.stderr.contains(&format!("is already owned by resource `{owner}` of stack `apigw-lambda-basic`")), "{out}");
    }

    // Nothing was recorded for the second stack in either state file: its plan still creates all three,
    // and shows the two whose ids AWS keeps unique as conflicts with what the first stack made (exit 1).
    for state in ["other.db", "reconcile.db"] {
        let out = cli.run(&["-f", "thief.toml", "--state", state, "--json", "plan"]);
        out.assert_status(1);
        let plan: Value = serde_json::from_str(&out.stdout).unwrap();
        let actions: Vec<_> = plan["resources"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).collect();
        assert_eq!(actions, vec!["create"; 3], "{state}: {plan}");
        let mut blocked: Vec<_> =
            plan["blockers"].as_array().unwrap().iter().map(|b| b["resource"].as_str().unwrap().to_string()).collect();
        blocked.sort();
        assert_eq!(blocked, vec!["assoc", "perm"], "{state}: {plan}");
    }

    // A physical resource one resource of the stack owns cannot be imported as a second one.
    let seed = cli.read_file(SEED);
    cli.write_file(
        "manifests/second.toml",
        &format!("{seed}\n[resources.dev_access_logs2]\ntype = \"aws_cloudwatch_log_group\"\nname = \"DevLogGroupAccessLog2\"\n"),
    );
    let out = cli.run(&["-f", "manifests/second.toml", "import", "dev_access_logs2", "DevLogGroupAccessLog"]);
    out.assert_status(1);
    assert!(out.stderr.contains("is already owned by resource `dev_access_logs` of this stack"), "{out}");

    // The owner's resources are all still there and its plan is empty.
    assert!(changes(&plan_json(&cli, SEED)).is_empty());
    assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_some());
    let protected = aws.waf.get_web_acl_for_resource().resource_arn(&association).send().await.unwrap();
    assert_eq!(protected.web_acl().map(|a| a.arn()), Some(acl_arn.as_str()));
}

/// A stack with its own logging role that sets the region-wide API Gateway account setting.
fn account_manifest(stack: &str, role: &str) -> String {
    format!(
        r#"[stack]
name = "{stack}"

[resources.logging_role]
type = "aws_iam_role"
name = "{role}"
managed_policy_arns = ["arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"]
assume_role_policy = {{ Version = "2012-10-17", Statement = [{{ Effect = "Allow", Principal = {{ Service = "apigateway.amazonaws.com" }}, Action = "sts:AssumeRole" }}] }}

[resources.account]
type = "aws_api_gateway_account"
cloudwatch_role_arn = "${{logging_role.arn}}"
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stacks_declaring_the_account_setting_the_second_is_refused_naming_the_owner() {
    let (moto, cli) = setup();
    cli.write_file("a.toml", &account_manifest("logs-a", "LogsRoleA"));
    cli.write_file("b.toml", &account_manifest("logs-b", "LogsRoleB"));
    cli.run(&["-f", "a.toml", "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let role_a = "arn:aws:iam::123456789012:role/LogsRoleA";
    assert_eq!(aws.apigw.get_account().send().await.unwrap().cloudwatch_role_arn(), Some(role_a));

    let refusal = "b.toml:10:12: `account` (aws_api_gateway_account) is a region-wide setting, and stack `logs-a` already manages it \
                   (its resource `account` in this state file); a region-wide setting has one owner: remove `account`";
    let out = cli.run(&["-f", "b.toml", "plan"]);
    out.assert_status(1);
    assert!(out.stderr.contains(refusal), "{out}");
    let out = cli.run(&["-f", "b.toml", "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stderr.contains(refusal), "{out}");
    // Nothing of the second stack was made, and the setting still names the owner's role.
    assert!(aws.iam.get_role().role_name("LogsRoleB").send().await.is_err());
    assert_eq!(aws.apigw.get_account().send().await.unwrap().cloudwatch_role_arn(), Some(role_a));
    // Nor can the second stack import it.
    let out = cli.run(&["-f", "b.toml", "import", "account", "account"]);
    out.assert_status(1);
    assert!(out.stderr.contains("is already owned by resource `account` of stack `logs-a`"), "{out}");

    // The owner's own plan is unaffected; once it lets go (removed from its manifest, applied), the
    // other stack may take it.
    let out = cli.run(&["-f", "a.toml", "plan", "--detailed-exitcode"]);
    out.assert_status(0);
    let a_only_role = account_manifest("logs-a", "LogsRoleA");
    let a_only_role = &a_only_role[..a_only_role.find("[resources.account]").unwrap()];
    cli.write_file("a.toml", a_only_role);
    cli.run(&["-f", "a.toml", "apply", "--auto-approve"]).assert_success();
    cli.run(&["-f", "b.toml", "apply", "--auto-approve"]).assert_success();
    assert_eq!(aws.apigw.get_account().send().await.unwrap().cloudwatch_role_arn(), Some("arn:aws:iam::123456789012:role/LogsRoleB"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_only_change_is_applied_and_shown_by_output() {
    let (_moto, cli) = setup();
    let base = "[stack]\nname = \"outs\"\n\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"OutsLogs\"\n\n[outputs]\n";
    cli.write_file("m.toml", &format!("{base}arn = \"${{logs.arn}}\"\n"));
    cli.run(&["-f", "m.toml", "apply", "--auto-approve"]).assert_success();

    // Added and changed outputs: a plan with changes (exit 2), shown under "Outputs:".
    cli.write_file("m.toml", &format!("{base}arn = \"${{logs.name}}\"\ngroup = \"group ${{logs.name}}\"\n"));
    let out = cli.run(&["-f", "m.toml", "plan", "--detailed-exitcode"]);
    out.assert_status(2);
    assert!(out.stdout.contains("Outputs:"), "{out}");
    assert!(out.stdout.contains("~ arn   = \"arn:aws:logs:us-east-1:123456789012:log-group:OutsLogs\" → \"OutsLogs\""), "{out}");
    assert!(out.stdout.contains("+ group = \"group OutsLogs\""), "{out}");
    assert!(out.stdout.contains("0 to delete, 1 unchanged; 2 outputs to change."), "{out}");
    let plan = plan_json(&cli, "m.toml");
    let outs: Vec<_> =
        plan["output_changes"].as_array().unwrap().iter().map(|c| (c["name"].as_str().unwrap(), c["action"].as_str().unwrap())).collect();
    assert_eq!(outs, vec![("arn", "update"), ("group", "create")]);

    // Apply records them, with no AWS write.
    let out = cli.run(&["-f", "m.toml", "--stats", "--json", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let calls = doc["aws_calls"].as_array().unwrap();
    assert!(!calls.is_empty(), "{doc}");
    let read_only = |c: &Value| ["Describe", "List", "Get"].iter().any(|p| c["operation"].as_str().unwrap().starts_with(p));
    assert!(calls.iter().all(read_only), "only reads: {doc}");
    assert_eq!(doc["result"]["outputs"]["group"], "group OutsLogs", "{doc}");
    let out = cli.run(&["-f", "m.toml", "output", "group"]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "group OutsLogs");
    assert_eq!(cli.run(&["-f", "m.toml", "output", "arn"]).stdout.trim(), "OutsLogs");
    cli.run(&["-f", "m.toml", "plan", "--detailed-exitcode"]).assert_status(0);

    // A removed output is removed from the state by apply.
    cli.write_file("m.toml", &format!("{base}group = \"group ${{logs.name}}\"\n"));
    let out = cli.run(&["-f", "m.toml", "plan", "--detailed-exitcode"]);
    out.assert_status(2);
    // Listed with the unchanged output, unmarked, aligned with it.
    assert!(out.stdout.contains("Outputs:\n  - arn   = \"OutsLogs\"\n    group = \"group OutsLogs\"\n"), "{out}");
    cli.run(&["-f", "m.toml", "apply", "--auto-approve"]).assert_success();
    let out = cli.run(&["-f", "m.toml", "output", "arn"]);
    out.assert_status(1);
    assert!(out.stderr.contains("no output `arn`"), "{out}");
    cli.run(&["-f", "m.toml", "plan", "--detailed-exitcode"]).assert_status(0);
}

/// Passes `reconcile watch` finished for `stack`, from /metrics.
fn stack_passes(port: u16, stack: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    ["complete", "partial"]
        .iter()
        .filter_map(|r| sample(&body, &format!("reconcile_passes_total{{stack=\"{stack}\",result=\"{r}\"}}")))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_watched_stacks_declaring_the_account_setting_do_not_fight_over_it() {
    use reconcile::state::{ResourceState, Store};
    let (moto, cli) = setup();
    cli.write_file("a.toml", &account_manifest("logs-a", "LogsRoleA"));
    cli.run(&["-f", "a.toml", "apply", "--auto-approve"]).assert_success();
    // The second stack's role exists, and its state records the setting too (as a state written
    // before a second owner was refused would).
    let b = account_manifest("logs-b", "LogsRoleB");
    cli.write_file("b.toml", &b[..b.find("[resources.account]").unwrap()]);
    cli.run(&["-f", "b.toml", "apply", "--auto-approve"]).assert_success();
    cli.write_file("b.toml", &b);
    let role_b = "arn:aws:iam::123456789012:role/LogsRoleB";
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    let row = ResourceState {
        name: "account".into(),
        kind: reconcile::manifest::Kind::ApiGatewayAccount,
        physical_id: "account".into(),
        attributes: serde_json::json!({"cloudwatch_role_arn": role_b}),
        outputs: std::collections::BTreeMap::from([("cloudwatch_role_arn".to_string(), role_b.to_string())]),
        depends_on: vec!["logging_role".into()],
    };
    store.put_resource("logs-b", &row).await.unwrap();
    store.close().await;
    // The second stack was the last to write the setting.
    let aws = aws(&moto).await;
    use aws_sdk_apigateway::types::{Op, PatchOperation};
    let to_b = PatchOperation::builder().op(Op::Replace).path("/cloudwatchRoleArn").value(role_b).build();
    aws.apigw.update_account().patch_operations(to_b).send().await.unwrap();

    let (mut w, port) = spawn_watch(&cli, &["--remediate", "a.toml", "b.toml"], &[]);
    // The owner puts its role back once; the other stack refuses the setting, naming the owner, and
    // never writes it, pass after pass.
    support::poll_until(
        WATCH_DEADLINE,
        "the owner to remediate and the other stack to refuse",
        || (w.stderr().contains("stack `logs-a` already manages it") && w.stderr().contains("drift remediated")).then_some(()),
        || w.stderr(),
    );
    let target = stack_passes(port, "logs-b") + 4.0;
    support::poll_until(WATCH_DEADLINE, "4 more passes", || (stack_passes(port, "logs-b") >= target).then_some(()), || w.stderr());
    w.assert_running();
    assert_eq!(aws.apigw.get_account().send().await.unwrap().cloudwatch_role_arn(), Some("arn:aws:iam::123456789012:role/LogsRoleA"));
    let (_, body) = http_get(port, "/metrics");
    assert_eq!(sample(&body, "reconcile_remediations_total{stack=\"logs-a\"}"), Some(1.0), "{body}");
    assert_eq!(sample(&body, "reconcile_remediations_total{stack=\"logs-b\"}").unwrap_or(0.0), 0.0, "{body}");
    w.signal("TERM");
    w.wait(std::time::Duration::from_secs(20));
}
