//! `faultproxy`: a fault-injecting HTTP/1.1 proxy between the AWS SDK and a local emulator (moto).
//!
//! ```text
//! faultproxy --upstream http://127.0.0.1:5000 [--listen 127.0.0.1:0] [--latency-ms N] [--jitter-ms N]
//!            [--throttle-rate F] [--error-rate F] [--drop-rate F] [--seed N] [--only iam,logs,...]
//!            [--apigw-limits] [-v]
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once bound, then forwards every request to the upstream
//! (which must be a loopback address). For each request that is eligible for faults it first waits
//! `latency-ms ± jitter-ms`, then with the given probabilities (one uniform draw, so the rates must sum
//! to at most 1) it
//!
//! * answers the throttling error the real AWS service returns for the request's protocol instead of
//!   forwarding (`--throttle-rate`):
//!   - AWS query (IAM, STS; form body `Action=...`): HTTP 400, XML `ErrorResponse` with code `Throttling`;
//!   - awsJson 1.0/1.1 (CloudWatch Logs, WAFv2; `X-Amz-Target`): HTTP 400, `x-amzn-ErrorType:
//!     ThrottlingException`, body `{"__type":"ThrottlingException","message":"Rate exceeded"}`;
//!   - restJson1 (Lambda, API Gateway; anything else): HTTP 429, `x-amzn-ErrorType:
//!     TooManyRequestsException`, body `{"message":"Too Many Requests"}`;
//! * answers HTTP 503 in the same protocol's error shape (`ServiceUnavailable` /
//!   `ServiceUnavailableException`) (`--error-rate`);
//! * closes the connection after reading the request, without answering (`--drop-rate`).
//!
//! With `--apigw-limits` the proxy also enforces API Gateway's account-level control-plane limits on
//! every `apigateway` request (whatever `--only` says), as token buckets checked when the request
//! arrives: 10 requests per second with a burst of 40 in total, and one `CreateRestApi` every 3 s,
//! one `CreateDeployment` every 5 s, one `DeleteRestApi` every 30 s (each a bucket of one token).
//! A request over a limit takes no token and is answered, after the latency, like `--throttle-rate`
//! answers API Gateway: HTTP 429 `TooManyRequestsException`. Those answers count as `limited`, and
//! `apigw_limited` in the statistics says which limit each one hit (`rate` for the account bucket).
//!
//! The service (for statistics and `--only`) is the SigV4 credential scope's service
//! (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`); requests to `/moto-api/...` are never faulted.
//!
//! Decisions are deterministic: each one comes from a PRNG (splitmix64-seeded xorshift64*) seeded with
//! `--seed`, a fingerprint of the request and how many times that fingerprint was seen before (since
//! start or the last seed change). The fingerprint covers service, method, `X-Amz-Target`, path, query
//! and body, not headers (signature, date, attempt number); it sorts JSON keys, array elements and
//! form/query parameters (the SDK writes maps in a random order) and masks what looks generated
//! (alphanumeric runs with a digit, 4+ hex digits, or 10 lowercase letters: ids, UUIDs, timestamps).
//! So requests arriving concurrently in a different order get the same decisions, a rerun against a
//! fresh emulator gets the same faults as long as the client makes the same requests, and each retry
//! of a request gets a fresh draw.
//!
//! Per-operation faults (`fail` in the configuration, set through the control endpoint) fail chosen
//! calls of one named operation, whatever the rates say: each rule
//! `{"operation": "UpdateStage", "service": "apigateway", "nth": 1, "times": 1, "status": 400,
//! "code": "BadRequestException", "message": "..."}` answers the `nth` call (1-based, counted from when
//! the rules were set) of that operation, and the `times - 1` calls after it, with that error in the
//! request's protocol; every other call goes on as usual. `service` (SigV4 name), `nth` (1), `times`
//! (1), `status` (400), `code` (by protocol: `ValidationError`, `ValidationException`,
//! `BadRequestException`) and `message` are optional; `{environment}` in a message becomes the request's
//! Lambda environment (`Environment.Variables`) as JSON, as Lambda's answer to one over 4 KB quotes it. The operation is the query `Action` (IAM, STS),
//! the `X-Amz-Target` operation (CloudWatch Logs, WAFv2), or the operation told from the method and
//! path (API Gateway, Lambda; see [`protocol::rest_operation`]). Such answers count as `failed`, by service and
//! in `failed_by_rule` (how many calls each rule failed) of the statistics.
//!
//! Control endpoints on the same port (never forwarded):
//! * `GET /__faultproxy/stats`: counters (total and by service) and the current configuration as JSON;
//! * `GET /__faultproxy/config`: the configuration;
//! * `POST /__faultproxy/config`: a JSON object with any of `latency_ms`, `jitter_ms`, `throttle_rate`,
//!   `error_rate`, `drop_rate`, `seed`, `only` (array or comma-separated string; `null` or empty for
//!   every service), `fail` (an array of rules, replacing the previous ones and restarting their
//!   counts; `[]` or `null` for none), `hold` (rules `{"operation": "CreateDeployment", "service": …,
//!   "nth": 1, "times": 1}` like `fail`'s: the call is forwarded upstream, so AWS carries it out, and its
//!   answer is held back for good, counted as `held`; a test kills its client then); `-` may be used
//!   for `_`. Unknown keys or invalid values answer 400. The statistics count requests by
//!   `<service>:<operation>` too (`by_operation`), so a test can count the writes a run sent.
//!
//! SIGTERM or SIGINT prints the statistics JSON on stdout and exits 0. Logging goes to stderr
//! (`-v` logs each fault, `-vv` each request; `FAULTPROXY_LOG` overrides with a tracing filter). Each
//! request's line names the access key id that signed it (`key_id`), so the requests of several
//! clients sharing the proxy can be told apart.
//!
//! Modules: [`http`] (the hyper server and upstream client, and the path of a request), [`protocol`]
//! (how each AWS protocol names its service and operation, and its error answers), [`faults`] (the
//! decisions, `fail` rule counts and statistics), [`apigw`] (API Gateway's limits), [`control`]
//! (the control endpoint), [`config`].

