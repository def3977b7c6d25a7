//! Secrets stay secret: AWS errors that quote them, values read from files, the state's fingerprints
//! (end to end against moto).

#[allow(unused_imports)]
use super::*;

/// A secret of the manifest (with a quote, so its JSON form differs), and one of a sensitive variable.
const LITERAL: &str = r#"s3cr3t-lit"q"-9f1e"#;
const FROM_VAR: &str = "s3cr3t-var-4b7d";
/// What every form of both secrets holds.
const MARK: &str = "s3cr3t";

/// The seed manifest with a secret environment: a literal and a sensitive variable.
fn seed_with_secrets(cli: &Cli) {
    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let literal = serde_json::to_string(LITERAL).unwrap();
    let text = text
        .replace(
            "code = \"apigw-lambda-basic/lambda\"",
            &format!("code = \"apigw-lambda-basic/lambda\"\nsecret_environment = {{ DB_PASS = {literal}, TOKEN = \"${{var.token}}\" }}"),
        )
        .replace("[variables.prefix]", "[variables.token]\ntype = \"string\"\nsensitive = true\n\n[variables.prefix]");
    std::fs::write(cli.join(SEED), text).unwrap();
}

/// Neither the state file nor its WAL holds `needle`.
fn state_file_holds(cli: &Cli, needle: &str) -> bool {
    ["reconcile.db", "reconcile.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(cli.join(f)).ok())
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Lambda's answer to an environment over 4 KB, which quotes every variable.
fn quoting_rule(operation: &str) -> String {
    serde_json::json!({"fail": [{
        "service": "lambda", "operation": operation, "times": 100, "status": 400,
        "code": "InvalidParameterValueException",
        "message": "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {environment}",
    }]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_errors_quoting_the_environment_never_show_a_secret_anywhere() {
    let (moto, cli) = seeded();
    seed_with_secrets(&cli);
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let env = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str())), ("RECONCILE_VAR_token", Some(FROM_VAR))];
    let mut seen = String::new();

    // CreateFunction is answered with the environment quoted: the function fails (and what depends on it).
    proxy.configure(&quoting_rule("CreateFunction"));
    for args in [&["-f", SEED, "-v", "apply", "--auto-approve"][..], &["-f", SEED, "--json", "apply", "--auto-approve"]] {
        let out = cli.run_with_env(args, &env);
        out.assert_status(1);
        assert!(out.combined().contains("exceeded the 4KB limit. String measured: {"), "the answer reached reconcile:\n{out}");
        let masked = |k: &str| [format!(r#""{k}":"(sensitive)""#), format!(r#"\"{k}\":\"(sensitive)\""#)];
        assert!(masked("DB_PASS").iter().any(|m| out.combined().contains(m.as_str())), "{out}");
        seen.push_str(&out.combined());
    }
    let stats = proxy.stats();
    assert!(stats["failed_by_rule"][0].as_u64() >= Some(2), "{stats}");

    // Created; then UpdateFunctionConfiguration of a new value gets the same answer.
    proxy.configure(r#"{"fail": []}"#);
    cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &env).assert_success();
    proxy.configure(&quoting_rule("UpdateFunctionConfiguration"));
    let rotated = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str())), ("RECONCILE_VAR_token", Some("s3cr3t-rotated-0c5a"))];
    for args in [&["-f", SEED, "-vv", "apply", "--auto-approve"][..], &["-f", SEED, "--json", "apply", "--auto-approve"]] {
        let out = cli.run_with_env(args, &rotated);
        out.assert_status(1);
        let masked = [r#""TOKEN":"(sensitive)""#, r#"\"TOKEN\":\"(sensitive)\""#];
        assert!(masked.iter().any(|m| out.combined().contains(m)), "the answer reached reconcile:\n{out}");
        seen.push_str(&out.combined());
    }
    let record = cli.run_with_env(&["-f", SEED, "state", "show", "hello_function"], &rotated);
    record.assert_success();
    seen.push_str(&record.combined());

    assert!(!seen.contains(MARK), "a secret was shown:\n{seen}");
    assert!(!state_file_holds(&cli, MARK), "the state file or its WAL holds a secret");
    // The journal kept the (masked) answer: the search above looked where it is.
    assert!(state_file_holds(&cli, "exceeded the 4KB limit"), "the journal holds the failure");
}
