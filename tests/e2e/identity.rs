//! A stack pinned to its account and region (end to end against moto).

#[allow(unused_imports)]
use super::*;

use reconcile::state::{Identity, Store};

const HOME: &str = "account 123456789012 (aws) in us-east-1";
const OTHER_ACCOUNT: &str = "111111111111";

/// A small stack: one role (global) and one log group (regional).
const SMALL: &str = r#"
[stack]
name = "pinned-small"

[resources.role]
type = "aws_iam_role"
name = "PinnedSmallRole"

[resources.role.assume_role_policy]
Version = "2012-10-17"
Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "PinnedSmallLogs"
retention_in_days = 7
"#;

/// Only a role: nothing regional proves where it lives.
const ROLE_ONLY: &str = r#"
[stack]
name = "pinned-role-only"

[resources.role]
type = "aws_iam_role"
name = "PinnedRoleOnly"

[resources.role.assume_role_policy]
Version = "2012-10-17"
Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }]
"#;

/// Credentials of another account: moto's AssumeRole into a role ARN of that account hands out keys
/// that act in it (moto keys the account by the access key it issued).
async fn other_account_credentials(moto: &Moto, account: &str) -> (String, String, String) {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    let sts = aws_sdk_sts::Client::new(&config);
    let out = sts.assume_role().role_arn(format!("arn:aws:iam::{account}:role/elsewhere")).role_session_name("e2e").send().await.unwrap();
    let c = out.credentials().unwrap();
    let who = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&config)
            .credentials_provider(Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                None,
                "o",
            ))
            .build(),
    )
    .get_caller_identity()
    .send()
    .await
    .unwrap();
    assert_eq!(who.account(), Some(account), "moto did not switch accounts");
    (c.access_key_id().to_string(), c.secret_access_key().to_string(), c.session_token().to_string())
}

async fn pin_of(cli: &Cli, stack: &str) -> Option<Identity> {
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    let pin = store.identity(stack).await.unwrap();
    store.close().await;
    pin
}

