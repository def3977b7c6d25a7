//! What was asked is what runs (issue 32): options given on both sides of the subcommand, `protect`
//! on switched-off resources, `[[moved]]` across types and `pin --force` against the state's own ARNs
//! (end to end against moto).

#[allow(unused_imports)]
use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn vars_before_and_after_the_subcommand_address_the_stack_they_name_together() {
    let (moto, cli) = seeded();
    let aws = aws(&moto).await;
    // The default stack (no prefix) lives beside the one the split command lines name.
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let dev = |cmd: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["-f", SEED, "--var", "prefix=dev-"];
        args.extend(cmd);
        args.extend(["--var", "manage_apigw_account=false"]);
        args
    };

    let out = cli.run(&dev(&["apply", "--auto-approve"]));
    out.assert_success();
    assert!(out.stdout.contains("Apply complete: 16 done, 0 failed"), "dev- without the account setting: {out}");
    let tags = aws.lambda.get_function().function_name("dev-HelloLambdaTest").send().await.unwrap().tags().cloned().unwrap_or_default();
    assert_eq!(tags.get("reconcile:stack").map(String::as_str), Some("dev-apigw-lambda-basic"));
    // Both values count for plan: with either one dropped the plan would show changes.
    let out = cli.run(&dev(&["plan", "--detailed-exitcode"]));
    out.assert_status(0);
    assert!(out.stdout.contains("No changes"), "{out}");

    let out = cli.run(&dev(&["destroy", "--auto-approve"]));
    out.assert_success();
    assert!(out.stdout.contains("Destroy complete: 16 done"), "{out}");
    assert!(aws.lambda.get_function().function_name("dev-HelloLambdaTest").send().await.is_err(), "dev- is destroyed");
    // The default stack is untouched.
    let tags = aws.lambda.get_function().function_name("HelloLambdaTest").send().await.unwrap().tags().cloned().unwrap_or_default();
    assert_eq!(tags.get("reconcile:stack").map(String::as_str), Some("apigw-lambda-basic"));
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);

    // A single-valued option on both sides with different values is refused, naming it.
    let out = cli.run(&["-f", SEED, "--region", "us-east-1", "plan", "--region", "eu-west-1"]);
    out.assert_status(2);
    assert!(out.stderr.contains("`--region` is given both before and after the subcommand"), "{out}");
}

const PROTECTED: &str = r#"[stack]
name = "protected"

[variables.keep]
type = "bool"
default = true

[resources.logs]
type = "aws_cloudwatch_log_group"
name = "ProtectedLogs"
enabled = "${var.keep}"
protect = true

[resources.other]
type = "aws_cloudwatch_log_group"
name = "OtherLogs"
enabled = "${var.keep}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn protect_holds_for_a_switched_off_resource_in_apply_destroy_and_replace() {
    let (moto, cli) = setup();
    let aws = aws(&moto).await;
    let manifest = cli.write_file("protected.toml", PROTECTED);
    let m = manifest.to_str().unwrap();
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    assert!(log_group(&aws, "ProtectedLogs").await.is_some());
    let refused = "logs: `protect = true` refuses its deletion (switched on or off)";

    // Switched off: apply refuses its deletion and does the rest; the plan says the deletion is refused.
    let out = cli.run(&["-f", m, "--var", "keep=false", "apply", "--auto-approve"]);
    assert!(log_group(&aws, "ProtectedLogs").await.is_some(), "the protected group stays: {out}");
    out.assert_status(1);
    assert!(out.stdout.contains(refused), "{out}");
    assert!(log_group(&aws, "OtherLogs").await.is_none(), "the unprotected one is deleted");
    let plan = cli.run(&["-f", m, "--var", "keep=false", "plan"]);
    assert!(plan.stdout.contains("refused: `protect = true`"), "{plan}");
    let list = cli.run(&["-f", m, "state", "list"]);
    assert!(list.stdout.contains("ProtectedLogs"), "{list}");

    // destroy refuses before anything is deleted, with the same message, switched on or off.
    for keep in ["keep=false", "keep=true"] {
        let out = cli.run(&["-f", m, "--var", keep, "destroy", "--auto-approve"]);
        out.assert_status(1);
        assert!(out.stderr.contains(&format!("refusing to destroy; nothing was changed:\n  {refused}")), "{out}");
        assert!(log_group(&aws, "ProtectedLogs").await.is_some());
    }
    // --replace is refused before any AWS call, with the same message.
    let out = cli.run(&["-f", m, "apply", "--auto-approve", "--replace", "logs"]);
    out.assert_status(1);
    assert!(out.stderr.contains("--replace logs: `protect = true` refuses its replacement (switched on or off)"), "{out}");

    // Only removing the flag lifts it.
    std::fs::write(&manifest, PROTECTED.replace("protect = true\n", "")).unwrap();
    cli.run(&["-f", m, "--var", "keep=false", "apply", "--auto-approve"]).assert_success();
    assert!(log_group(&aws, "ProtectedLogs").await.is_none());
}

