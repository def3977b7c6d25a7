//! End-to-end tests: the real `reconcile` binary against a private moto server per test, with
//! outcomes read back through the AWS SDK.

mod support;

// Topic modules, in tests/e2e/; they reach the helpers below with `use super::*`.
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/daemon.rs"]
mod daemon;
#[path = "e2e/first_hour.rs"]
mod first_hour;
#[path = "e2e/fleet.rs"]
mod fleet;
#[path = "e2e/identity.rs"]
mod identity;
#[path = "e2e/input_bounds.rs"]
mod input_bounds;
#[path = "e2e/inputs.rs"]
mod inputs;
#[path = "e2e/intent.rs"]
mod intent;
#[path = "e2e/lambda_versions.rs"]
mod lambda_versions;
#[path = "e2e/lifecycle.rs"]
mod lifecycle;
#[path = "e2e/one_owner.rs"]
mod one_owner;
#[path = "e2e/ownership.rs"]
mod ownership;
#[path = "e2e/pacing.rs"]
mod pacing;
#[path = "e2e/partial.rs"]
mod partial;
#[path = "e2e/postgres.rs"]
mod postgres;
#[path = "e2e/saved_plans.rs"]
mod saved_plans;
#[path = "e2e/secrets.rs"]
mod secrets;
#[path = "e2e/state_files.rs"]
mod state_files;
#[path = "e2e/state_safety.rs"]
mod state_safety;
#[path = "e2e/surgery.rs"]
mod surgery;
#[path = "e2e/variables.rs"]
mod variables;
#[path = "e2e/verify.rs"]
mod verify;
#[path = "e2e/watch_safety.rs"]
mod watch_safety;
#[path = "e2e/watchers.rs"]
mod watchers;

use std::path::Path;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_iam::config::Credentials;
use serde_json::Value;
use support::{Cli, Moto, setup};

const SEED: &str = "manifests/apigw-lambda-basic.toml";

struct Aws {
    iam: aws_sdk_iam::Client,
    lambda: aws_sdk_lambda::Client,
    logs: aws_sdk_cloudwatchlogs::Client,
    apigw: aws_sdk_apigateway::Client,
    waf: aws_sdk_wafv2::Client,
}

async fn aws(moto: &Moto) -> Aws {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    Aws {
        iam: aws_sdk_iam::Client::new(&config),
        lambda: aws_sdk_lambda::Client::new(&config),
        logs: aws_sdk_cloudwatchlogs::Client::new(&config),
        apigw: aws_sdk_apigateway::Client::new(&config),
        waf: aws_sdk_wafv2::Client::new(&config),
    }
}

fn seeded() -> (Moto, Cli) {
    let (moto, cli) = setup();
    cli.copy_manifest_tree(Path::new("manifests"));
    (moto, cli)
}

fn plan_json(cli: &Cli, manifest: &str) -> Value {
    let out = cli.run(&["-f", manifest, "--json", "plan"]);
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("plan --json is not JSON ({e}):\n{out}"))
}

/// (resource, action, changed paths) of every resource that changes.
fn changes(plan: &Value) -> Vec<(String, String, Vec<String>)> {
    plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] != "no_op")
        .map(|r| {
            let paths = r["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap().to_string()).collect();
            (r["name"].as_str().unwrap().to_string(), r["action"].as_str().unwrap().to_string(), paths)
        })
        .collect()
}

fn decode(doc: &str) -> Value {
    serde_json::from_str(&percent_encoding::percent_decode_str(doc).decode_utf8_lossy()).unwrap()
}

async fn log_group(aws: &Aws, name: &str) -> Option<aws_sdk_cloudwatchlogs::types::LogGroup> {
    let out = aws.logs.describe_log_groups().log_group_name_prefix(name).send().await.unwrap();
    out.log_groups().iter().find(|g| g.log_group_name() == Some(name)).cloned()
}

/// Calls made to `operation`, from a `--stats` document's `aws_calls`.
fn calls_to(aws_calls: &[Value], operation: &str) -> u64 {
    aws_calls.iter().filter(|c| c["operation"] == operation).map(|c| c["calls"].as_u64().unwrap()).sum()
}