fn here(region: &str) -> Identity {
    Identity { account_id: "123456789012".into(), partition: "aws".into(), region: region.into() }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_region_and_wrong_account_plan_apply_destroy_are_refused_with_no_aws_call_but_sts() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    assert_eq!(pin_of(&cli, STACK).await, Some(here("us-east-1")), "the first apply pins the stack");
    let before = serial(&cli);
    let (key, secret, token) = other_account_credentials(&moto, OTHER_ACCOUNT).await;

    // Every AWS call of the refused commands goes through the proxy, which counts them by service.
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let wrong_region: Vec<(&str, Option<&str>)> = vec![("AWS_REGION", Some("eu-west-1"))];
    let wrong_account: Vec<(&str, Option<&str>)> = vec![
        ("AWS_ACCESS_KEY_ID", Some(key.as_str())),
        ("AWS_SECRET_ACCESS_KEY", Some(secret.as_str())),
        ("AWS_SESSION_TOKEN", Some(token.as_str())),
    ];
    let cases = [
        (wrong_region, "account 123456789012 (aws) in eu-west-1".to_string()),
        (wrong_account, format!("account {OTHER_ACCOUNT} (aws) in us-east-1")),
    ];
    let mut runs = 0;
    for (env, current) in &cases {
        let mut env = env.clone();
        env.push(("AWS_ENDPOINT_URL", Some(&proxy.url)));
        for args in [vec!["plan"], vec!["apply", "--auto-approve"], vec!["destroy", "--auto-approve"]] {
            let mut all = vec!["-f", SEED];
            all.extend(args);
            let out = cli.run_with_env(&all, &env);
            runs += 1;
            out.assert_status(1);
            let expected = format!(
                "error: stack `{STACK}` lives in {HOME} (as pinned in the state), but the credentials and region in use are {current}; \
                 refusing to read or change it"
            );
            assert!(out.stderr.contains(&expected), "expected `{expected}`:\n{out}");
            assert!(!out.stdout.contains("create"), "{out}");
        }
    }
    // Zero AWS calls beyond identifying the caller: one sts:GetCallerIdentity per run, nothing else.
    let stats = proxy.stats();
    let services: Vec<&String> = stats["by_service"].as_object().unwrap().keys().collect();
    assert_eq!(services, vec!["sts"], "{stats}");
    assert_eq!(stats["by_service"]["sts"]["requests"], runs, "{stats}");

    // The stack is intact: roles, function and state as they were; the home plan is empty.
    let aws = aws(&moto).await;
    for role in ["HelloLambdaTest-role", "ApiGwInvokeLambda"] {
        assert!(aws.iam.get_role().role_name(role).send().await.is_ok(), "role {role} was deleted");
    }
    assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_ok());
    assert_eq!(serial(&cli), before, "the state was not written");
    assert_eq!(pin_of(&cli, STACK).await, Some(here("us-east-1")));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_stack_is_unpinned_and_may_move_then_stays_where_it_moved() {
    let (moto, cli) = setup();
    cli.write_file("small.toml", SMALL);
    cli.run(&["-f", "small.toml", "apply", "--auto-approve"]).assert_success();
    assert_eq!(pin_of(&cli, "pinned-small").await, Some(here("us-east-1")));
    let out = cli.run_with_env(&["-f", "small.toml", "plan"], &[("AWS_REGION", Some("eu-west-1"))]);
    out.assert_status(1);
    assert!(out.stderr.contains("refusing to read or change it"), "{out}");

    cli.run(&["-f", "small.toml", "destroy", "--auto-approve"]).assert_success();
    assert_eq!(pin_of(&cli, "pinned-small").await, None, "an empty stack is not pinned");

    // It moves: applied in eu-west-1, created there and pinned there.
    let out = cli.run_with_env(&["-f", "small.toml", "apply", "--auto-approve"], &[("AWS_REGION", Some("eu-west-1"))]);
    out.assert_success();
    assert_eq!(pin_of(&cli, "pinned-small").await, Some(here("eu-west-1")));
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let groups = logs.describe_log_groups().log_group_name_prefix("PinnedSmallLogs").send().await.unwrap();
    assert_eq!(groups.log_groups().len(), 1);
    let home = aws(&moto).await;
    assert!(log_group(&home, "PinnedSmallLogs").await.is_none(), "destroyed in us-east-1");

    // Now us-east-1 is the wrong region.
    let out = cli.run(&["-f", "small.toml", "plan"]);
    out.assert_status(1);
    assert!(
        out.stderr.contains("lives in account 123456789012 (aws) in eu-west-1 (as pinned in the state), but the credentials and region in use are account 123456789012 (aws) in us-east-1"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_from_before_pinning_is_back_filled_only_from_a_regional_resource_found_here() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    cli.write_file("role.toml", ROLE_ONLY);
    cli.run(&["-f", "role.toml", "apply", "--auto-approve"]).assert_success();
    // As a state written before pinning existed.
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    store.clear_identity(STACK).await.unwrap();
    store.clear_identity("pinned-role-only").await.unwrap();
    store.close().await;

    // Elsewhere: the ARNs the state recorded say where the stack lives; refused without a read.
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let out = cli.run_with_env(&["-f", SEED, "plan"], &[("AWS_REGION", Some("eu-west-1")), ("AWS_ENDPOINT_URL", Some(&proxy.url))]);
    out.assert_status(1);
    assert!(out.stderr.contains(&format!("lives in {HOME} (from the ARN of `")), "{out}");
    assert_eq!(proxy.stats()["by_service"].as_object().unwrap().keys().collect::<Vec<_>>(), vec!["sts"]);
    assert_eq!(pin_of(&cli, STACK).await, None);

    // Here: a regional resource of the stack is found, so the pin is back-filled and plan runs.
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
    assert_eq!(pin_of(&cli, STACK).await, Some(here("us-east-1")));

    // Only IAM (global): nothing proves where it lives; refused, saying how to pin it.
    let out = cli.run_with_env(&["-f", "role.toml", "plan"], &[("AWS_REGION", Some("eu-west-1"))]);
    out.assert_status(1);
    assert!(out.stderr.contains("IAM roles are global and prove nothing"), "{out}");
    assert!(out.stderr.contains("reconcile pin --account 123456789012 --region eu-west-1"), "{out}");
    assert_eq!(pin_of(&cli, "pinned-role-only").await, None);
    let out = cli.run(&["-f", "role.toml", "destroy", "--auto-approve"]);
    out.assert_status(1);
    let aws = aws(&moto).await;
    assert!(aws.iam.get_role().role_name("PinnedRoleOnly").send().await.is_ok(), "refused destroy deleted the role");

    // Pinned by hand: then it runs there, and a pin elsewhere refuses it.
    let out = cli.run(&["-f", "role.toml", "--region", "us-east-1", "pin", "--account", "123456789012"]);
    out.assert_success();
    assert!(out.stdout.contains("pinned to account 123456789012 (aws) in us-east-1"), "{out}");
    cli.run(&["-f", "role.toml", "plan", "--detailed-exitcode"]).assert_status(0);
    let out = cli.run(&["-f", "role.toml", "--region", "us-east-1", "pin", "--account", OTHER_ACCOUNT]);
    out.assert_status(1);
    assert!(out.stderr.contains("already pinned to account 123456789012 (aws) in us-east-1; pass --force"), "{out}");
    // --force does not beat the evidence: the role's ARN names its account.
    let out = cli.run(&["-f", "role.toml", "--region", "us-east-1", "pin", "--account", OTHER_ACCOUNT, "--force"]);
    out.assert_status(1);
    assert!(out.stderr.contains("the state records `role` as arn:aws:iam::123456789012:role/PinnedRoleOnly"), "{out}");
    assert_eq!(pin_of(&cli, "pinned-role-only").await, Some(here("us-east-1")));
    // Pinned elsewhere (as a state whose stack lives in another account is).
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    let elsewhere = Identity { account_id: OTHER_ACCOUNT.into(), ..here("us-east-1") };
    store.set_identity("pinned-role-only", &elsewhere).await.unwrap();
    store.close().await;
    let out = cli.run(&["-f", "role.toml", "destroy", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stderr.contains(&format!("lives in account {OTHER_ACCOUNT} (aws) in us-east-1")), "{out}");
    assert!(aws.iam.get_role().role_name("PinnedRoleOnly").send().await.is_ok());
    // import too: refused before it reads the resource, nothing recorded.
    aws.logs.create_log_group().log_group_name("PinnedRoleOnlyLogs").send().await.unwrap();
    cli.write_file(
        "role.toml",
        &format!("{ROLE_ONLY}\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"PinnedRoleOnlyLogs\"\n"),
    );
    let out = cli.run(&["-f", "role.toml", "import", "logs", "PinnedRoleOnlyLogs"]);
    out.assert_status(1);
    assert!(out.stderr.contains(&format!("lives in account {OTHER_ACCOUNT} (aws) in us-east-1")), "{out}");
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    assert!(!store.load("pinned-role-only").await.unwrap().resources.contains_key("logs"), "import recorded it");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_refuses_a_stack_pinned_elsewhere_alone_and_watches_the_others() {
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    cli.write_file("small.toml", SMALL);
    cli.run_with_env(&["-f", "small.toml", "apply", "--auto-approve"], &[("AWS_REGION", Some("eu-west-1"))]).assert_success();

    let (mut w, port) = spawn_watch(&cli, &[SEED, "small.toml"], &[("AWS_REGION", Some("eu-west-1"))]);
    let complete = "reconcile_passes_total{stack=\"pinned-small\",result=\"complete\"}";
    let refused = format!("reconcile_stack_refused{{stack=\"{STACK}\",reason=\"pinned_elsewhere\"}}");
    let body = support::poll_until(
        WATCH_DEADLINE,
        "the small stack watched and the seed stack refused",
        || {
            let (_, body) = http_get(port, "/metrics");
            (sample(&body, complete).unwrap_or(0.0) >= 2.0 && sample(&body, &refused) == Some(1.0)).then_some(body)
        },
        || w.stderr(),
    );
    assert_eq!(sample(&body, "reconcile_stack_refused{stack=\"pinned-small\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, &format!("reconcile_passes_total{{stack=\"{STACK}\",result=\"complete\"}}")), Some(0.0), "{body}");
    let (status, text) = http_get(port, "/readyz");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains(&format!("refused: {STACK}: stack `{STACK}` lives in {HOME}")), "{text}");
    assert!(!text.contains("pinned-small"), "{text}");
    w.assert_running();
    let stderr = w.stderr();
    let lines = log_lines(&stderr, "stack refused: not watched until this is fixed; the other stacks go on");
    assert_eq!(lines.len(), 1, "logged once:\n{stderr}");
    assert_eq!(lines[0]["stack"], STACK);
    assert_eq!(lines[0]["reason"], "pinned_elsewhere");
    // The refused stack was not read: no drift recorded, its resources are not "deleted".
    assert!(drift_events(&cli, true).iter().all(|e| e["stack"] != STACK), "{stderr}");
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();
}
