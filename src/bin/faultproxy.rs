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
//! `BadRequestException`) and `message` are optional. The operation is the query `Action` (IAM, STS),
//! the `X-Amz-Target` operation (CloudWatch Logs, WAFv2), or the operation told from the method and
//! path (API Gateway, Lambda; see [`rest_operation`]). Such answers count as `failed`, by service and
//! in `failed_by_rule` (how many calls each rule failed) of the statistics.
//!
//! Control endpoints on the same port (never forwarded):
//! * `GET /__faultproxy/stats`: counters (total and by service) and the current configuration as JSON;
//! * `GET /__faultproxy/config`: the configuration;
//! * `POST /__faultproxy/config`: a JSON object with any of `latency_ms`, `jitter_ms`, `throttle_rate`,
//!   `error_rate`, `drop_rate`, `seed`, `only` (array or comma-separated string; `null` or empty for
//!   every service), `fail` (an array of rules, replacing the previous ones and restarting their
//!   counts; `[]` or `null` for none); `-` may be used for `_`. Unknown keys or invalid values answer 400.
//!
//! SIGTERM or SIGINT prints the statistics JSON on stdout and exits 0. Logging goes to stderr
//! (`-v` logs each fault, `-vv` each request; `FAULTPROXY_LOG` overrides with a tracing filter).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted (Lambda zips travel base64-encoded in JSON).
const MAX_BODY: usize = 256 * 1024 * 1024;
const CONTROL_PREFIX: &str = "/__faultproxy/";

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

// ---------------------------------------------------------------------------------------------------
// Configuration, statistics, randomness

#[derive(Debug, Clone, PartialEq)]
struct Config {
    latency_ms: u64,
    jitter_ms: u64,
    throttle_rate: f64,
    error_rate: f64,
    drop_rate: f64,
    seed: u64,
    /// Empty: every service.
    only: Vec<String>,
    /// Enforce API Gateway's account limits.
    apigw_limits: bool,
    /// Per-operation faults.
    fail: Vec<FailRule>,
}

/// Fails chosen calls of one named operation (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
struct FailRule {
    /// SigV4 service name; `None`: any service.
    service: Option<String>,
    operation: String,
    /// The first call failed (1-based).
    nth: u64,
    /// How many calls in a row, from the `nth`.
    times: u64,
    status: u16,
    /// `None`: the protocol's validation error code.
    code: Option<String>,
    message: String,
}

impl FailRule {
    fn parse(v: &Value) -> Result<FailRule, String> {
        let obj = v.as_object().ok_or_else(|| format!("fail: each rule must be a JSON object, got {v}"))?;
        let text = |k: &str| -> Result<Option<String>, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
                Some(other) => Err(format!("fail: `{k}` must be a non-empty string, got {other}")),
            }
        };
        let uint = |k: &str, default: u64| -> Result<u64, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| format!("fail: `{k}` must be an integer of at least 1, got {v}")),
            }
        };
        if let Some(k) = obj.keys().find(|k| !["operation", "service", "nth", "times", "status", "code", "message"].contains(&k.as_str())) {
            return Err(format!("fail: unknown key {k:?}"));
        }
        let operation = text("operation")?.ok_or("fail: every rule needs an `operation` (e.g. \"UpdateStage\")")?;
        let status = uint("status", 400)?;
        if !(400..=599).contains(&status) {
            return Err(format!("fail: `status` must be an HTTP error status (400-599), got {status}"));
        }
        Ok(FailRule {
            service: text("service")?.map(|s| s.to_ascii_lowercase()),
            operation,
            nth: uint("nth", 1)?,
            times: uint("times", 1)?,
            status: status as u16,
            code: text("code")?,
            message: text("message")?.unwrap_or_else(|| "injected by faultproxy".into()),
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "operation": self.operation,
            "nth": self.nth,
            "times": self.times,
            "status": self.status,
            "code": self.code,
            "message": self.message,
        })
    }

    fn matches(&self, service: &str, operation: &str) -> bool {
        self.operation == operation && self.service.as_deref().is_none_or(|s| s == service)
    }

    /// Whether the `call`-th matching call (1-based) is failed.
    fn fails_call(&self, call: u64) -> bool {
        call >= self.nth && call - self.nth < self.times
    }
}

impl Config {
    fn validate(&self) -> Result<(), String> {
        for (name, rate) in [("throttle_rate", self.throttle_rate), ("error_rate", self.error_rate), ("drop_rate", self.drop_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        let sum = self.throttle_rate + self.error_rate + self.drop_rate;
        if sum > 1.0 + 1e-9 {
            return Err(format!("throttle_rate + error_rate + drop_rate must be at most 1, got {sum}"));
        }
        Ok(())
    }

    fn applies_to(&self, service: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == service)
    }

    fn to_json(&self) -> Value {
        json!({
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "throttle_rate": self.throttle_rate,
            "error_rate": self.error_rate,
            "drop_rate": self.drop_rate,
            "seed": self.seed,
            "only": self.only,
            "apigw_limits": self.apigw_limits,
            "fail": self.fail.iter().map(FailRule::to_json).collect::<Vec<_>>(),
        })
    }

    /// This configuration with the keys of `patch` (a JSON object) applied.
    fn patched(&self, patch: &Value) -> Result<Config, String> {
        let Some(obj) = patch.as_object() else {
            return Err("the body must be a JSON object".into());
        };
        let mut c = self.clone();
        for (key, value) in obj {
            let key = key.replace('-', "_");
            let uint = || value.as_u64().ok_or_else(|| format!("{key} must be a non-negative integer, got {value}"));
            let rate = || value.as_f64().ok_or_else(|| format!("{key} must be a number, got {value}"));
            match key.as_str() {
                "latency_ms" => c.latency_ms = uint()?,
                "jitter_ms" => c.jitter_ms = uint()?,
                "seed" => c.seed = uint()?,
                "throttle_rate" => c.throttle_rate = rate()?,
                "error_rate" => c.error_rate = rate()?,
                "drop_rate" => c.drop_rate = rate()?,
                "only" => c.only = parse_only(value)?,
                "apigw_limits" => {
                    c.apigw_limits = value.as_bool().ok_or_else(|| format!("{key} must be true or false, got {value}"))?;
                }
                "fail" => {
                    c.fail = match value {
                        Value::Null => Vec::new(),
                        Value::Array(rules) => rules.iter().map(FailRule::parse).collect::<Result<_, _>>()?,
                        other => return Err(format!("fail must be an array of rules, got {other}")),
                    };
                }
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        c.validate()?;
        Ok(c)
    }
}

fn parse_only(value: &Value) -> Result<Vec<String>, String> {
    let items: Vec<String> = match value {
        Value::Null => Vec::new(),
        Value::String(s) => s.split(',').map(str::to_string).collect(),
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("only: {v} is not a string")))
            .collect::<Result<_, _>>()?,
        other => return Err(format!("only must be an array of service names or a comma-separated string, got {other}")),
    };
    Ok(normalize_services(items))
}

fn normalize_services(items: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
    v.sort();
    v.dedup();
    v
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    requests: u64,
    forwarded: u64,
    throttled: u64,
    errored: u64,
    dropped: u64,
    /// Answered 429 by `--apigw-limits`.
    limited: u64,
    /// Answered by a `fail` rule.
    failed: u64,
    upstream_errors: u64,
}

impl Counters {
    fn to_json(self) -> Value {
        json!({
            "requests": self.requests,
            "forwarded": self.forwarded,
            "throttled": self.throttled,
            "errored": self.errored,
            "dropped": self.dropped,
            "limited": self.limited,
            "failed": self.failed,
            "upstream_errors": self.upstream_errors,
        })
    }
}

#[derive(Debug, Default)]
struct Stats {
    total: Counters,
    by_service: BTreeMap<String, Counters>,
    connections: u64,
    added_latency_ms: u64,
    /// `--apigw-limits` answers by the limit hit (`rate` or the operation).
    apigw_limited: BTreeMap<&'static str, u64>,
}

impl Stats {
    fn bump(&mut self, service: &str, f: impl Fn(&mut Counters)) {
        f(&mut self.total);
        f(self.by_service.entry(service.to_string()).or_default());
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Forward,
    Throttle,
    Error,
    Drop,
}

/// xorshift64* seeded through splitmix64 (so any seed, 0 included, gives a good state).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n] (n inclusive).
    fn upto(&mut self, n: u64) -> u64 {
        if n == u64::MAX { self.next_u64() } else { self.next_u64() % (n + 1) }
    }

