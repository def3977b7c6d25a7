//! The watcher never fights its users (end to end against moto).

#[allow(unused_imports)]
use super::*;

use reconcile::state::Store;

async fn code_sha(aws: &Aws) -> String {
    let f = aws.lambda.get_function_configuration().function_name("HelloLambdaTest").send().await.unwrap();
    f.code_sha256().unwrap_or_default().to_string()
}

async fn function_exists(aws: &Aws) -> bool {
    aws.lambda.get_function().function_name("HelloLambdaTest").send().await.is_ok()
}

fn metric(port: u16, series: &str) -> Option<f64> {
    sample(&http_get(port, "/metrics").1, series)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_code_change_applied_while_watch_remediate_runs_stays_deployed() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = start_watch(&cli, &["--remediate"]);
    let before = code_sha(&aws).await;

    // One byte of the handler changes, and the user deploys it.
    let handler = cli.join("manifests/apigw-lambda-basic/lambda/index.py");
    let text = std::fs::read_to_string(&handler).unwrap();
    std::fs::write(&handler, text.replace("time.sleep(2)", "time.sleep(3)")).unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let deployed = code_sha(&aws).await;
    assert_ne!(deployed, before, "the apply deployed the new code");

    // Passes later, the new code is still what runs, and the watcher saw the code change.
    wait_passes(&mut w, port, 3.0);
    assert_eq!(code_sha(&aws).await, deployed, "the watcher rolled the deploy back:\n{}", w.stderr());
    let stderr = w.stderr();
    assert!(!log_lines(&stderr, "code changed: rebuilt").is_empty(), "{stderr}");
    let reverted = log_lines(&stderr, "drift remediated");
    assert!(reverted.iter().all(|l| l["field"] != "code_sha256" || l["to"] == deployed.as_str()), "{stderr}");
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_stack_stays_destroyed_under_a_running_watcher() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = start_watch(&cli, &["--remediate"]);
    let paused = format!("reconcile_remediation_paused{{stack=\"{STACK}\",reason=\"destroyed\"}}");

    cli.run(&["-f", SEED, "destroy", "--auto-approve"]).assert_success();
    wait_passes(&mut w, port, 3.0);
    assert!(!function_exists(&aws).await, "the watcher recreated the function:\n{}", w.stderr());
    assert!(log_group(&aws, "DevLogGroupAccessLog").await.is_none());
    assert!(aws.iam.get_role().role_name("ApiGwInvokeLambda").send().await.is_err());
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    assert!(store.load(STACK).await.unwrap().resources.is_empty());
    store.close().await;
    let stderr = w.stderr();
    let said =
        log_lines(&stderr, "destroyed: the last operation on this stack was `reconcile destroy`; not remediated until the next apply");
    assert_eq!(said.len(), 1, "said once:\n{stderr}");
    assert!(log_lines(&stderr, "remediating").is_empty(), "{stderr}");
    assert_eq!(metric(port, &paused), Some(1.0));

    // The next apply brings it back under remediation.
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    wait_passes(&mut w, port, 2.0);
    assert_eq!(metric(port, &paused), Some(0.0));
    aws.lambda.update_function_configuration().function_name("HelloLambdaTest").memory_size(256).send().await.unwrap();
    support::poll_until(
        WATCH_DEADLINE,
        "the memory drift to be remediated after the new apply",
        || drift_events(&cli, true).iter().any(|e| e["resource"] == "hello_function" && e["how"] == "remediated").then_some(()),
        || w.stderr(),
    );
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_during_remediation_leaves_no_lock_and_reloads() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    out_of_band_drift(&aws).await;

    let (mut w, _port) = spawn_watch(&cli, &["-f", SEED, "--remediate"], &[]);
    support::poll_until(
        WATCH_DEADLINE,
        "remediation to start",
        || (!log_lines(&w.stderr(), "remediating").is_empty()).then_some(()),
        || w.stderr(),
    );
    for _ in 0..3 {
        w.signal("HUP");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    w.assert_running();
    support::poll_until(
        WATCH_DEADLINE,
        "the drift to be remediated",
        || {
            let all = drift_events(&cli, true);
            (all.len() == 3 && all.iter().all(|e| e["how"] == "remediated")).then_some(())
        },
        || format!("{:#?}\n{}", drift_events(&cli, true), w.stderr()),
    );
    w.assert_running();
    let stderr = w.stderr();
    assert!(
        !log_lines(&stderr, "SIGHUP received: re-reading the manifests and their code now; a remediation in flight goes on").is_empty()
    );
    assert!(log_lines(&stderr, "remediation failed").is_empty(), "{stderr}");
    let store = Store::open(&cli.join("reconcile.db")).await.unwrap();
    assert!(store.lock_info(STACK).await.unwrap().is_none(), "a lock was left behind");
    store.close().await;
    assert_eq!(memory(&aws).await, Some(512));

    // A manifest edit is picked up at once on SIGHUP (the interval is long here).
    stop_watch_cleanly(&cli, w, 0).await;
    let w = cli.spawn(&["--log-format", "json", "watch", "--interval", "1h", "--listen", "127.0.0.1:0", "-f", SEED]);
    support::poll_until(
        WATCH_DEADLINE,
        "a first pass",
        || (!log_lines(&w.stderr(), "pass finished").is_empty()).then_some(()),
        || w.stderr(),
    );
    let path = cli.join(SEED);
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("timeout = 10", "timeout = 20")).unwrap();
    w.signal("HUP");
    support::poll_until(
        WATCH_DEADLINE,
        "the edit to show as drift after SIGHUP",
        || event(&drift_events(&cli, false), "hello_function", "timeout").cloned(),
        || w.stderr(),
    );
    std::fs::write(&path, &original).unwrap();
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_aws_does_not_keep_leaves_the_drift_event_open_with_the_metric_up() {
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let (mut w, port) = start_watch(&cli, &["--remediate"]);

    // A tag on HelloApiGw: the endpoint refuses REST API TagResource (moto answers 404), so
    // remediation's write fails.
    let path = cli.join(SEED);
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replace("name = \"HelloApiGw\"\n", "name = \"HelloApiGw\"\ntags = { team = \"web\" }\n")).unwrap();
    support::poll_until(
        WATCH_DEADLINE,
        "remediation to be attempted twice",
        || (log_lines(&w.stderr(), "remediating").len() >= 2).then_some(()),
        || w.stderr(),
    );
    wait_passes(&mut w, port, 1.0);
    let all: Vec<Value> = drift_events(&cli, true).into_iter().filter(|e| e["resource"] == "hello_api").collect();
    assert_eq!(all.len(), 1, "one event while the drift stays, not one per pass: {all:#?}\n{}", w.stderr());
    assert_eq!(all[0]["field"], "tags.team");
    assert!(all[0]["resolved_at"].is_null(), "{all:#?}");
    let drift = metric(port, &format!("reconcile_drift{{stack=\"{STACK}\",resource=\"hello_api\"}}"));
    assert_eq!(drift, Some(1.0));
    let stderr = w.stderr();
    assert!(log_lines(&stderr, "drift remediated").iter().all(|l| l["resource"] != "hello_api"), "{stderr}");
    // The refused write fails its resource (no success is claimed), and the event stays open.
    let failed = log_lines(&stderr, "remediation failed");
    assert!(
        failed.iter().any(|l| l["resource"] == "hello_api" && l["error"].as_str().is_some_and(|e| e.contains("refused TagResource"))),
        "{stderr}"
    );
    std::fs::write(&path, &original).unwrap();
    wait_passes(&mut w, port, 2.0);
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remediation_after_an_out_of_band_function_delete_converges_in_one_pass_without_failures() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = start_watch(&cli, &["--remediate"]);

    aws.lambda.delete_function().function_name("HelloLambdaTest").send().await.unwrap();
    support::poll_until(
        WATCH_DEADLINE,
        "the function's deletion to be remediated",
        || drift_events(&cli, true).iter().any(|e| e["resource"] == "hello_function" && e["how"] == "remediated").then_some(()),
        || w.stderr(),
    );
    wait_passes(&mut w, port, 2.0);
    assert!(function_exists(&aws).await);
    assert!(
        aws.lambda.get_policy().function_name("HelloLambdaTest").send().await.unwrap().policy().unwrap().contains("AllowApiGwDemoGetOrder")
    );
    let stderr = w.stderr();
    assert!(log_lines(&stderr, "remediation failed").is_empty(), "{stderr}");
    assert!(log_lines(&stderr, "remediation skipped").is_empty(), "{stderr}");
    assert!(
        log_lines(&stderr, "drifted on a field that forces replacement: watch does not replace; run `reconcile apply`").is_empty(),
        "{stderr}"
    );
    assert_eq!(log_lines(&stderr, "remediating").len(), 1, "one remediation, in one pass:\n{stderr}");
    let recreated = log_lines(&stderr, "drift remediated");
    assert!(
        recreated.iter().any(|l| l["resource"] == "hello_function" && l["field"] == "*" && l["to"] == "HelloLambdaTest exists"),
        "{stderr}"
    );
    assert!(drift_events(&cli, false).is_empty(), "{:#?}", drift_events(&cli, false));

    // A REST API deleted outside reconcile: the log names the id that exists now, not the deleted one.
    let old = api_id(&aws, "ApiGwDemo").await;
    aws.apigw.delete_rest_api().rest_api_id(&old).send().await.unwrap();
    support::poll_until(
        WATCH_DEADLINE,
        "the REST API's deletion to be remediated",
        || drift_events(&cli, true).iter().any(|e| e["resource"] == "api_demo" && e["how"] == "remediated").then_some(()),
        || w.stderr(),
    );
    let new = api_id(&aws, "ApiGwDemo").await;
    assert_ne!(new, old);
    let stderr = w.stderr();
    let line = log_lines(&stderr, "drift remediated").into_iter().find(|l| l["resource"] == "api_demo").unwrap();
    assert_eq!((line["physical_id"].as_str(), line["to"].as_str()), (Some(new.as_str()), Some(format!("{new} exists").as_str())), "{line}");
    assert!(log_lines(&stderr, "remediation failed").is_empty(), "{stderr}");
    // The Lambda permission's source ARN names the API: a replacement, which only apply makes.
    stop_watch_cleanly(&cli, w, 2).await;
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    cli.run(&["-f", SEED, "plan", "--detailed-exitcode"]).assert_status(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_turns_503_while_aws_does_not_answer_and_back() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let proxy = support::FaultProxy::start(&moto.url, &[]);
    let env = [("AWS_ENDPOINT_URL", Some(proxy.url.as_str()))];
    let (mut w, port) = spawn_watch(&cli, &["-f", SEED, "--unready-after", "3s"], &env);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());

    // Every answer takes 10 s: passes hang in reads.
    proxy.configure(r#"{"latency_ms": 10000}"#);
    let body = support::poll_until(
        WATCH_DEADLINE,
        "/readyz to answer 503",
        || {
            let (status, body) = http_get(port, "/readyz");
            (status == 503).then_some(body)
        },
        || w.stderr(),
    );
    assert!(body.contains(&format!("{STACK}: no complete pass for")), "{body}");
    let waiting = support::poll_until(
        WATCH_DEADLINE,
        "a log line saying what the pass waits on",
        || {
            log_lines(&w.stderr(), "pass still running: reading AWS, waiting on ").first().cloned().or_else(|| {
                w.stderr().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| {
                    v["message"].as_str().is_some_and(|m| m.starts_with("pass still running: reading AWS, waiting on "))
                        && v["waiting_on"] != ""
                })
            })
        },
        || w.stderr(),
    );
    assert_eq!(waiting["level"], "WARN", "{waiting}");
    w.assert_running();

    // The endpoint answers again: ready again.
    proxy.configure(r#"{"latency_ms": 0}"#);
    support::poll_until(
        std::time::Duration::from_secs(60),
        "/readyz to answer 200 again",
        || (http_get(port, "/readyz").0 == 200).then_some(()),
        || w.stderr(),
    );
    stop_watch_cleanly(&cli, w, 0).await;
}
