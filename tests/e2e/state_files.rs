//! Second state files, stage logging order, small fixes (end to end against moto).

#[allow(unused_imports)]
use super::*;

const STACK: &str = "apigw-lambda-basic";

#[tokio::test(flavor = "multi_thread")]
async fn force_unlock_never_prints_the_id_and_refuses_a_live_local_holder_unless_forced() {
    use reconcile::state::Store;
    use std::time::Duration;
    let (_moto, cli) = seeded();
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    // Held by this test process: alive, on this host.
    let held = store.lock(STACK, "apply", Duration::ZERO).await.unwrap();

    let out = cli.run(&["-f", SEED, "force-unlock", "not-the-id"]);
    out.assert_status(1);
    assert!(!out.combined().contains(&held.id), "the real lock id must not be printed: {out}");
    assert!(out.stderr.contains(&format!("has no lock with id `not-the-id`; it is locked by apply (pid {}", std::process::id())), "{out}");
    assert!(out.stderr.contains(", running) since"), "it must say the holder is alive: {out}");
    assert!(store.lock_info(STACK).await.unwrap().is_some());

    // The right id, but the holder is alive here: refused, the lock stays.
    let out = cli.run(&["-f", SEED, "force-unlock", &held.id]);
    out.assert_status(1);
    assert!(out.stderr.contains("that process is still running") && out.stderr.contains("--force"), "{out}");
    assert_eq!(store.lock_info(STACK).await.unwrap().map(|l| l.id), Some(held.id.clone()));

    // With --force it is broken, and says whose it was.
    let out = cli.run(&["-f", SEED, "force-unlock", &held.id, "--force"]);
    out.assert_success();
    assert!(out.stdout.contains(&format!("Broke the lock of stack `{STACK}` held by apply (pid {}", std::process::id())), "{out}");
    assert!(store.lock_info(STACK).await.unwrap().is_none());
    store.close().await;
}

/// The seed manifest's text with `f` applied, written back in place.
fn edit_seed(cli: &Cli, f: impl Fn(String) -> String) {
    let path = cli.join(SEED);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, f(text)).unwrap();
}