fn serial(cli: &Cli) -> i64 {
    let out = cli.run(&["-f", SEED, "--json", "plan"]);
    serde_json::from_str::<Value>(&out.stdout).map(|v| v["state_serial"].as_i64().unwrap_or(-1)).unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_from_empty_creates_everything_and_second_plan_is_empty() {
    let (moto, cli) = seeded();
    // With API Gateway pacing on, as against real AWS.
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &[("RECONCILE_PACING", Some("on"))]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 17 done, 0 failed, 0 skipped"), "{out}");
    assert!(out.stdout.contains("function_arn = arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest"), "{out}");
    let aws = aws(&moto).await;

    // Lambda: configuration, role, tags and code as the manifest says.
    let f = aws.lambda.get_function().function_name("HelloLambdaTest").send().await.unwrap();
    let c = f.configuration().unwrap();
    assert_eq!(c.memory_size(), Some(512));
    assert_eq!(c.timeout(), Some(10));
    assert_eq!(c.runtime().map(|r| r.as_str()), Some("python3.13"));
    assert_eq!(c.handler(), Some("index.handler"));
    assert_eq!(c.role(), Some("arn:aws:iam::123456789012:role/HelloLambdaTest-role"));
    let tags = f.tags().unwrap();
    assert_eq!(tags.get("reconcile:stack").map(String::as_str), Some("apigw-lambda-basic"));
    assert_eq!(tags.get("reconcile:managed-by").map(String::as_str), Some("reconcile"));
    let local = reconcile::manifest::artifact::package(&cli.join("manifests/apigw-lambda-basic/lambda")).unwrap();
    assert_eq!(c.code_sha256(), Some(local.sha256.as_str()));

    // Roles: trust policies, the managed policy, the inline policies (with the resolved ARN).
    let role = aws.iam.get_role().role_name("HelloLambdaTest-role").send().await.unwrap().role.unwrap();
    let trust = decode(role.assume_role_policy_document().unwrap());
    assert_eq!(trust["Statement"][0]["Principal"]["Service"], "lambda.amazonaws.com");
    assert!(role.tags().iter().any(|t| t.key() == "reconcile:stack" && t.value() == "apigw-lambda-basic"));
    let attached = aws.iam.list_attached_role_policies().role_name("HelloLambdaTest-role").send().await.unwrap();
    let arns: Vec<_> = attached.attached_policies().iter().filter_map(|p| p.policy_arn()).collect();
    assert_eq!(arns, vec!["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]);
    let invoke = aws.iam.get_role_policy().role_name("ApiGwInvokeLambda").policy_name("invoke-lambda").send().await.unwrap();
    let invoke = decode(invoke.policy_document());
    assert_eq!(invoke["Statement"][0]["Resource"][0], "arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest");
    let logs_policy = aws.iam.get_role_policy().role_name("ApiGwInvokeLambda").policy_name("write-logs").send().await.unwrap();
    assert_eq!(decode(logs_policy.policy_document())["Statement"][0]["Action"].as_array().unwrap().len(), 7);
    let api_role = aws.iam.get_role().role_name("ApiGwInvokeLambda").send().await.unwrap().role.unwrap();
    assert_eq!(decode(api_role.assume_role_policy_document().unwrap())["Statement"][0]["Principal"]["Service"], "apigateway.amazonaws.com");

    // Log groups: retention and ownership tags.
    for name in ["DevLogGroupAccessLog", "ProdLogGroupAccessLog"] {
        let g = log_group(&aws, name).await.unwrap_or_else(|| panic!("log group {name} missing"));
        assert_eq!(g.retention_in_days(), Some(731));
        let tags = aws.logs.list_tags_for_resource().resource_arn(g.log_group_arn().unwrap()).send().await.unwrap();
        assert_eq!(tags.tags().unwrap().get("reconcile:stack").map(String::as_str), Some("apigw-lambda-basic"));
    }

    // Second plan: empty, exit 0 with --detailed-exitcode; a second apply changes nothing.
    let plan = cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]);
    plan.assert_status(0);
    assert!(plan.stdout.contains("No changes"), "{plan}");
    let before = serial(&cli);
    let again = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
    assert_eq!(serial(&cli), before);

    // Outputs are kept in state and shown without AWS (endpoint made unreachable on purpose).
    let out = cli.run_with_env(&["-f", SEED, "output", "function_arn"], &[("AWS_ENDPOINT_URL", Some("http://127.0.0.1:9"))]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest");
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_band_changes_are_detected_and_repaired() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    aws.lambda.update_function_configuration().function_name("HelloLambdaTest").memory_size(256).send().await.unwrap();
    aws.logs.delete_log_group().log_group_name("DevLogGroupAccessLog").send().await.unwrap();
    aws.logs.put_retention_policy().log_group_name("ProdLogGroupAccessLog").retention_in_days(7).send().await.unwrap();

    let plan = cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]);
    plan.assert_status(2);
    assert!(plan.stdout.contains("memory_size = 256 → 512"), "{plan}");
    assert!(plan.stdout.contains("retention_in_days = 7 → 731"), "{plan}");
    assert!(plan.stdout.contains("DevLogGroupAccessLog was deleted outside reconcile"), "{plan}");
    let mut got = changes(&plan_json(&cli, SEED));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("dev_access_logs".into(), "create".into(), vec!["name".into(), "retention_in_days".into(), "tags".into()]),
            // The stage refers to the recreated group's ARN, known only after apply.
            ("dev_stage".into(), "update".into(), vec!["access_log_destination_arn".into()]),
            ("hello_function".into(), "update".into(), vec!["memory_size".into()]),
            ("prod_access_logs".into(), "update".into(), vec!["retention_in_days".into()]),
        ]
    );

    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let f = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(f.memory_size(), Some(512));
    assert_eq!(log_group(&aws, "DevLogGroupAccessLog").await.unwrap().retention_in_days(), Some(731));
    assert_eq!(log_group(&aws, "ProdLogGroupAccessLog").await.unwrap().retention_in_days(), Some(731));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_edits_update_exactly_what_changed() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();

    // Memory.
    std::fs::write(&path, text.replace("memory_size = 512", "memory_size = 1024")).unwrap();
    assert_eq!(changes(&plan_json(&cli, SEED)), vec![("hello_function".into(), "update".into(), vec!["memory_size".into()])]);
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let c = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(c.memory_size(), Some(1024));

    // Code: detected by content hash, deployed, then in sync.
    let code = cli.join("manifests/apigw-lambda-basic/lambda/index.py");
    std::fs::write(&code, std::fs::read_to_string(&code).unwrap().replace("time.sleep(2)", "time.sleep(0)")).unwrap();
    assert_eq!(changes(&plan_json(&cli, SEED)), vec![("hello_function".into(), "update".into(), vec!["code_sha256".into()])]);
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let local = reconcile::manifest::artifact::package(&cli.join("manifests/apigw-lambda-basic/lambda")).unwrap();
    let c = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(c.code_sha256(), Some(local.sha256.as_str()));

    // Policy: one inline policy document.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("  \"logs:FilterLogEvents\",\n", "")).unwrap();
    assert_eq!(
        changes(&plan_json(&cli, SEED)),
        vec![("api_invoke_role".into(), "update".into(), vec!["inline_policies.write-logs".into()])]
    );
    let plan = cli.run(&["-f", SEED, "plan"]);
    // Only what changed inside the policy: the one action removed from the statement's list.
    assert!(
        plan.stdout.contains(
            "    ~ inline_policies.write-logs.Statement[0].Action = [\n        - \"logs:FilterLogEvents\"\n          (6 unchanged)\n      ]\n"
        ),
        "{plan}"
    );
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let doc = aws.iam.get_role_policy().role_name("ApiGwInvokeLambda").policy_name("write-logs").send().await.unwrap();
    assert_eq!(decode(doc.policy_document())["Statement"][0]["Action"].as_array().unwrap().len(), 6);
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_resource_deletes_it_and_destroy_leaves_only_what_is_not_ours() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    // Something we do not own, with a name close to ours.
    aws.logs.create_log_group().log_group_name("DevLogGroupAccessLog-not-ours").send().await.unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();

    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("# Lets API Gateway invoke the function for ApiGwDemo").unwrap();
    let end = text.find("# --- API Gateway").unwrap();
    std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
    assert_eq!(changes(&plan_json(&cli, SEED)), vec![("api_demo_invoke_permission".into(), "delete".into(), vec![])]);
    assert!(aws.lambda.get_policy().function_name("HelloLambdaTest").send().await.is_ok());
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let policy = aws.lambda.get_policy().function_name("HelloLambdaTest").send().await;
    assert!(policy.is_err() || !policy.unwrap().policy().unwrap_or_default().contains("AllowApiGwDemoGetOrder"));

    let out = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    out.assert_success();
    assert!(out.stdout.contains("Destroy complete: 16 done"), "{out}");
    assert!(aws.apigw.get_rest_apis().send().await.unwrap().items().is_empty());
    assert!(aws.waf.list_web_acls().scope(aws_sdk_wafv2::types::Scope::Regional).send().await.unwrap().web_acls().is_empty());
    assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty());
    let roles = aws.iam.list_roles().send().await.unwrap();
    let ours: Vec<_> = roles
        .roles()
        .iter()
        .map(|r| r.role_name())
        .filter(|n| ["ApiGwInvokeLambda", "HelloLambdaTest-role", "ApiGwPushToCloudWatchLogs"].contains(n))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    let groups = aws.logs.describe_log_groups().send().await.unwrap();
    let names: Vec<_> = groups.log_groups().iter().filter_map(|g| g.log_group_name()).collect();
    assert_eq!(names, vec!["DevLogGroupAccessLog-not-ours"]);
    // Destroying again is a no-op.
    let again = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_manifests_fail_before_any_aws_call_and_leave_state_alone() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let state_before = std::fs::read(cli.join("reconcile.db")).unwrap();
    let requests_before = moto.log().lines().filter(|l| l.contains("HTTP/1.1\"")).count();

    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let bad = text
        .replace("role = \"${hello_lambda_role.arn}\"", "role = \"${hello_lambda_rol.arn}\"")
        .replace("memory_size = 512", "memory_size = \"big\"");
    cli.write_file("manifests/bad.toml", &bad);
    let line = bad.lines().position(|l| l.starts_with("role = \"${hello_lambda_rol")).unwrap() + 1;
    for cmd in ["plan", "apply", "destroy"] {
        let out = cli.run(
            &["-f", "manifests/bad.toml", cmd, "--auto-approve"]
                .iter()
                .copied()
                .filter(|a| cmd != "plan" || *a != "--auto-approve")
                .collect::<Vec<_>>(),
        );
        out.assert_status(1);
        assert!(
            out.stderr.contains(&format!("manifests/bad.toml:{line}:9: error: reference `${{hello_lambda_rol.arn}}` names no resource")),
            "{out}"
        );
        assert!(out.stderr.contains("`memory_size` must be an integer, found string"), "{out}");
        // Each diagnostic line says `error:` once, after its location (not `error: FILE:L:C: error: …`).
        let first = format!("manifests/bad.toml:{line}:9: error: ");
        assert!(out.stderr.lines().any(|l| l.starts_with(&first)), "{out}");
        assert!(out.stderr.lines().all(|l| l.matches("error:").count() <= 1), "{out}");
    }
    let requests_after = moto.log().lines().filter(|l| l.contains("HTTP/1.1\"")).count();
    assert_eq!(requests_before, requests_after, "a bad manifest made AWS calls:\n{}", moto.log());
    assert_eq!(std::fs::read(cli.join("reconcile.db")).unwrap(), state_before);

    // --json gives the diagnostics as data.
    let out = cli.run(&["-f", "manifests/bad.toml", "--json", "validate"]);
    out.assert_status(1);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["diagnostics"][0]["location"]["line"], line - 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_without_a_terminal_or_approval_and_errors_are_actionable() {
    let (moto, cli) = seeded();
    let out = cli.run(&["-f", SEED, "apply"]);
    out.assert_status(1);
    assert!(out.stderr.contains("pass --auto-approve"), "{out}");
    let aws = aws(&moto).await;
    assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty());

    let out = cli.run_with_env(&["-f", SEED, "plan"], &[("AWS_REGION", None)]);
    out.assert_status(1);
    assert!(out.stderr.contains("no AWS region configured"), "{out}");
    let out = cli.run_with_env(&["-f", SEED, "plan"], &[("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)]);
    out.assert_status(1);
    assert!(out.stderr.contains("no AWS credentials found"), "{out}");
    // Refreshing what the state owns needs the endpoint: an unreachable one is named as such.
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let out = cli.run_with_env(&["-f", SEED, "plan"], &[("AWS_ENDPOINT_URL", Some("http://127.0.0.1:9"))]);
    assert!(out.status == 1 && out.stderr.contains("cannot reach the AWS endpoint"), "{out}");
    // Corrupt state: clear error, file untouched.
    cli.write_file("corrupt.db", &"not a database ".repeat(100));
    let out = cli.run(&["-f", SEED, "--state", "corrupt.db", "plan"]);
    out.assert_status(1);
    assert!(out.stderr.contains("is not a reconcile state database"), "{out}");
    assert_eq!(cli.read_file("corrupt.db"), "not a database ".repeat(100));
}

async fn api_id(aws: &Aws, name: &str) -> String {
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    apis.items().iter().find(|a| a.name() == Some(name)).and_then(|a| a.id()).unwrap_or_else(|| panic!("no REST API {name}")).to_string()
}

/// (path, method) → integration of every method of an API.
async fn methods(aws: &Aws, api: &str) -> Vec<(String, String, aws_sdk_apigateway::types::Integration)> {
    let resources = aws.apigw.get_resources().rest_api_id(api).embed("methods").send().await.unwrap();
    let mut out = Vec::new();
    for r in resources.items() {
        for (verb, m) in r.resource_methods().into_iter().flatten() {
            out.push((r.path().unwrap_or_default().to_string(), verb.clone(), m.method_integration().cloned().unwrap()));
        }
    }
    out
}

async fn web_acl(aws: &Aws) -> aws_sdk_wafv2::types::WebAcl {
    use aws_sdk_wafv2::types::Scope;
    let list = aws.waf.list_web_acls().scope(Scope::Regional).send().await.unwrap();
    let s = list.web_acls().iter().find(|a| a.name() == Some("ApiGwWebAcl")).expect("web ACL ApiGwWebAcl");
    let got = aws.waf.get_web_acl().scope(Scope::Regional).name("ApiGwWebAcl").id(s.id().unwrap()).send().await.unwrap();
    got.web_acl().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_stack_apis_stages_and_waf_converge_and_repair() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let fn_arn = "arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest";

    // Both APIs: paths, methods, Lambda proxy integrations (one through the invoke role).
    let demo = api_id(&aws, "ApiGwDemo").await;
    let hello = api_id(&aws, "HelloApiGw").await;
    let m = methods(&aws, &demo).await;
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), ("/order", "GET"));
    assert_eq!(m[0].2.r#type().map(|t| t.as_str()), Some("AWS_PROXY"));
    assert!(m[0].2.uri().unwrap().contains(&format!("functions/{fn_arn}/invocations")));
    assert_eq!(m[0].2.credentials(), None);
    let m = methods(&aws, &hello).await;
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), ("/book", "GET"));
    assert_eq!(m[0].2.credentials(), Some("arn:aws:iam::123456789012:role/ApiGwInvokeLambda"));
    let policy = aws.lambda.get_policy().function_name("HelloLambdaTest").send().await.unwrap();
    let policy = policy.policy().unwrap();
    assert!(policy.contains("AllowApiGwDemoGetOrder") && policy.contains(&format!(":{demo}/*/GET/order")), "{policy}");
    let account = aws.apigw.get_account().send().await.unwrap();
    assert_eq!(account.cloudwatch_role_arn(), Some("arn:aws:iam::123456789012:role/ApiGwPushToCloudWatchLogs"));

    // Stages: one deployment, access logs to their own group in JSON with the request id, data trace on.
    let dev = aws.apigw.get_stage().rest_api_id(&hello).stage_name("dev").send().await.unwrap();
    let prod = aws.apigw.get_stage().rest_api_id(&hello).stage_name("prod").send().await.unwrap();
    assert_eq!(dev.deployment_id(), prod.deployment_id());
    let first_deployment = prod.deployment_id().unwrap().to_string();
    for (stage, group) in [(&dev, "DevLogGroupAccessLog"), (&prod, "ProdLogGroupAccessLog")] {
        let logs = stage.access_log_settings().unwrap();
        assert_eq!(logs.destination_arn(), Some(format!("arn:aws:logs:us-east-1:123456789012:log-group:{group}").as_str()));
        assert!(logs.format().unwrap().contains("\"requestId\":\"$context.requestId\""));
        let all = stage.method_settings().unwrap().get("*/*").unwrap();
        assert!(all.data_trace_enabled());
        assert_eq!(all.logging_level(), Some("INFO"));
    }

    // WAF: the seed's three rules exactly, associated with the prod stage.
    let acl = web_acl(&aws).await;
    let mut rules: Vec<_> = acl.rules().iter().map(|r| (r.priority(), r.name().to_string())).collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![(1, "LimiteRequestsThreshold".into()), (2, "RuleGeoRestrict".into()), (10, "AWSManagedRulesCommonRuleSet".into())]
    );
    for r in acl.rules() {
        let s = r.statement().unwrap();
        match r.priority() {
            1 => {
                let rb = s.rate_based_statement().unwrap();
                assert_eq!((rb.limit(), rb.aggregate_key_type().as_str()), (2000, "IP"));
                assert!(r.action().unwrap().block().is_some());
            }
            2 => {
                assert_eq!(s.geo_match_statement().unwrap().country_codes().iter().map(|c| c.as_str()).collect::<Vec<_>>(), vec!["SG"]);
                assert!(r.action().unwrap().block().is_some());
            }
            _ => {
                assert_eq!(s.managed_rule_group_statement().unwrap().name(), "AWSManagedRulesCommonRuleSet");
                assert!(r.override_action().unwrap().none().is_some());
            }
        }
        assert!(r.visibility_config().unwrap().sampled_requests_enabled());
    }
    let prod_arn = format!("arn:aws:apigateway:us-east-1::/restapis/{hello}/stages/prod");
    let assoc = aws.waf.get_web_acl_for_resource().resource_arn(&prod_arn).send().await.unwrap();
    assert_eq!(assoc.web_acl().map(|a| a.arn()), Some(acl.arn()));

    // Outputs and the empty second plan.
    let url = cli.run(&["-f", SEED, "output", "hello_api_prod_url"]);
    assert_eq!(url.stdout.trim(), format!("https://{hello}.execute-api.us-east-1.amazonaws.com/prod"));
    assert_eq!(cli.run(&["-f", SEED, "output", "web_acl_arn"]).stdout.trim(), acl.arn());
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    // A route change: the API is updated, a new deployment is made, both stages move, the old one goes.
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("path = \"/book\"", "path = \"/books\"")).unwrap();
    let mut got = changes(&plan_json(&cli, SEED));
    got.sort();
    let names: Vec<_> = got.iter().map(|(n, a, _)| format!("{n}:{a}")).collect();
    assert_eq!(names, vec!["dev_stage:update", "hello_api:update", "hello_deployment:replace", "prod_stage:update"]);
    assert_eq!(got[0].2, vec!["deployment_id".to_string()]);
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_success();
    let prod = aws.apigw.get_stage().rest_api_id(&hello).stage_name("prod").send().await.unwrap();
    let dev = aws.apigw.get_stage().rest_api_id(&hello).stage_name("dev").send().await.unwrap();
    assert_ne!(prod.deployment_id().unwrap(), first_deployment);
    assert_eq!(dev.deployment_id(), prod.deployment_id());
    assert!(aws.apigw.get_deployment().rest_api_id(&hello).deployment_id(&first_deployment).send().await.is_err());
    assert_eq!(methods(&aws, &hello).await[0].0, "/books");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    // Out of band: a stage setting, a WAF rule and the association.
    turn_off_prod_data_trace(&aws).await;
    let acl = web_acl(&aws).await;
    let token = aws
        .waf
        .get_web_acl()
        .scope(aws_sdk_wafv2::types::Scope::Regional)
        .name("ApiGwWebAcl")
        .id(acl.id())
        .send()
        .await
        .unwrap()
        .lock_token()
        .unwrap()
        .to_string();
    aws.waf
        .update_web_acl()
        .scope(aws_sdk_wafv2::types::Scope::Regional)
        .name("ApiGwWebAcl")
        .id(acl.id())
        .lock_token(token)
        .set_default_action(acl.default_action().cloned())
        .set_visibility_config(acl.visibility_config().cloned())
        .set_rules(Some(acl.rules().iter().filter(|r| r.priority() != 2).cloned().collect()))
        .send()
        .await
        .unwrap();
    aws.waf.disassociate_web_acl().resource_arn(&prod_arn).send().await.unwrap();
    let plan = cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]);
    plan.assert_status(2);
    assert!(plan.stdout.contains("data_trace_enabled = false → true"), "{plan}");
    let mut got = changes(&plan_json(&cli, SEED));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("prod_stage".into(), "update".into(), vec!["data_trace_enabled".into()]),
            ("waf_acl".into(), "update".into(), vec!["rules".into()]),
            ("waf_prod_association".into(), "create".into(), vec!["web_acl_arn".into(), "resource_arn".into()]),
        ]
    );
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    assert_eq!(web_acl(&aws).await.rules().len(), 3);
    let assoc = aws.waf.get_web_acl_for_resource().resource_arn(&prod_arn).send().await.unwrap();
    assert!(assoc.web_acl().is_some());
    let prod = aws.apigw.get_stage().rest_api_id(&hello).stage_name("prod").send().await.unwrap();
    assert!(prod.method_settings().unwrap().get("*/*").unwrap().data_trace_enabled());
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

