//! Crashes during replacements and destroy; replacement order; key renames (end to end against moto).

#[allow(unused_imports)]
use super::*;

/// The seed manifest with one more route on ApiGwDemo: its deployment is replaced (created first,
/// the stage moves to it, then the old one is deleted).
const UPDATED: &str = "manifests/updated.toml";

fn write_updated(cli: &Cli) {
    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let route = r#"  { path = "/order", method = "GET", integration = { type = "AWS_PROXY", uri = "${hello_function.invoke_arn}" } },"#;
    assert!(text.contains(route));
    let extra =
        r#"  { path = "/order/{id}", method = "GET", integration = { type = "AWS_PROXY", uri = "${hello_function.invoke_arn}" } },"#;
    std::fs::write(cli.join(UPDATED), text.replace(route, &format!("{route}\n{extra}"))).unwrap();
}

/// Starts each kill point from the seed stack applied to an empty moto.
fn fresh_seed(moto: &Moto, cli: &Cli) {
    moto.reset();
    cli.remove_state();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
}

/// Runs `args` killed right after its `n`-th AWS write; `None` when it made fewer writes (it ran to
/// its end).
async fn killed_after_write(cli: &Cli, args: &[&str], n: usize) -> Option<support::Output> {
    if !cfg!(feature = "test-hooks") {
        panic!("RECONCILE_CRASH_AT is compiled in only with --features test-hooks: run scripts/test");
    }
    let point = format!("after-write:{n}");
    let killed = cli.run_with_env(args, &[("RECONCILE_CRASH_AT", Some(point.as_str()))]);
    if killed.status == 0 {
        return None;
    }
    assert!(killed.stderr.contains("RECONCILE_CRASH_AT: aborting"), "{point}: not our crash:\n{killed}");
    break_stale_lock(cli).await;
    Some(killed)
}

async fn journal_is_closed(cli: &Cli, point: &str) -> usize {
    let state = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    let pending = state.pending_operations(STACK).await.unwrap();
    assert!(pending.is_empty(), "{point}: journal entries left open: {pending:?}");
    let n = state.load(STACK).await.unwrap().resources.len();
    state.close().await;
    n
}

/// kill -9 right after each AWS write of an update that replaces a deployment (create-before-
/// destroy): the next apply converges with exactly one deployment per API, the one the stages serve,
/// and nothing the killed run made is left behind.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn update_replacing_a_deployment_killed_after_each_write_converges_without_orphans() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    write_updated(&cli);
    let apply = ["-f", UPDATED, "apply", "--auto-approve"];
    let mut survived = 0;
    for n in 1..=30 {
        fresh_seed(&moto, &cli);
        let Some(killed) = killed_after_write(&cli, &apply, n).await else { break };
        let point = format!("after-write:{n}");
        let again = cli.run(&apply);
        assert!(again.success(), "{point}: re-apply failed:\n{again}\nfirst run:\n{killed}");
        let plan = cli.run(&["-f", UPDATED, "plan", "--detailed-exitcode"]);
        assert_eq!(plan.status, 0, "{point}: state does not match AWS after recovery:\n{plan}");
        assert_seed_exactly_once(&aws).await;
        assert_eq!(journal_is_closed(&cli, &point).await, 17, "{point}");
        survived += 1;
    }
    eprintln!("kill points survived (after each write of the update): {survived}");
    assert!(survived >= 4, "only {survived} kill points were reached");
}

