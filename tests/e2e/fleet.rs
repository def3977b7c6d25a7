//! Collection reads (end to end against moto): a plan that reads many resources of a kind lists
//! them once (`GetRestApis`, `GetStages`, `GetDeployments`, `DescribeLogGroups` by prefix,
//! `GetAccountAuthorizationDetails`) and finds exactly what per-resource reads find.

#[allow(unused_imports)]
use super::*;

/// `n` copies of a unit with every kind that has a collection read: an IAM role with an inline
/// policy, a log group, a REST API with two deployments and two stages (one on each).
fn write_fleet(cli: &Cli, n: usize) -> String {
    write_named(cli, "fleet", "", n)
}

/// [`write_fleet`] as stack `stack`, its AWS names starting with `prefix`.
fn write_named(cli: &Cli, stack: &str, prefix: &str, n: usize) -> String {
    let mut text = format!("[stack]\nname = \"{stack}\"\n");
    for i in 1..=n {
        text.push_str(&format!(
            r#"
[resources.role_c{i:02}]
type = "aws_iam_role"
name = "{prefix}FleetRole-c{i:02}"

[resources.role_c{i:02}.assume_role_policy]
Version = "2012-10-17"
Statement = [{{ Effect = "Allow", Principal = {{ Service = "lambda.amazonaws.com" }}, Action = "sts:AssumeRole" }}]

[resources.role_c{i:02}.inline_policies.logs]
Version = "2012-10-17"
Statement = [{{ Effect = "Allow", Action = ["logs:PutLogEvents"], Resource = ["*"] }}]

[resources.logs_c{i:02}]
type = "aws_cloudwatch_log_group"
name = "{prefix}FleetLogs-c{i:02}"
retention_in_days = 7

[resources.api_c{i:02}]
type = "aws_api_gateway_rest_api"
name = "{prefix}FleetApi-c{i:02}"
description = "copy {i}"
routes = [{{ path = "/ping", method = "GET", integration = {{ type = "MOCK" }} }}]

[resources.blue_c{i:02}]
type = "aws_api_gateway_deployment"
rest_api_id = "${{api_c{i:02}.id}}"
description = "blue"
triggers = {{ model = "${{api_c{i:02}.model_hash}}" }}

[resources.green_c{i:02}]
type = "aws_api_gateway_deployment"
rest_api_id = "${{api_c{i:02}.id}}"
description = "green"
triggers = {{ model = "${{api_c{i:02}.model_hash}}" }}

[resources.dev_c{i:02}]
type = "aws_api_gateway_stage"
rest_api_id = "${{api_c{i:02}.id}}"
stage_name = "dev"
deployment_id = "${{blue_c{i:02}.id}}"

[resources.prod_c{i:02}]
type = "aws_api_gateway_stage"
rest_api_id = "${{api_c{i:02}.id}}"
stage_name = "prod"
deployment_id = "${{green_c{i:02}.id}}"
description = "production"
"#
        ));
    }
    cli.write_file(format!("manifests/{stack}-{n}.toml"), &text).to_str().unwrap().to_string()
}

/// A `plan --json --stats` document, with collection reads on or off.
fn stats_plan(cli: &Cli, manifest: &str, collection: bool, endpoint: Option<&str>) -> Value {
    let mut env = vec![("RECONCILE_COLLECTION_READS", Some(if collection { "on" } else { "off" }))];
    if let Some(url) = endpoint {
        env.push(("AWS_ENDPOINT_URL", Some(url)));
    }
    let out = cli.run_with_env(&["-f", manifest, "--json", "--stats", "plan"], &env);
    out.assert_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("plan --json is not JSON ({e}):\n{out}"))
}

fn count(doc: &Value, operation: &str) -> u64 {
    calls_to(doc["aws_calls"].as_array().unwrap(), operation)
}

fn service_calls(doc: &Value, service: &str) -> u64 {
    doc["aws_calls_by_service"].as_array().unwrap().iter().find(|s| s["service"] == service).map_or(0, |s| s["calls"].as_u64().unwrap())
}

/// The plan without its call counts, for comparing two plans of the same state.
fn without_stats(mut doc: Value) -> Value {
    for key in ["aws_calls", "aws_calls_by_service", "pacing"] {
        doc.as_object_mut().unwrap().remove(key);
    }
    doc
}