    fn request_id(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

/// FNV-1a, stable across runs and Rust versions.
struct Fnv(u64);

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(Self::PRIME);
    }

    /// Adds `part` and a separator, so ("ab", "c") and ("a", "bc") differ.
    fn part(&mut self, part: &[u8]) -> &mut Fnv {
        part.iter().for_each(|&b| self.byte(b));
        self.byte(0xff);
        self
    }
}

/// `bytes` with every run of ASCII letters and digits that looks generated replaced by `#`: runs with
/// a digit, runs of 4+ hex digits (UUID groups, hashes) and runs of exactly 10 lowercase letters (API
/// Gateway ids). Ids, account ids and timestamps then read alike from one run to the next, while names
/// and operations still tell requests apart (a name that happens to look generated only merges two
/// fingerprints).
fn mask_generated(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphanumeric() {
            let end = bytes[i..].iter().position(|b| !b.is_ascii_alphanumeric()).map_or(bytes.len(), |n| i + n);
            let run = &bytes[i..end];
            let generated = run.iter().any(u8::is_ascii_digit)
                || (run.len() >= 4 && run.iter().all(u8::is_ascii_hexdigit))
                || (run.len() == 10 && run.iter().all(u8::is_ascii_lowercase));
            if generated {
                out.push(b'#');
            } else {
                out.extend_from_slice(run);
            }
            i = end;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// `a=1&b=2` parameters, masked and sorted: the SDK serialises maps (tags) in a random order.
fn canonical_params(query: &[u8]) -> Vec<u8> {
    let mut params: Vec<Vec<u8>> = query.split(|&b| b == b'&').map(mask_generated).collect();
    params.sort();
    params.join(&b'&')
}

/// JSON with object keys and array elements sorted and strings masked; numbers become `#`.
fn canonical_json(v: &Value) -> Vec<u8> {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<Vec<u8>> = m
                .iter()
                .map(|(k, v)| {
                    let mut e = mask_generated(k.as_bytes());
                    e.push(b':');
                    e.extend(canonical_json(v));
                    e
                })
                .collect();
            entries.sort();
            [b"{".to_vec(), entries.join(&b','), b"}".to_vec()].concat()
        }
        Value::Array(a) => {
            let mut items: Vec<Vec<u8>> = a.iter().map(canonical_json).collect();
            items.sort();
            [b"[".to_vec(), items.join(&b','), b"]".to_vec()].concat()
        }
        Value::String(s) => [b"\"".to_vec(), mask_generated(s.as_bytes()), b"\"".to_vec()].concat(),
        Value::Number(_) => b"#".to_vec(),
        Value::Bool(b) => b.to_string().into_bytes(),
        Value::Null => b"null".to_vec(),
    }
}

/// The fingerprint of a request: the same logical request gives the same value in every run,
/// whatever ids the emulator generated and whatever order the SDK wrote map entries in.
fn fingerprint(service: &str, method: &str, amz_target: &str, target: &str, body: &[u8]) -> u64 {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let trimmed = body.trim_ascii_start();
    let canonical_body = if trimmed.starts_with(b"{") || trimmed.starts_with(b"[") {
        serde_json::from_slice::<Value>(body).map_or_else(|_| mask_generated(body), |v| canonical_json(&v))
    } else if body.contains(&b'=') && !body.contains(&b'\n') {
        canonical_params(body)
    } else {
        mask_generated(body)
    };
    Fnv::new()
        .part(service.as_bytes())
        .part(method.as_bytes())
        .part(&mask_generated(amz_target.as_bytes()))
        .part(&mask_generated(path.as_bytes()))
        .part(&canonical_params(query.as_bytes()))
        .part(&canonical_body)
        .0
}

// ---------------------------------------------------------------------------------------------------
// API Gateway account limits (`--apigw-limits`)

/// Requests per second and burst of the account-wide API Gateway control-plane bucket.
const APIGW_RATE: f64 = 10.0;
const APIGW_BURST: f64 = 40.0;
/// Operations with their own limit: one request every so many seconds.
const APIGW_OPERATION_SPACING: [(&str, f64); 3] = [("CreateRestApi", 3.0), ("CreateDeployment", 5.0), ("DeleteRestApi", 30.0)];

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Bucket {
        Bucket { rate, burst, tokens: burst, at: now }
    }

    /// Whether a token is there at `now` (refilling first; a clock going backwards refills nothing).
    fn has_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
        self.tokens >= 1.0 - 1e-9
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// API Gateway's per-account limits: the account bucket and one bucket per limited operation.
#[derive(Debug)]
struct ApigwLimits {
    total: Bucket,
    operations: BTreeMap<&'static str, Bucket>,
}

impl ApigwLimits {
    fn new(now: Instant) -> ApigwLimits {
        ApigwLimits {
            total: Bucket::new(APIGW_RATE, APIGW_BURST, now),
            operations: APIGW_OPERATION_SPACING.iter().map(|(op, every)| (*op, Bucket::new(1.0 / every, 1.0, now))).collect(),
        }
    }

    /// Admits a request (taking its tokens) or names the limit it is over; a refused request takes
    /// no token.
    fn admit(&mut self, operation: Option<&'static str>, now: Instant) -> Result<(), &'static str> {
        if !self.total.has_token(now) {
            return Err("rate");
        }
        if let Some(op) = operation
            && let Some(bucket) = self.operations.get_mut(op)
        {
            if !bucket.has_token(now) {
                return Err(op);
            }
            bucket.take();
        }
        self.total.take();
        Ok(())
    }
}

/// The API Gateway operations with their own limit, told apart by method and path.
fn apigw_operation(method: &str, target: &str) -> Option<&'static str> {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.to_ascii_uppercase().as_str(), segments.as_slice()) {
        ("POST", ["restapis"]) => Some("CreateRestApi"),
        ("DELETE", ["restapis", _]) => Some("DeleteRestApi"),
        ("POST", ["restapis", _, "deployments"]) => Some("CreateDeployment"),
        _ => None,
    }
}

struct Shared {
    upstream: SocketAddr,
    config: Mutex<Config>,
    stats: Mutex<Stats>,
    limits: Mutex<ApigwLimits>,
    /// How many times each request fingerprint was seen (reset when the seed changes).
    seen: Mutex<HashMap<u64, u64>>,
    /// Per `fail` rule: (matching calls seen, calls failed); reset when the rules are set.
    fail_counts: Mutex<Vec<(u64, u64)>>,
}