/// kill -9 right after each AWS write of `destroy`: destroying again removes everything that is
/// left, and the state ends empty with its journal closed.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn destroy_killed_after_each_write_converges_to_nothing_left() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    let destroy = ["-f", SEED, "destroy", "--auto-approve"];
    let mut survived = 0;
    for n in 1..=60 {
        fresh_seed(&moto, &cli);
        let Some(killed) = killed_after_write(&cli, &destroy, n).await else { break };
        let point = format!("after-write:{n}");
        let again = cli.run(&destroy);
        assert!(again.success(), "{point}: destroy after the kill failed:\n{again}\nfirst run:\n{killed}");
        assert!(aws.apigw.get_rest_apis().send().await.unwrap().items().is_empty(), "{point}: REST APIs left");
        assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty(), "{point}: functions left");
        assert!(aws.iam.list_roles().send().await.unwrap().roles().is_empty(), "{point}: roles left");
        assert!(aws.logs.describe_log_groups().send().await.unwrap().log_groups().is_empty(), "{point}: log groups left");
        let acls = aws.waf.list_web_acls().scope(aws_sdk_wafv2::types::Scope::Regional).send().await.unwrap();
        assert!(acls.web_acls().is_empty(), "{point}: web ACLs left");
        assert_eq!(journal_is_closed(&cli, &point).await, 0, "{point}: resources left in the state");
        let plan = cli.run(&destroy);
        assert!(plan.success() && plan.stdout.contains("No changes"), "{point}: a third destroy still has work:\n{plan}");
        survived += 1;
    }
    eprintln!("kill points survived (after each write of destroy): {survived}");
    assert!(survived >= 15, "only {survived} kill points were reached");
}

fn edit_seed(cli: &Cli, edit: impl Fn(String) -> String) {
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&path, edited).unwrap();
}

fn change<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name && r["deposed"] == false)
        .unwrap_or_else(|| panic!("{name} not in {plan:#}"))
}

/// A renamed log group is a replacement that creates the new one first: when the create fails (the
/// new name is taken), the old one is still there and still serves its stage, and the recorded
/// outputs are left as the last good apply wrote them.
#[tokio::test(flavor = "multi_thread")]
async fn a_replacement_under_a_new_name_creates_first_so_a_failed_create_leaves_the_old_one() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let outputs_before = cli.run(&["-f", SEED, "--json", "output"]);
    outputs_before.assert_success();
    aws.logs.create_log_group().log_group_name("DevLogGroupTaken").send().await.unwrap();
    edit_seed(&cli, |t| t.replace("name = \"DevLogGroupAccessLog\"", "name = \"DevLogGroupTaken\""));

    let plan = plan_json(&cli, SEED);
    let logs = change(&plan, "dev_access_logs");
    assert_eq!((logs["action"].as_str(), logs["create_before_destroy"].as_bool()), (Some("replace"), Some(true)), "{logs:#}");
    let text = cli.run(&["-f", SEED, "plan"]);
    assert!(
        text.stdout.contains("dev_access_logs (aws_cloudwatch_log_group) [DevLogGroupAccessLog] will be replaced (new one created first)"),
        "{text}"
    );

    let failed = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    assert_ne!(failed.status, 0, "{failed}");
    assert!(failed.combined().contains("DevLogGroupTaken already exists in AWS"), "{failed}");
    assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_some(), "the working log group was deleted before its replacement existed");
    let api = api_id(&aws, "HelloApiGw").await;
    let stage = aws.apigw.get_stage().rest_api_id(&api).stage_name("dev").send().await.unwrap();
    let destination = stage.access_log_settings().and_then(|s| s.destination_arn()).unwrap_or_default();
    assert!(destination.ends_with(":log-group:DevLogGroupAccessLog"), "{destination}");
    let outputs_after = cli.run(&["-f", SEED, "--json", "output"]);
    assert_eq!(outputs_after.stdout, outputs_before.stdout, "a failed apply rewrote the recorded outputs");

    // With the name free, the same apply converges: the new one only, and the stage logs to it.
    aws.logs.delete_log_group().log_group_name("DevLogGroupTaken").send().await.unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_none(), "the old log group is left");
    assert!(log_group(&aws, "DevLogGroupTaken").await.is_some());
    let stage = aws.apigw.get_stage().rest_api_id(&api).stage_name("dev").send().await.unwrap();
    assert!(stage.access_log_settings().and_then(|s| s.destination_arn()).unwrap_or_default().ends_with(":log-group:DevLogGroupTaken"));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