const STACK: &str = "apigw-lambda-basic";

#[tokio::test(flavor = "multi_thread")]
async fn one_writer_per_stack_waits_or_fails_fast_and_force_unlock_needs_the_id() {
    use reconcile::state::Store;
    use std::time::Duration;
    let (moto, cli) = seeded();
    let db = cli.join("reconcile.db");
    let store = Store::open(&db).await.unwrap();
    let held = store.lock(STACK, "apply", Duration::ZERO).await.unwrap();

    // A second writer fails fast, saying who holds the lock and how to break it; nothing is created.
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stderr.contains(&format!("stack `{STACK}` is locked by apply (pid {}", std::process::id())), "{out}");
    assert!(out.stderr.contains(&format!("reconcile force-unlock {}", held.id)), "{out}");
    let aws = aws(&moto).await;
    assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty());

    // With --lock-timeout it waits until the holder is done.
    let (db2, id) = (db.clone(), held.id.clone());
    let releaser = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Store::open(&db2).await.unwrap().unlock(STACK, &id).await.unwrap();
        });
    });
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve", "--lock-timeout", "60s"]);
    releaser.join().unwrap();
    out.assert_success();
    assert!(store.lock_info(STACK).await.unwrap().is_none(), "apply must release its lock");

    // A lock left behind is broken only explicitly, with its id.
    let stale = store.lock(STACK, "apply", Duration::ZERO).await.unwrap();
    let out = cli.run(&["-f", SEED, "force-unlock", "not-the-id"]);
    out.assert_status(1);
    assert!(!out.stderr.contains(&stale.id), "the real id must not be handed out: {out}");
    // Its holder (this test process) is alive on this host: breaking it takes --force.
    cli.run(&["-f", SEED, "force-unlock", &stale.id, "--force"]).assert_success();
    cli.run(&["-f", SEED, "destroy", "--auto-approve"]).assert_success();
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_count_every_aws_call_and_a_no_op_plan_reads_each_resource_once() {
    let (_moto, cli) = seeded();
    let out = cli.run(&["-f", SEED, "--json", "--stats", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let calls = doc["aws_calls"].as_array().unwrap();
    let count = |op: &str| calls_to(calls, op);
    assert_eq!(count("CreateFunction"), 1);
    assert_eq!(count("CreateRole"), 3);
    assert_eq!(count("CreateRestApi"), 2);
    assert_eq!(count("CreateWebACL"), 1);
    let plan = cli.run(&["-f", SEED, "--json", "--stats", "plan"]);
    let doc: Value = serde_json::from_str(&plan.stdout).unwrap();
    let calls = doc["aws_calls"].as_array().unwrap();
    let count = |op: &str| calls_to(calls, op);
    assert_eq!(count("GetFunction"), 1, "{calls:?}");
    assert_eq!(count("GetRole"), 3, "{calls:?}");
    // Three stages: hello_api's two with one GetStages, api_demo's one with its own GetStage.
    assert_eq!(count("GetStage") + 2 * count("GetStages"), 3, "{calls:?}");
    // The prod stage's web ACL association is read with its stage (webAclArn), not from WAF.
    assert_eq!(count("GetWebACLForResource"), 0, "{calls:?}");
    // Without collection reads too (the stage's own GetStage), and the plan is the same: empty.
    let single =
        cli.run_with_env(&["-f", SEED, "--json", "--stats", "plan", "--detailed-exitcode"], &[("RECONCILE_COLLECTION_READS", Some("off"))]);
    single.assert_status(0);
    let single: Value = serde_json::from_str(&single.stdout).unwrap();
    assert_eq!(calls_to(single["aws_calls"].as_array().unwrap(), "GetWebACLForResource"), 0, "{single}");
    assert_eq!(calls_to(single["aws_calls"].as_array().unwrap(), "GetStage"), 4, "three stages and the association's: {single}");
    assert!(
        calls.iter().all(|c| c["operation"].as_str().unwrap().starts_with("Get")
            || c["operation"].as_str().unwrap().starts_with("List")
            || c["operation"].as_str().unwrap().starts_with("Describe")),
        "a plan only reads: {calls:?}"
    );
    let human = cli.run(&["-f", SEED, "--stats", "plan"]);
    assert!(human.stderr.contains("AWS calls: "), "{human}");
}

/// Every resource of the seed stack exists exactly once in moto (names, and ownership tags where
/// names are not unique).
async fn assert_seed_exactly_once(aws: &Aws) {
    let functions = aws.lambda.list_functions().send().await.unwrap();
    assert_eq!(functions.functions().len(), 1, "functions: {:?}", functions.functions());
    let roles = aws.iam.list_roles().send().await.unwrap();
    let mut names: Vec<_> = roles.roles().iter().map(|r| r.role_name()).collect();
    names.sort();
    assert_eq!(names, vec!["ApiGwInvokeLambda", "ApiGwPushToCloudWatchLogs", "HelloLambdaTest-role"]);
    let groups = aws.logs.describe_log_groups().send().await.unwrap();
    assert_eq!(groups.log_groups().len(), 2);
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    let mut api_names: Vec<_> = apis.items().iter().filter_map(|a| a.name()).collect();
    api_names.sort();
    assert_eq!(api_names, vec!["ApiGwDemo", "HelloApiGw"], "duplicate REST APIs");
    for api in apis.items() {
        let id = api.id().unwrap();
        let deployments = aws.apigw.get_deployments().rest_api_id(id).send().await.unwrap();
        assert_eq!(deployments.items().len(), 1, "deployments of {:?}: {:?}", api.name(), deployments.items());
        let stages = aws.apigw.get_stages().rest_api_id(id).send().await.unwrap();
        assert_eq!(stages.item().len(), if api.name() == Some("HelloApiGw") { 2 } else { 1 });
        for s in stages.item() {
            assert_eq!(s.deployment_id(), deployments.items()[0].id(), "stage {:?} serves the deployment", s.stage_name());
        }
    }
    let acls = aws.waf.list_web_acls().scope(aws_sdk_wafv2::types::Scope::Regional).send().await.unwrap();
    assert_eq!(acls.web_acls().len(), 1);
    let policy = aws.lambda.get_policy().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(policy.policy().unwrap().matches("AllowApiGwDemoGetOrder").count(), 1, "permission statements");
}

/// Breaks the lock a killed process left, the explicit way.
async fn break_stale_lock(cli: &Cli) {
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    if let Some(lock) = store.lock_info(STACK).await.unwrap() {
        cli.run(&["-f", SEED, "force-unlock", &lock.id]).assert_success();
    }
    store.close().await;
}

/// Runs each kill point; returns how many were reached (and converged) and how many were past the
/// apply's last call (it finished without being killed): a range with none of those may miss calls.
async fn kill_points(points: impl Iterator<Item = String>) -> (usize, usize) {
    if !cfg!(feature = "test-hooks") {
        panic!("RECONCILE_CRASH_AT is compiled in only with --features test-hooks: run scripts/test");
    }
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    let (mut survived, mut unreached) = (0, 0);
    for point in points {
        moto.reset();
        cli.remove_state();
        let killed = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &[("RECONCILE_CRASH_AT", Some(point.as_str()))]);
        if killed.status == 0 {
            // The apply made fewer calls than the point: nothing left to kill.
            unreached += 1;
            continue;
        }
        assert!(killed.stderr.contains("RECONCILE_CRASH_AT: aborting"), "{point}: not our crash:\n{killed}");
        break_stale_lock(&cli).await;
        let again = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
        assert!(again.success(), "{point}: re-apply failed:\n{again}\nfirst run:\n{killed}");
        let plan = cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]);
        assert_eq!(plan.status, 0, "{point}: state does not match AWS after recovery:\n{plan}");
        assert_seed_exactly_once(&aws).await;
        let state = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
        assert_eq!(state.load(STACK).await.unwrap().resources.len(), 17, "{point}");
        assert!(state.pending_operations(STACK).await.unwrap().is_empty(), "{point}: journal entries left open");
        state.close().await;
        survived += 1;
    }
    (survived, unreached)
}

