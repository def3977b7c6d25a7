//! Variables: several environments from one manifest, errors before any AWS call, sensitive values
//! kept out of every output, log and the state file (end to end against moto).

#[allow(unused_imports)]
use super::*;

/// Requests moto has answered so far.
fn moto_requests(moto: &Moto) -> usize {
    moto.log().lines().filter(|l| l.contains("HTTP/1.1\"")).count()
}

/// Neither the state file nor its WAL holds `needle`.
fn assert_state_file_free_of(cli: &Cli, needle: &str) {
    for file in ["reconcile.db", "reconcile.db-wal"] {
        if let Ok(bytes) = std::fs::read(cli.join(file)) {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{file} holds `{needle}`");
        }
    }
}

async fn function_tags(aws: &Aws, name: &str) -> std::collections::HashMap<String, String> {
    aws.lambda.get_function().function_name(name).send().await.unwrap().tags().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_environments_of_the_seed_live_side_by_side_and_destroying_one_leaves_the_other_unchanged() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    // dev manages the region's API Gateway account setting; prod switches it off and names its stage.
    cli.write_file("dev.toml", "prefix = \"dev-\"\n");
    cli.write_file("prod.toml", "prefix = \"prod-\"\nmanage_apigw_account = false\nprod_stage = \"live\"\n");
    let dev = ["-f", SEED, "--var-file", "dev.toml"];
    let prod = ["-f", SEED, "--var-file", "prod.toml"];
    let with = |base: &[&'static str; 4], rest: &[&'static str]| -> Vec<&'static str> { base.iter().chain(rest).copied().collect() };

    let out = cli.run(&with(&dev, &["apply", "--auto-approve"]));
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 17 done, 0 failed"), "{out}");
    let out = cli.run(&with(&prod, &["apply", "--auto-approve"]));
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 16 done, 0 failed"), "the account setting is off in prod: {out}");

    // Two stacks in one state file and one account, each with its own names and tags.
    for (env, stack) in [("dev-", "dev-apigw-lambda-basic"), ("prod-", "prod-apigw-lambda-basic")] {
        let tags = function_tags(&aws, &format!("{env}HelloLambdaTest")).await;
        assert_eq!(tags.get("reconcile:stack").map(String::as_str), Some(stack));
        assert!(log_group(&aws, &format!("{env}DevLogGroupAccessLog")).await.is_some());
        aws.iam.get_role().role_name(format!("{env}ApiGwInvokeLambda")).send().await.unwrap();
    }
    assert!(aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_err(), "no unprefixed copy");
    let account = aws.apigw.get_account().send().await.unwrap();
    assert_eq!(account.cloudwatch_role_arn(), Some("arn:aws:iam::123456789012:role/dev-ApiGwPushToCloudWatchLogs"));
    let apis = aws.apigw.get_rest_apis().send().await.unwrap();
    let prod_api = apis.items().iter().find(|a| a.name() == Some("prod-HelloApiGw")).unwrap();
    let stages = aws.apigw.get_stages().rest_api_id(prod_api.id().unwrap()).send().await.unwrap();
    let mut names: Vec<_> = stages.item().iter().filter_map(|s| s.stage_name()).collect();
    names.sort();
    assert_eq!(names, vec!["dev", "live"], "the stage name comes from prod.toml");
    let url = cli.run(&with(&prod, &["output", "hello_api_prod_url"]));
    url.assert_success();
    assert!(url.stdout.trim().ends_with("/live"), "{url}");

    for env in [&dev, &prod] {
        cli.run(&with(env, &["plan", "--detailed-exitcode"])).assert_status(0);
    }
    let list = cli.run(&with(&prod, &["state", "list"]));
    assert!(!list.stdout.contains("apigw_account"), "{list}");

    // Destroy prod: dev is untouched and its plan stays empty.
    cli.run(&with(&prod, &["destroy", "--auto-approve"])).assert_success();
    assert!(aws.lambda.get_function().function_name("prod-HelloLambdaTest").send().await.is_err());
    assert!(log_group(&aws, "prod-DevLogGroupAccessLog").await.is_none());
    assert_eq!(function_tags(&aws, "dev-HelloLambdaTest").await.get("reconcile:stack").map(String::as_str), Some("dev-apigw-lambda-basic"));
    let plan = cli.run(&with(&dev, &["plan", "--detailed-exitcode"]));
    plan.assert_status(0);
    assert!(plan.stdout.contains("No changes"), "{plan}");
    let account = aws.apigw.get_account().send().await.unwrap();
    assert_eq!(account.cloudwatch_role_arn(), Some("arn:aws:iam::123456789012:role/dev-ApiGwPushToCloudWatchLogs"));

    // Switching the account setting off in dev plans it as removed (forgotten: a setting is never reset).
    let plan = cli.run(&with(&dev, &["--var", "manage_apigw_account=false", "--json", "plan"]));
    plan.assert_success();
    let doc: Value = serde_json::from_str(&plan.stdout).unwrap();
    let account_change = doc["resources"].as_array().unwrap().iter().find(|r| r["name"] == "apigw_account").cloned();
    assert!(account_change.as_ref().is_some_and(|r| r["action"] != "no_op"), "{doc}");
    let reason = account_change.as_ref().and_then(|r| r["reason"].as_str()).unwrap_or_default().to_string();
    assert!(reason.contains("switched off"), "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_ill_typed_variable_is_refused_at_its_file_and_line_with_no_aws_call() {
    let (moto, cli) = seeded();
    let seed = std::fs::read_to_string(cli.join(SEED)).unwrap();
    // `prefix` loses its default: it must be given.
    let needs_prefix = seed.replacen("type = \"string\"\ndefault = \"\"\n", "type = \"string\"\n", 1);
    assert_ne!(needs_prefix, seed);
    cli.write_file("manifests/needs-prefix.toml", &needs_prefix);
    let decl_line = needs_prefix.lines().position(|l| l == "[variables.prefix]").unwrap() + 1;
    cli.write_file("bad.toml", "prefix = \"qa-\"\n\nmanage_apigw_account = \"yes\"\n");
    cli.write_file("unknown.toml", "prefx = \"qa-\"\n");
    let before = moto_requests(&moto);
    for cmd in ["validate", "plan", "apply", "destroy"] {
        let mut args = vec!["-f", "manifests/needs-prefix.toml", "--stats", cmd];
        if cmd == "apply" || cmd == "destroy" {
            args.push("--auto-approve");
        }
        let out = cli.run(&args);
        out.assert_status(1);
        assert!(
            out.stderr
                .contains(&format!("manifests/needs-prefix.toml:{decl_line}:12: error: variable `prefix` has no value and no default")),
            "{out}"
        );
        args.extend(["--var-file", "bad.toml"]);
        let out = cli.run(&args);
        out.assert_status(1);
        assert!(out.stderr.contains("bad.toml:3:24: error: variable `manage_apigw_account` must be a bool"), "{out}");
        let out = cli.run(&["-f", SEED, cmd, "--var-file", "unknown.toml"]);
        out.assert_status(1);
        assert!(out.stderr.contains("unknown.toml:1:1: error: var file sets `prefx`"), "{out}");
        assert!(out.stderr.contains("did you mean `prefix`?"), "{out}");
        let out = cli.run(&["-f", SEED, cmd, "--var", "prefix=not a prefix"]);
        out.assert_status(1);
        assert!(out.stderr.contains("--var:1:8: error: variable `prefix` = \"not a prefix\" does not match the pattern"), "{out}");
    }
    assert_eq!(moto_requests(&moto), before, "a bad variable reached AWS");
    assert!(!cli.join("reconcile.db").exists(), "nothing was written either");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sensitive_variable_never_appears_in_output_logs_or_the_state_file() {
    const FIRST: &str = "s3cr3t-from-env-4b1d";
    const SECOND: &str = "s3cr3t-from-file-77e0";
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    let seed = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let text = seed
        .replace(
            "code = \"apigw-lambda-basic/lambda\"",
            "code = \"apigw-lambda-basic/lambda\"\nsecret_environment = { DB_PASS = \"${var.db_pass}\" }",
        )
        .replace("[variables.prefix]", "[variables.db_pass]\ntype = \"string\"\nsensitive = true\n\n[variables.prefix]");
    std::fs::write(cli.join(SEED), &text).unwrap();
    let env = [("RECONCILE_VAR_db_pass", Some(FIRST))];
    let mut seen = String::new();

    let applied = cli.run_with_env(&["-f", SEED, "-vv", "apply", "--auto-approve"], &env);
    applied.assert_success();
    seen.push_str(&applied.combined());
    let conf = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    let vars = conf.environment().and_then(|e| e.variables()).cloned().unwrap_or_default();
    assert_eq!(vars.get("DB_PASS").map(String::as_str), Some(FIRST), "the value reached Lambda");
    for args in [&["-f", SEED, "-vv", "plan"][..], &["-f", SEED, "--json", "plan"], &["-f", SEED, "state", "show", "hello_function"]] {
        let out = cli.run_with_env(args, &env);
        out.assert_success();
        seen.push_str(&out.combined());
    }
    cli.run_with_env(&["-f", SEED, "plan", "--detailed-exitcode"], &env).assert_status(0);

    // A new value from a file (`--var name=@FILE`): planned as a change, shown masked.
    cli.write_file("db_pass.txt", &format!("{SECOND}\n"));
    let from_file = ["-f", SEED, "-vv", "--var", "db_pass=@db_pass.txt"];
    let plan = cli.run(&[&from_file[..], &["plan"]].concat());
    plan.assert_success();
    assert!(plan.stdout.contains("secret_environment.DB_PASS") && plan.stdout.contains("(sensitive)"), "{plan}");
    seen.push_str(&plan.combined());
    let applied = cli.run(&[&from_file[..], &["apply", "--auto-approve"]].concat());
    applied.assert_success();
    seen.push_str(&applied.combined());
    let conf = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    assert_eq!(conf.environment().and_then(|e| e.variables()).and_then(|v| v.get("DB_PASS")).map(String::as_str), Some(SECOND));

    // An output or a plain field built from it is refused, naming the line, without the value.
    let leaky = text.replace("[outputs]\n", "[outputs]\nleak = \"${var.db_pass}\"\n");
    cli.write_file("manifests/leaky.toml", &leaky);
    let line = leaky.lines().position(|l| l.starts_with("leak = ")).unwrap() + 1;
    let out = cli.run_with_env(&["-f", "manifests/leaky.toml", "plan"], &env);
    out.assert_status(1);
    assert!(out.stderr.contains(&format!("manifests/leaky.toml:{line}:9: error: variable `db_pass` is sensitive")), "{out}");
    seen.push_str(&out.combined());
    // An ill-typed sensitive value is not echoed in the error.
    cli.write_file("typo.toml", &format!("db_pass = [\"{FIRST}\"]\n"));
    let out = cli.run(&["-f", SEED, "--var-file", "typo.toml", "validate"]);
    out.assert_status(1);
    assert!(out.stderr.contains("typo.toml:1:11: error: variable `db_pass` must be a string"), "{out}");
    seen.push_str(&out.combined());

    for secret in [FIRST, SECOND] {
        assert!(!seen.contains(secret), "`{secret}` was shown:\n{seen}");
        assert_state_file_free_of(&cli, secret);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_each_environment_of_one_manifest_and_skips_var_files_in_its_folder() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    // The var files sit in the watched folder, next to the manifest.
    cli.write_file("manifests/dev.toml", "prefix = \"dev-\"\n");
    cli.write_file("manifests/prod.toml", "prefix = \"prod-\"\nmanage_apigw_account = false\n");
    for env in ["manifests/dev.toml", "manifests/prod.toml"] {
        cli.run(&["-f", SEED, "--var-file", env, "apply", "--auto-approve"]).assert_success();
    }
    // Drift in prod only.
    aws.lambda.update_function_configuration().function_name("prod-HelloLambdaTest").memory_size(256).send().await.unwrap();

    let (mut w, port) = spawn_watch(&cli, &["--var-set", "manifests/dev.toml", "--var-set", "manifests/prod.toml", "manifests"], &[]);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    w.assert_running();
    // A complete pass of each stack.
    let complete = |stack: &str| {
        let (_, body) = http_get(port, "/metrics");
        sample(&body, &format!("reconcile_passes_total{{stack=\"{stack}\",result=\"complete\"}}")).unwrap_or(0.0)
    };
    support::poll_until(
        WATCH_DEADLINE,
        "a complete pass of each environment",
        || (complete("dev-apigw-lambda-basic") >= 1.0 && complete("prod-apigw-lambda-basic") >= 1.0).then_some(()),
        || w.stderr(),
    );
    let events = drift_events(&cli, false);
    let drifted: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (e["stack"].as_str().unwrap_or("").to_string(), e["resource"].as_str().unwrap().into(), e["field"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(
        drifted,
        vec![("prod-apigw-lambda-basic".to_string(), "hello_function".to_string(), "memory_size".to_string())],
        "{events:?}"
    );
    let (_, metrics) = http_get(port, "/metrics");
    for stack in ["dev-apigw-lambda-basic", "prod-apigw-lambda-basic"] {
        assert!(metrics.contains(&format!("stack=\"{stack}\"")), "{stack} is not watched:\n{metrics}");
    }
    assert!(!metrics.contains("stack=\"apigw-lambda-basic\""), "the default environment is not watched:\n{metrics}");
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();
    // Each environment is still planned on its own: prod shows the drift, dev nothing.
    cli.run(&["-f", SEED, "--var-file", "manifests/dev.toml", "plan", "--detailed-exitcode"]).assert_status(0);
    cli.run(&["-f", SEED, "--var-file", "manifests/prod.toml", "plan", "--detailed-exitcode"]).assert_status(2);
}