/// Renaming a function: the new one is created, everything that used the old one moves to it, then
/// the old one is deleted; a replacement that keeps its name still deletes first.
#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_function_is_created_before_the_old_one_is_deleted() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    edit_seed(&cli, |t| t.replace("function_name = \"HelloLambdaTest\"", "function_name = \"HelloLambdaRenamed\""));
    let plan = plan_json(&cli, SEED);
    assert_eq!(change(&plan, "hello_function")["create_before_destroy"], true, "{plan:#}");

    let out = cli.run(&["-f", SEED, "--json", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let outcomes = doc["result"]["outcomes"].as_array().unwrap();
    let started = |name: &str| {
        outcomes.iter().find(|o| o["name"] == name).unwrap_or_else(|| panic!("{name}: {doc:#}"))["started_ms"].as_u64().unwrap()
    };
    let old_deleted = outcomes.iter().find(|o| o["name"] == "hello_function (previous)").unwrap();
    assert!(
        old_deleted["waited_for"].as_array().unwrap().iter().any(|w| w == "hello_function"),
        "the old function is deleted after the new one exists: {old_deleted:#}"
    );
    assert!(started("hello_function (previous)") >= started("hello_function"));
    let functions = aws.lambda.list_functions().send().await.unwrap();
    let names: Vec<_> = functions.functions().iter().filter_map(|f| f.function_name()).collect();
    assert_eq!(names, vec!["HelloLambdaRenamed"]);
    let policy = aws.lambda.get_policy().function_name("HelloLambdaRenamed").send().await.unwrap();
    assert!(policy.policy().unwrap_or_default().contains("AllowApiGwDemoGetOrder"), "the permission moved to the new function");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_eq!(
        cli.run(&["-f", SEED, "output", "function_arn"]).stdout.trim(),
        "arn:aws:lambda:us-east-1:123456789012:function:HelloLambdaRenamed"
    );

    // Same name, a field that forces replacement: the path of a role. It cannot exist twice.
    edit_seed(&cli, |t| t.replace("name = \"ApiGwInvokeLambda\"\n", "name = \"ApiGwInvokeLambda\"\npath = \"/svc/\"\n"));
    let plan = plan_json(&cli, SEED);
    let role = change(&plan, "api_invoke_role");
    assert_eq!((role["action"].as_str(), role["create_before_destroy"].as_bool()), (Some("replace"), Some(false)), "{role:#}");
    let text = cli.run(&["-f", SEED, "plan"]);
    assert!(text.stdout.contains("will be replaced (old one deleted first)"), "{text}");
}

/// Renaming resource keys (same physical names, references updated) moves their state records to
/// the new keys: nothing is deleted or created, apply converges, outputs still resolve.
#[tokio::test(flavor = "multi_thread")]
async fn renamed_keys_take_over_their_resources_and_nothing_is_deleted() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let arn = aws
        .lambda
        .get_function()
        .function_name("HelloLambdaTest")
        .send()
        .await
        .unwrap()
        .configuration()
        .unwrap()
        .function_arn()
        .unwrap()
        .to_string();
    edit_seed(&cli, |t| {
        t.replace("hello_function", "hello_fn").replace("hello_lambda_role", "exec_role").replace("dev_access_logs", "dev_logs")
    });

    let plan = plan_json(&cli, SEED);
    let moved: Vec<(String, String, String)> = plan["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["moved_from"].is_null())
        .map(|r| (r["moved_from"].as_str().unwrap().into(), r["name"].as_str().unwrap().into(), r["action"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        moved,
        vec![
            ("hello_lambda_role".into(), "exec_role".into(), "no_op".into()),
            ("dev_access_logs".into(), "dev_logs".into(), "no_op".into()),
            ("hello_function".into(), "hello_fn".into(), "no_op".into()),
        ],
        "{plan:#}"
    );
    // Nothing changes in AWS: the `reconcile:resource` tag keeps the key each was created under.
    assert_eq!(changes(&plan), vec![], "{plan:#}");
    assert_eq!(plan["summary"]["moved"], 3);
    let text = cli.run(&["-f", SEED, "plan"]);
    assert!(
        text.stdout.contains("hello_fn (aws_lambda_function) [HelloLambdaTest] will be moved to this key: renamed from `hello_function`"),
        "{text}"
    );

    let out = cli.run(&["-f", SEED, "--json", "--stats", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let calls = doc["aws_calls"].as_array().unwrap();
    let writes: Vec<&str> = calls
        .iter()
        .filter_map(|c| c["operation"].as_str())
        .filter(|op| !["Get", "List", "Describe"].iter().any(|p| op.starts_with(p)))
        .collect();
    assert!(writes.is_empty(), "a move writes nothing to AWS: {writes:?}");
    let live = aws.lambda.get_function().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(live.configuration().unwrap().function_arn(), Some(arn.as_str()));
    assert_eq!(live.tags().unwrap().get("reconcile:resource").map(String::as_str), Some("hello_function"));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_eq!(cli.run(&["-f", SEED, "output", "function_arn"]).stdout.trim(), arn);
    let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
    let state = store.load(STACK).await.unwrap();
    assert!(state.resources.contains_key("hello_fn") && !state.resources.contains_key("hello_function"));
    assert!(state.resources["api_demo_invoke_permission"].depends_on.contains(&"hello_fn".to_string()));
    store.close().await;
    // Destroy deletes each resource once, in order.
    let destroyed = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    destroyed.assert_success();
    assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty());
}

/// kill -9 right after each AWS write of a function rename (create-before-destroy under a new name):
/// the next apply converges with the new function only, its permission, and no leftover of either.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn a_function_rename_killed_after_each_write_converges_with_the_new_function_only() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    std::fs::write(cli.join(UPDATED), text.replace("function_name = \"HelloLambdaTest\"", "function_name = \"HelloLambdaRenamed\""))
        .unwrap();
    let apply = ["-f", UPDATED, "apply", "--auto-approve"];
    let mut survived = 0;
    for n in 1..=40 {
        fresh_seed(&moto, &cli);
        let Some(killed) = killed_after_write(&cli, &apply, n).await else { break };
        let point = format!("after-write:{n}");
        let again = cli.run(&apply);
        assert!(again.success(), "{point}: re-apply failed:\n{again}\nfirst run:\n{killed}");
        let plan = cli.run(&["-f", UPDATED, "plan", "--detailed-exitcode"]);
        assert_eq!(plan.status, 0, "{point}: state does not match AWS after recovery:\n{plan}");
        let functions = aws.lambda.list_functions().send().await.unwrap();
        let names: Vec<_> = functions.functions().iter().filter_map(|f| f.function_name()).collect();
        assert_eq!(names, vec!["HelloLambdaRenamed"], "{point}");
        let policy = aws.lambda.get_policy().function_name("HelloLambdaRenamed").send().await.unwrap();
        assert_eq!(policy.policy().unwrap().matches("AllowApiGwDemoGetOrder").count(), 1, "{point}");
        for api in aws.apigw.get_rest_apis().send().await.unwrap().items() {
            let deployments = aws.apigw.get_deployments().rest_api_id(api.id().unwrap()).send().await.unwrap();
            assert_eq!(deployments.items().len(), 1, "{point}: deployments of {:?}", api.name());
        }
        assert_eq!(journal_is_closed(&cli, &point).await, 17, "{point}");
        survived += 1;
    }
    eprintln!("kill points survived (after each write of the rename): {survived}");
    assert!(survived >= 8, "only {survived} kill points were reached");
}

/// kill -9 right after each of the first writes of an apply from empty, then the names edited before
/// the next run: what the killed run made under the old names carries this stack's tags and is
/// deleted by the next apply (not left behind unseen while the plan says all is well).
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn a_create_killed_then_renamed_in_the_manifest_leaves_nothing_under_the_old_name() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    let original = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let renames = [
        ("name = \"HelloLambdaTest-role\"", "name = \"HelloLambdaTest-roleB\""),
        ("name = \"DevLogGroupAccessLog\"", "name = \"DevLogGroupAccessLogB\""),
        ("function_name = \"HelloLambdaTest\"", "function_name = \"HelloLambdaTestB\""),
        ("name = \"ApiGwWebAcl\"", "name = \"ApiGwWebAclB\""),
    ];
    let mut survived = 0;
    for n in 1..=4 {
        moto.reset();
        cli.remove_state();
        std::fs::write(cli.join(SEED), &original).unwrap();
        let point = format!("after-write:{n}");
        if killed_after_write(&cli, &["-f", SEED, "apply", "--auto-approve", "--parallelism", "1"], n).await.is_none() {
            continue;
        }
        edit_seed(&cli, |mut text| {
            for (from, to) in renames {
                text = text.replacen(from, to, 1);
            }
            text
        });
        cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
        cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
        assert!(aws.iam.get_role().role_name("HelloLambdaTest-role").send().await.is_err(), "{point}: the old role was left behind");
        assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_none(), "{point}: the old log group was left behind");
        assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_err(), "{point}: the old function was left");
        let acls = aws.waf.list_web_acls().scope(aws_sdk_wafv2::types::Scope::Regional).send().await.unwrap();
        assert!(acls.web_acls().iter().all(|a| a.name() != Some("ApiGwWebAcl")), "{point}: the old web ACL was left behind");
        journal_is_closed(&cli, &point).await;
        survived += 1;
    }
    assert!(survived >= 3, "only {survived} kill points were reached");
}