/// kill -9 (abort) right after AWS answered each call of an apply from empty, before anything was
/// recorded: the next apply adopts what was made and creates the rest, exactly once.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn apply_killed_after_each_aws_call_converges_without_duplicates() {
    let (survived, unreached) = kill_points((1..=51).filter(|n| n % 2 == 1).map(|n| format!("after:{n}"))).await;
    eprintln!("kill points survived (after odd calls): {survived}");
    assert!(survived >= 18, "only {survived} kill points were reached");
    assert!(unreached >= 1, "the points stop before the apply's last call: widen the range");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn apply_killed_after_or_before_other_calls_converges_without_duplicates() {
    let points = (1..=52).filter(|n| n % 2 == 0).map(|n| format!("after:{n}")).chain([3, 9, 17, 25].map(|n| format!("before:{n}")));
    let (survived, unreached) = kill_points(points).await;
    eprintln!("kill points survived (after even calls, and before some): {survived}");
    assert!(survived >= 20, "only {survived} kill points were reached");
    assert!(unreached >= 1, "the points stop before the apply's last call: widen the range");
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_we_do_not_own_are_never_deleted_and_name_clashes_are_conflicts() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    // Somebody else's log group with our name: a conflict; everything else still converges.
    aws.logs.create_log_group().log_group_name("DevLogGroupAccessLog").send().await.unwrap();
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(
        out.stdout.contains("dev_access_logs: DevLogGroupAccessLog already exists in AWS but this stack's state does not own it"),
        "{out}"
    );
    assert!(
        out.stdout.contains("dev_stage: skipped: depends on dev_access_logs which failed") || out.stderr.contains("dev_stage: skipped"),
        "{out}"
    );
    assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_ok());

    // Import is explicit; a resource tagged for another stack is refused.
    aws.logs
        .tag_resource()
        .resource_arn("arn:aws:logs:us-east-1:123456789012:log-group:DevLogGroupAccessLog")
        .tags("reconcile:stack", "someone-else")
        .send()
        .await
        .unwrap();
    let out = cli.run(&["-f", SEED, "import", "dev_access_logs", "DevLogGroupAccessLog"]);
    out.assert_status(1);
    assert!(out.stderr.contains("belongs to stack `someone-else`"), "{out}");

    // A resource the state owns whose ownership tag was changed outside: destroy refuses it.
    aws.logs
        .tag_resource()
        .resource_arn("arn:aws:logs:us-east-1:123456789012:log-group:ProdLogGroupAccessLog")
        .tags("reconcile:stack", "someone-else")
        .send()
        .await
        .unwrap();
    let out = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stdout.contains("prod_access_logs: refusing to delete ProdLogGroupAccessLog"), "{out}");
    let groups = aws.logs.describe_log_groups().send().await.unwrap();
    let mut names: Vec<_> = groups.log_groups().iter().filter_map(|g| g.log_group_name()).collect();
    names.sort();
    assert_eq!(names, vec!["DevLogGroupAccessLog", "ProdLogGroupAccessLog"], "what is not ours survives destroy");
    assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty(), "what is ours is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_environment_values_never_show_nor_reach_the_state_file() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    let with_secret = |v: &str| {
        text.replace("code = \"apigw-lambda-basic/lambda\"", &format!("code = \"apigw-lambda-basic/lambda\"\nsecret_environment = {{ DB_PASSWORD = \"{v}\" }}\nenvironment = {{ STAGE = \"demo\" }}"))
    };
    std::fs::write(&path, with_secret("hunter2-first-secret")).unwrap();

    let mut seen = String::new();
    for args in [vec!["-f", SEED, "-vv", "plan"], vec!["-f", SEED, "--json", "plan"], vec!["-f", SEED, "-vv", "apply", "--auto-approve"]] {
        let out = cli.run(&args);
        out.assert_success();
        seen.push_str(&out.combined());
    }
    assert!(seen.contains("secret_environment") && seen.contains("(sensitive)"), "{seen}");
    assert!(!seen.contains("hunter2"), "a secret value was shown");
    let env = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    let vars = env.environment().unwrap().variables().unwrap();
    assert_eq!(vars.get("DB_PASSWORD").map(String::as_str), Some("hunter2-first-secret"));
    assert_eq!(vars.get("STAGE").map(String::as_str), Some("demo"));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    // A changed secret is an update of that key, still without its values.
    std::fs::write(&path, with_secret("hunter2-second-secret")).unwrap();
    let plan = cli.run(&["-f", SEED, "plan"]);
    assert!(plan.stdout.contains("secret_environment.DB_PASSWORD = \"(sensitive)\" → \"(sensitive)\""), "{plan}");
    assert!(!plan.combined().contains("hunter2"), "{plan}");
    assert_eq!(
        changes(&plan_json(&cli, SEED)),
        vec![("hello_function".into(), "update".into(), vec!["secret_environment.DB_PASSWORD".into()])]
    );
    let out = cli.run(&["-f", SEED, "--json", "apply", "--auto-approve"]);
    out.assert_success();
    assert!(!out.combined().contains("hunter2"));
    let env = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(env.environment().unwrap().variables().unwrap().get("DB_PASSWORD").map(String::as_str), Some("hunter2-second-secret"));

    // The state file (and its WAL) holds only a hash.
    for file in ["reconcile.db", "reconcile.db-wal"] {
        if let Ok(bytes) = std::fs::read(cli.join(file)) {
            assert!(!String::from_utf8_lossy(&bytes).contains("hunter2"), "{file} holds a secret value");
        }
    }
}

