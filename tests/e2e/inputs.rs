//! Secrets, AWS naming rules, code path confinement (end to end against moto).

#[allow(unused_imports)]
use super::*;

/// Requests moto has answered so far.
fn moto_requests(moto: &Moto) -> usize {
    moto.log().lines().filter(|l| l.contains("HTTP/1.1\"")).count()
}

/// The seed manifest (as copied, not as edited since) with `extra` lines added to the function's table.
fn seed_with_function_lines(extra: &str) -> String {
    let text = std::fs::read_to_string(support::repo_dir().join(SEED)).unwrap();
    text.replace("code = \"apigw-lambda-basic/lambda\"", &format!("code = \"apigw-lambda-basic/lambda\"\n{extra}"))
}

async fn function_env(aws: &Aws) -> std::collections::HashMap<String, String> {
    let conf = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    conf.environment().and_then(|e| e.variables()).cloned().unwrap_or_default()
}

/// Neither the state file nor its WAL holds `needle`.
fn assert_state_file_free_of(cli: &Cli, needle: &str) {
    for file in ["reconcile.db", "reconcile.db-wal"] {
        if let Ok(bytes) = std::fs::read(cli.join(file)) {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "{file} holds `{needle}`");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn removed_secret_values_are_absent_from_every_output_and_the_state_file() {
    const REMOVED: &str = "s3cr3t-removed-7f2a";
    const MOVED: &str = "s3cr3t-moved-91c4";
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    let path = cli.join(SEED);
    std::fs::write(
        &path,
        seed_with_function_lines(&format!("environment = {{ STAGE = \"demo\" }}\nsecret_environment = {{ DB_PASS = \"{REMOVED}\" }}")),
    )
    .unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    assert_eq!(function_env(&aws).await.get("DB_PASS").map(String::as_str), Some(REMOVED));

    // The key leaves the manifest; Lambda still has its value until the next apply.
    std::fs::write(&path, seed_with_function_lines("environment = { STAGE = \"demo\" }")).unwrap();
    let mut seen = String::new();
    let plan = cli.run(&["-f", SEED, "-vv", "plan"]);
    plan.assert_success();
    assert!(plan.stdout.contains("- secret_environment.DB_PASS = \"(sensitive)\""), "{plan}");
    seen.push_str(&plan.combined());
    let doc = plan_json(&cli, SEED);
    assert_eq!(changes(&doc), vec![("hello_function".into(), "update".into(), vec!["secret_environment.DB_PASS".into()])]);
    seen.push_str(&doc.to_string());

    // watch records the drift (a secret key AWS has and the manifest does not), masked.
    let (mut w, port) = start_watch(&cli, &[]);
    wait_passes(&mut w, port, 1.0);
    let events = drift_events(&cli, true);
    let e = event(&events, "hello_function", "secret_environment.DB_PASS").unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(e["actual"], serde_json::json!(reconcile::manifest::schema::SENSITIVE), "{e}");
    seen.push_str(&serde_json::to_string(&events).unwrap());
    seen.push_str(&cli.run(&["drift", "--all"]).combined());
    let out = stop_watch_cleanly(&cli, w, 2).await;
    seen.push_str(&out.combined());

    let applied = cli.run(&["-f", SEED, "-vv", "apply", "--auto-approve"]);
    applied.assert_success();
    seen.push_str(&applied.combined());
    assert!(!function_env(&aws).await.contains_key("DB_PASS"));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    // A key moved from `secret_environment` to `environment`: its old value stays masked.
    std::fs::write(
        &path,
        seed_with_function_lines(&format!("environment = {{ STAGE = \"demo\" }}\nsecret_environment = {{ TOKEN = \"{MOVED}\" }}")),
    )
    .unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    std::fs::write(&path, seed_with_function_lines("environment = { STAGE = \"demo\", TOKEN = \"now-public\" }")).unwrap();
    let plan = cli.run(&["-f", SEED, "plan"]);
    assert!(plan.stdout.contains("- secret_environment.TOKEN = \"(sensitive)\""), "{plan}");
    assert!(plan.stdout.contains("+ environment.TOKEN") && plan.stdout.contains("\"now-public\""), "{plan}");
    seen.push_str(&plan.combined());
    seen.push_str(&plan_json(&cli, SEED).to_string());
    let applied = cli.run(&["-f", SEED, "--json", "apply", "--auto-approve"]);
    applied.assert_success();
    seen.push_str(&applied.combined());
    assert_eq!(function_env(&aws).await.get("TOKEN").map(String::as_str), Some("now-public"));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    for secret in [REMOVED, MOVED] {
        assert!(!seen.contains(secret), "`{secret}` was shown:\n{seen}");
        assert_state_file_free_of(&cli, secret);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_both_plain_and_secret_is_refused_by_validate() {
    let (moto, cli) = seeded();
    let bad = seed_with_function_lines("environment = { DB_PASS = \"a\" }\nsecret_environment = { DB_PASS = \"b\" }");
    cli.write_file("manifests/bad.toml", &bad);
    let line = bad.lines().position(|l| l.starts_with("secret_environment = { DB_PASS")).unwrap() + 1;
    let before = moto_requests(&moto);
    for cmd in ["validate", "plan"] {
        let out = cli.run(&["-f", "manifests/bad.toml", cmd]);
        out.assert_status(1);
        assert!(
            out.stderr
                .contains(&format!("manifests/bad.toml:{line}:24: error: `DB_PASS` is in both `environment` and `secret_environment`")),
            "{out}"
        );
    }
    assert_eq!(moto_requests(&moto), before, "validation called AWS");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_name_is_refused_by_validate_at_file_line_column_before_any_aws_call() {
    let (moto, cli) = seeded();
    let seed = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let long_role = "R".repeat(80);
    // A line of 3 MiB: under the manifest's size limit (README, "Input limits"), so it reaches the
    // field's own check, whose error must not quote it.
    let huge = "d".repeat(3 * 1024 * 1024);
    let huge_line = format!("code = \"apigw-lambda-basic/lambda\"\ndescription = \"{huge}\"");
    // (what replaces what, the line that then holds the error, its column, the message)
    let cases: Vec<(&str, String, &str, usize, &str)> = vec![
        (
            "function_name = \"HelloLambdaTest\"",
            "function_name = \"bad name!/x\"".into(),
            "function_name = \"bad name!/x\"",
            17,
            "`function_name` must be 1-64 characters of letters, digits, `_` and `-`; ' ' (character 4) is not one of them",
        ),
        (
            "name = \"HelloLambdaTest-role\"",
            format!("name = \"{long_role}\""),
            "name = \"RRRR",
            8,
            "`name` must be 1-64 characters of letters, digits and `_+=,.@-`; it has 80",
        ),
        (
            "name = \"DevLogGroupAccessLog\"",
            "name = \"Dev Log*Group\"".into(),
            "name = \"Dev Log*Group\"",
            8,
            "`name` must be 1-512 characters of letters, digits and `._-/#`; ' ' (character 4) is not one of them",
        ),
        (
            "stage_name = \"dev\"",
            "stage_name = \"dev stage!\"".into(),
            "stage_name = \"dev stage!\"",
            14,
            "`stage_name` must be 1-128 characters of letters, digits, `_` and `-`; ' ' (character 4) is not one of them",
        ),
        (
            "code = \"apigw-lambda-basic/lambda\"",
            huge_line,
            "description = \"ddd",
            15,
            "`description` must be at most 256 characters; it has 3145728",
        ),
    ];
    let before = moto_requests(&moto);
    for (from, to, at, column, message) in &cases {
        assert!(seed.contains(from), "{from}");
        let bad = seed.replacen(from, to, 1);
        cli.write_file("manifests/bad.toml", &bad);
        let line = bad.lines().position(|l| l.starts_with(at)).unwrap() + 1;
        for cmd in ["validate", "plan"] {
            let out = cli.run(&["-f", "manifests/bad.toml", cmd]);
            out.assert_status(1);
            assert!(out.stderr.contains(&format!("manifests/bad.toml:{line}:{column}: error: {message}")), "{cmd}: {message}\n{out}");
            assert!(out.combined().len() < 4096, "{cmd}: {} bytes of output", out.combined().len());
        }
    }
    assert_eq!(moto_requests(&moto), before, "validation called AWS:\n{}", moto.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_code_path_outside_the_manifest_folder_is_refused_unless_the_command_line_allows_it() {
    let (moto, cli) = seeded();
    // Code outside the manifest's folder (`manifests/`): a sibling folder of the work directory.
    cli.write_file("outside/lambda/index.py", "def handler(event, context):\n    return {'statusCode': 200, 'body': 'outside'}\n");
    std::os::unix::fs::symlink(cli.join("outside/lambda"), cli.join("manifests/apigw-lambda-basic/linked")).unwrap();
    let seed = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let with_code = |code: &str| seed.replace("code = \"apigw-lambda-basic/lambda\"", &format!("code = \"{code}\""));
    let line = seed.lines().position(|l| l == "code = \"apigw-lambda-basic/lambda\"").unwrap() + 1;
    let before = moto_requests(&moto);
    for (code, why) in [
        ("/etc/shadow", "an absolute path"),
        ("/etc", "an absolute path"),
        ("../outside/lambda", "resolved to"),
        ("apigw-lambda-basic/linked", "a symlink resolved to"),
    ] {
        cli.write_file("manifests/bad.toml", &with_code(code));
        for cmd in ["validate", "plan"] {
            let out = cli.run(&["-f", "manifests/bad.toml", cmd]);
            out.assert_status(1);
            assert!(
                out.stderr.contains(&format!("manifests/bad.toml:{line}:8: error: `code`: code path `{code}` is {why}")),
                "{code}: {out}"
            );
            assert!(out.stderr.contains("outside the manifest's folder") && out.stderr.contains("--allow-code-from"), "{out}");
        }
    }
    assert_eq!(moto_requests(&moto), before, "a refused code path made AWS calls");

    // The command line, never the manifest, allows a folder outside: the flag, or the variable.
    cli.write_file("manifests/outside.toml", &with_code("../outside/lambda"));
    let outside = cli.join("outside").display().to_string();
    cli.run(&["-f", "manifests/outside.toml", "--allow-code-from", &outside, "validate"]).assert_success();
    cli.run(&["-f", "manifests/bad.toml", "--allow-code-from", &outside, "validate"]).assert_success();
    cli.run_with_env(&["-f", "manifests/outside.toml", "apply", "--auto-approve"], &[("RECONCILE_ALLOW_CODE_FROM", Some(&outside))])
        .assert_success();
    let aws = aws(&moto).await;
    let f = aws.lambda.get_function().function_name("HelloLambdaTest").send().await.unwrap();
    assert!(f.configuration().unwrap().code_size() > 0);
    // Allowing one folder allows only that one.
    cli.write_file("manifests/etc.toml", &with_code("/etc"));
    let out = cli.run(&["-f", "manifests/etc.toml", "--allow-code-from", &outside, "validate"]);
    out.assert_status(1);
    assert!(out.stderr.contains("code path `/etc` is an absolute path"), "{out}");
}