/// kill -9 while `apply --replace` of a REST API waits for the answer to CreateDeployment, which
/// reached AWS (a proxy forwards the call and holds the answer back): the killed run made a
/// deployment on the new API that nothing records. The next apply finds it there, under the parent
/// the state records now, and deletes it: one deployment per API, each serving its stages, and the
/// plan empty.
#[tokio::test(flavor = "multi_thread")]
async fn a_rest_api_replacement_killed_at_the_held_answer_to_create_deployment_leaves_one_deployment_per_api() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let old_api = api_id(&aws, "ApiGwDemo").await;
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    proxy.configure(r#"{"hold": [{"operation": "CreateDeployment", "service": "apigateway"}]}"#);
    let env = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    let run = cli.spawn_with_env(&["-f", SEED, "apply", "--auto-approve", "--replace", "api_demo"], &env);
    support::poll_until(
        std::time::Duration::from_secs(60),
        "CreateDeployment to reach AWS and its answer to be held",
        || (proxy.stats()["held"].as_u64() == Some(1)).then_some(()),
        || format!("{}\n{}", run.stderr(), proxy.log()),
    );
    run.signal("KILL");
    run.wait(std::time::Duration::from_secs(10));
    // The killed run's deployment is there, on the new API (the old one was deleted first: a REST
    // API keeps its name), owned by nobody.
    let new_api = api_id(&aws, "ApiGwDemo").await;
    assert_ne!(new_api, old_api, "the new API was made");
    assert_eq!(aws.apigw.get_deployments().rest_api_id(&new_api).send().await.unwrap().items().len(), 1, "the held deployment");
    break_stale_lock(&cli).await;

    let again = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    again.assert_success();
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_seed_exactly_once(&aws).await;
    assert_eq!(api_id(&aws, "ApiGwDemo").await, new_api, "the replacement went through");
    assert_eq!(journal_is_closed(&cli, "held CreateDeployment").await, 17);
}