// ---- watch: the drift-watch daemon ----

/// Longest a watch test waits for something a pass should show (interval 1 s + one pass, with room).
const WATCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// `reconcile --json drift [--all]`: the events.
fn drift_events(cli: &Cli, all: bool) -> Vec<Value> {
    let mut args = vec!["--json", "drift"];
    if all {
        args.push("--all");
    }
    let out = cli.run(&args);
    out.assert_success();
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("drift --json is not JSON ({e}):\n{out}"))
        .as_array()
        .unwrap()
        .clone()
}

fn event<'a>(events: &'a [Value], resource: &str, field: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["resource"] == resource && e["field"] == field)
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    support::http_request(port, "GET", path, "").unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

/// The value of the sample `series` (name with labels, exactly as rendered) in a /metrics body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Passes the watcher finished so far, from /metrics.
fn passes(port: u16) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    ["complete", "partial"]
        .iter()
        .filter_map(|r| sample(&body, &format!("reconcile_passes_total{{stack=\"{STACK}\",result=\"{r}\"}}")))
        .sum()
}

/// Waits until the watcher finished `n` more passes.
fn wait_passes(w: &mut support::Daemon, port: u16, n: f64) {
    let target = passes(port) + n;
    support::poll_until(WATCH_DEADLINE, &format!("{n} more passes"), || (passes(port) >= target).then_some(()), || w.stderr());
}

