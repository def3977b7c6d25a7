//! What happens to each request: the deterministic fault decisions (request fingerprints, the seeded
//! PRNG), the per-operation `fail` rules' counts, and the statistics, in the state every connection
//! shares.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::apigw::{ApigwLimits, apigw_operation};
use crate::config::{Config, FailRule, HoldRule};

#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub requests: u64,
    pub forwarded: u64,
    pub throttled: u64,
    pub errored: u64,
    pub dropped: u64,
    /// Answered 429 by `--apigw-limits`.
    pub limited: u64,
    /// Answered by a `fail` rule.
    pub failed: u64,
    /// Forwarded by a `hold` rule, the answer never sent.
    pub held: u64,
    pub upstream_errors: u64,
}

impl Counters {
    pub fn to_json(self) -> Value {
        json!({
            "requests": self.requests,
            "forwarded": self.forwarded,
            "throttled": self.throttled,
            "errored": self.errored,
            "dropped": self.dropped,
            "limited": self.limited,
            "failed": self.failed,
            "held": self.held,
            "upstream_errors": self.upstream_errors,
        })
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    pub total: Counters,
    pub by_service: BTreeMap<String, Counters>,
    pub connections: u64,
    pub added_latency_ms: u64,
    /// `--apigw-limits` answers by the limit hit (`rate` or the operation).
    pub apigw_limited: BTreeMap<&'static str, u64>,
    /// Requests by `<service>:<operation>` (those whose operation the proxy can tell).
    pub by_operation: BTreeMap<String, u64>,
}

impl Stats {
    pub fn bump(&mut self, service: &str, f: impl Fn(&mut Counters)) {
        f(&mut self.total);
        f(self.by_service.entry(service.to_string()).or_default());
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Forward,
    Throttle,
    Error,
    Drop,
}

/// xorshift64* seeded through splitmix64 (so any seed, 0 included, gives a good state).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n] (n inclusive).
    pub fn upto(&mut self, n: u64) -> u64 {
        if n == u64::MAX { self.next_u64() } else { self.next_u64() % (n + 1) }
    }

    pub fn request_id(&mut self) -> String {
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
pub fn fingerprint(service: &str, method: &str, amz_target: &str, target: &str, body: &[u8]) -> u64 {
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

pub struct Shared {
    pub upstream: SocketAddr,
    pub config: Mutex<Config>,
    pub stats: Mutex<Stats>,
    pub limits: Mutex<ApigwLimits>,
    /// How many times each request fingerprint was seen (reset when the seed changes).
    pub seen: Mutex<HashMap<u64, u64>>,
    /// Per `fail` rule: (matching calls seen, calls failed); reset when the rules are set.
    pub fail_counts: Mutex<Vec<(u64, u64)>>,
    /// Per `hold` rule: matching calls seen; reset when the rules are set.
    pub hold_counts: Mutex<Vec<u64>>,
}

impl Shared {
    pub fn new(upstream: SocketAddr, config: Config) -> Shared {
        Shared {
            upstream,
            config: Mutex::new(config),
            stats: Mutex::new(Stats::default()),
            limits: Mutex::new(ApigwLimits::new(Instant::now())),
            seen: Mutex::new(HashMap::new()),
            fail_counts: Mutex::new(Vec::new()),
            hold_counts: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `--apigw-limits`: the limit an API Gateway request arriving now is over, if any.
    pub fn over_apigw_limit(&self, cfg: &Config, service: &str, method: &str, target: &str) -> Option<&'static str> {
        if !cfg.apigw_limits || service != "apigateway" {
            return None;
        }
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        limits.admit(apigw_operation(method, target), Instant::now()).err()
    }

    /// The `fail` rule that fails this call of `operation`, if any (every matching rule counts the call).
    pub fn failing_rule(&self, cfg: &Config, service: &str, operation: Option<&str>) -> Option<FailRule> {
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

    /// The `hold` rule that holds this call of `operation`'s answer, if any (every matching rule counts the call).
    pub fn holding_rule(&self, cfg: &Config, service: &str, operation: Option<&str>) -> Option<HoldRule> {
        let operation = operation?;
        let mut counts = self.hold_counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.resize(cfg.hold.len(), 0);
        let mut hit = None;
        for (rule, seen) in cfg.hold.iter().zip(counts.iter_mut()) {
            if rule.matches(service, operation) {
                *seen += 1;
                if hit.is_none() && rule.holds_call(*seen) {
                    hit = Some(rule.clone());
                }
            }
        }
        hit
    }

    pub fn stats_json(&self) -> Value {
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
        out.insert("by_operation".into(), json!(s.by_operation));
        let counts = self.fail_counts.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(_, failed)| *failed).collect::<Vec<_>>();
        out.insert("failed_by_rule".into(), json!(counts));
        out.insert("config".into(), config);
        Value::Object(out)
    }

    /// The delay and fault for a request with fingerprint `fp`.
    pub fn decide(&self, cfg: &Config, fp: u64) -> (Duration, Fault, Rng, u64) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            hold: Vec::new(),
        };
        let new = || Shared {
            upstream: "127.0.0.1:1".parse().unwrap(),
            config: Mutex::new(cfg.clone()),
            stats: Mutex::new(Stats::default()),
            limits: Mutex::new(ApigwLimits::new(Instant::now())),
            seen: Mutex::new(HashMap::new()),
            fail_counts: Mutex::new(Vec::new()),
            hold_counts: Mutex::new(Vec::new()),
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
            hold: Vec::new(),
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
            hold_counts: Mutex::new(Vec::new()),
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
    fn a_rule_message_can_quote_the_requests_lambda_environment() {
        let rule = FailRule::parse(&json!({"operation": "CreateFunction", "message": "too big: {environment}"})).unwrap();
        let body = br#"{"FunctionName":"f","Environment":{"Variables":{"A":"x\"y"}}}"#;
        assert_eq!(rule.answering(body).message, r#"too big: {"A":"x\"y"}"#);
        assert_eq!(rule.answering(b"{}").message, "too big: {}");
        let plain = FailRule::parse(&json!({"operation": "CreateFunction", "message": "no placeholder"})).unwrap();
        assert_eq!(plain.answering(body), plain);
    }
}
