//! Lambda versions and aliases: `publish` on a function, `aws_lambda_alias` (end to end against moto).

#[allow(unused_imports)]
use super::*;

const MANIFEST: &str = "versions.toml";
const VSTACK: &str = "versions";

/// A role, a function that publishes, an alias on its latest version (with `routing`, a TOML table
/// or `{}`), and a permission on the alias.
fn versions_manifest(timeout: u32, routing: &str) -> String {
    format!(
        r#"[stack]
name = "{VSTACK}"

[resources.role]
type = "aws_iam_role"
name = "VersionsRole"

[resources.role.assume_role_policy]
Version = "2012-10-17"
Statement = [{{ Effect = "Allow", Principal = {{ Service = "lambda.amazonaws.com" }}, Action = "sts:AssumeRole" }}]

[resources.app]
type = "aws_lambda_function"
function_name = "VersionsApp"
runtime = "python3.13"
handler = "index.handler"
role = "${{role.arn}}"
code = "code"
timeout = {timeout}
publish = true

[resources.live]
type = "aws_lambda_alias"
name = "live"
function_name = "${{app.name}}"
function_version = "${{app.version}}"
description = "production"
routing = {routing}

[resources.live_invoke]
type = "aws_lambda_permission"
function_name = "${{live.arn}}"
statement_id = "AllowApiGateway"
principal = "apigateway.amazonaws.com"
source_arn = "${{api.execution_arn}}/*/*"

[resources.api]
type = "aws_api_gateway_rest_api"
name = "VersionsApi"
routes = [
  {{ path = "/hello", method = "GET", integration = {{ type = "AWS_PROXY", uri = "${{live.invoke_arn}}" }} }},
]
"#
    )
}

fn write_code(cli: &Cli, body: &str) {
    cli.write_file("code/index.py", &format!("def handler(event, context):\n    return {body:?}\n"));
}

/// Published version numbers of the function, in order.
async fn versions(aws: &Aws) -> Vec<String> {
    let out = aws.lambda.list_versions_by_function().function_name("VersionsApp").send().await.unwrap();
    out.versions().iter().filter_map(|v| v.version()).filter(|v| *v != "$LATEST").map(str::to_string).collect()
}

async fn alias(aws: &Aws) -> aws_sdk_lambda::operation::get_alias::GetAliasOutput {
    aws.lambda.get_alias().function_name("VersionsApp").name("live").send().await.unwrap()
}