impl Shared {
    fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `--apigw-limits`: the limit an API Gateway request arriving now is over, if any.
    fn over_apigw_limit(&self, cfg: &Config, service: &str, method: &str, target: &str) -> Option<&'static str> {
        if !cfg.apigw_limits || service != "apigateway" {
            return None;
        }
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        limits.admit(apigw_operation(method, target), Instant::now()).err()
    }

    /// The `fail` rule that fails this call of `operation`, if any (every matching rule counts the call).
    fn failing_rule(&self, cfg: &Config, service: &str, operation: Option<&str>) -> Option<FailRule> {
        let operation = operation?;
        let mut counts = self.fail_counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.resize(cfg.fail.len(), (0, 0));
        let mut hit = None;
        for (rule, (seen, failed)) in cfg.fail.iter().zip(counts.iter_mut()) {
            if rule.matches(service, operation) {
                *seen += 1;
                if hit.is_none() && rule.fails_call(*seen) {
                    *failed += 1;
                    hit = Some(rule.clone());
                }
            }
        }
        hit
    }

    fn stats_json(&self) -> Value {
        let config = self.config().to_json();
        let s = self.stats();
        let mut out = match s.total.to_json() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        out.insert("connections".into(), json!(s.connections));
        out.insert("added_latency_ms".into(), json!(s.added_latency_ms));
        let by: Map<String, Value> = s.by_service.iter().map(|(k, c)| (k.clone(), c.to_json())).collect();
        out.insert("by_service".into(), Value::Object(by));
        out.insert("apigw_limited".into(), json!(s.apigw_limited));
        let counts = self.fail_counts.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, failed)| *failed).collect::<Vec<_>>();
        out.insert("failed_by_rule".into(), json!(counts));
        out.insert("config".into(), config);
        Value::Object(out)
    }

    /// The delay and fault for a request with fingerprint `fp`.
    fn decide(&self, cfg: &Config, fp: u64) -> (Duration, Fault, Rng, u64) {
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let n = seen.entry(fp).or_insert(0);
            *n += 1;
            *n
        };
        let mut rng = Rng::new(cfg.seed ^ fp.rotate_left(29) ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let delay = if cfg.jitter_ms == 0 {
            cfg.latency_ms
        } else {
            let low = cfg.latency_ms.saturating_sub(cfg.jitter_ms);
            let high = cfg.latency_ms.saturating_add(cfg.jitter_ms);
            low + rng.upto(high - low)
        };
        let u = rng.unit();
        let fault = if u < cfg.drop_rate {
            Fault::Drop
        } else if u < cfg.drop_rate + cfg.throttle_rate {
            Fault::Throttle
        } else if u < cfg.drop_rate + cfg.throttle_rate + cfg.error_rate {
            Fault::Error
        } else {
            Fault::Forward
        };
        (Duration::from_millis(delay), fault, rng, n)
    }
}

// ---------------------------------------------------------------------------------------------------
// HTTP/1.1 framing

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A TCP stream with a read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn { stream, buf: Vec::new() }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next message head, blank line included; `None` on a clean end of stream between messages.
    async fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            // Tolerate stray CRLFs between messages (RFC 9112 §2.2).
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..i + 4).collect()));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("message head too large"));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
            }
        }
    }

    async fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        if n > MAX_BODY {
            return Err(invalid(format!("body of {n} bytes is too large")));
        }
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One line without its CRLF.
    async fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Ok(line[..i].to_vec());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? > 0 {
            if self.buf.len() > MAX_BODY {
                return Err(invalid("body too large"));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// A `Transfer-Encoding: chunked` body, decoded (trailers are read and discarded).
    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let text = std::str::from_utf8(&line).map_err(|_| invalid("bad chunk size line"))?;
            let size_field = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_field, 16).map_err(|_| invalid(format!("bad chunk size {size_field:?}")))?;
            if size == 0 {
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("body too large"));
            }
            let chunk = self.read_n(size).await?;
            body.extend_from_slice(&chunk);
            if !self.read_line().await?.is_empty() {
                return Err(invalid("chunk not followed by CRLF"));
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }
}

/// A parsed request or response head.
#[derive(Debug)]
struct Head {
    /// Request: method, target, version. Response: version, status, reason.
    first: [String; 3],
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: &[u8]) -> io::Result<Head> {
        let text = std::str::from_utf8(raw).map_err(|_| invalid("message head is not UTF-8"))?;
        let mut lines = text.split("\r\n");
        let first_line = lines.next().unwrap_or_default();
        let mut parts = first_line.splitn(3, ' ');
        let first = [
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        ];
        if first[0].is_empty() || first[1].is_empty() {
            return Err(invalid(format!("bad start line {first_line:?}")));
        }
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            if name.is_empty() || name.ends_with([' ', '\t']) {
                return Err(invalid(format!("bad header name in {line:?}")));
            }
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Ok(Head { first, headers })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether any `name` header lists `token` (comma-separated, case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        let mut found: Option<usize> = None;
        for (_, v) in self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
            let n = v.trim().parse::<usize>().map_err(|_| invalid(format!("bad Content-Length {v:?}")))?;
            if found.is_some_and(|f| f != n) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            found = Some(n);
        }
        Ok(found)
    }

    fn chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }
}

/// Headers a proxy must not pass on (RFC 9110 §7.6.1), plus the framing headers it rewrites.
fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

fn response_bytes(status: u16, reason: &str, headers: &[(String, String)], body: &[u8], close: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn json_response(status: u16, reason: &str, value: &Value, close: bool) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    response_bytes(status, reason, &[("Content-Type".into(), "application/json".into())], &body, close)
}

// ---------------------------------------------------------------------------------------------------
// AWS: service and protocol of a request, error answers