#[tokio::test(flavor = "multi_thread")]
async fn collection_reads_list_each_kind_once_and_a_lone_resource_keeps_its_own_read() {
    let (_moto, cli) = setup();
    let one = write_fleet(&cli, 1);
    cli.run(&["-f", &one, "apply", "--auto-approve"]).assert_success();
    let doc = stats_plan(&cli, &one, true, None);
    assert!(changes(&doc).is_empty(), "{doc}");
    // One of each kind: its own calls, no listing (two deployments and two stages of one API are listed).
    for (op, n) in [
        ("GetRestApi", 1),
        ("GetRestApis", 0),
        ("GetResources", 1),
        ("GetStages", 1),
        ("GetStage", 0),
        ("GetDeployments", 1),
        ("GetDeployment", 0),
        ("GetRole", 1),
        ("ListRolePolicies", 1),
        ("GetAccountAuthorizationDetails", 0),
        ("DescribeLogGroups", 1),
    ] {
        assert_eq!(count(&doc, op), n, "{op}: {}", doc["aws_calls"]);
    }
    assert_eq!(service_calls(&doc, "apigateway"), 4, "{}", doc["aws_calls_by_service"]);

    let (_moto, cli) = setup();
    let many = write_fleet(&cli, 4);
    cli.run(&["-f", &many, "apply", "--auto-approve"]).assert_success();
    let doc = stats_plan(&cli, &many, true, None);
    assert!(changes(&doc).is_empty(), "{doc}");
    for (op, n) in [
        ("GetRestApi", 0),
        ("GetRestApis", 1),
        ("GetResources", 4),
        ("GetStages", 4),
        ("GetStage", 0),
        ("GetDeployments", 4),
        ("GetDeployment", 0),
        ("GetRole", 4),
        ("ListRolePolicies", 0),
        ("GetRolePolicy", 0),
        ("ListAttachedRolePolicies", 0),
        ("GetAccountAuthorizationDetails", 1),
        ("DescribeLogGroups", 1),
        ("ListTagsForResource", 4),
    ] {
        assert_eq!(count(&doc, op), n, "{op}: {}", doc["aws_calls"]);
    }
    assert_eq!(service_calls(&doc, "apigateway"), 13, "3 per copy and one listing: {}", doc["aws_calls_by_service"]);
    let single = stats_plan(&cli, &many, false, None);
    assert_eq!(service_calls(&single, "apigateway"), 4 * 6, "one call per read without collection reads");
    assert_eq!(without_stats(doc), without_stats(single), "the same plan either way");
}

#[tokio::test(flavor = "multi_thread")]
async fn collection_and_single_reads_plan_the_same_out_of_band_changes() {
    let (moto, cli) = setup();
    let many = write_fleet(&cli, 3);
    cli.run(&["-f", &many, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let apis = aws.apigw.get_rest_apis().limit(500).send().await.unwrap();
    let id_of = |name: &str| apis.items().iter().find(|a| a.name() == Some(name)).and_then(|a| a.id()).unwrap().to_string();
    // Out of band: one REST API deleted (its stages and deployments with it), another's stage, a
    // role's inline policy and a log group's retention changed.
    aws.apigw.delete_rest_api().rest_api_id(id_of("FleetApi-c02")).send().await.unwrap();
    let api3 = id_of("FleetApi-c03");
    let op = aws_sdk_apigateway::types::PatchOperation::builder()
        .op(aws_sdk_apigateway::types::Op::Replace)
        .path("/description")
        .value("changed by hand")
        .build();
    aws.apigw.update_stage().rest_api_id(&api3).stage_name("prod").patch_operations(op).send().await.unwrap();
    aws.iam
        .put_role_policy()
        .role_name("FleetRole-c01")
        .policy_name("logs")
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":["logs:PutLogEvents"],"Resource":["*"]}]}"#)
        .send()
        .await
        .unwrap();
    aws.logs.put_retention_policy().log_group_name("FleetLogs-c03").retention_in_days(30).send().await.unwrap();

    let batched = stats_plan(&cli, &many, true, None);
    // One listing for the reads, one for the name check of the REST API to create; the API the
    // listing lacks is confirmed gone by its own read.
    assert_eq!((count(&batched, "GetRestApis"), count(&batched, "GetRestApi")), (2, 1), "{}", batched["aws_calls"]);
    assert_eq!(count(&batched, "GetAccountAuthorizationDetails"), 1, "{}", batched["aws_calls"]);
    let single = stats_plan(&cli, &many, false, None);
    assert_eq!((count(&single, "GetRestApis"), count(&single, "GetRestApi")), (1, 3), "{}", single["aws_calls"]);
    let mut found = changes(&batched);
    found.sort();
    let mut expected = vec![
        ("api_c02".to_string(), "create".to_string(), vec![]),
        ("blue_c02".to_string(), "create".to_string(), vec![]),
        ("dev_c02".to_string(), "create".to_string(), vec![]),
        ("green_c02".to_string(), "create".to_string(), vec![]),
        ("logs_c03".to_string(), "update".to_string(), vec!["retention_in_days".to_string()]),
        ("prod_c02".to_string(), "create".to_string(), vec![]),
        ("prod_c03".to_string(), "update".to_string(), vec!["description".to_string()]),
        ("role_c01".to_string(), "update".to_string(), vec!["inline_policies.logs".to_string()]),
    ];
    expected.sort();
    let summary: Vec<_> = found.iter().map(|(n, a, p)| (n.clone(), a.clone(), if a == "create" { vec![] } else { p.clone() })).collect();
    assert_eq!(summary, expected, "exactly the deleted API (with its stages and deployments) and the changed resources");
    assert_eq!(without_stats(batched), without_stats(single), "collection and single reads plan the same");

    cli.run(&["-f", &many, "apply", "--auto-approve"]).assert_success();
    assert!(changes(&stats_plan(&cli, &many, true, None)).is_empty(), "converged");
}

/// Read-only roles often lack `iam:GetAccountAuthorizationDetails`: the roles are read one by one,
/// with the same result.
#[tokio::test(flavor = "multi_thread")]
async fn roles_are_read_one_by_one_when_authorization_details_are_refused() {
    let (moto, cli) = setup();
    let many = write_fleet(&cli, 2);
    cli.run(&["-f", &many, "apply", "--auto-approve"]).assert_success();
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    proxy.configure(
        r#"{"fail": [{"service": "iam", "operation": "GetAccountAuthorizationDetails", "times": 100, "status": 403,
            "code": "AccessDenied", "message": "User is not authorized to perform: iam:GetAccountAuthorizationDetails"}]}"#,
    );
    let refused = stats_plan(&cli, &many, true, Some(&proxy.url));
    let calls = refused["aws_calls"].as_array().unwrap();
    let gaad = calls.iter().find(|c| c["operation"] == "GetAccountAuthorizationDetails").unwrap();
    assert_eq!((gaad["calls"].as_u64(), gaad["errors"].as_u64()), (Some(1), Some(1)), "asked once, not once per role: {calls:?}");
    assert_eq!(count(&refused, "ListRolePolicies"), 2, "each role's policies read on its own: {calls:?}");
    assert_eq!(count(&refused, "ListAttachedRolePolicies"), 2, "{calls:?}");
    assert!(changes(&refused).is_empty(), "{refused}");
    let allowed = stats_plan(&cli, &many, true, None);
    assert_eq!(count(&allowed, "ListRolePolicies"), 0, "{}", allowed["aws_calls"]);
    assert_eq!(without_stats(refused), without_stats(allowed));
}

