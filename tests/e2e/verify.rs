//! `reconcile verify` end to end: smoke and rate-limit against a local server that answers like the
//! seed's handler (loopback only), concurrency against moto's Lambda.

#[allow(unused_imports)]
use super::*;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// How the local server answers.
#[derive(Clone, Default)]
struct Behaviour {
    /// Answer 403 to a client (by IP) once it has sent this many requests, as WAF's rate rule does.
    block_after: Option<u64>,
    /// The handler's own time (the seed's sleeps 2 s).
    delay: Duration,
}

#[derive(Default)]
struct Seen {
    paths: Vec<String>,
    per_client: HashMap<IpAddr, u64>,
}

/// A server on 127.0.0.1 that answers every GET like the seed's handler (200, its CORS headers, a JSON
/// body) until a client is over `block_after`, then 403 `{"message":"Forbidden"}` as API Gateway does
/// for a request WAF blocks. Runs on its own thread and runtime; stops when dropped.
struct HandlerLike {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl HandlerLike {
    fn start(behaviour: Behaviour) -> HandlerLike {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let state = (behaviour, seen.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let app = axum::Router::new().fallback(answer).with_state(state);
                axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let port = port_rx.recv_timeout(Duration::from_secs(10)).expect("the local server did not start");
        HandlerLike { port, seen, _stop: stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn paths(&self) -> Vec<String> {
        self.seen.lock().unwrap().paths.clone()
    }
}

async fn answer(State((b, seen)): State<(Behaviour, Arc<Mutex<Seen>>)>, ConnectInfo(peer): ConnectInfo<SocketAddr>, uri: Uri) -> Response {
    let count = {
        let mut s = seen.lock().unwrap();
        s.paths.push(uri.path().to_string());
        let n = s.per_client.entry(peer.ip()).or_default();
        *n += 1;
        *n
    };
    if b.block_after.is_some_and(|limit| count > limit) {
        return (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], r#"{"message":"Forbidden"}"#).into_response();
    }
    tokio::time::sleep(b.delay).await;
    let body = serde_json::json!({"message": format!("lambda 2026/12/02 00:00:00.000000 {{'path': '{}'}}", uri.path())});
    (
        StatusCode::OK,
        [
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Headers", "Content-Type"),
            ("Access-Control-Allow-Methods", "OPTIONS,GET"),
            ("Content-Type", "application/json"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// The REST API ids of the seed's stacks, from the invoke URLs `output` prints: (ApiGwDemo, HelloApiGw).
fn api_ids(cli: &Cli) -> (String, String) {
    let out = cli.run(&["-f", SEED, "--json", "output"]);
    out.assert_success();
    let outputs: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = |key: &str| {
        let url = outputs[key].as_str().unwrap_or_else(|| panic!("no output {key}: {out}"));
        url.trim_start_matches("https://").split('.').next().unwrap().to_string()
    };
    (id("api_demo_prod_url"), id("hello_api_dev_url"))
}

fn verify_json(cli: &Cli, args: &[&str], status: i32) -> Value {
    let mut all = vec!["-f", SEED, "--json", "verify"];
    all.extend_from_slice(args);
    let out = cli.run(&all);
    out.assert_status(status);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("verify --json is not JSON ({e}):\n{out}"))
}

fn template(server: &HandlerLike) -> String {
    format!("{}/{{api_id}}/{{stage}}", server.url())
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_smoke_gets_each_get_route_of_each_stage_and_names_what_differs() {
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let (demo, hello) = api_ids(&cli);
    let server = HandlerLike::start(Behaviour::default());

    // Under an emulator the invoke URLs do not exist: refused before anything is sent.
    let out = cli.run(&["-f", SEED, "verify", "smoke"]);
    out.assert_status(1);
    assert!(out.stderr.contains("the AWS endpoint is overridden (http://127.0.0.1:"), "{out}");
    assert!(out.stderr.contains("need --target-url"), "{out}");

    // One GET per GET route of each stage, at the target URL; the answers are like the handler's.
    let target = template(&server);
    let doc = verify_json(&cli, &["smoke", "--target-url", &target], 0);
    assert_eq!(doc["outcome"], "passed", "{doc:#}");
    assert_eq!(doc["exit_code"], 0);
    assert!(doc["concurrency"].is_null() && doc["rate_limit"].is_null(), "only the probe named runs: {doc:#}");
    let checks = doc["smoke"]["checks"].as_array().unwrap();
    let got: Vec<(String, String, u64)> = checks
        .iter()
        .map(|c| (c["stage"].as_str().unwrap().to_string(), c["path"].as_str().unwrap().to_string(), c["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("api_demo/prod".to_string(), "/order".to_string(), 200),
            ("hello_api/dev".to_string(), "/book".to_string(), 200),
            ("hello_api/prod".to_string(), "/book".to_string(), 200),
        ]
    );
    assert!(checks.iter().all(|c| c["outcome"] == "passed" && c["problems"].as_array().unwrap().is_empty()), "{doc:#}");
    let mut paths = server.paths();
    paths.sort();
    let mut expected = vec![format!("/{demo}/prod/order"), format!("/{hello}/dev/book"), format!("/{hello}/prod/book")];
    expected.sort();
    assert_eq!(paths, expected);

    // An expectation the answers do not meet: exit 3, each check names the difference.
    let doc = verify_json(&cli, &["smoke", "--target-url", &target, "--expect-header", "Access-Control-Allow-Methods: GET"], 3);
    assert_eq!(doc["outcome"], "failed");
    for c in doc["smoke"]["checks"].as_array().unwrap() {
        assert_eq!(c["problems"], serde_json::json!(["`Access-Control-Allow-Methods: OPTIONS,GET`, expected `GET`"]), "{doc:#}");
    }

    // Nothing listens: reported per endpoint (exit 3), not a crash; the text output is a table.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let closed_url = format!("http://127.0.0.1:{closed}/{{stage}}");
    let doc = verify_json(&cli, &["smoke", "--target-url", &closed_url], 3);
    let checks = doc["smoke"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c["error"]["kind"] == "connect" && c["status"].is_null()), "{doc:#}");
    let out = cli.run(&["-f", SEED, "verify", "smoke", "--target-url", &closed_url]);
    out.assert_status(3);
    assert!(out.stdout.contains("Probe  Target"), "{out}");
    assert!(out.stdout.contains("hello_api/dev GET /book"), "{out}");
    assert!(out.stdout.contains("Verify FAILED: 3 of 3 checks failed"), "{out}");
    assert_eq!(server.paths().len(), 6, "the closed port got none of the traffic meant for it");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_rate_limit_finds_where_403s_began_against_the_rule_limit() {
    let (_moto, cli) = seeded();
    // The seed's rule with a limit of 100 (per 5 minutes per IP), so the test sends few requests.
    let text = std::fs::read_to_string(cli.join(SEED)).unwrap();
    assert!(text.contains("limit = 2000"));
    std::fs::write(cli.join(SEED), text.replace("limit = 2000", "limit = 100")).unwrap();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let (_, hello) = api_ids(&cli);

    // Refused under an emulator without --target-url.
    cli.run(&["-f", SEED, "verify", "rate-limit"]).assert_status(1);

    // Blocks after 100, one connection: the first 403 is request 101, within 90..=110.
    let server = HandlerLike::start(Behaviour { block_after: Some(100), ..Default::default() });
    let args = ["rate-limit", "--target-url", &template(&server), "--connections", "1", "--requests", "300", "--block-delay", "0s"];
    let doc = verify_json(&cli, &args, 0);
    let r = &doc["rate_limit"];
    assert_eq!(r["outcome"], "passed", "{doc:#}");
    assert_eq!(r["stage"], "hello_api/prod");
    assert_eq!(r["rule"]["rule"], "LimiteRequestsThreshold");
    assert_eq!((r["rule"]["limit"].as_u64(), r["rule"]["window_s"].as_u64()), (Some(100), Some(300)));
    assert_eq!(r["first_403"], 101, "{doc:#}");
    assert_eq!(r["expected_first_403"], serde_json::json!({"from": 90, "to": 110}));
    // It stops once blocking is confirmed (20 403s in a row), well before 300 requests.
    assert_eq!(r["stopped"], serde_json::json!({"why": "blocking_confirmed", "consecutive_403": 20}));
    // The one connection may have started its next request before the stop was decided: one more 403.
    let blocked = r["statuses"]["403"].as_u64().unwrap();
    assert!((20..=21).contains(&blocked), "{doc:#}");
    assert_eq!(r["statuses"], serde_json::json!({"200": 100, "403": blocked}));
    assert_eq!(r["sent"], 100 + blocked);
    let buckets = r["histogram"]["buckets"].as_array().unwrap();
    let total = |code: &str| buckets.iter().map(|b| b["counts"][code].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!((total("200"), total("403")), (100, blocked), "{doc:#}");
    assert!(server.paths().iter().all(|p| *p == format!("/{hello}/prod/book")), "only the protected stage is probed");
    assert_eq!(server.paths().len() as u64, 100 + blocked);
    assert_eq!(doc["smoke"], Value::Null, "only the probe named runs");

    // Blocks after 150 with four connections: later than the tolerance allows (exit 3).
    let server = HandlerLike::start(Behaviour { block_after: Some(150), ..Default::default() });
    let args = ["rate-limit", "--target-url", &template(&server), "--connections", "4", "--requests", "400", "--block-delay", "0s"];
    let doc = verify_json(&cli, &args, 3);
    let r = &doc["rate_limit"];
    let first = r["first_403"].as_u64().unwrap();
    assert!((148..=155).contains(&first), "{doc:#}");
    assert!(r["reason"].as_str().unwrap().starts_with(&format!("403s began at request {first}, after 110")), "{doc:#}");

    // Never blocks: a failure once the limit was crossed for longer than WAF may take (exit 3).
    let server = HandlerLike::start(Behaviour::default());
    let args = ["rate-limit", "--target-url", &template(&server), "--connections", "4", "--requests", "200", "--block-delay", "0s"];
    let doc = verify_json(&cli, &args, 3);
    assert_eq!(doc["rate_limit"]["reason"], "no 403 after 200 requests; 403s were expected from request 90 to 110", "{doc:#}");
    assert_eq!(server.paths().len(), 200, "no more than --requests");

    // Too slow to cross the limit within the time limit: inconclusive (exit 4), said early.
    let server = HandlerLike::start(Behaviour { block_after: Some(100), delay: Duration::from_millis(200) });
    let args = ["rate-limit", "--target-url", &template(&server), "--connections", "1", "--time-limit", "10s"];
    let doc = verify_json(&cli, &args, 4);
    let r = &doc["rate_limit"];
    assert_eq!(r["outcome"], "inconclusive");
    assert!(r["reason"].as_str().unwrap().contains("time limit"), "{doc:#}");
    assert!(server.paths().len() <= 50, "it stopped early: {}", server.paths().len());

    // The text output: histogram, first 403, the summary.
    let server = HandlerLike::start(Behaviour { block_after: Some(100), ..Default::default() });
    let out =
        cli.run(&["-f", SEED, "verify", "rate-limit", "--target-url", &template(&server), "--connections", "1", "--block-delay", "0s"]);
    out.assert_success();
    assert!(out.stdout.contains("from  200  403"), "{out}");
    assert!(out.stdout.contains("first 403: request 101 (expected 90–110)"), "{out}");
    assert!(out.stdout.contains("Verify passed: 1 check."), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_concurrency_counts_invocations_function_errors_and_an_endpoint_that_cannot_run_them() {
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();

    // moto without containers (use_docker false) answers each Invoke with the payload: successes.
    let doc = verify_json(&cli, &["concurrency", "--concurrency", "5", "--rounds", "2"], 0);
    let f = &doc["concurrency"]["functions"][0];
    assert_eq!(f["function"], "HelloLambdaTest");
    assert_eq!(f["outcome"], "passed", "{doc:#}");
    let counts = |f: &Value| {
        ["invocations", "successes", "function_errors", "throttles", "unavailable", "other_errors"].map(|k| f[k].as_u64().unwrap())
    };
    assert_eq!(counts(f), [10, 10, 0, 0, 0, 0]);
    assert_eq!(f["rounds"].as_array().unwrap().len(), 2);
    assert_eq!(f["rounds"][1]["successes"], 5);
    assert_eq!(f["latency"]["count"], 10);
    assert!(f["latency"]["p99_ms"].as_f64().unwrap() >= f["latency"]["p50_ms"].as_f64().unwrap());

    // A function error (moto answers a response over 6 MB as Lambda does: Unhandled,
    // Function.ResponseSizeTooLarge): counted as the function's error, exit 3.
    let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(6_100_000));
    cli.write_file("big.json", &big);
    let doc = verify_json(&cli, &["concurrency", "--concurrency", "2", "--rounds", "1", "--payload", "@big.json"], 3);
    let f = &doc["concurrency"]["functions"][0];
    assert_eq!(counts(f), [2, 0, 2, 0, 0, 0], "{doc:#}");
    assert_eq!(f["examples"][0]["result"], "function_error");
    assert_eq!(f["examples"][0]["error_type"], "Function.ResponseSizeTooLarge");
    assert_eq!(f["examples"][0]["function_error"], "Unhandled");

    // Without probe names: smoke and concurrency, never rate-limit.
    let server = HandlerLike::start(Behaviour::default());
    let doc = verify_json(&cli, &["--target-url", &template(&server), "--concurrency", "2", "--rounds", "1"], 0);
    assert_eq!((doc["smoke"]["outcome"].as_str(), doc["concurrency"]["outcome"].as_str()), (Some("passed"), Some("passed")));
    assert!(doc["rate_limit"].is_null(), "{doc:#}");

    // moto with its container runtime on but no engine answers 200, FunctionError Handled, "error
    // running docker": the functions cannot run there, which is not the function's error (exit 4).
    let (moto, cli) = seeded();
    let (status, body) = moto.request("POST", "/moto-api/config", r#"{"lambda":{"use_docker":true}}"#).unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let doc = verify_json(&cli, &["concurrency", "--concurrency", "3", "--rounds", "3"], 4);
    let f = &doc["concurrency"]["functions"][0];
    assert_eq!(f["outcome"], "inconclusive", "{doc:#}");
    assert_eq!(counts(f), [3, 0, 0, 0, 3, 0], "one round only: more would say the same");
    assert_eq!(f["rounds_run"], 1);
    assert!(f["reason"].as_str().unwrap().starts_with("functions cannot run at this endpoint"), "{doc:#}");
    assert!(f["examples"][0]["message"].as_str().unwrap().starts_with("error running docker"), "{doc:#}");
    let out = cli.run(&["-f", SEED, "verify", "concurrency", "--concurrency", "1", "--rounds", "1"]);
    out.assert_status(4);
    assert!(out.stdout.contains("INCONCLUSIVE  functions cannot run at this endpoint"), "{out}");
    assert!(out.stdout.contains("Verify inconclusive"), "{out}");
}
