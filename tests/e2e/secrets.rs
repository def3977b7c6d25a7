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
    // RUST_LOG=trace would have the SDK print its requests as sent: capped at debug for those targets.
    let traced = [rotated[0], rotated[1], ("RUST_LOG", Some("trace"))];
    let out = cli.run_with_env(&["-f", SEED, "apply", "--auto-approve"], &traced);
    out.assert_status(1);
    assert!(out.stderr.contains("UpdateFunctionConfiguration"), "{out}");
    seen.push_str(&out.combined());
    let record = cli.run_with_env(&["-f", SEED, "state", "show", "hello_function"], &rotated);
    record.assert_success();
    seen.push_str(&record.combined());

    assert!(!seen.contains(MARK), "a secret was shown:\n{seen}");
    assert!(!state_file_holds(&cli, MARK), "the state file or its WAL holds a secret");
    // The journal kept the (masked) answer: the search above looked where it is.
    assert!(state_file_holds(&cli, "exceeded the 4KB limit"), "the journal holds the failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_read_from_a_file_that_fails_its_pattern_is_never_shown() {
    let (_moto, cli) = seeded();
    const CONTENT: &str = "root:$6$s3cr3t-shadow-hash:19000:0:99999:7:::";
    let file = cli.write_file("shadow", &format!("{CONTENT}\n"));
    let arg = format!("prefix=@{}", file.display());
    let mut seen = String::new();
    for command in [&["validate"][..], &["plan"], &["--json", "plan"], &["-vv", "apply", "--auto-approve"], &["destroy", "--auto-approve"]]
    {
        let mut args = vec!["-f", SEED, "--var", &arg];
        args.extend(command);
        let out = cli.run(&args);
        out.assert_status(1);
        assert!(!out.combined().contains("s3cr3t"), "the file's content was shown:\n{out}");
        let said = format!("variable `prefix` = (the {} bytes read from {}) does not match the pattern", CONTENT.len(), file.display());
        assert!(out.combined().contains(&said), "expected `{said}`:\n{out}");
        seen.push_str(&out.combined());
    }
    for part in ["s3cr3t", "root:", "19000"] {
        assert!(!seen.contains(part), "the file's content was shown:\n{seen}");
        assert!(!state_file_holds(&cli, part), "the state file holds the file's content");
    }
}

/// The recorded value of the function's secret `DB_PASS`, read from the state file directly.
async fn recorded_db_pass(cli: &Cli) -> String {
    use sqlx::Connection;
    let url = format!("sqlite://{}", cli.join("reconcile.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (attributes,): (String,) =
        sqlx::query_as("SELECT attributes FROM resources WHERE name = 'hello_function'").fetch_one(&mut db).await.unwrap();
    db.close().await.unwrap();
    let attrs: Value = serde_json::from_str(&attributes).unwrap();
    attrs["secret_environment"]["DB_PASS"].as_str().unwrap().to_string()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_without_its_key_cannot_confirm_a_guessed_secret_and_old_unkeyed_fingerprints_are_rekeyed() {
    let (_moto, cli) = seeded();
    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    let text = text.replace(
        "code = \"apigw-lambda-basic/lambda\"",
        "code = \"apigw-lambda-basic/lambda\"\nsecret_environment = { DB_PASS = \"alpha\" }",
    );
    std::fs::write(cli.join(SEED), text).unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();

    // The key lives beside the state, readable by its owner only; the state holds a keyed fingerprint.
    let key_file = cli.join("reconcile.db.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let recorded = recorded_db_pass(&cli).await;

    // Someone with the state file but not the key tests guesses: no unkeyed hash of any matches, anywhere.
    std::fs::rename(&key_file, cli.join("elsewhere.key")).unwrap();
    for guess in ["alpha", "beta", "changeme"] {
        assert_ne!(recorded, format!("sha256:{}", sha256_hex(guess)));
        assert!(!state_file_holds(&cli, &sha256_hex(guess)), "the state file confirms the guess `{guess}`");
        assert!(!recorded.contains(&sha256_hex(guess)));
    }
    assert!(!state_file_holds(&cli, "\"alpha\""), "the value itself is not there either");
    assert!(recorded.starts_with("hmac-sha256:"), "{recorded}");
    std::fs::rename(cli.join("elsewhere.key"), &key_file).unwrap();

    // A state an older version wrote (an unkeyed `sha256:` fingerprint): the next apply re-keys it,
    // with no AWS change and an empty plan after.
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", cli.join("reconcile.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE resources SET attributes = replace(attributes, $1, $2) WHERE name = 'hello_function'")
            .bind(&recorded)
            .bind(format!("sha256:{}", sha256_hex("alpha")))
            .execute(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
    }
    assert!(recorded_db_pass(&cli).await.starts_with("sha256:"));
    let out = cli.run(&["-f", SEED, "-v", "apply", "--auto-approve"]);
    out.assert_success();
    assert!(out.combined().contains("re-keyed the secret fingerprints"), "{out}");
    assert_eq!(recorded_db_pass(&cli).await, recorded, "re-keyed: the same keyed fingerprint as before");
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}