/// The text without the `[resources.NAME]` block (up to the next `[resources.` header).
fn without_block(text: &str, name: &str) -> String {
    let header = format!("[resources.{name}]\n");
    let start = text.find(&header).unwrap_or_else(|| panic!("no {header}"));
    let rest = &text[start + header.len()..];
    let end = rest.find("\n[resources.").map_or(text.len(), |i| start + header.len() + i + 1);
    format!("{}{}", &text[..start], &text[end..])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_state_file_is_refused_with_no_duplicate_and_an_empty_one_is_refused_untouched() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    let hello_id = apis.items().iter().find(|a| a.name() == Some("HelloApiGw")).and_then(|a| a.id()).unwrap().to_string();

    // A second state file: plan shows each create of what exists as a conflict, with the import to run, and exits 1.
    let plan = cli.run(&["-f", SEED, "--state", "second.db", "plan"]);
    plan.assert_status(1);
    assert!(plan.stdout.contains("Found in AWS; apply refuses these until they are fixed:"), "{plan}");
    assert!(plan.stdout.contains(&format!("a REST API named `HelloApiGw` exists in AWS ({hello_id})")), "{plan}");
    assert!(plan.stdout.contains(&format!("`reconcile import hello_api {hello_id}`")), "{plan}");
    assert!(plan.stdout.contains("conflict: aws_iam_role `HelloLambdaTest-role` exists in AWS, not in this state"), "{plan}");
    assert!(plan.stdout.contains("`reconcile import hello_function HelloLambdaTest`"), "{plan}");
    let json = cli.run(&["-f", SEED, "--state", "second.db", "--json", "plan"]);
    json.assert_status(1);
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    let blocked: Vec<&str> = doc["blockers"].as_array().unwrap().iter().map(|b| b["resource"].as_str().unwrap()).collect();
    for r in ["hello_api", "api_demo", "hello_function", "hello_lambda_role", "dev_access_logs", "waf_acl"] {
        assert!(blocked.contains(&r), "{r} not in {blocked:?}");
    }

    // Apply refuses each conflicting create without an AWS call, and skips what depends on them:
    // nothing is written; still one REST API of each name, one function, three roles.
    let out = cli.run(&["-f", SEED, "--state", "second.db", "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stdout.contains("Apply failed: 0 done"), "{out}");
    assert!(
        out.stdout.contains("hello_lambda_role: HelloLambdaTest-role already exists in AWS but this stack's state does not own it"),
        "{out}"
    );
    assert!(out.stdout.contains("(found by the plan; nothing was sent to AWS)"), "{out}");
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    let mut names: Vec<_> = apis.items().iter().filter_map(|a| a.name()).collect();
    names.sort();
    assert_eq!(names, vec!["ApiGwDemo", "HelloApiGw"], "no duplicate REST API");
    assert_eq!(aws.lambda.list_functions().send().await.unwrap().functions().len(), 1);
    assert_eq!(aws.iam.list_roles().send().await.unwrap().roles().len(), 3);
    let second = reconcile::state::Store::open(&cli.join("second.db")).await.unwrap();
    assert!(second.load(STACK).await.unwrap().resources.is_empty(), "nothing recorded in the second state");
    second.close().await;

    // Adopting by import, as the message says, makes the conflict go away.
    cli.run(&["-f", SEED, "--state", "second.db", "import", "hello_api", &hello_id]).assert_success();
    let plan = cli.run(&["-f", SEED, "--state", "second.db", "--json", "plan"]);
    let doc: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert!(!doc["blockers"].as_array().into_iter().flatten().any(|b| b["resource"] == "hello_api"), "{plan}");

    // A zero-length state file is refused, untouched, before any AWS call.
    cli.write_file("empty.db", "");
    for args in [&["-f", SEED, "--state", "empty.db", "plan"][..], &["-f", SEED, "--state", "empty.db", "apply", "--auto-approve"]] {
        let out = cli.run(args);
        out.assert_status(1);
        assert!(out.stderr.contains("empty.db is empty (0 bytes), not a reconcile state database"), "{out}");
    }
    assert_eq!(std::fs::metadata(cli.join("empty.db")).unwrap().len(), 0);
    assert_eq!(aws.apigw.get_rest_apis().send().await.unwrap().items().len(), 2);

    // The first state still owns everything; destroy says what it did.
    let out = cli.run(&["-f", SEED, "destroy", "--auto-approve"]);
    out.assert_success();
    assert!(out.stdout.contains("Destroy complete: "), "{out}");
    assert!(!out.stdout.contains("Apply complete"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logging_stage_without_depends_on_is_created_after_the_account_setting() {
    let (_moto, cli) = seeded();
    edit_seed(&cli, |t| t.replace("depends_on = [\"apigw_account\"]\n", ""));
    assert!(!cli.read_file(SEED).contains("depends_on"));
    let v = cli.run(&["-f", SEED, "--json", "validate"]);
    v.assert_success();
    let doc: Value = serde_json::from_str(&v.stdout).unwrap();
    for stage in ["dev_stage", "prod_stage"] {
        let r = doc["resources"].as_array().unwrap().iter().find(|r| r["name"] == stage).unwrap();
        assert!(r["depends_on"].as_array().unwrap().iter().any(|d| d == "apigw_account"), "{stage}: {r}");
    }
    let out = cli.run(&["-f", SEED, "--json", "apply", "--auto-approve"]);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let outcomes = doc["result"]["outcomes"].as_array().unwrap();
    let find = |n: &str| outcomes.iter().find(|o| o["name"] == n).unwrap_or_else(|| panic!("no outcome for {n}"));
    let account = find("apigw_account");
    let account_done = account["started_ms"].as_u64().unwrap() + account["elapsed_ms"].as_u64().unwrap();
    for stage in ["dev_stage", "prod_stage"] {
        let o = find(stage);
        assert!(o["waited_for"].as_array().unwrap().iter().any(|w| w == "apigw_account"), "{o}");
        assert!(o["started_ms"].as_u64().unwrap() >= account_done, "{stage} started before the account setting was done: {o} {account}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logging_stage_with_no_cloudwatch_role_in_the_region_is_refused_before_anything_is_created() {
    let (moto, cli) = seeded();
    edit_seed(&cli, |t| without_block(&t, "apigw_account").replace("depends_on = [\"apigw_account\"]\n", ""));
    let plan = cli.run(&["-f", SEED, "plan"]);
    plan.assert_status(1);
    for stage in ["dev_stage", "prod_stage"] {
        assert!(
            plan.stdout.contains(&format!("! {stage} (aws_api_gateway_stage): the stage logs (access logs or execution logging), but API Gateway's account setting in us-east-1 names no CloudWatch Logs role")),
            "{plan}"
        );
    }
    assert!(plan.stdout.contains("add an `aws_api_gateway_account` resource"), "{plan}");
    let out = cli.run(&["-f", SEED, "apply", "--auto-approve"]);
    out.assert_status(1);
    assert!(out.stderr.contains("refusing to apply; nothing was changed"), "{out}");
    let aws = aws(&moto).await;
    assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty());
    assert!(aws.iam.list_roles().send().await.unwrap().roles().is_empty());
    assert!(aws.apigw.get_rest_apis().send().await.unwrap().items().is_empty());

    // Once the region names a role (set outside this manifest), the same manifest applies.
    aws.iam
        .create_role()
        .role_name("RegionCloudWatch")
        .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"apigateway.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
        .send()
        .await
        .unwrap();
    aws.apigw
        .update_account()
        .patch_operations(
            aws_sdk_apigateway::types::PatchOperation::builder()
                .op(aws_sdk_apigateway::types::Op::Replace)
                .path("/cloudwatchRoleArn")
                .value("arn:aws:iam::123456789012:role/RegionCloudWatch")
                .build(),
        )
        .send()
        .await
        .unwrap();
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(2);
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_listing_into_a_closed_pipe_ends_quietly() {
    use std::collections::BTreeSet;
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let store = reconcile::state::Store::open(&db).await.unwrap();
    // Far more than a pipe holds (64 KiB), so the writer is still writing when the reader goes away.
    let drift: Vec<reconcile::state::Drift> = (0..3000)
        .map(|i| reconcile::state::Drift {
            resource: format!("function_{i:05}"),
            kind: reconcile::manifest::Kind::LambdaFunction,
            field: "memory_size".into(),
            expected: serde_json::json!(512),
            actual: serde_json::json!(128),
            ignored: false,
        })
        .collect();
    let names: BTreeSet<String> = drift.iter().map(|d| d.resource.clone()).collect();
    store.record_drift(STACK, &drift, &names, &names).await.unwrap();
    store.close().await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_reconcile"))
        .args(["--state", db.to_str().unwrap(), "drift", "--all"])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -1`: one line, then the reader is gone.
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first, format!("Stack {STACK}:\n"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn many_processes_opening_a_new_state_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh").join("state.db");
    let children: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_reconcile"))
                .args(["--state", db.to_str().unwrap(), "drift"])
                .env_remove("RUST_LOG")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        assert!(!stderr.contains("database is locked"), "{stderr}");
        assert_eq!(stdout, "No open drift.\n");
    }
    // Only the state file itself (and SQLite's side files) are left: nothing built aside remains.
    let left: Vec<String> =
        std::fs::read_dir(db.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| n.starts_with("state.db")), "{left:?}");
}