/// Starts `reconcile watch` on the seed stack (interval 1 s, a free port, JSON logs) and waits until
/// it is ready (its first pass is done).
fn start_watch(cli: &Cli, extra: &[&str]) -> (support::Daemon, u16) {
    let mut args = vec!["-f", SEED];
    args.extend_from_slice(extra);
    let (mut w, port) = spawn_watch(cli, &args, &[]);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    w.assert_running();
    (w, port)
}

/// Spawns `reconcile --log-format json watch --interval 1s --listen 127.0.0.1:0 <args>` and returns it
/// with its HTTP port, once /healthz answers.
fn spawn_watch(cli: &Cli, args: &[&str], env: &[(&str, Option<&str>)]) -> (support::Daemon, u16) {
    let mut all = vec!["--log-format", "json", "watch", "--interval", "1s", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut w = cli.spawn_with_env(&all, env);
    let port = w.port_after("listening on http://127.0.0.1:", WATCH_DEADLINE);
    assert_eq!(http_get(port, "/healthz").0, 200);
    (w, port)
}

/// The JSON log lines of a watcher whose `message` is `msg`.
fn log_lines(stderr: &str, msg: &str) -> Vec<Value> {
    stderr.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["message"] == msg).collect()
}

/// Out of band: data trace off on HelloApiGw's prod stage (the manifest has it on).
async fn turn_off_prod_data_trace(aws: &Aws) {
    use aws_sdk_apigateway::types::{Op, PatchOperation};
    let hello = api_id(aws, "HelloApiGw").await;
    aws.apigw
        .update_stage()
        .rest_api_id(&hello)
        .stage_name("prod")
        .patch_operations(PatchOperation::builder().op(Op::Replace).path("/*/*/logging/dataTrace").value("false").build())
        .send()
        .await
        .unwrap();
}

async fn out_of_band_drift(aws: &Aws) {
    turn_off_prod_data_trace(aws).await;
    aws.lambda.update_function_configuration().function_name("HelloLambdaTest").memory_size(256).send().await.unwrap();
    aws.logs.delete_log_group().log_group_name("DevLogGroupAccessLog").send().await.unwrap();
}

async fn prod_data_trace(aws: &Aws) -> bool {
    let hello = api_id(aws, "HelloApiGw").await;
    let prod = aws.apigw.get_stage().rest_api_id(&hello).stage_name("prod").send().await.unwrap();
    prod.method_settings().unwrap().get("*/*").unwrap().data_trace_enabled()
}

async fn memory(aws: &Aws) -> Option<i32> {
    aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap().memory_size()
}