/// A watch of two stacks: one pass window's listings serve both stacks' passes, and each pass's log
/// line counts that pass's own calls (not the other stack's, made at the same time).
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_window_lists_once_for_every_stack_and_each_pass_counts_its_own_calls() {
    let (_moto, cli) = setup();
    let (a, b) = (write_named(&cli, "fleet-a", "A", 2), write_named(&cli, "fleet-b", "B", 2));
    for m in [&a, &b] {
        cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    }
    // A long interval: the first pass of each stack (in one window), and nothing else, within the test.
    let args = ["--log-format", "json", "watch", "--interval", "20s", "--listen", "127.0.0.1:0", a.as_str(), b.as_str()];
    let mut w = cli.spawn_with_env(&args, &[]);
    let port = w.port_after("listening on http://127.0.0.1:", WATCH_DEADLINE);
    let finished = support::poll_until(
        WATCH_DEADLINE,
        "a first pass of both stacks",
        || {
            let lines = log_lines(&w.stderr(), "pass finished");
            (lines.len() >= 2).then_some(lines)
        },
        || w.stderr(),
    );
    let (_, metrics) = http_get(port, "/metrics");
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();

    let calls =
        |op: &str| sample(&metrics, &format!("reconcile_aws_calls_total{{service=\"apigateway\",operation=\"{op}\"}}")).unwrap_or(0.0);
    assert_eq!(calls("GetRestApis"), 1.0, "one listing for both stacks:\n{metrics}");
    assert_eq!(calls("GetRestApi"), 0.0, "{metrics}");
    assert_eq!(calls("GetStages"), 4.0, "one per REST API:\n{metrics}");
    let iam = sample(&metrics, "reconcile_aws_calls_total{service=\"iam\",operation=\"GetAccountAuthorizationDetails\"}");
    assert_eq!(iam, Some(1.0), "{metrics}");
    let total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("reconcile_aws_service_calls_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let own: Vec<u64> = finished.iter().map(|l| l["aws_calls"].as_u64().unwrap()).collect();
    // Each stack reads 2 roles, 2 log groups (one listing), 2 REST APIs with 2 stages and 2
    // deployments each: at least 2 GetRole + 2 ListTagsForResource + 2 GetResources + 2 GetStages +
    // 2 GetDeployments of its own.
    assert!(own.iter().all(|n| *n >= 10), "{own:?}");
    assert!(own.iter().sum::<u64>() as f64 <= total, "each pass counts only its own calls: {own:?} of {total} in all");
}
