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

/// The AWS writes the proxy forwarded (every operation but reads and STS), by `service:operation`.
fn proxied_writes(proxy: &support::FaultProxy) -> Vec<String> {
    let stats = proxy.stats();
    let by_operation = stats["by_operation"].as_object().unwrap_or_else(|| panic!("no by_operation in {stats}"));
    let read = |op: &str| ["Get", "List", "Describe"].iter().any(|p| op.starts_with(p));
    by_operation.keys().filter(|k| !k.starts_with("sts:") && !read(k.split(':').nth(1).unwrap_or_default())).cloned().collect()
}

/// Deletes a role by hand (its managed and inline policies first, as IAM requires).
async fn delete_role(aws: &Aws, name: &str) {
    for p in aws.iam.list_attached_role_policies().role_name(name).send().await.unwrap().attached_policies() {
        aws.iam.detach_role_policy().role_name(name).policy_arn(p.policy_arn().unwrap()).send().await.unwrap();
    }
    for p in aws.iam.list_role_policies().role_name(name).send().await.unwrap().policy_names() {
        aws.iam.delete_role_policy().role_name(name).policy_name(p).send().await.unwrap();
    }
    aws.iam.delete_role().role_name(name).send().await.unwrap();
}

/// A plan and an apply through a counting proxy: the plan shows `resource` as a conflict (exit 1)
/// saying `why` and naming `import`, the apply refuses it, and no AWS write is sent.
fn refused_without_a_write(cli: &Cli, moto: &Moto, resource: &str, why: &str) {
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let env = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    let out = cli.run_with_env(&["-f", SEED, "--json", "plan"], &env);
    out.assert_status(1);
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    let blockers: Vec<(&str, &str)> =
        plan["blockers"].as_array().unwrap().iter().map(|b| (b["resource"].as_str().unwrap(), b["problem"].as_str().unwrap())).collect();
    assert_eq!(blockers, vec![(resource, "conflict")], "{plan:#}");
    let message = plan["blockers"][0]["message"].as_str().unwrap();
    assert!(message.contains(why), "{message}");
    assert!(message.contains(&format!("`reconcile state rm {resource}` and then `reconcile import {resource} ")), "{message}");
    let text = cli.run_with_env(&["-f", SEED, "plan"], &env);
    text.assert_status(1);
    assert!(text.stdout.contains(&format!("! {resource} (")) && text.stdout.contains(why), "{text}");

    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &env);
    out.assert_status(1);
    assert!(
        out.combined().contains(&format!("{resource}: refusing to ")) || out.stderr.contains(&format!("error: {resource}: not ours")),
        "{out}"
    );
    assert_eq!(proxied_writes(&proxy), Vec::<String>::new(), "{}", proxy.stats());
    assert!(proxy.stats()["by_operation"].as_object().is_some_and(|ops| ops.keys().any(|k| k.starts_with("sts:"))), "counted");
}

/// A log group the state records, deleted outside reconcile and made again by someone else with
/// another stack's tag: not updated (nor retagged as ours, nor its new creation time recorded),
/// and not deleted by destroy.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_of_a_log_group_another_stack_now_owns_is_refused_and_nothing_is_written() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    aws.logs.delete_log_group().log_group_name("DevLogGroupAccessLog").send().await.unwrap();
    aws.logs.create_log_group().log_group_name("DevLogGroupAccessLog").tags("reconcile:stack", "someone-else").send().await.unwrap();
    // (moto keeps a deleted log group's tags for the next one of its name; AWS does not.)
    let arn = "arn:aws:logs:us-east-1:123456789012:log-group:DevLogGroupAccessLog";
    aws.logs.untag_resource().resource_arn(arn).tag_keys("reconcile:managed-by").tag_keys("reconcile:resource").send().await.unwrap();

    let before = log_group(&aws, "DevLogGroupAccessLog").await.unwrap();
    refused_without_a_write(&cli, &moto, "dev_access_logs", "its `reconcile:stack` tag says stack `someone-else`");
    // A watcher with remediation on reads it as not ours, pass after pass, and writes nothing.
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let (mut w, port) = spawn_watch(&cli, &["--remediate", SEED], &[("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))]);
    support::poll_until(
        WATCH_DEADLINE,
        "a pass to read it as not ours",
        || w.stderr().contains("dev_access_logs: not ours").then_some(()),
        || w.stderr(),
    );
    let target = stack_passes(port, STACK) + 2.0;
    support::poll_until(WATCH_DEADLINE, "2 more passes", || (stack_passes(port, STACK) >= target).then_some(()), || w.stderr());
    w.assert_running();
    w.signal("TERM");
    w.wait(std::time::Duration::from_secs(20));
    assert_eq!(proxied_writes(&proxy), Vec::<String>::new(), "watch wrote: {}", proxy.stats());
    let out = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.combined().contains("dev_access_logs: refusing to delete DevLogGroupAccessLog: not ours"), "{out}");
    let after = log_group(&aws, "DevLogGroupAccessLog").await.expect("someone else's log group survives destroy");
    assert_eq!((after.creation_time(), after.retention_in_days()), (before.creation_time(), None));
    let tags = aws.logs.list_tags_for_resource().resource_arn(arn).send().await.unwrap();
    assert_eq!(tags.tags().unwrap().clone(), std::collections::HashMap::from([("reconcile:stack".into(), "someone-else".into())]));
}

/// A role the state records, deleted and made again by hand under its name (another RoleId):
/// refused whether it is untagged or carries copies of this stack's tags, and left as it is.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_of_a_role_made_again_by_hand_is_refused_and_nothing_is_written() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let name = "HelloLambdaTest-role";
    let ours = aws.iam.get_role().role_name(name).send().await.unwrap().role.unwrap();
    delete_role(&aws, name).await;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let made = aws
        .iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust)
        .description("Execution role of the HelloLambdaTest function")
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    // (moto keeps a deleted role's tags for the next one of its name; AWS does not.)
    let left: Vec<String> =
        aws.iam.list_role_tags().role_name(name).send().await.unwrap().tags().iter().map(|t| t.key().to_string()).collect();
    aws.iam.untag_role().role_name(name).set_tag_keys(Some(left)).send().await.unwrap();
    let policy = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";
    aws.iam.attach_role_policy().role_name(name).policy_arn(policy).send().await.unwrap();
    assert_ne!(made.role_id(), ours.role_id());

    refused_without_a_write(&cli, &moto, "hello_lambda_role", "is not the one this state recorded");
    let live = aws.iam.get_role().role_name(name).send().await.unwrap().role.unwrap();
    assert_eq!((live.role_id(), live.tags().len()), (made.role_id(), 0), "the hand-made role was tagged or replaced");

    // With this stack's tags copied onto it, only its RoleId tells it apart: still not ours.
    let tags: Vec<_> = ours.tags().to_vec();
    aws.iam.tag_role().role_name(name).set_tags(Some(tags)).send().await.unwrap();
    refused_without_a_write(&cli, &moto, "hello_lambda_role", &format!("AWS gave it the id `{}`", made.role_id()));
    let live = aws.iam.get_role().role_name(name).send().await.unwrap().role.unwrap();
    assert_eq!(live.role_id(), made.role_id());
}