/// SIGTERM ends the watcher with status 0 and leaves the state whole: it opens, holds no lock and no
/// unfinished journal entry, and `plan --detailed-exitcode` runs (exit `plan_status`).
async fn stop_watch_cleanly(cli: &Cli, w: support::Daemon, plan_status: i32) -> support::Output {
    w.signal("TERM");
    let out = w.wait(WATCH_DEADLINE);
    out.assert_success();
    assert!(!log_lines(&out.stderr, "stopped").is_empty(), "{out}");
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    assert!(store.lock_info(STACK).await.unwrap().is_none(), "a lock was left behind");
    assert!(store.pending_operations(STACK).await.unwrap().is_empty(), "journal entries left open");
    assert_eq!(store.load(STACK).await.unwrap().resources.len(), 17);
    store.close().await;
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(plan_status);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reports_drift_as_events_and_metrics_follows_manifest_edits_and_never_writes_to_aws() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = start_watch(&cli, &[]);
    assert!(drift_events(&cli, true).is_empty(), "in sync: no drift");
    let human = cli.run(&["drift"]);
    assert!(human.stdout.contains("No open drift."), "{human}");

    // A manifest edit while running is picked up: a new drift for that field, without a restart.
    let path = cli.join(SEED);
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("timeout = 10", "timeout = 20")).unwrap();
    let timeout = support::poll_until(
        WATCH_DEADLINE,
        "a drift event for the edited timeout",
        || event(&drift_events(&cli, false), "hello_function", "timeout").cloned(),
        || w.stderr(),
    );
    assert_eq!((timeout["expected"].clone(), timeout["actual"].clone()), (20.into(), 10.into()), "{timeout}");
    assert_eq!(timeout["type"], "aws_lambda_function");
    assert!(!log_lines(&w.stderr(), "manifest changed: reloaded").is_empty());

    // An invalid edit is reported with file:line:col, and the last good version is still watched.
    std::fs::write(&path, original.replace("timeout = 10", "timeout = 20").replace("memory_size = 512", "memory_size = \"lots\"")).unwrap();
    let warning = support::poll_until(
        WATCH_DEADLINE,
        "the invalid manifest warning",
        || log_lines(&w.stderr(), "manifest edit is invalid; still watching its last good version").first().cloned(),
        || w.stderr(),
    );
    let line = original.lines().position(|l| l.starts_with("memory_size")).unwrap() + 1;
    assert_eq!(warning["level"], "WARN");
    assert!(warning["location"].as_str().unwrap().ends_with(&format!("apigw-lambda-basic.toml:{line}:15")), "{warning}");
    wait_passes(&mut w, port, 2.0);
    assert!(event(&drift_events(&cli, false), "hello_function", "timeout").is_some(), "the last good manifest is still watched");
    w.assert_running();

    // Back to the original: the drift it made is over, "back in sync".
    std::fs::write(&path, &original).unwrap();
    support::poll_until(
        WATCH_DEADLINE,
        "the timeout drift to resolve",
        || drift_events(&cli, false).is_empty().then_some(()),
        || w.stderr(),
    );
    let past = drift_events(&cli, true);
    assert_eq!(past.len(), 1);
    assert_eq!(past[0]["how"], "back in sync");
    assert!(past[0]["resolved_at"].is_string() && past[0]["first_seen"].is_string() && past[0]["last_seen"].is_string());

    // Out of band: a stage setting, the function's memory, a deleted log group.
    let changed = std::time::Instant::now();
    out_of_band_drift(&aws).await;
    let events = support::poll_until(
        WATCH_DEADLINE,
        "drift events for the three out-of-band changes",
        || {
            let events = drift_events(&cli, false);
            let all = ["prod_stage:data_trace_enabled", "hello_function:memory_size", "dev_access_logs:*"]
                .iter()
                .all(|k| k.split_once(':').is_some_and(|(r, f)| event(&events, r, f).is_some()));
            all.then_some(events)
        },
        || w.stderr(),
    );
    let latency = changed.elapsed();
    let trace = event(&events, "prod_stage", "data_trace_enabled").unwrap();
    assert_eq!((trace["expected"].clone(), trace["actual"].clone()), (true.into(), false.into()));
    let mem = event(&events, "hello_function", "memory_size").unwrap();
    assert_eq!((mem["expected"].clone(), mem["actual"].clone()), (512.into(), 256.into()));
    assert_eq!(event(&events, "dev_access_logs", "*").unwrap()["actual"], "deleted outside reconcile");
    // The stage's log destination follows from the deleted group: not drift itself.
    assert_eq!(events.len(), 3, "{events:#?}");
    assert!(events.iter().all(|e| e["resolved_at"].is_null() && e["stack"] == STACK));
    let human = cli.run(&["drift"]);
    assert!(human.stdout.contains("hello_function.memory_size: expected 512, actual 256"), "{human}");
    assert!(human.stdout.contains("dev_access_logs: deleted outside reconcile"), "{human}");

    // The same through /metrics.
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    let drift = |r: &str| sample(&body, &format!("reconcile_drift{{stack=\"{STACK}\",resource=\"{r}\"}}"));
    assert_eq!(
        (drift("hello_function"), drift("prod_stage"), drift("dev_access_logs"), drift("waf_acl")),
        (Some(1.0), Some(1.0), Some(1.0), Some(0.0))
    );
    assert!(sample(&body, "reconcile_aws_calls_total{service=\"lambda\",operation=\"GetFunction\"}").unwrap() >= 2.0, "{body}");
    assert!(sample(&body, "reconcile_aws_errors_total{service=\"cloudwatchlogs\",operation=\"DescribeLogGroups\"}").is_some(), "{body}");
    assert!(sample(&body, &format!("reconcile_pass_duration_seconds_count{{stack=\"{STACK}\"}}")).unwrap() >= 3.0, "{body}");
    assert!(sample(&body, &format!("reconcile_last_success_timestamp_seconds{{stack=\"{STACK}\"}}")).unwrap() > 1.7e9, "{body}");

    // Without --remediate AWS is left as it is, pass after pass.
    wait_passes(&mut w, port, 2.0);
    assert_eq!(memory(&aws).await, Some(256));
    assert!(!prod_data_trace(&aws).await);
    assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_none());
    let stderr = w.stderr();
    let detected = log_lines(&stderr, "drift detected");
    assert!(detected.iter().any(|l| l["resource"] == "hello_function" && l["field"] == "memory_size" && l["actual"] == "256"), "{stderr}");
    let passes = log_lines(&stderr, "pass finished");
    let calls: Vec<u64> = passes.iter().filter(|p| p["complete"] == true).map(|p| p["aws_calls"].as_u64().unwrap()).collect();
    let took: Vec<u64> = passes.iter().map(|p| p["duration_ms"].as_u64().unwrap()).collect();
    eprintln!("watch: detection latency {latency:?}; AWS calls per pass {calls:?}; pass durations (ms) {took:?}");
    assert!(calls.iter().all(|c| *c > 0 && *c < 60), "{calls:?}");

    stop_watch_cleanly(&cli, w, 2).await;
    assert_eq!(drift_events(&cli, false).len(), 3, "open drift stays recorded after the watcher stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_remediate_waits_for_a_locked_stack_then_reverts_drift_and_records_it() {
    use reconcile::state::Store;
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    out_of_band_drift(&aws).await;

    // An apply holds the stack: drift is recorded, remediation is skipped and says so.
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    let held = store.lock(STACK, "apply", std::time::Duration::ZERO).await.unwrap();
    let (mut w, port) = start_watch(&cli, &["--remediate", "--lock-timeout", "200ms"]);
    support::poll_until(
        WATCH_DEADLINE,
        "remediation to be skipped while the stack is locked",
        || w.stderr().contains("skipping remediation this pass").then_some(()),
        || w.stderr(),
    );
    assert_eq!(drift_events(&cli, false).len(), 3);
    assert_eq!(memory(&aws).await, Some(256), "nothing is written while another holds the lock");
    store.unlock(STACK, &held.id).await.unwrap();

    // Once it is free: AWS is back to the manifest, and the events say so.
    let past = support::poll_until(
        WATCH_DEADLINE,
        "the drift to be remediated",
        || {
            let all = drift_events(&cli, true);
            (all.len() == 3 && all.iter().all(|e| e["how"] == "remediated")).then_some(all)
        },
        || format!("{:#?}\n{}", drift_events(&cli, true), w.stderr()),
    );
    assert!(past.iter().all(|e| e["resolved_at"].is_string()));
    assert!(drift_events(&cli, false).is_empty());
    assert_eq!(memory(&aws).await, Some(512));
    assert!(prod_data_trace(&aws).await);
    assert_eq!(log_group(&aws, "DevLogGroupAccessLog").await.unwrap().retention_in_days(), Some(731));
    let stderr = w.stderr();
    let reverted = log_lines(&stderr, "drift remediated");
    assert!(reverted.iter().any(|l| l["resource"] == "hello_function" && l["reverted_from"] == "256" && l["to"] == "512"), "{stderr}");

    // The next passes find nothing to do.
    wait_passes(&mut w, port, 2.0);
    assert!(drift_events(&cli, false).is_empty());
    let (_, body) = http_get(port, "/metrics");
    assert_eq!(sample(&body, &format!("reconcile_drift{{stack=\"{STACK}\",resource=\"hello_function\"}}")), Some(0.0));
    assert!(sample(&body, &format!("reconcile_remediations_total{{stack=\"{STACK}\"}}")).unwrap() >= 3.0, "{body}");
    assert!(store.lock_info(STACK).await.unwrap().is_none(), "remediation released its lock");
    store.close().await;
    stop_watch_cleanly(&cli, w, 0).await;
}

// ---- faults: throttling, 5xx and dropped connections through the fault proxy ----

#[tokio::test(flavor = "multi_thread")]
async fn apply_and_plan_succeed_with_30_percent_throttling_and_5xx_injected() {
    let (moto, cli) = seeded();
    let proxy = support::FaultProxy::start(&moto.url, &["--throttle-rate", "0.2", "--error-rate", "0.1", "--seed", "7"]);
    // The tool's own retry policy (not the tests' 2 attempts).
    let through_proxy = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str())), ("AWS_MAX_ATTEMPTS", None)];
    let out = cli.run_with_env(&["-f", SEED, "--stats", "apply", "--auto-approve"], &through_proxy);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 17 done, 0 failed"), "{out}");
    let plan = cli.run_with_env(&["-f", SEED, "plan", "--detailed-exitcode"], &through_proxy);
    plan.assert_status(0);
    let stats = proxy.stats();
    let (throttled, errored, requests) =
        (stats["throttled"].as_u64().unwrap(), stats["errored"].as_u64().unwrap(), stats["requests"].as_u64().unwrap());
    eprintln!("faults injected: {throttled} throttled, {errored} 5xx out of {requests} requests; all retried");
    assert!(throttled >= 5 && errored >= 2, "too few faults to mean anything: {stats}");
    // And without the proxy the state matches AWS exactly.
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_seed_exactly_once(&aws(&moto).await).await;
}