const TRUST: &str = r#"{ Version = "2012-10-17", Statement = [{ Effect = "Allow", Principal = { Service = "lambda.amazonaws.com" }, Action = "sts:AssumeRole" }] }"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_move_across_types_is_refused_and_every_delete_uses_the_type_the_state_records() {
    let (moto, cli) = setup();
    let aws = aws(&moto).await;
    let logs = "[stack]\nname = \"typed\"\n\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"Shared\"\n";
    let manifest = cli.write_file("typed.toml", logs);
    let m = manifest.to_str().unwrap();
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    // Someone else's role, named as our log group.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    aws.iam.create_role().role_name("Shared").assume_role_policy_document(trust).send().await.unwrap();

    let role = format!("[resources.role]\ntype = \"aws_iam_role\"\nname = \"TypedRole\"\nassume_role_policy = {TRUST}\n");
    let moved = format!("[stack]\nname = \"typed\"\n\n{role}\n[[moved]]\nfrom = \"logs\"\nto = \"role\"\n");
    std::fs::write(&manifest, &moved).unwrap();
    let line = moved.lines().position(|l| l == "[[moved]]").unwrap() + 1;
    for cmd in ["validate", "plan", "apply"] {
        let mut args = vec!["-f", m, cmd];
        if cmd == "apply" {
            args.push("--auto-approve");
        }
        let out = cli.run(&args);
        out.assert_status(1);
        assert!(
            out.stderr.contains(&format!(
                "typed.toml:{line}:1: `[[moved]]` from `logs` (aws_cloudwatch_log_group, as the state records it) to `role` (aws_iam_role)"
            )),
            "{cmd}: {out}"
        );
    }
    assert!(log_group(&aws, "Shared").await.is_some(), "the log group stays");
    aws.iam.get_role().role_name("Shared").send().await.expect("the hand-made role survives");
    assert!(aws.iam.get_role().role_name("TypedRole").send().await.is_err(), "nothing was created");

    // The key keeps its name and changes its type: a replacement, whose delete is the log group's.
    std::fs::write(&manifest, format!("[stack]\nname = \"typed\"\n\n{}", role.replace("[resources.role]", "[resources.logs]"))).unwrap();
    let out = cli.run(&["-f", m, "apply", "--auto-approve"]);
    out.assert_success();
    assert!(log_group(&aws, "Shared").await.is_none(), "the log group is deleted as a log group");
    aws.iam.get_role().role_name("Shared").send().await.expect("the hand-made role survives the replacement");
    aws.iam.get_role().role_name("TypedRole").send().await.expect("the new role exists");
    cli.run(&["-f", m, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_force_to_a_region_the_states_arns_contradict_is_refused() {
    let (_moto, cli) = setup();
    let manifest = cli.write_file(
        "pinned.toml",
        "[stack]\nname = \"pinned\"\n\n[resources.logs]\ntype = \"aws_cloudwatch_log_group\"\nname = \"PinnedLogs\"\n",
    );
    let m = manifest.to_str().unwrap();
    cli.run(&["-f", m, "apply", "--auto-approve"]).assert_success();
    let pin = || async {
        let store = reconcile::state::Store::open(&cli.join("reconcile.db")).await.unwrap();
        let pin = store.identity("pinned").await.unwrap().map(|p| p.to_string());
        store.close().await;
        pin
    };
    let pinned = Some("account 123456789012 (aws) in us-east-1".to_string());
    assert_eq!(pin().await, pinned);

    let out = cli.run(&["-f", m, "--region", "eu-west-1", "pin", "--account", "123456789012", "--force"]);
    out.assert_status(1);
    assert!(
        out.stderr.contains(
            "refusing to pin stack `pinned` to account 123456789012 (aws) in eu-west-1: the state records `logs` as \
             arn:aws:logs:us-east-1:123456789012:log-group:PinnedLogs"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("which is in account 123456789012 (aws) in us-east-1"), "{out}");
    // Another account is refused too; the pin where the ARNs say is accepted.
    let out = cli.run(&["-f", m, "--region", "us-east-1", "pin", "--account", "111111111111", "--force"]);
    out.assert_status(1);
    assert!(out.stderr.contains("the state records `logs` as"), "{out}");
    assert_eq!(pin().await, pinned, "a refused pin changed the pin");
    cli.run(&["-f", m, "--region", "us-east-1", "pin", "--account", "123456789012", "--force"]).assert_success();
    cli.run(&["-f", m, "plan", "--detailed-exitcode"]).assert_status(0);
}
