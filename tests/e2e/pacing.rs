//! API Gateway pacing shared through the state store (end to end, through the fault proxy's
//! enforcement of API Gateway's account limits: 10 requests/s with a burst of 40, one CreateRestApi
//! per 3 s, one CreateDeployment per 5 s).

#[allow(unused_imports)]
use super::*;

/// A stack of two REST APIs with one deployment each: two CreateRestApi and two CreateDeployment,
/// so a run that started from a full bucket right after another would meet a 429.
fn write_stack(cli: &Cli, name: &str) -> String {
    write_stack_in(cli, "manifests", name)
}

/// [`write_stack`] into directory `dir`.
fn write_stack_in(cli: &Cli, dir: &str, name: &str) -> String {
    let mut text = format!("[stack]\nname = \"{name}\"\n");
    for i in 1..=2 {
        text.push_str(&format!(
            r#"
[resources.api{i}]
type = "aws_api_gateway_rest_api"
name = "{name}-api{i}"
routes = [{{ path = "/ping", method = "GET", integration = {{ type = "MOCK" }} }}]

[resources.api{i}_deployment]
type = "aws_api_gateway_deployment"
rest_api_id = "${{api{i}.id}}"
triggers = {{ model = "${{api{i}.model_hash}}" }}
"#
        ));
    }
    cli.write_file(format!("{dir}/{name}.toml"), &text).to_str().unwrap().to_string()
}

/// Paced (as outside tests), through the proxy, with the tool's own retry policy.
fn paced(proxy: &support::FaultProxy) -> [(&'static str, Option<&str>); 3] {
    [("AWS_ENDPOINT_URL", Some(proxy.url.as_str())), ("RECONCILE_PACING", None), ("AWS_MAX_ATTEMPTS", None)]
}

/// The API Gateway `pacing` row of a `--json --stats` document, by operation (`account rate` is a row
/// of every service with an account-wide bucket).
fn pacing_of(doc: &Value, operation: &str) -> Value {
    doc["pacing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "apigateway" && r["operation"] == operation)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn apis_named(moto: &Moto, prefix: &str) -> usize {
    let apis = aws(moto).await.apigw.get_rest_apis().limit(500).send().await.unwrap();
    apis.items().iter().filter_map(|a| a.name()).filter(|n| n.starts_with(prefix)).count()
}

/// Each run's pacer starts from what the runs before it did (recorded in the state file), not from a
/// full bucket: back-to-back applies of two stacks meet no 429.
#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_applies_on_one_state_file_meet_no_429() {
    let (moto, cli) = setup();
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    let (a, b) = (write_stack(&cli, "pace-a"), write_stack(&cli, "pace-b"));
    for manifest in [&a, &b] {
        let out = cli.run_with_env(&["-f", manifest, "--json", "--stats", "apply", "--auto-approve"], &paced(&proxy));
        out.assert_success();
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(calls_to(doc["aws_calls"].as_array().unwrap(), "CreateDeployment"), 2, "one attempt each: {out}");
        let deployments = pacing_of(&doc, "CreateDeployment");
        assert_eq!((deployments["calls"].as_u64(), deployments["throttled"].as_u64()), (Some(2), Some(0)), "{doc}");
    }
    let stats = proxy.stats();
    assert_eq!(stats["limited"].as_u64(), Some(0), "the proxy answered 429 to paced requests: {stats}");
    assert!(stats["by_service"]["apigateway"]["requests"].as_u64().unwrap() >= 8, "{stats}");
    assert_eq!(apis_named(&moto, "pace-").await, 4);
    // The ledger keeps only what the limits' windows need: a row per bucket of this account and region.
    let rows = ledger_rows(&cli.join("reconcile.db")).await;
    assert!((1..=3).contains(&rows), "{rows} ledger rows");
}

/// The delay the run's one paced throttle was retried after (ms), from its log line, which must name
/// `service`.
fn one_retry_delay(out: &support::Output, service: &str) -> u64 {
    let retries = log_lines(
        &out.stderr,
        "the service throttled a paced call (another client is using the account's budget); retrying when the limit allows",
    );
    assert_eq!(retries.len(), 1, "{}", out.stderr);
    assert_eq!(retries[0]["service"].as_str(), Some(service), "{}", out.stderr);
    retries[0]["retry_in_ms"].as_u64().unwrap()
}

/// Rows in the pacing ledger of a state file.
async fn ledger_rows(path: &Path) -> i64 {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true).connect().await.unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM pace_ledger").fetch_one(&mut conn).await.unwrap()
}