/// Through a proxy that enforces API Gateway's account limits (10 rps burst 40, one CreateRestApi per
/// 3 s, one CreateDeployment per 5 s), the client-side pacing (on by default) keeps every request under
/// them: the seed's two REST APIs and two deployments go through without a single 429.
#[tokio::test(flavor = "multi_thread")]
async fn pacing_keeps_the_seed_apply_under_api_gateway_limits() {
    let (moto, cli) = seeded();
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    let paced = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str())), ("RECONCILE_PACING", None), ("AWS_MAX_ATTEMPTS", None)];
    let out = cli.run_with_env(&["-f", SEED, "--json", "--stats", "apply", "--auto-approve"], &paced);
    out.assert_success();
    let stats = proxy.stats();
    assert_eq!(stats["limited"].as_u64(), Some(0), "the proxy answered 429 to paced requests: {stats}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let calls = doc["aws_calls"].as_array().unwrap();
    let count = |op: &str| calls_to(calls, op);
    assert_eq!((count("CreateRestApi"), count("CreateDeployment")), (2, 2), "one attempt each: {calls:?}");
    assert!(calls.iter().all(|c| c["throttled"].as_u64() == Some(0)), "{calls:?}");
    cli.run_with_env(&["-f", SEED, "plan", "--detailed-exitcode"], &paced).assert_status(0);

    // Three REST APIs: the third waits 6.2 s in the pacer, longer than the SDK's 5 s upload stall
    // grace period, and must not time out. (A proxy of its own: limits as a fresh account has them,
    // not half used by the apply above, which would rightly cost a 429 and a retry.)
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    let paced = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str())), ("RECONCILE_PACING", None), ("AWS_MAX_ATTEMPTS", None)];
    let three: String =
        (1..=3).map(|i| format!("[resources.api{i}]\ntype = \"aws_api_gateway_rest_api\"\nname = \"Paced{i}\"\n\n")).collect();
    let manifest = cli.write_file("manifests/three.toml", &format!("[stack]\nname = \"paced\"\n\n{three}"));
    let manifest = manifest.to_str().unwrap();
    let out = cli.run_with_env(&["-f", manifest, "--json", "--stats", "apply", "--auto-approve"], &paced);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(calls_to(doc["aws_calls"].as_array().unwrap(), "CreateRestApi"), 3, "{out}");
    let stats = proxy.stats();
    assert_eq!(stats["limited"].as_u64(), Some(0), "{stats}");
    assert!(stats["requests"].as_u64().unwrap() >= 3, "the apply went through the proxy: {stats}");
    let apis = aws(&moto).await.apigw.get_rest_apis().send().await.unwrap();
    let names: Vec<_> = apis.items().iter().filter_map(|a| a.name()).filter(|n| n.starts_with("Paced")).collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_fails_only_that_resource_and_its_dependents() {
    let (moto, cli) = seeded();
    let proxy = support::FaultProxy::start(&moto.url, &["--only", "wafv2", "--error-rate", "1.0"]);
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &[("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))]);
    out.assert_status(1);
    assert!(out.stdout.contains("Apply failed: 15 done, 1 failed, 1 skipped"), "{out}");
    assert!(
        out.stdout.contains("waf_acl: create waf_acl: wafv2:CreateWebACL"),
        "the error names the resource, the operation and the AWS error:\n{out}"
    );
    assert!(out.stderr.contains("waf_prod_association: skipped: depends on waf_acl which failed"), "{out}");
    // The state holds exactly what happened.
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    let state = store.load(STACK).await.unwrap();
    assert_eq!(state.resources.len(), 15);
    assert!(!state.resources.contains_key("waf_acl") && !state.resources.contains_key("waf_prod_association"));
    store.close().await;
    // Once the service answers again, the next apply finishes the job.
    proxy.configure(r#"{"error_rate": 0.0}"#);
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &[("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 2 done"), "{out}");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn protect_refuses_replacement_and_destroy_and_a_wrong_region_is_named() {
    let (moto, cli) = seeded();
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    let protected = text.replace("name = \"ProdLogGroupAccessLog\"\n", "name = \"ProdLogGroupAccessLog\"\nprotect = true\n");
    std::fs::write(&path, &protected).unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();

    // Renaming forces a replacement: refused, the group stays.
    std::fs::write(&path, protected.replace("name = \"ProdLogGroupAccessLog\"", "name = \"ProdLogGroupAccessLog2\"")).unwrap();
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stdout.contains("prod_access_logs: `protect = true` refuses its replacement"), "{out}");
    let aws = aws(&moto).await;
    assert!(log_group(&aws, "ProdLogGroupAccessLog").await.is_some());
    std::fs::write(&path, &protected).unwrap();
    let out = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    out.assert_status(1);
    assert!(
        out.stderr.contains("refusing to destroy; nothing was changed:\n  prod_access_logs: `protect = true` refuses its deletion"),
        "{out}"
    );
    assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_ok(), "nothing was destroyed");

    let out = cli.run_with_env(&["-f", SEED, "plan"], &[("AWS_REGION", Some("moon-base"))]);
    out.assert_status(1);
    assert!(out.stderr.contains("`moon-base` is not an AWS region name"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_backs_off_an_unreadable_resource_alone_and_keeps_watching_the_rest() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    // Every WAF call fails (HTTP 503); the other services answer. The watcher is given the directory.
    let proxy = support::FaultProxy::start(&moto.url, &["--only", "wafv2", "--error-rate", "1.0"]);
    let (mut w, port) = spawn_watch(&cli, &["manifests"], &[("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))]);
    wait_passes(&mut w, port, 3.0);
    assert_eq!(http_get(port, "/readyz").0, 503, "not ready while resources cannot be read");

    // The rest is still watched: drift elsewhere is found.
    aws.lambda.update_function_configuration().function_name("HelloLambdaTest").memory_size(256).send().await.unwrap();
    support::poll_until(
        WATCH_DEADLINE,
        "the memory drift",
        || event(&drift_events(&cli, false), "hello_function", "memory_size").map(|_| ()),
        || w.stderr(),
    );
    // Each failing resource is reported and waits 2, 4, 8… intervals: fewer reads than passes.
    let stderr = w.stderr();
    let failed = log_lines(&stderr, "read failed; this resource backs off, the others are still watched");
    let waits: Vec<u64> = failed.iter().filter(|l| l["resource"] == "waf_acl").map(|l| l["retry_in_s"].as_u64().unwrap()).collect();
    assert!(waits.len() >= 2, "{stderr}");
    assert_eq!(&waits[..2], &[2, 4], "{stderr}");
    // The prod stage's web ACL association is read with its stage (API Gateway answers): still watched.
    assert!(!failed.iter().any(|l| l["resource"] == "waf_prod_association"), "{stderr}");
    assert!(failed.iter().all(|l| l["resource"].as_str().unwrap().starts_with("waf_")), "{stderr}");
    let total_passes = log_lines(&stderr, "pass finished").len();
    assert!(waits.len() < total_passes, "{} reads of waf_acl in {total_passes} passes", waits.len());
    assert!(drift_events(&cli, true).iter().all(|e| !e["resource"].as_str().unwrap().starts_with("waf_")), "no drift is made up");

    // When WAF answers again, the next read of each succeeds and the stack is ready.
    proxy.configure(r#"{"error_rate": 0.0}"#);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    stop_watch_cleanly(&cli, w, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_applies_at_once_one_runs_and_the_other_gets_the_lock_error() {
    let (_moto, cli) = seeded();
    // With API Gateway pacing on an apply of the seed stack takes several seconds, so they overlap.
    let pacing = [("RECONCILE_PACING", Some("on"))];
    let first = cli.spawn_with_env(&["-f", SEED, "apply", "--auto-approve"], &pacing);
    let second = cli.spawn_with_env(&["-f", SEED, "apply", "--auto-approve"], &pacing);
    let (a, b) = (first.wait(std::time::Duration::from_secs(120)), second.wait(std::time::Duration::from_secs(120)));
    let (ok, locked): (Vec<_>, Vec<_>) = [&a, &b].into_iter().partition(|o| o.success());
    assert_eq!((ok.len(), locked.len()), (1, 1), "exactly one apply must run:\n{a}\n{b}");
    assert!(locked[0].stderr.contains(&format!("stack `{STACK}` is locked by apply")), "{}", locked[0]);
    assert!(ok[0].stdout.contains("Apply complete: 17 done"), "{}", ok[0]);
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}
