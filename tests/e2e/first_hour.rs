//! A first hour: the getting-started walkthrough's own manifests, the default manifest, a plan
//! people read (end to end against moto).

#[allow(unused_imports)]
use super::*;

/// The walkthrough's files, from the repository: docs/getting-started/<rel>.
fn walkthrough_file(rel: &str) -> String {
    let path = support::repo_dir().join("docs/getting-started").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `METHOD /path` of every method of the API, sorted.
async fn routes(aws: &Aws, api: &str) -> Vec<String> {
    let mut routes: Vec<String> = methods(aws, api).await.into_iter().map(|(path, method, _)| format!("{method} {path}")).collect();
    routes.sort();
    routes
}

const ESC: char = '\u{1b}';

/// docs/getting-started.md, step by step, as a new user runs it: the commands run in the folder that
/// holds `reconcile.toml`, with no `-f`.
#[tokio::test(flavor = "multi_thread")]
async fn the_getting_started_walkthrough_applies_changes_repairs_drift_and_destroys() {
    let (moto, cli) = setup();
    let guide = std::fs::read_to_string(support::repo_dir().join("docs/getting-started.md")).unwrap();
    // The guide shows the files the test applies, whole.
    for rel in ["reconcile.toml", "app/handler.py"] {
        let text = walkthrough_file(rel);
        assert!(guide.contains(&text), "docs/getting-started.md does not show docs/getting-started/{rel} as it is");
        cli.write_file(rel, &text);
    }

    // Steps 2-3: validate, plan, apply; no -f anywhere.
    cli.run(&["validate"]).assert_success();
    let plan = cli.run(&["plan", "--detailed-exitcode"]);
    plan.assert_status(2);
    assert!(plan.stdout.contains("Plan: 8 to create, 0 to update, 0 to replace, 0 to delete, 0 unchanged; 2 outputs to change."), "{plan}");
    assert!(plan.stdout.contains("Outputs:\n  + hello_url = (known after apply)\n  + time_url  = (known after apply)\n"), "{plan}");
    let apply = cli.run(&["apply", "--auto-approve"]);
    apply.assert_success();
    assert!(apply.stdout.contains("Apply complete: 8 done, 0 failed, 0 skipped"), "{apply}");
    let aws = aws(&moto).await;
    let api = api_id(&aws, "first-api").await;
    let url = |path: &str| format!("https://{api}.execute-api.us-east-1.amazonaws.com/dev{path}");
    assert!(apply.stdout.contains(&format!("time_url = {}", url("/time"))), "{apply}");
    assert_eq!(routes(&aws, &api).await, vec!["GET /hello", "GET /time"]);
    for f in ["first-api-hello", "first-api-clock"] {
        let c = aws.lambda.get_function_configuration().function_name(f).send().await.unwrap();
        assert_eq!(c.role(), Some("arn:aws:iam::123456789012:role/first-api-lambda"));
    }
    let stages = aws.apigw.get_stages().rest_api_id(&api).send().await.unwrap();
    assert_eq!(stages.item().iter().filter_map(|s| s.stage_name()).collect::<Vec<_>>(), vec!["dev"]);

    // Step 4: the second plan is empty and shows the outputs.
    let plan = cli.run(&["plan", "--detailed-exitcode"]);
    plan.assert_status(0);
    assert!(plan.stdout.contains("No changes: AWS matches the manifest for stack `first-api` (8 resources)."), "{plan}");
    assert!(plan.stdout.contains(&format!("    time_url  = \"{}\"\n", url("/time"))), "{plan}");

    // Step 5: the change. The route's path is one changed line; piped output has no colour, even
    // without NO_COLOR; CLICOLOR_FORCE keeps it.
    cli.write_file("reconcile.toml", &walkthrough_file("after-change.toml"));
    let plan = cli.run_with_env(&["plan", "--detailed-exitcode"], &[("NO_COLOR", None)]);
    plan.assert_status(2);
    assert!(!plan.stdout.contains(ESC) && !plan.stderr.contains(ESC), "escape codes in piped output:\n{plan}");
    let api_block: Vec<&str> =
        plan.stdout.lines().skip_while(|l| !l.starts_with("  ~ api (aws_api_gateway_rest_api)")).take_while(|l| !l.is_empty()).collect();
    assert_eq!(api_block[1..], [r#"    ~ routes[GET /time].path = "/time" → "/now""#], "{plan}");
    assert!(plan.stdout.contains("+/- deployment (aws_api_gateway_deployment)"), "{plan}");
    assert!(plan.stdout.contains("-/+ clock_permission (aws_lambda_permission)"), "{plan}");
    assert!(plan.stdout.contains(&format!("  ~ time_url  = \"{}\" → \"{}\"", url("/time"), url("/now"))), "{plan}");
    assert!(plan.stdout.contains("Plan: 0 to create, 2 to update, 2 to replace, 0 to delete, 4 unchanged; 1 output to change."), "{plan}");
    let coloured = cli.run_with_env(&["plan"], &[("NO_COLOR", None), ("CLICOLOR_FORCE", Some("1"))]);
    assert!(coloured.stdout.contains("\u{1b}[33m~\u{1b}[0m"), "CLICOLOR_FORCE=1 should colour the signs:\n{coloured}");
    let plain = cli.run_with_env(&["plan"], &[("NO_COLOR", Some("1")), ("CLICOLOR_FORCE", Some("1"))]);
    assert!(!plain.stdout.contains(ESC), "NO_COLOR wins:\n{plain}");
    let apply = cli.run(&["apply", "--auto-approve"]);
    apply.assert_success();
    assert!(!apply.stdout.contains(ESC), "{apply}");
    assert_eq!(routes(&aws, &api).await, vec!["GET /hello", "GET /now"]);
    assert_eq!(api_id(&aws, "first-api").await, api, "the API is updated in place");
    cli.run(&["plan", "--detailed-exitcode"]).assert_status(0);

    // Step 6: drift, shown by plan and repaired by apply.
    aws.lambda.update_function_configuration().function_name("first-api-hello").memory_size(256).send().await.unwrap();
    let plan = cli.run(&["plan", "--detailed-exitcode"]);
    plan.assert_status(2);
    assert!(
        plan.stdout.contains("  ~ hello (aws_lambda_function) [first-api-hello] will be updated in place\n    ~ memory_size = 256 → 128\n"),
        "{plan}"
    );
    cli.run(&["apply", "--auto-approve"]).assert_success();
    let c = aws.lambda.get_function_configuration().function_name("first-api-hello").send().await.unwrap();
    assert_eq!(c.memory_size(), Some(128));

    // Step 7: destroy leaves nothing.
    let out = cli.run(&["destroy", "--auto-approve"]);
    out.assert_success();
    assert!(out.stdout.contains("Destroy complete: 8 done, 0 failed, 0 skipped"), "{out}");
    assert!(aws.apigw.get_rest_apis().send().await.unwrap().items().is_empty());
    assert!(aws.lambda.list_functions().send().await.unwrap().functions().is_empty());
    assert!(aws.iam.get_role().role_name("first-api-lambda").send().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_manifest_reconcile_says_how_to_name_one_and_reads_reconcile_toml_by_default() {
    let (_moto, cli) = setup();
    for args in [&["plan"][..], &["validate"], &["watch"]] {
        let out = cli.run(args);
        out.assert_status(1);
        assert!(out.stderr.contains("cannot read manifest reconcile.toml"), "{out}");
        assert!(out.stderr.contains("`-f PATH`") && out.stderr.contains("`RECONCILE_MANIFEST`"), "{out}");
    }
    // The variable names one; so does -f; without either, ./reconcile.toml is read.
    let manifest = "[stack]\nname = \"first\"\n\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"first-logs\"\n";
    cli.write_file("elsewhere/stack.toml", manifest);
    let out = cli.run_with_env(&["validate"], &[("RECONCILE_MANIFEST", Some("elsewhere/stack.toml"))]);
    out.assert_success();
    assert!(out.stdout.contains("stack `first` is valid"), "{out}");
    cli.write_file("reconcile.toml", &manifest.replace("first", "second"));
    let out = cli.run(&["validate"]);
    out.assert_success();
    assert!(out.stdout.contains("stack `second` is valid"), "{out}");

    // A misspelt name in the default manifest: the error names file, line and column, and the fix.
    cli.write_file("reconcile.toml", &format!("{manifest}\n[outputs]\narn = \"${{log.arn}}\"\n"));
    let out = cli.run(&["validate"]);
    out.assert_status(1);
    assert!(
        out.stderr.contains(
            "reconcile.toml:9:8: error: reference `${log.arn}` names no resource `log` in this manifest; did you mean `${logs.arn}`?"
        ),
        "{out}"
    );
}