/// The SigV4 credential scope's service: `Credential=AKID/DATE/REGION/SERVICE/aws4_request` in the
/// `Authorization` header, or `X-Amz-Credential` in a presigned URL.
fn service_of(head: &Head, target: &str) -> Option<String> {
    let scope = if let Some(auth) = head.get("authorization") {
        let i = auth.find("Credential=")?;
        auth[i + "Credential=".len()..].split([',', ' ']).next()?.to_string()
    } else {
        let i = target.find("X-Amz-Credential=")?;
        let raw = target[i + "X-Amz-Credential=".len()..].split('&').next()?;
        raw.replace("%2F", "/").replace("%2f", "/")
    };
    let parts: Vec<&str> = scope.split('/').collect();
    (parts.len() >= 5).then(|| parts[3].to_ascii_lowercase()).filter(|s| !s.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// awsQuery: IAM, STS.
    Query,
    /// awsJson1_0 / awsJson1_1: CloudWatch Logs, WAFv2. The value is the content type.
    AwsJson(&'static str),
    /// restJson1: Lambda, API Gateway.
    RestJson,
}

/// The protocol, told from the request itself (so any service of the same protocol works).
fn protocol_of(head: &Head, body: &[u8]) -> Protocol {
    if head.get("x-amz-target").is_some() {
        let ct = head.get("content-type").unwrap_or_default();
        return Protocol::AwsJson(if ct.contains("x-amz-json-1.0") { "application/x-amz-json-1.0" } else { "application/x-amz-json-1.1" });
    }
    let form = head.get("content-type").is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if form && (body.starts_with(b"Action=") || find(body, b"&Action=").is_some()) {
        return Protocol::Query;
    }
    Protocol::RestJson
}

fn query_namespace(service: &str) -> Option<&'static str> {
    match service {
        "iam" => Some("https://iam.amazonaws.com/doc/2010-05-08/"),
        "sts" => Some("https://sts.amazonaws.com/doc/2011-06-15/"),
        _ => None,
    }
}

/// The answer AWS gives for a throttled (`Fault::Throttle`) or unavailable (`Fault::Error`) request.
fn fault_response(fault: Fault, protocol: Protocol, service: &str, request_id: &str, close: bool) -> Vec<u8> {
    let throttle = fault == Fault::Throttle;
    let rid = ("x-amzn-RequestId".to_string(), request_id.to_string());
    match protocol {
        Protocol::Query => {
            let (status, reason, kind, code, message) = if throttle {
                (400, "Bad Request", "Sender", "Throttling", "Rate exceeded")
            } else {
                (503, "Service Unavailable", "Receiver", "ServiceUnavailable", "Service is unavailable. Please try again later.")
            };
            let xmlns = query_namespace(service).map(|ns| format!(" xmlns=\"{ns}\"")).unwrap_or_default();
            let body = format!(
                "<ErrorResponse{xmlns}>\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{code}</Code>\n    \
                 <Message>{message}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n"
            );
            response_bytes(status, reason, &[("Content-Type".into(), "text/xml".into()), rid], body.as_bytes(), close)
        }
        Protocol::AwsJson(content_type) => {
            let (status, reason, code, message) = if throttle {
                (400, "Bad Request", "ThrottlingException", "Rate exceeded")
            } else {
                (503, "Service Unavailable", "ServiceUnavailableException", "Service Unavailable")
            };
            let body = json!({"__type": code, "message": message}).to_string();
            let headers = [("Content-Type".into(), content_type.into()), ("x-amzn-ErrorType".into(), code.into()), rid];
            response_bytes(status, reason, &headers, body.as_bytes(), close)
        }
        Protocol::RestJson => {
            let (status, reason, code, message) = if throttle {
                (429, "Too Many Requests", "TooManyRequestsException", "Too Many Requests")
            } else {
                (503, "Service Unavailable", "ServiceUnavailableException", "Service Unavailable")
            };
            let body = json!({"message": message}).to_string();
            let headers = [("Content-Type".into(), "application/json".into()), ("x-amzn-ErrorType".into(), code.into()), rid];
            response_bytes(status, reason, &headers, body.as_bytes(), close)
        }
    }
}

/// The operation a request calls: the query `Action` (IAM, STS), the `X-Amz-Target` operation
/// (CloudWatch Logs, WAFv2), or for restJson services (API Gateway, Lambda) the one told from the
/// method and path.
fn operation_of(protocol: Protocol, service: &str, method: &str, target: &str, head: &Head, body: &[u8]) -> Option<String> {
    match protocol {
        Protocol::Query => {
            let query = target.split_once('?').map(|(_, q)| q.as_bytes()).unwrap_or_default();
            body.split(|&b| b == b'&')
                .chain(query.split(|&b| b == b'&'))
                .find_map(|p| p.strip_prefix(b"Action="))
                .map(|a| String::from_utf8_lossy(a).into_owned())
        }
        Protocol::AwsJson(_) => head.get("x-amz-target").and_then(|t| t.rsplit('.').next()).map(str::to_string),
        Protocol::RestJson => rest_operation(service, method, target).map(str::to_string),
    }
}

/// The API Gateway and Lambda operations reconcile calls, told apart by method and path.
fn rest_operation(service: &str, method: &str, target: &str) -> Option<&'static str> {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = method.to_ascii_uppercase();
    let m = method.as_str();
    let op = match (service, segments.as_slice()) {
        ("apigateway", ["account"]) => match m {
            "GET" => "GetAccount",
            "PATCH" => "UpdateAccount",
            _ => return None,
        },
        ("apigateway", ["tags", ..]) => match m {
            "PUT" => "TagResource",
            "DELETE" => "UntagResource",
            "GET" => "GetTags",
            _ => return None,
        },
        ("apigateway", ["restapis", rest @ ..]) => match (m, rest) {
            ("POST", []) => "CreateRestApi",
            ("GET", []) => "GetRestApis",
            ("GET", [_]) => "GetRestApi",
            ("PATCH", [_]) => "UpdateRestApi",
            ("PUT", [_]) => "PutRestApi",
            ("DELETE", [_]) => "DeleteRestApi",
            ("GET", [_, "resources"]) => "GetResources",
            ("POST", [_, "resources", _]) => "CreateResource",
            ("GET", [_, "resources", _]) => "GetResource",
            ("PATCH", [_, "resources", _]) => "UpdateResource",
            ("DELETE", [_, "resources", _]) => "DeleteResource",
            ("PUT", [_, "resources", _, "methods", _]) => "PutMethod",
            ("GET", [_, "resources", _, "methods", _]) => "GetMethod",
            ("PATCH", [_, "resources", _, "methods", _]) => "UpdateMethod",
            ("DELETE", [_, "resources", _, "methods", _]) => "DeleteMethod",
            ("PUT", [_, "resources", _, "methods", _, "integration"]) => "PutIntegration",
            ("GET", [_, "resources", _, "methods", _, "integration"]) => "GetIntegration",
            ("PATCH", [_, "resources", _, "methods", _, "integration"]) => "UpdateIntegration",
            ("DELETE", [_, "resources", _, "methods", _, "integration"]) => "DeleteIntegration",
            ("PUT", [_, "resources", _, "methods", _, "integration", "responses", _]) => "PutIntegrationResponse",
            ("GET", [_, "resources", _, "methods", _, "integration", "responses", _]) => "GetIntegrationResponse",
            ("DELETE", [_, "resources", _, "methods", _, "integration", "responses", _]) => "DeleteIntegrationResponse",
            ("PUT", [_, "resources", _, "methods", _, "responses", _]) => "PutMethodResponse",
            ("GET", [_, "resources", _, "methods", _, "responses", _]) => "GetMethodResponse",
            ("DELETE", [_, "resources", _, "methods", _, "responses", _]) => "DeleteMethodResponse",
            ("POST", [_, "deployments"]) => "CreateDeployment",
            ("GET", [_, "deployments"]) => "GetDeployments",
            ("GET", [_, "deployments", _]) => "GetDeployment",
            ("PATCH", [_, "deployments", _]) => "UpdateDeployment",
            ("DELETE", [_, "deployments", _]) => "DeleteDeployment",
            ("POST", [_, "stages"]) => "CreateStage",
            ("GET", [_, "stages"]) => "GetStages",
            ("GET", [_, "stages", _]) => "GetStage",
            ("PATCH", [_, "stages", _]) => "UpdateStage",
            ("DELETE", [_, "stages", _]) => "DeleteStage",
            _ => return None,
        },
        ("lambda", [_, "tags", ..]) => match m {
            "POST" => "TagResource",
            "DELETE" => "UntagResource",
            "GET" => "ListTags",
            _ => return None,
        },
        ("lambda", [_, "functions", rest @ ..]) => match (m, rest) {
            ("POST", []) => "CreateFunction",
            ("GET", []) => "ListFunctions",
            ("GET", [_]) => "GetFunction",
            ("DELETE", [_]) => "DeleteFunction",
            ("GET", [_, "configuration"]) => "GetFunctionConfiguration",
            ("PUT", [_, "configuration"]) => "UpdateFunctionConfiguration",
            ("PUT", [_, "code"]) => "UpdateFunctionCode",
            ("POST", [_, "policy"]) => "AddPermission",
            ("GET", [_, "policy"]) => "GetPolicy",
            ("DELETE", [_, "policy", _]) => "RemovePermission",
            _ => return None,
        },
        _ => return None,
    };
    Some(op)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// The answer of a `fail` rule, in the request's protocol.
fn rule_response(rule: &FailRule, protocol: Protocol, service: &str, request_id: &str, close: bool) -> Vec<u8> {
    let rid = ("x-amzn-RequestId".to_string(), request_id.to_string());
    let (status, reason, message) = (rule.status, reason_phrase(rule.status), rule.message.as_str());
    match protocol {
        Protocol::Query => {
            let code = rule.code.as_deref().unwrap_or("ValidationError");
            let kind = if status < 500 { "Sender" } else { "Receiver" };
            let xmlns = query_namespace(service).map(|ns| format!(" xmlns=\"{ns}\"")).unwrap_or_default();
            let body = format!(
                "<ErrorResponse{xmlns}>\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{}</Code>\n    \
                 <Message>{}</Message>\n  </Error>\n  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n",
                xml_escape(code),
                xml_escape(message)
            );
            response_bytes(status, reason, &[("Content-Type".into(), "text/xml".into()), rid], body.as_bytes(), close)
        }
        Protocol::AwsJson(content_type) => {
            let code = rule.code.as_deref().unwrap_or("ValidationException");
            let body = json!({"__type": code, "message": message}).to_string();
            let headers = [("Content-Type".into(), content_type.into()), ("x-amzn-ErrorType".into(), code.into()), rid];
            response_bytes(status, reason, &headers, body.as_bytes(), close)
        }
        Protocol::RestJson => {
            let code = rule.code.as_deref().unwrap_or("BadRequestException");
            let body = json!({"message": message}).to_string();
            let headers = [("Content-Type".into(), "application/json".into()), ("x-amzn-ErrorType".into(), code.into()), rid];
            response_bytes(status, reason, &headers, body.as_bytes(), close)
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

// ---------------------------------------------------------------------------------------------------
// Proxying

/// Control endpoints: (status, reason, JSON).
fn control(shared: &Shared, method: &str, path: &str, body: &[u8]) -> (u16, &'static str, Value) {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path.trim_end_matches('/')) {
        ("GET", "/__faultproxy/stats") => (200, "OK", shared.stats_json()),
        ("GET", "/__faultproxy/config") => (200, "OK", shared.config().to_json()),
        ("POST" | "PUT", "/__faultproxy/config") => {
            let patch: Value = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return (400, "Bad Request", json!({"error": format!("invalid JSON: {e}")})),
                }
            };
            let mut cfg = shared.config.lock().unwrap_or_else(|e| e.into_inner());
            match cfg.patched(&patch) {
                Ok(new) => {
                    if new.seed != cfg.seed {
                        shared.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    }
                    if patch.get("fail").is_some() {
                        let mut counts = shared.fail_counts.lock().unwrap_or_else(|e| e.into_inner());
                        *counts = vec![(0, 0); new.fail.len()];
                    }
                    tracing::info!(config = %new.to_json(), "configuration changed");
                    *cfg = new;
                    (200, "OK", cfg.to_json())
                }
                Err(e) => (400, "Bad Request", json!({"error": e})),
            }
        }
        (_, "/__faultproxy/stats" | "/__faultproxy/config") => (405, "Method Not Allowed", json!({"error": "method not allowed"})),
        _ => (404, "Not Found", json!({"error": "unknown faultproxy endpoint; use /__faultproxy/stats or /__faultproxy/config"})),
    }
}

/// Why an exchange with the upstream failed.
enum UpstreamError {
    /// The connection was closed before any byte of an answer: a reused connection the upstream
    /// had already closed; safe to retry once on a fresh connection.
    Stale(io::Error),
    Other(io::Error),
}

/// The upstream's answer, re-framed with Content-Length.
struct Answer {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// No body allowed (HEAD, 204, 304): headers are passed as they are.
    bodiless: bool,
}

/// Sends one request on `conn` and reads the answer; the bool says whether the upstream closes.
async fn exchange(conn: &mut Conn, request: &[u8], method: &str) -> Result<(Answer, bool), UpstreamError> {
    let stale = |e: io::Error| {
        if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
        ) {
            UpstreamError::Stale(e)
        } else {
            UpstreamError::Other(e)
        }
    };
    conn.write(request).await.map_err(stale)?;
    let head = loop {
        let raw = match conn.read_head().await {
            Ok(Some(raw)) => raw,
            Ok(None) => return Err(UpstreamError::Stale(io::ErrorKind::UnexpectedEof.into())),
            Err(e) if conn.buf.is_empty() => return Err(stale(e)),
            Err(e) => return Err(UpstreamError::Other(e)),
        };
        let head = Head::parse(&raw).map_err(UpstreamError::Other)?;
        let status: u16 = head.first[1].parse().map_err(|_| UpstreamError::Other(invalid(format!("bad status {:?}", head.first[1]))))?;
        if (100..200).contains(&status) && status != 101 {
            continue; // interim answer
        }
        break head;
    };
    let other = UpstreamError::Other;
    let status: u16 = head.first[1].parse().unwrap_or(502);
    let mut close = head.has_token("connection", "close") || (head.first[0] == "HTTP/1.0" && !head.has_token("connection", "keep-alive"));
    let bodiless = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || status == 101;
    let body = if bodiless {
        Vec::new()
    } else if head.chunked() {
        conn.read_chunked().await.map_err(other)?
    } else if let Some(n) = head.content_length().map_err(other)? {
        conn.read_n(n).await.map_err(other)?
    } else {
        close = true; // delimited by the end of the connection
        conn.read_to_end().await.map_err(other)?
    };
    let headers = if bodiless {
        head.headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("connection") && !n.eq_ignore_ascii_case("keep-alive"))
            .cloned()
            .collect()
    } else {
        head.headers.iter().filter(|(n, _)| !is_hop_by_hop(n) && !n.eq_ignore_ascii_case("content-length")).cloned().collect()
    };
    let [_, _, reason] = head.first;
    Ok((Answer { status, reason, headers, body, bodiless }, close))
}

