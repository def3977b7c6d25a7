//! The daemon under fire (issue 34): a bounded endpoint, files it can trust, remediation that says
//! why it is not running, readiness that never lies (end to end against moto).

#[allow(unused_imports)]
use super::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A connection that sent half a request header and nothing more (a slowloris).
fn half_open(port: u16) -> Option<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").ok()?;
    Some(s)
}

/// Whether the server closed `s` within `within` (EOF or reset; `false` if it is still open then).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
}

/// `reconcile watch` under `ulimit -n 256` with short HTTP timeouts, once ready.
fn watch_under_low_fd_limit(cli: &Cli, extra: &[&str]) -> (support::Daemon, u16) {
    let mut args = vec!["--log-format", "json", "watch", "--interval", "1s", "--listen", "127.0.0.1:0", "-f", SEED];
    args.extend_from_slice(extra);
    let mut w = cli.spawn_under("ulimit -n 256", &args);
    let port = w.port_after("listening on http://127.0.0.1:", WATCH_DEADLINE);
    support::poll_until(WATCH_DEADLINE, "/readyz to answer 200", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    (w, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slowloris_of_more_connections_than_the_fd_limit_leaves_healthz_passes_and_remediation_going() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = watch_under_low_fd_limit(&cli, &["--remediate", "--http-header-timeout", "3s", "--http-idle-timeout", "3s"]);

    // 400 half-open connections (more than the daemon's 256 files), topped up while the test runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = (0..400).filter_map(|_| half_open(port)).collect();
            let opened = held.len();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Those the server closed are opened again.
                held.retain_mut(|s| {
                    s.set_nonblocking(true).ok();
                    let mut b = [0u8; 1];
                    matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while held.len() < 400 {
                    match half_open(port) {
                        Some(s) => held.push(s),
                        None => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_secs(1));

    // /healthz answers, passes run, and drift made now is remediated.
    let (status, _) = support::poll_until(
        Duration::from_secs(10),
        "/healthz to answer under the slowloris",
        || support::http_request(port, "GET", "/healthz", "").ok(),
        || w.stderr(),
    );
    assert_eq!(status, 200);
    turn_off_prod_data_trace(&aws).await;
    let deadline = std::time::Instant::now() + WATCH_DEADLINE;
    while !prod_data_trace(&aws).await {
        assert!(std::time::Instant::now() < deadline, "no remediation under the slowloris:\n{}", w.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = support::poll_until(
        Duration::from_secs(10),
        "/healthz to answer again",
        || support::http_request(port, "GET", "/healthz", "").ok(),
        || w.stderr(),
    );
    assert_eq!(status, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(attacker.join().unwrap() >= 300, "the attacker could not even open its connections");
    let stderr = w.stderr();
    assert!(!log_lines(&stderr, "drift remediated").is_empty(), "{stderr}");
    assert!(!stderr.contains("cannot reach the AWS endpoint"), "AWS calls failed under the slowloris:\n{stderr}");
    assert!(!stderr.contains("Too many open files"), "{stderr}");
    w.assert_running();
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_open_connections_are_closed_within_the_timeouts() {
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let (w, port) = watch_under_low_fd_limit(&cli, &["--http-header-timeout", "2s", "--http-idle-timeout", "2s"]);

    // Half a header: closed after the header timeout.
    let mut half = half_open(port).expect("connect");
    assert!(closed_within(&mut half, Duration::from_secs(10)), "a half-open connection stayed open");

    // A keep-alive connection after one answer, then silent: closed too.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(closed_within(&mut idle, Duration::from_secs(10)), "an idle keep-alive connection stayed open");

    // HTTP/2 with prior knowledge is not spoken.
    let mut h2 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = h2.read_to_end(&mut got);
    assert!(!got.starts_with(&[0, 0]), "answered an HTTP/2 preface with frames: {got:?}");
    w.signal("TERM");
    w.wait(WATCH_DEADLINE).assert_success();
}

/// The writes (any operation but a Get/List/Describe) the watcher made so far, from its /metrics.
fn aws_writes(port: u16) -> f64 {
    let (_, body) = http_get(port, "/metrics");
    body.lines()
        .filter(|l| l.starts_with("reconcile_aws_calls_total{"))
        .filter(|l| {
            let op = l.split("operation=\"").nth(1).unwrap_or_default();
            !["Get", "List", "Describe"].iter().any(|p| op.starts_with(p))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn waf_rules(aws: &Aws) -> usize {
    let acl = web_acl(aws).await;
    let got = aws.waf.get_web_acl().scope(aws_sdk_wafv2::types::Scope::Regional).name("ApiGwWebAcl").id(acl.id()).send().await.unwrap();
    got.web_acl().map_or(0, |a| a.rules().len())
}

/// Waits for /readyz to answer 503 and returns its body.
fn readyz_503(w: &support::Daemon, port: u16, what: &str) -> String {
    support::poll_until(
        WATCH_DEADLINE,
        what,
        || {
            let (status, body) = http_get(port, "/readyz");
            (status == 503).then_some(body)
        },
        || w.stderr(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_written_in_two_halves_with_a_pause_is_never_remediated_from_its_half() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = start_watch(&cli, &["--remediate", "--settle", "4s"]);
    wait_passes(&mut w, port, 1.0);
    let writes = aws_writes(port);

    // A writer that pauses after the first WAF rule (longer than a pass): the head parses, and
    // would take the geo and rate-limit rules away.
    let path = cli.join(SEED);
    let whole = std::fs::read_to_string(&path).unwrap();
    let cut = whole.find("# Block requests from Singapore.").unwrap();
    std::fs::write(&path, &whole[..cut]).unwrap();
    reconcile::manifest::load(&path).expect("the half is a valid manifest (else this test proves nothing)");
    std::thread::sleep(Duration::from_millis(2500));
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&whole.as_bytes()[cut..]).unwrap();
    drop(f);

    wait_passes(&mut w, port, 3.0);
    assert_eq!(aws_writes(port), writes, "the watcher wrote to AWS from the half-written manifest:\n{}", w.stderr());
    assert_eq!(waf_rules(&aws).await, 3);
    let stderr = w.stderr();
    assert!(log_lines(&stderr, "manifest changed: reloaded").is_empty(), "the half was loaded:\n{stderr}");
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_manifest_pauses_remediation_and_readyz_and_the_metric_say_so() {
    let (moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let aws = aws(&moto).await;
    let (mut w, port) = start_watch(&cli, &["--remediate", "--settle", "1s"]);
    let path = cli.join(SEED);
    let whole = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{whole}\n[resources.broken]\ntype = \"aws_lambda_function\"\n")).unwrap();

    let body = readyz_503(&w, port, "/readyz to say remediation is paused");
    assert!(body.contains(&format!("{STACK}: remediation paused (manifest_invalid)")), "{body}");
    assert!(body.contains("apigw-lambda-basic.toml:"), "the error names the file: {body}");
    let series = format!("reconcile_remediation_paused{{stack=\"{STACK}\",reason=\"manifest_invalid\"}}");
    assert_eq!(sample(&http_get(port, "/metrics").1, &series), Some(1.0), "{}", http_get(port, "/metrics").1);

    // Drift is recorded, not remediated, and no pass claims the manifest changed during it.
    turn_off_prod_data_trace(&aws).await;
    support::poll_until(
        WATCH_DEADLINE,
        "the drift to be recorded",
        || (!log_lines(&w.stderr(), "drift detected").is_empty()).then_some(()),
        || w.stderr(),
    );
    wait_passes(&mut w, port, 2.0);
    assert!(!prod_data_trace(&aws).await, "remediated from the last good version while the file on disk is invalid");
    let stderr = w.stderr();
    assert!(!stderr.contains("changed during the pass"), "{stderr}");
    let warned = log_lines(
        &stderr,
        "manifest edit is invalid; still watching its last good version (drift is recorded), remediation paused until the file is fixed",
    );
    assert_eq!(warned.len(), 1, "said once per change:\n{stderr}");

    // Fixed: remediation goes on, and the gauge is back to 0.
    std::fs::write(&path, &whole).unwrap();
    let deadline = std::time::Instant::now() + WATCH_DEADLINE;
    while !prod_data_trace(&aws).await {
        assert!(std::time::Instant::now() < deadline, "not remediated once the manifest was fixed:\n{}", w.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    support::poll_until(WATCH_DEADLINE, "/readyz 200 again", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    assert_eq!(sample(&http_get(port, "/metrics").1, &series), Some(0.0));
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_replaced_by_a_fifo_is_reported_and_sigterm_still_stops_the_watcher() {
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let (w, port) = start_watch(&cli, &["--settle", "1s"]);
    let path = cli.join(SEED);
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());

    let body = readyz_503(&w, port, "/readyz to report the FIFO");
    assert!(body.contains(&format!("{STACK}: watching its last good version (manifest_unreadable)")), "{body}");
    assert!(body.contains("it is a FIFO (named pipe), not a regular file"), "{body}");
    assert!(w.stderr().contains("cannot read the manifest"), "{}", w.stderr());
    assert_eq!(http_get(port, "/healthz").0, 200);
    w.signal("TERM");
    let out = w.wait(WATCH_DEADLINE);
    out.assert_success();
    assert!(!log_lines(&out.stderr, "stopped").is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_locked_past_the_lease_makes_readyz_not_ready() {
    use sqlx::Connection as _;
    let (_moto, cli) = seeded();
    cli.run(&["-f", SEED, "apply", "--auto-approve"]).assert_success();
    let (w, port) = start_watch(&cli, &["--lease-ttl", "3s", "--lease-renew", "1s", "--unready-after", "10m"]);

    // Another process holds SQLite's write lock, longer than the lease lasts.
    let url = format!("sqlite://{}", cli.join("reconcile.db").display());
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    let body = readyz_503(&w, port, "/readyz to say the stack is not watched");
    assert!(body.contains(&format!("{STACK}: not watched: ")) && body.contains("lease"), "{body}");

    // The lock goes: the watcher takes its lease again and is ready.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    support::poll_until(WATCH_DEADLINE, "/readyz 200 again", || (http_get(port, "/readyz").0 == 200).then_some(()), || w.stderr());
    stop_watch_cleanly(&cli, w, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_refuses_a_fifo_as_its_manifest_at_start_naming_it() {
    let (_moto, mut cli) = seeded();
    cli.timeout = Duration::from_secs(20);
    let made = std::process::Command::new("mkfifo").arg(cli.join("fifo.toml")).status().unwrap();
    assert!(made.success());
    let out = cli.run(&["-f", "fifo.toml", "watch", "--listen", "127.0.0.1:0"]);
    out.assert_status(1);
    assert!(out.stderr.contains("fifo.toml: it is a FIFO (named pipe), not a regular file"), "{out}");
}