mod apigw;
mod config;
mod control;
mod faults;
mod http;
mod protocol;

use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;

use crate::config::{Config, normalize_services};
use crate::faults::Shared;

#[derive(Parser, Debug)]
#[command(name = "faultproxy", version, about = "Fault-injecting HTTP/1.1 proxy for testing AWS SDK clients against a local emulator")]
struct Args {
    /// The emulator, e.g. http://127.0.0.1:5000 (loopback addresses only)
    #[arg(long)]
    upstream: String,
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Latency added to every eligible request, in milliseconds
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Uniform jitter around --latency-ms (± this many milliseconds, never below 0)
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability of answering a throttling error instead of forwarding
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Probability of answering HTTP 503 instead of forwarding
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Probability of closing the connection without answering
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Seed of the deterministic PRNG
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Inject faults only into these services (SigV4 names: iam, sts, logs, wafv2, lambda, apigateway)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Enforce API Gateway's account limits (10 rps burst 40; CreateRestApi 1/3 s, CreateDeployment
    /// 1/5 s, DeleteRestApi 1/30 s): requests over them get 429 TooManyRequestsException
    #[arg(long)]
    apigw_limits: bool,
    /// Log faults (-v) or every request (-vv) on stderr
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}
/// `http://HOST[:PORT][/]` with a loopback host.
fn parse_upstream(url: &str) -> Result<SocketAddr, String> {
    let rest =
        url.strip_prefix("http://").ok_or_else(|| format!("--upstream must be an http:// URL (TLS is not supported), got {url:?}"))?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.contains('?') || authority.contains('@') {
        return Err(format!("--upstream must be http://HOST:PORT without a path, got {url:?}"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').ok_or_else(|| format!("bad IPv6 address in {url:?}"))?;
        (h, p.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in {url:?}"))?,
        None => 80,
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| format!("--upstream host must be an IP address or localhost, got {host:?}"))?
    };
    if !ip.is_loopback() {
        return Err(format!("--upstream must be a loopback address (this proxy only fronts a local emulator), got {ip}"));
    }
    Ok(SocketAddr::new(ip, port))
}

fn print_stats(shared: &Shared) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&shared.stats_json()).unwrap_or_default());
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = std::env::var("FAULTPROXY_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        // -v and -vv are about the proxy's own lines, not hyper's connection chatter.
        match args.verbose {
            0 => "warn",
            1 => "warn,faultproxy=info",
            _ => "warn,faultproxy=debug",
        }
        .to_string()
    });
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_target(false)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();

    let upstream = match parse_upstream(&args.upstream) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faultproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        throttle_rate: args.throttle_rate,
        error_rate: args.error_rate,
        drop_rate: args.drop_rate,
        seed: args.seed,
        only: normalize_services(args.only.clone()),
        apigw_limits: args.apigw_limits,
        fail: Vec::new(),
        hold: Vec::new(),
    };
    if let Err(e) = config.validate() {
        eprintln!("faultproxy: {e}");
        return ExitCode::from(2);
    }

    let listener = match TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("faultproxy: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faultproxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faultproxy: cannot handle SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut int = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("faultproxy: cannot handle SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };

    let shared = Arc::new(Shared::new(upstream, config));
    let client = http::upstream_client();
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "listening on http://{local}");
        let _ = out.flush();
    }
    tracing::info!(%local, %upstream, config = %shared.config().to_json(), "faultproxy started");

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.stats().connections += 1;
                    http::spawn_connection(Arc::clone(&shared), client.clone(), stream, peer);
                }
                Err(e) => {
                    // E.g. too many open files: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    print_stats(&shared);
    // Open connections are abandoned; the runtime is not waited for.
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_must_be_loopback() {
        assert_eq!(parse_upstream("http://127.0.0.1:5000").unwrap(), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(parse_upstream("http://localhost:5000/").unwrap(), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(parse_upstream("http://[::1]:5000").unwrap(), "[::1]:5000".parse().unwrap());
        assert!(parse_upstream("http://10.0.0.1:5000").is_err());
        assert!(parse_upstream("https://127.0.0.1:5000").is_err());
        assert!(parse_upstream("http://example.com").is_err());
    }
}