/// Two processes applying two stacks at once on one state file share one budget: no 429.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_applies_on_one_state_file_meet_no_429() {
    let (moto, cli) = setup();
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    let (a, b) = (write_stack(&cli, "pace-c"), write_stack(&cli, "pace-d"));
    let first = cli.spawn_with_env(&["-f", &a, "--json", "--stats", "apply", "--auto-approve"], &paced(&proxy));
    let second = cli.spawn_with_env(&["-f", &b, "--json", "--stats", "apply", "--auto-approve"], &paced(&proxy));
    let timeout = std::time::Duration::from_secs(120);
    let (one, two) = (first.wait(timeout), second.wait(timeout));
    for out in [&one, &two] {
        out.assert_success();
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(pacing_of(&doc, "CreateDeployment")["throttled"].as_u64(), Some(0), "{doc}");
        assert_eq!(pacing_of(&doc, "CreateRestApi")["throttled"].as_u64(), Some(0), "{doc}");
    }
    let stats = proxy.stats();
    assert_eq!(stats["limited"].as_u64(), Some(0), "the proxy answered 429 to paced requests: {stats}");
    assert_eq!(apis_named(&moto, "pace-").await, 4);
}

/// A 429 the pacer could not foresee (another client, another state file: here the proxy refuses the
/// first CreateDeployment, which still takes its limit's token) marks the limit spent; the call is
/// retried when the limit allows it again — not sooner (the proxy would refuse it), and the delay
/// asked of the SDK is one spacing, not an exponential backoff.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_from_outside_is_retried_after_one_spacing() {
    let (moto, cli) = setup();
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    proxy.configure(
        r#"{"fail": [{"operation": "CreateDeployment", "service": "apigateway", "status": 429, "code": "TooManyRequestsException", "message": "Too Many Requests"}]}"#,
    );
    let a = write_stack(&cli, "pace-e");
    let out = cli.run_with_env(&["-f", &a, "--json", "--stats", "--log-format", "json", "-v", "apply", "--auto-approve"], &paced(&proxy));
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(calls_to(doc["aws_calls"].as_array().unwrap(), "CreateDeployment"), 3, "two deployments, one retried once: {out}");
    let deployments = pacing_of(&doc, "CreateDeployment");
    assert_eq!((deployments["calls"].as_u64(), deployments["throttled"].as_u64()), (Some(3), Some(1)), "{doc}");
    let stats = proxy.stats();
    assert_eq!(stats["failed"].as_u64(), Some(1), "{stats}");
    assert_eq!(stats["limited"].as_u64(), Some(0), "the retry (and the other deployment) waited for the limit: {stats}");
    let delay = one_retry_delay(&out, "API Gateway");
    assert!((5000..=5100).contains(&delay), "retried one spacing (5 s + 0.1 s margin) after the 429, asked {delay} ms");
    assert_eq!(apis_named(&moto, "pace-e-").await, 2);
}