/// `apply --stats`: how many times it called `operation`.
fn apply_counting(cli: &Cli, operation: &str) -> u64 {
    let out = cli.run(&["-f", MANIFEST, "--json", "--stats", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("apply --json is not JSON ({e}):\n{out}"));
    calls_to(doc["aws_calls"].as_array().unwrap(), operation)
}

fn resource<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["resources"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no `{name}` in {plan}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_on_code_change_moves_the_alias_and_a_no_op_apply_publishes_nothing() {
    let (moto, cli) = setup();
    let aws = aws(&moto).await;
    write_code(&cli, "one");
    cli.write_file(MANIFEST, &versions_manifest(3, "{}"));
    assert_eq!(apply_counting(&cli, "CreateFunction"), 1);
    assert_eq!(versions(&aws).await, ["1"], "created with its first version");
    let live = alias(&aws).await;
    assert_eq!(live.function_version(), Some("1"));
    assert_eq!(live.description(), Some("production"));
    let policy = aws.lambda.get_policy().function_name("VersionsApp:live").send().await.unwrap();
    assert!(policy.policy().unwrap().contains("AllowApiGateway"), "{policy:?}");
    let api = api_id(&aws, "VersionsApi").await;
    let (_, _, integration) = methods(&aws, &api).await.into_iter().find(|(path, method, _)| path == "/hello" && method == "GET").unwrap();
    assert_eq!(
        integration.uri(),
        Some(
            "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:VersionsApp:live/invocations"
        ),
        "the API invokes the function through the alias"
    );
    assert!(changes(&plan_json(&cli, MANIFEST)).is_empty(), "second plan is empty");

    // Nothing changed: no version is published.
    assert_eq!(apply_counting(&cli, "PublishVersion"), 0);
    assert_eq!(versions(&aws).await, ["1"]);

    // New code: the plan says the version is only known after apply, and the alias follows it.
    write_code(&cli, "two");
    let plan = plan_json(&cli, MANIFEST);
    assert_eq!(
        changes(&plan),
        vec![
            ("app".to_string(), "update".to_string(), vec!["code_sha256".to_string()]),
            ("live".to_string(), "update".to_string(), vec!["function_version".to_string()]),
        ],
        "{plan}"
    );
    let moved = &resource(&plan, "live")["changes"][0];
    assert_eq!((moved["before"].as_str(), moved["after"].as_str()), (Some("1"), Some("(known after apply)")), "{plan}");
    assert_eq!(apply_counting(&cli, "PublishVersion"), 1);
    assert_eq!(versions(&aws).await, ["1", "2"]);
    assert_eq!(alias(&aws).await.function_version(), Some("2"), "the alias moved to the new version in the same apply");
    assert!(changes(&plan_json(&cli, MANIFEST)).is_empty(), "second plan is empty");

    // A configuration change publishes too.
    cli.write_file(MANIFEST, &versions_manifest(9, "{}"));
    assert_eq!(apply_counting(&cli, "PublishVersion"), 1);
    assert_eq!(versions(&aws).await, ["1", "2", "3"]);
    let v3 = aws.lambda.get_function_configuration().function_name("VersionsApp").qualifier("3").send().await.unwrap();
    assert_eq!(v3.timeout(), Some(9));
    assert_eq!(alias(&aws).await.function_version(), Some("3"));
    assert!(changes(&plan_json(&cli, MANIFEST)).is_empty(), "second plan is empty");

    // Destroy removes the alias, its permission and the function.
    cli.run(&["-f", MANIFEST, "destroy", "--auto-approve"]).assert_success();
    assert!(aws.lambda.get_function().function_name("VersionsApp").send().await.is_err());
}

/// An apply that stopped after updating the function and before publishing (the same change made out of
/// band, the state untouched) leaves a version owed: the next plan shows it and the apply publishes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_owed_by_an_interrupted_apply_is_published_by_the_next() {
    let (moto, cli) = setup();
    let aws = aws(&moto).await;
    write_code(&cli, "one");
    cli.write_file(MANIFEST, &versions_manifest(3, "{}"));
    cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();
    cli.write_file(MANIFEST, &versions_manifest(7, "{}"));
    aws.lambda.update_function_configuration().function_name("VersionsApp").timeout(7).send().await.unwrap();

    let plan = plan_json(&cli, MANIFEST);
    let app = resource(&plan, "app");
    assert_eq!(app["action"], "update", "{plan}");
    let paths: Vec<&str> = app["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["publish"], "{plan}");
    assert_eq!(resource(&plan, "live")["action"], "update", "{plan}");
    assert_eq!(apply_counting(&cli, "PublishVersion"), 1);
    assert_eq!(versions(&aws).await, ["1", "2"]);
    let v2 = aws.lambda.get_function_configuration().function_name("VersionsApp").qualifier("2").send().await.unwrap();
    assert_eq!(v2.timeout(), Some(7));
    assert_eq!(alias(&aws).await.function_version(), Some("2"));
    assert!(changes(&plan_json(&cli, MANIFEST)).is_empty(), "second plan is empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alias_routes_a_weighted_share_to_a_second_version_and_drops_it() {
    let (moto, cli) = setup();
    let aws = aws(&moto).await;
    write_code(&cli, "one");
    cli.write_file(MANIFEST, &versions_manifest(3, "{}"));
    cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();

    // Version 2 takes the alias; 25% of the invocations still go to version 1.
    write_code(&cli, "two");
    cli.write_file(MANIFEST, &versions_manifest(3, r#"{ version = "1", weight = 0.25 }"#));
    cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();
    let live = alias(&aws).await;
    assert_eq!(live.function_version(), Some("2"));
    let weights = live.routing_config().and_then(|r| r.additional_version_weights()).cloned().unwrap_or_default();
    assert_eq!(weights, std::collections::HashMap::from([("1".to_string(), 0.25)]), "{live:?}");
    assert!(changes(&plan_json(&cli, MANIFEST)).is_empty(), "second plan is empty");

    // No routing any more: the weights are cleared.
    cli.write_file(MANIFEST, &versions_manifest(3, "{}"));
    let plan = plan_json(&cli, MANIFEST);
    assert_eq!(changes(&plan), vec![("live".to_string(), "update".to_string(), vec!["routing".to_string()])], "{plan}");
    cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();
    let live = alias(&aws).await;
    assert!(live.routing_config().and_then(|r| r.additional_version_weights()).is_none_or(|w| w.is_empty()), "{live:?}");
    assert!(changes(&plan_json(&cli, MANIFEST)).is_empty(), "second plan is empty");

    // A weight out of range is refused at validate, at its line, before any AWS call.
    cli.write_file(MANIFEST, &versions_manifest(3, r#"{ version = "1", weight = 1.5 }"#));
    let out = cli.run(&["-f", MANIFEST, "plan"]);
    out.assert_status(1);
    assert!(
        out.combined().contains("`routing`: `weight` must be from 0.0 to 1.0 (the share of invocations `version` gets); it is 1.5"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_reports_an_alias_changed_out_of_band() {
    let (moto, cli) = setup();
    let aws = aws(&moto).await;
    write_code(&cli, "one");
    cli.write_file(MANIFEST, &versions_manifest(3, "{}"));
    cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();
    write_code(&cli, "two");
    cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();
    assert_eq!(alias(&aws).await.function_version(), Some("2"));

    let (mut w, _port) = spawn_watch(&cli, &["-f", MANIFEST], &[]);
    // Out of band: the alias is rolled back to version 1 and its description changed.
    aws.lambda.update_alias().function_name("VersionsApp").name("live").function_version("1").description("rollback").send().await.unwrap();
    let events = support::poll_until(
        WATCH_DEADLINE,
        "drift events for the alias",
        || {
            let events = drift_events(&cli, false);
            (event(&events, "live", "function_version").is_some() && event(&events, "live", "description").is_some()).then_some(events)
        },
        || w.stderr(),
    );
    let version = event(&events, "live", "function_version").unwrap();
    assert_eq!((version["expected"].as_str(), version["actual"].as_str()), (Some("2"), Some("1")), "{events:?}");
    w.assert_running();
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();
    // watch never writes to AWS: the alias is as it was left; apply repairs it.
    assert_eq!(alias(&aws).await.function_version(), Some("1"));
    cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();
    let live = alias(&aws).await;
    assert_eq!((live.function_version(), live.description()), (Some("2"), Some("production")));
    assert!(changes(&plan_json(&cli, MANIFEST)).is_empty(), "second plan is empty");
}

/// kill -9 at each AWS write of an apply that publishes (after the code update, after PublishVersion,
/// after the alias update, and before each): the next apply publishes exactly one version for the new
/// code, the alias ends on it, and the plan after is empty.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn an_apply_killed_at_each_write_of_a_publish_converges_on_one_new_version() {
    let (moto, cli) = setup();
    let aws = aws(&moto).await;
    let mut reached = 0;
    for point in ["after-write:1", "after-write:2", "after-write:3", "before-write:2", "before-write:3"] {
        moto.reset();
        cli.remove_state();
        write_code(&cli, "one");
        cli.write_file(MANIFEST, &versions_manifest(3, "{}"));
        cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]).assert_success();
        write_code(&cli, "two");
        let killed = cli.run_with_env(&["-f", MANIFEST, "apply", "--auto-approve"], &[("RECONCILE_CRASH_AT", Some(point))]);
        if killed.status == 0 {
            continue;
        }
        assert!(killed.stderr.contains("RECONCILE_CRASH_AT: aborting"), "{point}: not our crash:\n{killed}");
        reached += 1;
        let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
        if let Some(lock) = store.lock_info(VSTACK).await.unwrap() {
            cli.run(&["-f", MANIFEST, "force-unlock", &lock.id]).assert_success();
        }
        store.close().await;
        let again = cli.run(&["-f", MANIFEST, "apply", "--auto-approve"]);
        assert!(again.success(), "{point}: re-apply failed:\n{again}\nfirst run:\n{killed}");
        assert_eq!(versions(&aws).await, ["1", "2"], "{point}: one version for the new code");
        assert_eq!(alias(&aws).await.function_version(), Some("2"), "{point}");
        let plan = cli.run(&["-f", MANIFEST, "plan", "--detailed-exitcode"]);
        assert_eq!(plan.status, 0, "{point}: state does not match AWS after recovery:\n{plan}");
    }
    assert_eq!(reached, 5, "every kill point is a write of that apply");
}