/// Forwards one request over the connection's upstream connection (opened on first use, reopened
/// after the upstream closed it).
async fn forward(upstream: SocketAddr, up: &mut Option<Conn>, method: &str, target: &str, head: &Head, body: &[u8]) -> io::Result<Answer> {
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    for (n, v) in head
        .headers
        .iter()
        .filter(|(n, _)| !is_hop_by_hop(n) && !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("expect"))
    {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || head.content_length()?.is_some() || head.chunked() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);

    for attempt in 0..2 {
        let reused = up.is_some();
        if up.is_none() {
            *up = Some(Conn::new(TcpStream::connect(upstream).await?));
        }
        let conn = up.as_mut().expect("connected above");
        match exchange(conn, &bytes, method).await {
            Ok((answer, close)) => {
                if close {
                    *up = None;
                }
                return Ok(answer);
            }
            Err(UpstreamError::Stale(e)) if reused && attempt == 0 => {
                tracing::debug!(error = %e, "upstream connection was closed; reconnecting");
                *up = None;
            }
            Err(UpstreamError::Stale(e) | UpstreamError::Other(e)) => {
                *up = None;
                return Err(e);
            }
        }
    }
    unreachable!("the second attempt always returns")
}

/// `METHOD TARGET` plus the operation of an RPC-style request (`X-Amz-Target`, or `Action=` of a form
/// body), for log lines.
fn describe(method: &str, target: &str, head: &Head, body: &[u8]) -> String {
    if let Some(t) = head.get("x-amz-target") {
        return format!("{method} {target} {t}");
    }
    let action = body
        .split(|&b| b == b'&')
        .find_map(|p| p.strip_prefix(b"Action="))
        .filter(|a| a.len() <= 64)
        .map(|a| String::from_utf8_lossy(a).into_owned());
    match action {
        Some(a) => format!("{method} {target} Action={a}"),
        None => format!("{method} {target}"),
    }
}

/// `fail` rules apply to every AWS request (whatever `--only` says), never to `/moto-api`.
fn eligible_for_rules(service: &str, cfg: &Config) -> bool {
    service != "moto-api" && !cfg.fail.is_empty()
}

