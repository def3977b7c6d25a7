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
