//! End-to-end tests: the real `reconcile` binary against a private moto server per test, with
//! outcomes read back through the AWS SDK.

mod support;

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
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --json is not JSON ({e}):\n{out}"))
}

/// (resource, action, changed paths) of every resource that changes.
fn changes(plan: &Value) -> Vec<(String, String, Vec<String>)> {
    plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] != "no_op")
        .map(|r| {
            let paths = r["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["path"].as_str().unwrap().to_string())
                .collect();
            (
                r["name"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                paths,
            )
        })
        .collect()
}

fn decode(doc: &str) -> Value {
    serde_json::from_str(&percent_encoding::percent_decode_str(doc).decode_utf8_lossy()).unwrap()
}

async fn log_group(aws: &Aws, name: &str) -> Option<aws_sdk_cloudwatchlogs::types::LogGroup> {
    let out = aws
        .logs
        .describe_log_groups()
        .log_group_name_prefix(name)
        .send()
        .await
        .unwrap();
    out.log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(name))
        .cloned()
}

fn serial(cli: &Cli) -> i64 {
    let out = cli.run(&["-f", SEED, "--json", "plan"]);
    serde_json::from_str::<Value>(&out.stdout)
        .map(|v| v["state_serial"].as_i64().unwrap_or(-1))
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_from_empty_creates_everything_and_second_plan_is_empty() {
    let (moto, cli) = seeded();
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_success();
    assert!(
        out.stdout
            .contains("Apply complete: 5 done, 0 failed, 0 skipped"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "function_arn = arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest"
        ),
        "{out}"
    );
    let aws = aws(&moto).await;

    // Lambda: configuration, role, tags and code as the manifest says.
    let f = aws
        .lambda
        .get_function()
        .function_name("HelloLambdaTest")
        .send()
        .await
        .unwrap();
    let c = f.configuration().unwrap();
    assert_eq!(c.memory_size(), Some(512));
    assert_eq!(c.timeout(), Some(10));
    assert_eq!(c.runtime().map(|r| r.as_str()), Some("python3.13"));
    assert_eq!(c.handler(), Some("index.handler"));
    assert_eq!(
        c.role(),
        Some("arn:aws:iam::123456789012:role/HelloLambdaTest-role")
    );
    let tags = f.tags().unwrap();
    assert_eq!(
        tags.get("reconcile:stack").map(String::as_str),
        Some("apigw-lambda-basic")
    );
    assert_eq!(
        tags.get("reconcile:managed-by").map(String::as_str),
        Some("reconcile")
    );
    let local =
        reconcile::manifest::artifact::package(&cli.join("manifests/apigw-lambda-basic/lambda"))
            .unwrap();
    assert_eq!(c.code_sha256(), Some(local.sha256.as_str()));

    // Roles: trust policies, the managed policy, the inline policies (with the resolved ARN).
    let role = aws
        .iam
        .get_role()
        .role_name("HelloLambdaTest-role")
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    let trust = decode(role.assume_role_policy_document().unwrap());
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "lambda.amazonaws.com"
    );
    assert!(
        role.tags()
            .iter()
            .any(|t| t.key() == "reconcile:stack" && t.value() == "apigw-lambda-basic")
    );
    let attached = aws
        .iam
        .list_attached_role_policies()
        .role_name("HelloLambdaTest-role")
        .send()
        .await
        .unwrap();
    let arns: Vec<_> = attached
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn())
        .collect();
    assert_eq!(
        arns,
        vec!["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"]
    );
    let invoke = aws
        .iam
        .get_role_policy()
        .role_name("ApiGwInvokeLambda")
        .policy_name("invoke-lambda")
        .send()
        .await
        .unwrap();
    let invoke = decode(invoke.policy_document());
    assert_eq!(
        invoke["Statement"][0]["Resource"][0],
        "arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest"
    );
    let logs_policy = aws
        .iam
        .get_role_policy()
        .role_name("ApiGwInvokeLambda")
        .policy_name("write-logs")
        .send()
        .await
        .unwrap();
    assert_eq!(
        decode(logs_policy.policy_document())["Statement"][0]["Action"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let api_role = aws
        .iam
        .get_role()
        .role_name("ApiGwInvokeLambda")
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    assert_eq!(
        decode(api_role.assume_role_policy_document().unwrap())["Statement"][0]["Principal"]["Service"],
        "apigateway.amazonaws.com"
    );

    // Log groups: retention and ownership tags.
    for name in ["DevLogGroupAccessLog", "ProdLogGroupAccessLog"] {
        let g = log_group(&aws, name)
            .await
            .unwrap_or_else(|| panic!("log group {name} missing"));
        assert_eq!(g.retention_in_days(), Some(731));
        let tags = aws
            .logs
            .list_tags_for_resource()
            .resource_arn(g.log_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            tags.tags()
                .unwrap()
                .get("reconcile:stack")
                .map(String::as_str),
            Some("apigw-lambda-basic")
        );
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
    let out = cli.run_with_env(
        &["-f", SEED, "output", "function_arn"],
        &[("AWS_ENDPOINT_URL", Some("http://127.0.0.1:9"))],
    );
    out.assert_success();
    assert_eq!(
        out.stdout.trim(),
        "arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaTest"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_band_changes_are_detected_and_repaired() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let aws = aws(&moto).await;
    aws.lambda
        .update_function_configuration()
        .function_name("HelloLambdaTest")
        .memory_size(256)
        .send()
        .await
        .unwrap();
    aws.logs
        .delete_log_group()
        .log_group_name("DevLogGroupAccessLog")
        .send()
        .await
        .unwrap();
    aws.logs
        .put_retention_policy()
        .log_group_name("ProdLogGroupAccessLog")
        .retention_in_days(7)
        .send()
        .await
        .unwrap();

    let plan = cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]);
    plan.assert_status(2);
    assert!(plan.stdout.contains("memory_size = 256 → 512"), "{plan}");
    assert!(
        plan.stdout.contains("retention_in_days = 7 → 731"),
        "{plan}"
    );
    assert!(
        plan.stdout
            .contains("DevLogGroupAccessLog was deleted outside reconcile"),
        "{plan}"
    );
    let mut got = changes(&plan_json(&cli, SEED));
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "dev_access_logs".into(),
                "create".into(),
                vec!["name".into(), "retention_in_days".into(), "tags".into()]
            ),
            (
                "hello_function".into(),
                "update".into(),
                vec!["memory_size".into()]
            ),
            (
                "prod_access_logs".into(),
                "update".into(),
                vec!["retention_in_days".into()]
            ),
        ]
    );

    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let f = aws
        .lambda
        .get_function_configuration()
        .function_name("HelloLambdaTest")
        .send()
        .await
        .unwrap();
    assert_eq!(f.memory_size(), Some(512));
    assert_eq!(
        log_group(&aws, "DevLogGroupAccessLog")
            .await
            .unwrap()
            .retention_in_days(),
        Some(731)
    );
    assert_eq!(
        log_group(&aws, "ProdLogGroupAccessLog")
            .await
            .unwrap()
            .retention_in_days(),
        Some(731)
    );
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"])
        .assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_edits_update_exactly_what_changed() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let aws = aws(&moto).await;
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();

    // Memory.
    std::fs::write(
        &path,
        text.replace("memory_size = 512", "memory_size = 1024"),
    )
    .unwrap();
    assert_eq!(
        changes(&plan_json(&cli, SEED)),
        vec![(
            "hello_function".into(),
            "update".into(),
            vec!["memory_size".into()]
        )]
    );
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let c = aws
        .lambda
        .get_function_configuration()
        .function_name("HelloLambdaTest")
        .send()
        .await
        .unwrap();
    assert_eq!(c.memory_size(), Some(1024));

    // Code: detected by content hash, deployed, then in sync.
    let code = cli.join("manifests/apigw-lambda-basic/lambda/index.py");
    std::fs::write(
        &code,
        std::fs::read_to_string(&code)
            .unwrap()
            .replace("time.sleep(2)", "time.sleep(0)"),
    )
    .unwrap();
    assert_eq!(
        changes(&plan_json(&cli, SEED)),
        vec![(
            "hello_function".into(),
            "update".into(),
            vec!["code_sha256".into()]
        )]
    );
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let local =
        reconcile::manifest::artifact::package(&cli.join("manifests/apigw-lambda-basic/lambda"))
            .unwrap();
    let c = aws
        .lambda
        .get_function_configuration()
        .function_name("HelloLambdaTest")
        .send()
        .await
        .unwrap();
    assert_eq!(c.code_sha256(), Some(local.sha256.as_str()));

    // Policy: one inline policy document.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("  \"logs:FilterLogEvents\",\n", "")).unwrap();
    assert_eq!(
        changes(&plan_json(&cli, SEED)),
        vec![(
            "api_invoke_role".into(),
            "update".into(),
            vec!["inline_policies.write-logs".into()]
        )]
    );
    let plan = cli.run(&["-f", SEED, "plan"]);
    assert!(
        plan.stdout.contains("-         \"logs:FilterLogEvents\""),
        "{plan}"
    );
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let doc = aws
        .iam
        .get_role_policy()
        .role_name("ApiGwInvokeLambda")
        .policy_name("write-logs")
        .send()
        .await
        .unwrap();
    assert_eq!(
        decode(doc.policy_document())["Statement"][0]["Action"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"])
        .assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_resource_deletes_it_and_destroy_leaves_only_what_is_not_ours() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    // Something we do not own, with a name close to ours.
    aws.logs
        .create_log_group()
        .log_group_name("DevLogGroupAccessLog-not-ours")
        .send()
        .await
        .unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();

    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("# Access logs of the dev stage").unwrap();
    let end = text.find("# Access logs of the prod stage").unwrap();
    std::fs::write(&path, format!("{}{}", &text[..start], &text[end..])).unwrap();
    assert_eq!(
        changes(&plan_json(&cli, SEED)),
        vec![("dev_access_logs".into(), "delete".into(), vec![])]
    );
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_none());

    let out = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 4 done"), "{out}");
    assert!(
        aws.lambda
            .list_functions()
            .send()
            .await
            .unwrap()
            .functions()
            .is_empty()
    );
    let roles = aws.iam.list_roles().send().await.unwrap();
    let ours: Vec<_> = roles
        .roles()
        .iter()
        .map(|r| r.role_name())
        .filter(|n| *n == "ApiGwInvokeLambda" || *n == "HelloLambdaTest-role")
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
    let groups = aws.logs.describe_log_groups().send().await.unwrap();
    let names: Vec<_> = groups
        .log_groups()
        .iter()
        .filter_map(|g| g.log_group_name())
        .collect();
    assert_eq!(names, vec!["DevLogGroupAccessLog-not-ours"]);
    // Destroying again is a no-op.
    let again = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    again.assert_success();
    assert!(again.stdout.contains("No changes"), "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_manifests_fail_before_any_aws_call_and_leave_state_alone() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let state_before = std::fs::read(cli.join("reconcile.db")).unwrap();
    let requests_before = moto
        .log()
        .lines()
        .filter(|l| l.contains("HTTP/1.1\""))
        .count();

    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let bad = text
        .replace(
            "role = \"${hello_lambda_role.arn}\"",
            "role = \"${hello_lambda_rol.arn}\"",
        )
        .replace("memory_size = 512", "memory_size = \"big\"");
    cli.write_file("manifests/bad.toml", &bad);
    let line = bad
        .lines()
        .position(|l| l.starts_with("role = \"${hello_lambda_rol"))
        .unwrap()
        + 1;
    for cmd in ["plan", "apply", "destroy"] {
        let out = cli.run(
            &["-f", "manifests/bad.toml", cmd, "--auto-approve"]
                .iter()
                .copied()
                .filter(|a| cmd != "plan" || *a != "--auto-approve")
                .collect::<Vec<_>>(),
        );
        out.assert_status(1);
        assert!(out.stderr.contains(&format!("manifests/bad.toml:{line}:9: error: reference `${{hello_lambda_rol.arn}}` names no resource")), "{out}");
        assert!(
            out.stderr
                .contains("`memory_size` must be an integer, found string"),
            "{out}"
        );
    }
    let requests_after = moto
        .log()
        .lines()
        .filter(|l| l.contains("HTTP/1.1\""))
        .count();
    assert_eq!(
        requests_before,
        requests_after,
        "a bad manifest made AWS calls:\n{}",
        moto.log()
    );
    assert_eq!(
        std::fs::read(cli.join("reconcile.db")).unwrap(),
        state_before
    );

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
    assert!(
        aws.lambda
            .list_functions()
            .send()
            .await
            .unwrap()
            .functions()
            .is_empty()
    );

    let out = cli.run_with_env(&["-f", SEED, "plan"], &[("AWS_REGION", None)]);
    out.assert_status(1);
    assert!(out.stderr.contains("no AWS region configured"), "{out}");
    let out = cli.run_with_env(
        &["-f", SEED, "plan"],
        &[("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)],
    );
    out.assert_status(1);
    assert!(out.stderr.contains("no AWS credentials found"), "{out}");
    // Refreshing what the state owns needs the endpoint: an unreachable one is named as such.
    cli.run(&["-f", SEED, "apply", "--auto-approve"])
        .assert_success();
    let out = cli.run_with_env(
        &["-f", SEED, "plan"],
        &[("AWS_ENDPOINT_URL", Some("http://127.0.0.1:9"))],
    );
    assert!(
        out.status == 1 && out.stderr.contains("cannot reach the AWS endpoint"),
        "{out}"
    );
    // Corrupt state: clear error, file untouched.
    cli.write_file("corrupt.db", &"not a database ".repeat(100));
    let out = cli.run(&["-f", SEED, "--state", "corrupt.db", "plan"]);
    out.assert_status(1);
    assert!(
        out.stderr.contains("is not a reconcile state database"),
        "{out}"
    );
    assert_eq!(cli.read_file("corrupt.db"), "not a database ".repeat(100));
}