/// `--api-share` reaches every service's pacer: an apply at half the account's limits reports that
/// share and the rates it allows for API Gateway, Lambda, CloudWatch Logs and WAFv2 (and still meets
/// no 429); the variable sets it too; a share outside 0.01..=1 is a usage error; `watch` keeps to half
/// by default and says so on /metrics.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_share_caps_the_process_and_watch_takes_half_by_default() {
    let (moto, cli) = setup();
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    let a = write_stack(&cli, "share-a");
    let out = cli.run_with_env(&["-f", &a, "--json", "--stats", "--api-share", "0.5", "apply", "--auto-approve"], &paced(&proxy));
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let budget = &doc["api_budget"][0];
    assert_eq!((budget["service"].as_str(), budget["share"].as_f64()), (Some("apigateway"), Some(0.5)), "{doc}");
    let allowed = budget["rate_limit_per_s"].as_f64().unwrap();
    assert!(allowed > 4.0 && allowed <= 5.0, "half of API Gateway's 10 per second (less the margin): {allowed}");
    assert!(budget["calls"].as_u64().unwrap() >= 8, "{budget}");
    assert_eq!(proxy.stats()["limited"].as_u64(), Some(0));
    // Each paced service, at the same share: its account-wide rate where AWS documents one (Lambda's
    // control plane, 15 per second) and its operations' own rates.
    let row = |service: &str| doc["api_budget"].as_array().unwrap().iter().find(|r| r["service"] == service).cloned().unwrap_or_default();
    let services: Vec<&str> = doc["api_budget"].as_array().unwrap().iter().filter_map(|r| r["service"].as_str()).collect();
    assert_eq!(services, ["apigateway", "lambda", "cloudwatchlogs", "wafv2"], "{doc}");
    for service in ["lambda", "cloudwatchlogs", "wafv2"] {
        assert_eq!(row(service)["share"].as_f64(), Some(0.5), "{doc}");
    }
    let lambda = row("lambda");
    let control_plane = lambda["rate_limit_per_s"].as_f64().unwrap();
    assert!(control_plane > 6.5 && control_plane <= 7.5, "half of Lambda's 15 per second (less the margin): {lambda}");
    let get_function = lambda["operation_limits_per_s"]["GetFunction"].as_f64().unwrap();
    assert!(get_function > 40.0 && get_function <= 50.0, "half of GetFunction's own 100 per second: {lambda}");
    assert_eq!(row("cloudwatchlogs")["rate_limit_per_s"], Value::Null, "no account-wide rate documented: {doc}");
    let describe = row("cloudwatchlogs")["operation_limits_per_s"]["DescribeLogGroups"].as_f64().unwrap();
    assert!(describe > 2.0 && describe <= 2.5, "half of DescribeLogGroups' 5 per second: {doc}");
    let associate = row("wafv2")["operation_limits_per_s"]["AssociateWebACL"].as_f64().unwrap();
    assert!(associate > 0.2 && associate <= 0.25, "half of AssociateWebACL's one every 2 s: {doc}");

    let mut env = paced(&proxy).to_vec();
    env.push(("RECONCILE_API_SHARE", Some("0.25")));
    let out = cli.run_with_env(&["-f", &a, "--json", "--stats", "plan"], &env);
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["api_budget"][0]["share"].as_f64(), Some(0.25), "{doc}");

    let bad = cli.run_with_env(&["-f", &a, "--api-share", "1.5", "plan"], &paced(&proxy));
    bad.assert_status(2);
    assert!(bad.stderr.contains("1.5 is not a share between 0.01 and 1"), "{bad}");

    let (w, port) = spawn_watch(&cli, &["-f", &a], &paced(&proxy));
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    let (_, metrics) = http_get(port, "/metrics");
    for service in ["apigateway", "lambda", "cloudwatchlogs", "wafv2"] {
        assert_eq!(sample(&metrics, &format!("reconcile_api_share{{service=\"{service}\"}}")), Some(0.5), "{metrics}");
    }
    let lambda_rate = sample(&metrics, "reconcile_api_rate_limit_per_second{service=\"lambda\"}").unwrap_or_default();
    assert!(lambda_rate > 6.5 && lambda_rate <= 7.5, "{metrics}");
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();
}