/// Serves one downstream connection until it closes.
async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let mut down = Conn::new(stream);
    let mut up: Option<Conn> = None;
    loop {
        let raw = match down.read_head().await {
            Ok(Some(raw)) => raw,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "downstream connection ended");
                return;
            }
        };
        let head = match Head::parse(&raw) {
            Ok(h) => h,
            Err(e) => {
                let _ = down.write(&json_response(400, "Bad Request", &json!({"error": e.to_string()}), true)).await;
                return;
            }
        };
        let [method, raw_target, version] = [&head.first[0], &head.first[1], &head.first[2]];
        let method = method.clone();
        // Absolute form (a client using us as an HTTP proxy) becomes origin form.
        let target = match raw_target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string()),
            None => raw_target.clone(),
        };
        let keep_alive =
            if version == "HTTP/1.0" { head.has_token("connection", "keep-alive") } else { !head.has_token("connection", "close") };
        let close = !keep_alive;

        if head.has_token("expect", "100-continue") && down.write(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
            return;
        }
        let body = if head.chunked() {
            down.read_chunked().await
        } else {
            match head.content_length() {
                Ok(Some(n)) => down.read_n(n).await,
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "could not read the request body");
                let _ = down.write(&json_response(400, "Bad Request", &json!({"error": e.to_string()}), true)).await;
                return;
            }
        };

        if target.starts_with(CONTROL_PREFIX) {
            let (status, reason, value) = control(&shared, &method, &target, &body);
            if down.write(&json_response(status, reason, &value, close)).await.is_err() || close {
                return;
            }
            continue;
        }

        let service = if target.starts_with("/moto-api/") || target == "/moto-api" {
            "moto-api".to_string()
        } else {
            service_of(&head, &target).unwrap_or_else(|| "unknown".to_string())
        };
        shared.stats().bump(&service, |c| c.requests += 1);

        let cfg = shared.config();
        // Checked on arrival, so the added latency does not change the spacing the client kept.
        let over_limit = shared.over_apigw_limit(&cfg, &service, &method, &target);
        let eligible = service != "moto-api" && cfg.applies_to(&service);
        let (delay, fault, mut rng, key) = if eligible {
            let amz_target = head.get("x-amz-target").unwrap_or_default();
            let fp = fingerprint(&service, &method, amz_target, &target, &body);
            tracing::trace!(fp = %format!("{fp:016x}"), %method, %target, amz_target, body = %String::from_utf8_lossy(&body[..body.len().min(400)]), "request");
            let (delay, fault, rng, n) = shared.decide(&cfg, fp);
            (delay, fault, rng, format!("{fp:016x}#{n}"))
        } else {
            (Duration::ZERO, Fault::Forward, Rng::new(0), String::new())
        };
        if !delay.is_zero() {
            shared.stats().added_latency_ms += u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            tokio::time::sleep(delay).await;
        }
        let what = describe(&method, &target, &head, &body);
        if let Some(limit) = over_limit {
            {
                let mut stats = shared.stats();
                stats.bump(&service, |c| c.limited += 1);
                *stats.apigw_limited.entry(limit).or_default() += 1;
            }
            tracing::info!(%service, limit, request = %what, "API Gateway limit exceeded: answering 429");
            let bytes = fault_response(Fault::Throttle, protocol_of(&head, &body), &service, &rng.request_id(), close);
            if down.write(&bytes).await.is_err() || close {
                return;
            }
            continue;
        }
        if eligible_for_rules(&service, &cfg) {
            let protocol = protocol_of(&head, &body);
            let operation = operation_of(protocol, &service, &method, &target, &head, &body);
            if let Some(rule) = shared.failing_rule(&cfg, &service, operation.as_deref()) {
                shared.stats().bump(&service, |c| c.failed += 1);
                tracing::info!(%service, operation = %rule.operation, status = rule.status, request = %what, "fault: failing this call of the operation");
                let bytes = rule_response(&rule, protocol, &service, &rng.request_id(), close);
                if down.write(&bytes).await.is_err() || close {
                    return;
                }
                continue;
            }
        }
        let bytes = match fault {
            Fault::Drop => {
                shared.stats().bump(&service, |c| c.dropped += 1);
                tracing::info!(%service, request = %what, %key, "fault: dropping the connection");
                return; // dropping `down` and `up` closes both connections
            }
            Fault::Throttle | Fault::Error => {
                let protocol = protocol_of(&head, &body);
                if fault == Fault::Throttle {
                    shared.stats().bump(&service, |c| c.throttled += 1);
                } else {
                    shared.stats().bump(&service, |c| c.errored += 1);
                }
                tracing::info!(%service, ?protocol, ?fault, request = %what, %key, "fault: answering an error");
                fault_response(fault, protocol, &service, &rng.request_id(), close)
            }
            Fault::Forward => match forward(shared.upstream, &mut up, &method, &target, &head, &body).await {
                Ok(a) => {
                    shared.stats().bump(&service, |c| c.forwarded += 1);
                    tracing::debug!(%service, request = %what, %key, status = a.status, "forwarded");
                    if a.bodiless {
                        let mut out = format!("HTTP/1.1 {} {}\r\n", a.status, a.reason);
                        for (n, v) in &a.headers {
                            out.push_str(&format!("{n}: {v}\r\n"));
                        }
                        if close {
                            out.push_str("Connection: close\r\n");
                        }
                        out.push_str("\r\n");
                        out.into_bytes()
                    } else {
                        response_bytes(a.status, &a.reason, &a.headers, &a.body, close)
                    }
                }
                Err(e) => {
                    shared.stats().bump(&service, |c| c.upstream_errors += 1);
                    tracing::warn!(%service, request = %what, error = %e, "upstream failed");
                    let msg = json!({"message": format!("faultproxy: upstream {} failed: {e}", shared.upstream)});
                    json_response(502, "Bad Gateway", &msg, close)
                }
            },
        };
        if down.write(&bytes).await.is_err() || close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Start-up

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
        match args.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
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

    let shared = Arc::new(Shared {
        upstream,
        config: Mutex::new(config),
        stats: Mutex::new(Stats::default()),
        limits: Mutex::new(ApigwLimits::new(Instant::now())),
        seen: Mutex::new(HashMap::new()),
        fail_counts: Mutex::new(Vec::new()),
    });
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
                    tokio::spawn(serve(Arc::clone(&shared), stream, peer));
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

    fn head(raw: &str) -> Head {
        Head::parse(raw.as_bytes()).unwrap()
    }

    #[test]
    fn service_comes_from_the_credential_scope() {
        let h = head(
            "POST / HTTP/1.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/iam/aws4_request, \
             SignedHeaders=host, Signature=abc\r\n\r\n",
        );
        assert_eq!(service_of(&h, "/").as_deref(), Some("iam"));
        let h = head("GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(
            service_of(&h, "/x?X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Flambda%2Faws4_request&a=b").as_deref(),
            Some("lambda")
        );
        assert_eq!(service_of(&h, "/x"), None);
    }

    #[test]
    fn protocol_comes_from_the_request_shape() {
        let q = head("POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\r\n");
        assert_eq!(protocol_of(&q, b"Action=GetRole&Version=2010-05-08"), Protocol::Query);
        let j = head("POST / HTTP/1.1\r\nX-Amz-Target: Logs_20140328.CreateLogGroup\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n");
        assert_eq!(protocol_of(&j, b"{}"), Protocol::AwsJson("application/x-amz-json-1.1"));
        let r = head("GET /2015-03-31/functions/f HTTP/1.1\r\n\r\n");
        assert_eq!(protocol_of(&r, b""), Protocol::RestJson);
    }

    #[test]
    fn rates_are_validated_and_patched() {
        let c = Config {
            latency_ms: 0,
            jitter_ms: 0,
            throttle_rate: 0.0,
            error_rate: 0.0,
            drop_rate: 0.0,
            seed: 1,
            only: vec![],
            apigw_limits: false,
            fail: Vec::new(),
        };
        let p = c.patched(&json!({"throttle-rate": 0.5, "only": "IAM, logs"})).unwrap();
        assert_eq!(p.throttle_rate, 0.5);
        assert_eq!(p.only, ["iam", "logs"]);
        assert!(c.patched(&json!({"throttle_rate": 0.7, "error_rate": 0.4})).is_err());
        assert!(c.patched(&json!({"nope": 1})).is_err());
        assert!(c.patched(&json!({"only": null})).unwrap().only.is_empty());
        assert!(c.patched(&json!({"apigw-limits": true})).unwrap().apigw_limits);
        assert!(c.patched(&json!({"apigw_limits": "yes"})).is_err());
    }

    #[test]
    fn decisions_are_deterministic_and_follow_the_rates() {
        let cfg = Config {
            latency_ms: 100,
            jitter_ms: 20,
            throttle_rate: 0.3,
            error_rate: 0.1,
            drop_rate: 0.0,
            seed: 7,
            only: vec![],
            apigw_limits: false,
            fail: Vec::new(),
        };
        let new = || Shared {
            upstream: "127.0.0.1:1".parse().unwrap(),
            config: Mutex::new(cfg.clone()),
            stats: Mutex::new(Stats::default()),
            limits: Mutex::new(ApigwLimits::new(Instant::now())),
            seen: Mutex::new(HashMap::new()),
            fail_counts: Mutex::new(Vec::new()),
        };
        let (a, b) = (new(), new());
        let mut counts = [0u32; 4];
        for i in 0..10_000u64 {
            let (da, fa, _, _) = a.decide(&cfg, i % 100);
            let (db, fb, _, _) = b.decide(&cfg, i % 100);
            assert_eq!((da, fa), (db, fb));
            assert!((80..=120).contains(&da.as_millis()));
            counts[fa as usize] += 1;
        }
        // Forward ≈ 6000, Throttle ≈ 3000, Error ≈ 1000, Drop = 0.
        assert!((5600..6400).contains(&counts[0]), "{counts:?}");
        assert!((2600..3400).contains(&counts[1]), "{counts:?}");
        assert!((800..1200).contains(&counts[2]), "{counts:?}");
        assert_eq!(counts[3], 0);
    }

    #[test]
    fn fingerprints_ignore_generated_ids_and_map_order() {
        let fp = |method: &str, target: &str, body: &str| fingerprint("apigateway", method, "", target, body.as_bytes());
        let put = "/restapis/ohhz0pjtis/resources/s63v5yumxd/methods/GET";
        assert_eq!(fp("PUT", put, ""), fp("PUT", "/restapis/1a7cipcddm/resources/pjkxqlqagt/methods/GET", ""));
        assert_ne!(fp("PUT", put, ""), fp("PUT", &put.replace("GET", "POST"), ""));
        assert_ne!(fp("PUT", put, ""), fp("DELETE", put, ""));
        assert_eq!(
            fp("POST", "/", r#"{"Id":"4528c4ba-b0ab-40c6","LockToken":"da69645c-adfa-4976"}"#),
            fp("POST", "/", r#"{"LockToken":"d869645c-bbfa-4976","Id":"4528c4ba-b0ab-40c7"}"#)
        );
        assert_eq!(
            fp("POST", "/restapis", r#"{"name":"A","tags":{"x":"1","y":"2"}}"#),
            fp("POST", "/restapis", r#"{"tags":{"y":"2","x":"1"},"name":"A"}"#)
        );
        assert_ne!(fp("POST", "/restapis", r#"{"name":"A"}"#), fp("POST", "/restapis", r#"{"name":"B"}"#));
        assert_eq!(fp("GET", "/x?b=2&a=1", ""), fp("GET", "/x?a=1&b=2", ""));
        let form = |b: &str| fingerprint("iam", "POST", "", "/", b.as_bytes());
        assert_ne!(form("Action=GetRole&RoleName=a"), form("Action=GetRole&RoleName=b"));
        assert_eq!(
            form("Action=TagRole&Tags.member.1.Key=k&Tags.member.2.Key=j"),
            form("Action=TagRole&Tags.member.1.Key=j&Tags.member.2.Key=k")
        );
        assert_ne!(Fnv::new().part(b"ab").part(b"c").0, Fnv::new().part(b"a").part(b"bc").0);
    }

    #[test]
    fn upstream_must_be_loopback() {
        assert_eq!(parse_upstream("http://127.0.0.1:5000").unwrap(), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(parse_upstream("http://localhost:5000/").unwrap(), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(parse_upstream("http://[::1]:5000").unwrap(), "[::1]:5000".parse().unwrap());
        assert!(parse_upstream("http://10.0.0.1:5000").is_err());
        assert!(parse_upstream("https://127.0.0.1:5000").is_err());
        assert!(parse_upstream("http://example.com").is_err());
    }

    #[test]
    fn throttling_answers_have_the_protocol_shape() {
        let q = String::from_utf8(fault_response(Fault::Throttle, Protocol::Query, "iam", "rid", false)).unwrap();
        assert!(q.starts_with("HTTP/1.1 400 "), "{q}");
        assert!(q.contains("<Code>Throttling</Code>") && q.contains("<Type>Sender</Type>") && q.contains("<RequestId>rid</RequestId>"));
        let j = String::from_utf8(fault_response(Fault::Throttle, Protocol::AwsJson("application/x-amz-json-1.1"), "logs", "rid", false))
            .unwrap();
        assert!(
            j.starts_with("HTTP/1.1 400 ")
                && j.contains("x-amzn-ErrorType: ThrottlingException")
                && j.contains(r#""__type":"ThrottlingException""#)
        );
        let r = String::from_utf8(fault_response(Fault::Throttle, Protocol::RestJson, "lambda", "rid", true)).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 429 ") && r.contains("x-amzn-ErrorType: TooManyRequestsException") && r.contains("Connection: close")
        );
        let e = String::from_utf8(fault_response(Fault::Error, Protocol::RestJson, "apigateway", "rid", false)).unwrap();
        assert!(e.starts_with("HTTP/1.1 503 "));
    }

    #[test]
    fn operations_are_named_for_every_protocol() {
        let q = head("POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n");
        let body = b"Action=PutRolePolicy&Version=2010-05-08&RoleName=r";
        assert_eq!(operation_of(protocol_of(&q, body), "iam", "POST", "/", &q, body).as_deref(), Some("PutRolePolicy"));
        let j =
            head("POST / HTTP/1.1\r\nX-Amz-Target: Logs_20140328.PutRetentionPolicy\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n");
        assert_eq!(operation_of(protocol_of(&j, b"{}"), "logs", "POST", "/", &j, b"{}").as_deref(), Some("PutRetentionPolicy"));
        let w = head("POST / HTTP/1.1\r\nX-Amz-Target: AWSWAF_20190729.CreateWebACL\r\nContent-Type: application/x-amz-json-1.1\r\n\r\n");
        assert_eq!(operation_of(protocol_of(&w, b"{}"), "wafv2", "POST", "/", &w, b"{}").as_deref(), Some("CreateWebACL"));
        let r = head("PATCH /restapis/a1b2/stages/prod HTTP/1.1\r\nContent-Type: application/json\r\n\r\n");
        assert_eq!(
            operation_of(protocol_of(&r, b"{}"), "apigateway", "PATCH", "/restapis/a1b2/stages/prod", &r, b"{}").as_deref(),
            Some("UpdateStage")
        );
        let cases = [
            ("apigateway", "POST", "/restapis", "CreateRestApi"),
            ("apigateway", "POST", "/restapis/a1/stages", "CreateStage"),
            ("apigateway", "GET", "/restapis/a1/stages/prod", "GetStage"),
            ("apigateway", "DELETE", "/restapis/a1/stages/prod", "DeleteStage"),
            ("apigateway", "POST", "/restapis/a1/deployments", "CreateDeployment"),
            ("apigateway", "PUT", "/restapis/a1/resources/r1/methods/GET/integration", "PutIntegration"),
            ("apigateway", "PUT", "/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Frestapis%2Fa1", "TagResource"),
            ("apigateway", "DELETE", "/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Frestapis%2Fa1?tagKeys=x", "UntagResource"),
            ("apigateway", "PATCH", "/account", "UpdateAccount"),
            ("lambda", "POST", "/2015-03-31/functions", "CreateFunction"),
            ("lambda", "GET", "/2015-03-31/functions/HelloLambdaTest", "GetFunction"),
            ("lambda", "PUT", "/2015-03-31/functions/HelloLambdaTest/configuration", "UpdateFunctionConfiguration"),
            ("lambda", "PUT", "/2015-03-31/functions/HelloLambdaTest/code", "UpdateFunctionCode"),
            ("lambda", "POST", "/2015-03-31/functions/HelloLambdaTest/policy", "AddPermission"),
            ("lambda", "DELETE", "/2015-03-31/functions/HelloLambdaTest/policy/sid", "RemovePermission"),
            ("lambda", "POST", "/2017-03-31/tags/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af", "TagResource"),
        ];
        for (service, method, path, want) in cases {
            assert_eq!(rest_operation(service, method, path), Some(want), "{method} {path}");
        }
        assert_eq!(rest_operation("apigateway", "POST", "/restapis/a1/stages/prod"), None);
        assert_eq!(rest_operation("lambda", "PATCH", "/restapis/a1/stages/prod"), None, "the service decides the table");
    }

    #[test]
    fn fail_rules_fail_the_nth_calls_of_their_operation_only() {
        let c = Config {
            latency_ms: 0,
            jitter_ms: 0,
            throttle_rate: 0.0,
            error_rate: 0.0,
            drop_rate: 0.0,
            seed: 1,
            only: vec![],
            apigw_limits: false,
            fail: Vec::new(),
        };
        let cfg = c.patched(&json!({"fail": [{"operation": "UpdateStage", "service": "apigateway", "nth": 2, "times": 2}]})).unwrap();
        assert_eq!(cfg.fail[0].status, 400);
        let shared = Shared {
            upstream: "127.0.0.1:1".parse().unwrap(),
            config: Mutex::new(cfg.clone()),
            stats: Mutex::new(Stats::default()),
            limits: Mutex::new(ApigwLimits::new(Instant::now())),
            seen: Mutex::new(HashMap::new()),
            fail_counts: Mutex::new(Vec::new()),
        };
        let calls: Vec<bool> = (0..5).map(|_| shared.failing_rule(&cfg, "apigateway", Some("UpdateStage")).is_some()).collect();
        assert_eq!(calls, [false, true, true, false, false]);
        assert!(shared.failing_rule(&cfg, "apigateway", Some("GetStage")).is_none());
        assert!(shared.failing_rule(&cfg, "lambda", Some("UpdateStage")).is_none());
        assert!(shared.failing_rule(&cfg, "apigateway", None).is_none());
        assert_eq!(shared.stats_json()["failed_by_rule"], json!([2]));

        for bad in [
            json!({"fail": [{"nth": 1}]}),
            json!({"fail": [{"operation": "X", "nth": 0}]}),
            json!({"fail": [{"operation": "X", "status": 200}]}),
            json!({"fail": [{"operation": "X", "bogus": 1}]}),
            json!({"fail": {"operation": "X"}}),
        ] {
            assert!(c.patched(&bad).is_err(), "{bad}");
        }
        assert!(cfg.patched(&json!({"fail": null})).unwrap().fail.is_empty());
    }

    #[test]
    fn fail_rule_answers_have_the_protocol_shape() {
        let rule = |code: Option<&str>| FailRule {
            service: None,
            operation: "X".into(),
            nth: 1,
            times: 1,
            status: 400,
            code: code.map(str::to_string),
            message: "no <way>".into(),
        };
        let q = String::from_utf8(rule_response(&rule(Some("MalformedPolicyDocument")), Protocol::Query, "iam", "rid", false)).unwrap();
        assert!(
            q.starts_with("HTTP/1.1 400 Bad Request") && q.contains("<Code>MalformedPolicyDocument</Code>") && q.contains("no &lt;way&gt;"),
            "{q}"
        );
        let j =
            String::from_utf8(rule_response(&rule(None), Protocol::AwsJson("application/x-amz-json-1.1"), "logs", "rid", false)).unwrap();
        assert!(j.contains("x-amzn-ErrorType: ValidationException") && j.contains(r#""__type":"ValidationException""#), "{j}");
        let r = String::from_utf8(rule_response(&rule(None), Protocol::RestJson, "apigateway", "rid", false)).unwrap();
        assert!(r.contains("x-amzn-ErrorType: BadRequestException") && r.contains(r#""message":"no <way>""#), "{r}");
    }

    #[test]
    fn apigw_operations_are_told_apart() {
        assert_eq!(apigw_operation("POST", "/restapis"), Some("CreateRestApi"));
        assert_eq!(apigw_operation("POST", "/restapis/"), Some("CreateRestApi"));
        assert_eq!(apigw_operation("DELETE", "/restapis/abc123"), Some("DeleteRestApi"));
        assert_eq!(apigw_operation("POST", "/restapis/abc123/deployments?x=1"), Some("CreateDeployment"));
        assert_eq!(apigw_operation("GET", "/restapis"), None);
        assert_eq!(apigw_operation("GET", "/restapis/abc123/deployments"), None);
        assert_eq!(apigw_operation("DELETE", "/restapis/abc123/stages/prod"), None);
    }

    #[test]
    fn apigw_limits_allow_the_burst_then_ten_per_second() {
        let t0 = Instant::now();
        let mut l = ApigwLimits::new(t0);
        for i in 0..40 {
            assert_eq!(l.admit(None, t0), Ok(()), "call {i} of the burst");
        }
        assert_eq!(l.admit(None, t0), Err("rate"));
        // A refused request takes nothing; 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.admit(None, t1), Ok(()));
        assert_eq!(l.admit(None, t1), Err("rate"));
        // After a long pause the bucket holds the burst again, not more.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..50).filter(|_| l.admit(None, t2).is_ok()).count(), 40);
    }

    #[test]
    fn apigw_limits_space_the_limited_operations() {
        let t0 = Instant::now();
        let mut l = ApigwLimits::new(t0);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(l.admit(Some("CreateDeployment"), at(0)), Ok(()));
        assert_eq!(l.admit(Some("CreateDeployment"), at(4990)), Err("CreateDeployment"));
        assert_eq!(l.admit(Some("CreateRestApi"), at(4990)), Ok(()), "each operation has its own bucket");
        assert_eq!(l.admit(None, at(4990)), Ok(()));
        assert_eq!(l.admit(Some("CreateDeployment"), at(5000)), Ok(()));
        assert_eq!(l.admit(Some("CreateRestApi"), at(7000)), Err("CreateRestApi"));
        assert_eq!(l.admit(Some("CreateRestApi"), at(7990)), Ok(()));
        assert_eq!(l.admit(Some("DeleteRestApi"), at(8000)), Ok(()));
        assert_eq!(l.admit(Some("DeleteRestApi"), at(37_000)), Err("DeleteRestApi"));
        assert_eq!(l.admit(Some("DeleteRestApi"), at(38_000)), Ok(()));
        // The account bucket is checked first: when it is empty even a spaced operation is refused.
        let mut l = ApigwLimits::new(t0);
        for _ in 0..40 {
            l.admit(None, t0).unwrap();
        }
        assert_eq!(l.admit(Some("CreateRestApi"), t0), Err("rate"));
        assert_eq!(l.admit(Some("CreateRestApi"), at(100)), Ok(()));
    }
}