/// kill -9 right after each AWS write of `apply --replace` of each kind of parent that has children
/// (a REST API: its deployment and stage; a function: its permission; a stage and a web ACL: the
/// association), then one plain apply: every resource exists exactly once, each deployment serves
/// its stages, nothing is left over, the journal is closed and the plan empty.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "test-hooks"), ignore = "needs the crash hook: --features test-hooks (scripts/test turns it on)")]
async fn a_replacement_of_a_parent_killed_after_each_write_leaves_no_orphan() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    for parent in ["api_demo", "hello_function", "prod_stage", "waf_acl"] {
        let apply = ["-f", SEED, "apply", "--auto-approve", "--replace", parent];
        let mut survived = 0;
        for n in 1..=40 {
            fresh_seed(&moto, &cli);
            let Some(killed) = killed_after_write(&cli, &apply, n).await else { break };
            let point = format!("--replace {parent}, after-write:{n}");
            let again = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
            assert!(again.success(), "{point}: apply after the kill failed:\n{again}\nfirst run:\n{killed}");
            let plan = cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]);
            assert_eq!(plan.status, 0, "{point}: state does not match AWS after recovery:\n{plan}");
            assert_seed_exactly_once(&aws).await;
            assert_eq!(journal_is_closed(&cli, &point).await, 17, "{point}");
            survived += 1;
        }
        eprintln!("kill points survived (after each write of --replace {parent}): {survived}");
        assert!(survived >= 2, "--replace {parent}: only {survived} kill points were reached");
    }
}