/// A watcher's API Gateway calls so far, from its /metrics.
fn apigw_calls(port: u16) -> f64 {
    http_get(port, "/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with("reconcile_aws_calls_total{") && l.contains("service=\"apigateway\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The share held through the proxy's enforcement of API Gateway's account limits: a watcher that
/// would read far faster than the account allows (four stacks of two REST APIs every second) keeps to
/// watch's default half, and an apply at `--api-share 0.5` on another state file (no shared ledger)
/// meanwhile meets no 429 — nor does the watcher.
#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_at_half_and_an_apply_at_half_meet_no_429_without_a_shared_ledger() {
    let (moto, cli) = setup();
    for i in 1..=4 {
        // Set up straight against moto (unpaced, as the tests' default).
        let file = write_stack_in(&cli, "watched", &format!("held-w{i}"));
        cli.run(&["-f", &file, "apply", "--auto-approve"]).assert_success();
    }
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    let (w, port) = spawn_watch(&cli, &["watched"], &paced(&proxy));
    // Running at its cap: it has waited for the account-rate share already.
    support::poll_until(
        WATCH_DEADLINE,
        "the watcher to be held back by its share",
        || {
            let metrics = http_get(port, "/metrics").1;
            let waited = sample(&metrics, "reconcile_pacing_wait_seconds_total{service=\"apigateway\",operation=\"account rate\"}");
            waited.is_some_and(|s| s > 1.0).then_some(())
        },
        || w.stderr(),
    );
    let (t1, c1) = (std::time::Instant::now(), apigw_calls(port));

    let a = write_stack(&cli, "held-apply");
    let out = cli.run_with_env(
        &["--state", "apply.db", "-f", &a, "--json", "--stats", "--api-share", "0.5", "apply", "--auto-approve"],
        &paced(&proxy),
    );
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    for op in ["CreateRestApi", "CreateDeployment", "account rate"] {
        assert_eq!(pacing_of(&doc, op)["throttled"].as_u64().unwrap_or(0), 0, "{op}: {doc}");
    }
    let (t2, c2) = (std::time::Instant::now(), apigw_calls(port));
    let stats = proxy.stats();
    assert_eq!(stats["limited"].as_u64(), Some(0), "the proxy answered 429 (to the watcher or the apply): {stats}");
    assert_eq!(apis_named(&moto, "held-apply-").await, 2);

    // The watcher's calls while the apply ran: at most half the account's rate (4.75 per second with
    // the margin) plus its share of the burst (19) and the calls in flight at either end.
    let window = (t2 - t1).as_secs_f64();
    let bound = 4.75 * window + 19.0 + 4.0;
    assert!(c2 - c1 <= bound, "the watcher made {} API Gateway calls in {window:.1} s (bound {bound:.0})", c2 - c1);
    assert!(c2 - c1 > 0.0, "the watcher kept reading while the apply ran");
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();
}

/// Lambda, CloudWatch Logs and WAFv2 are paced as API Gateway is: the seed apply's calls of each show
/// in `pacing` (Lambda's control plane as `account rate`, `GetFunction` apart at its own rate), and a
/// throttling answer from a JSON-protocol service (WAFv2's HTTP 400 `ThrottlingException`, injected
/// by the proxy on the first `AssociateWebACL`) marks that action's limit spent: the call is retried
/// one interval later (one association every 2 s, + 5%), not after the SDK's backoff.
#[tokio::test(flavor = "multi_thread")]
async fn every_paced_service_is_paced_and_a_json_throttle_is_retried_one_interval_later() {
    let (moto, cli) = seeded();
    let proxy = support::FaultProxy::start(&moto.url, &["--apigw-limits"]);
    proxy.configure(
        r#"{"fail": [{"operation": "AssociateWebACL", "service": "wafv2", "status": 400, "code": "ThrottlingException", "message": "Rate exceeded"}]}"#,
    );
    let out = cli.run_with_env(&["-f", SEED, "--json", "--stats", "--log-format", "json", "-v", "apply", "--auto-approve"], &paced(&proxy));
    out.assert_success();
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let row = |service: &str, operation: &str| {
        doc["pacing"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["service"] == service && r["operation"] == operation)
            .cloned()
            .unwrap_or_default()
    };
    let lambda = row("lambda", "account rate");
    assert!(lambda["calls"].as_u64().unwrap_or_default() >= 2, "Lambda's control plane calls are paced: {doc}");
    assert!(row("lambda", "GetFunction")["calls"].as_u64().unwrap_or_default() >= 1, "{doc}");
    assert_eq!(row("lambda", "account rate")["throttled"].as_u64(), Some(0), "{doc}");
    let associate = row("wafv2", "AssociateWebACL");
    assert_eq!((associate["calls"].as_u64(), associate["throttled"].as_u64()), (Some(2), Some(1)), "{doc}");
    assert!(row("wafv2", "CreateWebACL")["calls"].as_u64().unwrap_or_default() >= 1, "{doc}");
    assert_eq!(calls_to(doc["aws_calls"].as_array().unwrap(), "AssociateWebACL"), 2, "the throttled call and its retry: {out}");
    assert_eq!(proxy.stats()["failed"].as_u64(), Some(1));
    let delay = one_retry_delay(&out, "WAFv2");
    assert!((2000..=2106).contains(&delay), "retried one association interval (2 s / 95%) after the throttle, asked {delay} ms");
}
