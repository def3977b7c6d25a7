//! The rate-limit probe: N GETs over C connections to the stage a web ACL protects, to see its
//! rate-based rule turn answers into 403, and where.
//!
//! How AWS WAF evaluates a rate-based rule (AWS WAF Developer Guide, "Rate-based rule high-level
//! settings" and "Rate-based rule caveats",
//! <https://docs.aws.amazon.com/waf/latest/developerguide/waf-rule-statement-type-rate-based-high-level-settings.html>,
//! <https://docs.aws.amazon.com/waf/latest/developerguide/waf-rule-statement-type-rate-based-caveats.html>):
//! each time it checks, it counts the requests (per IP for the `IP` key) in the evaluation window
//! looking back from now (60, 120, 300 or 600 s; 300 by default), and applies the rule's action to
//! further requests once that count is over the limit. It checks "frequently", estimates the rate
//! giving more weight to recent requests, "does not guarantee an exact limit match", and because of
//! that and propagation delays requests can come in too fast "for up to several minutes before AWS
//! WAF detects and rate limits them … Usually, this delay is below 30 seconds."
//!
//! So the probe judges the request count at which 403s began against a range, not a number:
//! from `limit × (1 − tolerance)` to `limit × (1 + tolerance) + rate × block delay` (the requests
//! sent while WAF catches up at the probe's own rate; `--block-delay`, 30 s by default as the caveat
//! says). It must also be able to cross the limit at all: with C connections and a handler that
//! takes 2 s, at most C / 2 s requests per second are sent, so fewer than `limit` may ever fall in
//! one window. The probe measures its latency early, stops when the limit cannot be reached in a
//! window (or within the time limit) and says what would reach it. It stops too once blocking is
//! confirmed (a run of 403s), so the cost stays near the limit plus the detection delay.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use super::http::{FailureKind, HttpClient};
use super::{Latency, Outcome, Progress, RateRule, ms_text, round1};

/// At most this many requests (the flag's upper bound).
pub const MAX_REQUESTS: u64 = 100_000;

#[derive(Debug, Clone)]
pub struct Settings {
    pub requests: u64,
    pub connections: u32,
    /// As a fraction (0.1 = 10 %).
    pub tolerance: f64,
    /// How long WAF may take to start blocking once the limit is crossed.
    pub block_delay: Duration,
    /// Per request.
    pub timeout: Duration,
    /// For the whole probe.
    pub time_limit: Duration,
}

/// Rounding that ignores floating-point noise (`100 × 1.1` is 110, not 111).
fn up(x: f64) -> u64 {
    (x - 1e-6).ceil().max(0.0) as u64
}

fn down(x: f64) -> u64 {
    (x + 1e-6).floor().max(0.0) as u64
}

impl Settings {
    /// The fewest requests that can show a block: past the limit and its tolerance.
    pub fn minimum_requests(limit: u64, tolerance: f64) -> u64 {
        up(limit as f64 * (1.0 + tolerance)) + 1
    }

    /// The default count: twice the limit (the block delay at the probe's own rate fits in it, and
    /// the probe stops once blocking is confirmed).
    pub fn default_requests(limit: u64, tolerance: f64) -> u64 {
        (2 * limit).max(Self::minimum_requests(limit, tolerance))
    }
}

/// One request: its number in sending order (from 1), when it was sent and answered (since the
/// start), and its status or failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub seq: u64,
    pub sent: Duration,
    pub done: Duration,
    pub status: Option<u16>,
    pub error: Option<FailureKind>,
}

/// Why the probe stopped sending.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Stop {
    /// Every planned request was sent.
    AllSent,
    /// A run of 403s: blocking is established.
    BlockingConfirmed {
        consecutive_403: u64,
    },
    /// The limit cannot be crossed at the rate measured.
    CannotCross {
        message: String,
    },
    /// Nothing answers.
    NoAnswer {
        message: String,
    },
    TimeLimit,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub from_s: u64,
    /// By status code; `error` for requests without an answer.
    pub counts: BTreeMap<String, u64>,
}

/// Answers over time, bucketed by when they arrived.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub bucket_s: u64,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub from: u64,
    pub to: u64,
}

/// What the samples say, before any verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Requests that got an answer or failed (requests cut off by the time limit are not counted).
    pub sent: u64,
    pub statuses: BTreeMap<String, u64>,
    /// Sending order number of the first request answered 403.
    pub first_403: Option<u64>,
    /// Where the first 403 is expected.
    pub expected_first_403: Range,
    /// Requests per second the probe sent until it reached the limit (or to the end).
    pub rate_rps: f64,
    /// The most requests sent within any one evaluation window.
    pub max_in_window: u64,
    /// Of the answers after the first 403, how many were 403.
    pub blocked_after_first_403: u64,
    pub not_blocked_after_first_403: u64,
    /// Latency of the answers that were not 403 (the handler's).
    pub latency: Option<Latency>,
    pub duration_s: f64,
    pub histogram: Histogram,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub reason: String,
    pub stage: String,
    pub stage_resource: String,
    pub url: String,
    pub rule: RateRule,
    pub requests_planned: u64,
    pub connections: u32,
    pub tolerance_pct: f64,
    pub block_delay_s: f64,
    pub stopped: Stop,
    #[serde(flatten)]
    pub analysis: Analysis,
    pub notes: Vec<String>,
}

fn status_key(s: &Sample) -> String {
    match s.status {
        Some(code) => code.to_string(),
        None => "error".to_string(),
    }
}

/// A bucket width that gives at most about 30 rows.
fn bucket_width(duration: Duration) -> u64 {
    let secs = duration.as_secs_f64();
    [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].into_iter().find(|w| secs / *w as f64 <= 30.0).unwrap_or(600)
}

pub fn histogram(samples: &[Sample]) -> Histogram {
    let end = samples.iter().map(|s| s.done).max().unwrap_or_default();
    let w = bucket_width(end);
    let n = (end.as_secs() / w + 1) as usize;
    let mut buckets: Vec<Bucket> = (0..n).map(|i| Bucket { from_s: i as u64 * w, counts: BTreeMap::new() }).collect();
    for s in samples {
        let i = ((s.done.as_secs() / w) as usize).min(n - 1);
        *buckets[i].counts.entry(status_key(s)).or_default() += 1;
    }
    Histogram { bucket_s: w, buckets }
}

/// The most samples sent within any `window`.
fn max_in_window(sorted_sent: &[Duration], window: Duration) -> u64 {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted_sent.len() {
        while sorted_sent[hi].saturating_sub(sorted_sent[lo]) >= window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best as u64
}

pub fn analyse(samples: &[Sample], rule: &RateRule, s: &Settings) -> Analysis {
    let mut by_seq: Vec<&Sample> = samples.iter().collect();
    by_seq.sort_by_key(|x| x.seq);
    let mut statuses = BTreeMap::new();
    for x in samples {
        *statuses.entry(status_key(x)).or_default() += 1;
    }
    let first_403 = by_seq.iter().find(|x| x.status == Some(403)).map(|x| x.seq);
    // The rate until the limit was reached: what WAF saw while it was deciding.
    let k = (rule.limit as usize).min(by_seq.len());
    let rate_rps = match by_seq.get(k.saturating_sub(1)) {
        Some(x) if x.sent > Duration::ZERO => k as f64 / x.sent.as_secs_f64(),
        Some(x) => k as f64 / x.done.as_secs_f64().max(1e-3),
        None => 0.0,
    };
    let expected_first_403 = Range {
        from: down((rule.limit as f64) * (1.0 - s.tolerance)).max(1),
        to: up((rule.limit as f64) * (1.0 + s.tolerance) + rate_rps * s.block_delay.as_secs_f64()),
    };
    let mut sent: Vec<Duration> = samples.iter().map(|x| x.sent).collect();
    sent.sort();
    let (mut blocked, mut not_blocked) = (0, 0);
    if let Some(first) = first_403 {
        for x in by_seq.iter().filter(|x| x.seq > first) {
            if x.status == Some(403) { blocked += 1 } else { not_blocked += 1 }
        }
    }
    let handler: Vec<Duration> =
        samples.iter().filter(|x| x.status.is_some_and(|c| c != 403)).map(|x| x.done.saturating_sub(x.sent)).collect();
    Analysis {
        sent: samples.len() as u64,
        statuses,
        first_403,
        expected_first_403,
        rate_rps: round1(rate_rps),
        max_in_window: max_in_window(&sent, Duration::from_secs(rule.window_s)),
        blocked_after_first_403: blocked,
        not_blocked_after_first_403: not_blocked,
        latency: Latency::of(&handler),
        duration_s: round1(samples.iter().map(|x| x.done).max().unwrap_or_default().as_secs_f64()),
        histogram: histogram(samples),
    }
}

/// The verdict on an analysis.
pub fn verdict(a: &Analysis, rule: &RateRule, s: &Settings, stop: &Stop) -> (Outcome, String) {
    let (limit, window) = (rule.limit, rule.window_s);
    let Range { from, to } = a.expected_first_403;
    let tol = round1(s.tolerance * 100.0);
    let answered = a.sent - a.statuses.get("error").copied().unwrap_or(0);
    if answered == 0 {
        let why = match stop {
            Stop::NoAnswer { message } => message.clone(),
            _ => format!("none of {} requests got an answer", a.sent),
        };
        return (Outcome::Failed, why);
    }
    if let Some(k) = a.first_403 {
        if k == 1 {
            return (
                Outcome::Failed,
                format!(
                    "403 from the first request: this IP is already blocked (requests in the last {window} s count, e.g. an earlier \
                     run), another rule of the web ACL blocks it (geo match, managed rules), or the path does not exist (API \
                     Gateway answers 403 `Missing Authentication Token`)"
                ),
            );
        }
        if k < from {
            return (
                Outcome::Failed,
                format!(
                    "403s began at request {k}, before {from} (the limit {limit} less {tol}%): requests from this IP in the {window} s \
                     before the probe count too, or another rule blocks"
                ),
            );
        }
        if k > to {
            return (
                Outcome::Failed,
                format!(
                    "403s began at request {k}, after {to} (the limit {limit} plus {tol}%, plus {:.1} requests/s × {} s for WAF to \
                     start blocking)",
                    a.rate_rps,
                    s.block_delay.as_secs()
                ),
            );
        }
        return (Outcome::Passed, format!("403s began at request {k} (limit {limit} per {window} s; expected from {from} to {to})"));
    }
    match stop {
        Stop::CannotCross { message } => return (Outcome::Inconclusive, message.clone()),
        Stop::TimeLimit if a.sent < to => {
            return (
                Outcome::Inconclusive,
                format!("the time limit was reached after {} requests and no 403; 403s were expected by request {to}", a.sent),
            );
        }
        _ => {}
    }
    if a.max_in_window <= limit {
        return (
            Outcome::Inconclusive,
            format!(
                "no 403, but the limit was never crossed: at most {} requests fell within one {window} s window, fewer than the \
                 limit {limit} ({:.1} requests/s over {} connections)",
                a.max_in_window, a.rate_rps, s.connections
            ),
        );
    }
    if a.sent >= to {
        return (Outcome::Failed, format!("no 403 after {} requests; 403s were expected from request {from} to {to}", a.sent));
    }
    (
        Outcome::Inconclusive,
        format!(
            "no 403 after {} requests: the limit was crossed, but WAF may take up to {} s to start blocking; --requests {to} or more \
             tells",
            a.sent,
            s.block_delay.as_secs()
        ),
    )
}

/// Whether the limit can be crossed at the rate the first answers show; `Some(why not)` if not.
pub fn cannot_cross(p50: Duration, rule: &RateRule, s: &Settings) -> Option<String> {
    let p50_s = p50.as_secs_f64().max(1e-3);
    let rate = f64::from(s.connections) / p50_s;
    let in_window = rate * rule.window_s as f64;
    let needed = Settings::minimum_requests(rule.limit, s.tolerance) as f64;
    let connections = up(needed * p50_s / rule.window_s as f64);
    if in_window < needed {
        return Some(format!(
            "cannot cross the limit: at {rate:.1} requests/s ({} connections, median latency {}), about {} requests fall within \
             one {} s window, fewer than the {} needed to cross the limit {} with {}% tolerance; use --connections {} or more",
            s.connections,
            ms_text(p50_s * 1000.0),
            in_window.floor(),
            rule.window_s,
            needed,
            rule.limit,
            round1(s.tolerance * 100.0),
            connections.max(u64::from(s.connections) + 1)
        ));
    }
    let time_needed = needed / rate;
    if time_needed > s.time_limit.as_secs_f64() {
        return Some(format!(
            "cannot cross the limit within the time limit: at {rate:.1} requests/s ({} connections, median latency {}), {needed} \
             requests take about {:.0} s, longer than --time-limit {} s",
            s.connections,
            ms_text(p50_s * 1000.0),
            time_needed,
            s.time_limit.as_secs()
        ));
    }
    None
}

/// Watches the samples as they come: decides when to stop sending.
struct Monitor {
    sample_size: usize,
    checked: bool,
    consecutive_403: u64,
    confirm: u64,
}

impl Monitor {
    fn see(&mut self, samples: &[Sample], rule: &RateRule, s: &Settings) -> Option<Stop> {
        let last = samples.last()?;
        if last.status == Some(403) {
            self.consecutive_403 += 1;
            if self.consecutive_403 >= self.confirm {
                return Some(Stop::BlockingConfirmed { consecutive_403: self.consecutive_403 });
            }
        } else {
            self.consecutive_403 = 0;
        }
        if self.checked || samples.len() < self.sample_size {
            return None;
        }
        self.checked = true;
        if samples.iter().any(|x| x.status == Some(403)) {
            return None;
        }
        let mut latencies: Vec<Duration> = samples.iter().filter(|x| x.status.is_some()).map(|x| x.done.saturating_sub(x.sent)).collect();
        if latencies.is_empty() {
            return Some(Stop::NoAnswer { message: format!("none of the first {} requests got an answer", samples.len()) });
        }
        latencies.sort();
        let p50 = latencies[(latencies.len() - 1) / 2];
        cannot_cross(p50, rule, s).map(|message| Stop::CannotCross { message })
    }
}

#[derive(Default)]
struct Live {
    answered: AtomicU64,
    ok: AtomicU64,
    blocked: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(url: &str, rule: &RateRule, s: &Settings, client: Arc<HttpClient>, progress: Progress) -> (Vec<Sample>, Stop) {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(1));
    let stop_flag = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::default());
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..s.connections {
        let (next, stop_flag, tx, client, url, total) =
            (next.clone(), stop_flag.clone(), tx.clone(), client.clone(), url.to_string(), s.requests);
        workers.spawn(async move {
            while !stop_flag.load(Ordering::Relaxed) {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq > total {
                    break;
                }
                let sent = start.elapsed();
                let answer = client.get(&url).await;
                let done = start.elapsed();
                let sample = match answer {
                    Ok(r) => Sample { seq, sent, done, status: Some(r.status), error: None },
                    Err(e) => Sample { seq, sent, done, status: None, error: Some(e.kind) },
                };
                if tx.send(sample).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut samples: Vec<Sample> = Vec::with_capacity(s.requests.min(MAX_REQUESTS) as usize);
    let mut monitor = Monitor {
        sample_size: (2 * s.connections as usize).max(20).min(s.requests as usize),
        checked: false,
        consecutive_403: 0,
        confirm: u64::from(s.connections).max(20),
    };
    let mut stop = Stop::AllSent;
    let deadline = tokio::time::sleep_until((start + s.time_limit).into());
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            sample = rx.recv() => {
                let Some(sample) = sample else { break };
                live.answered.fetch_add(1, Ordering::Relaxed);
                match sample.status {
                    Some(403) => live.blocked.fetch_add(1, Ordering::Relaxed),
                    Some(_) => live.ok.fetch_add(1, Ordering::Relaxed),
                    None => live.errors.fetch_add(1, Ordering::Relaxed),
                };
                samples.push(sample);
                if stop == Stop::AllSent && let Some(why) = monitor.see(&samples, rule, s) {
                    // Requests in flight finish (each within the request timeout); no new one starts.
                    stop_flag.store(true, Ordering::Relaxed);
                    stop = why;
                }
            }
            _ = ticker.tick() => {
                let elapsed = start.elapsed().as_secs_f64().max(1e-3);
                let answered = live.answered.load(Ordering::Relaxed);
                progress.status(&format!(
                    "rate-limit: {answered}/{} answered in {elapsed:.0}s ({:.1}/s): not blocked {}, 403 {}, errors {}",
                    s.requests,
                    answered as f64 / elapsed,
                    live.ok.load(Ordering::Relaxed),
                    live.blocked.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed),
                ));
            }
            _ = &mut deadline => {
                stop_flag.store(true, Ordering::Relaxed);
                workers.abort_all();
                stop = Stop::TimeLimit;
                while let Ok(sample) = rx.try_recv() {
                    samples.push(sample);
                }
                break;
            }
        }
    }
    progress.clear();
    (samples, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::wafv2::web_acl::AggregateKey;

    fn rule(limit: u64) -> RateRule {
        RateRule { acl_resource: "acl".into(), rule: "r".into(), limit, window_s: 300, aggregate_key: AggregateKey::Ip }
    }

    fn settings(block_delay_s: u64) -> Settings {
        Settings {
            requests: 400,
            connections: 4,
            tolerance: 0.1,
            block_delay: Duration::from_secs(block_delay_s),
            timeout: Duration::from_secs(30),
            time_limit: Duration::from_secs(600),
        }
    }

    /// `n` requests, one every `gap_ms`, each answered 50 ms later; 403 from `blocked_from` on.
    fn samples(n: u64, gap_ms: u64, blocked_from: Option<u64>) -> Vec<Sample> {
        (1..=n)
            .map(|seq| {
                let sent = Duration::from_millis(seq * gap_ms);
                let status = if blocked_from.is_some_and(|b| seq >= b) { 403 } else { 200 };
                Sample { seq, sent, done: sent + Duration::from_millis(50), status: Some(status), error: None }
            })
            .collect()
    }

    #[test]
    fn where_403s_began_is_judged_against_the_limit_with_tolerance_and_delay() {
        let (r, s) = (rule(100), settings(0));
        let a = analyse(&samples(200, 10, Some(101)), &r, &s);
        assert_eq!((a.first_403, a.expected_first_403), (Some(101), Range { from: 90, to: 110 }));
        assert_eq!((a.blocked_after_first_403, a.not_blocked_after_first_403), (99, 0));
        assert_eq!(a.statuses, BTreeMap::from([("200".into(), 100), ("403".into(), 100)]));
        assert_eq!(verdict(&a, &r, &s, &Stop::AllSent).0, Outcome::Passed);

        let early = analyse(&samples(200, 10, Some(60)), &r, &s);
        let (o, why) = verdict(&early, &r, &s, &Stop::AllSent);
        assert_eq!(o, Outcome::Failed);
        assert!(why.starts_with("403s began at request 60, before 90"), "{why}");

        let late = analyse(&samples(200, 10, Some(150)), &r, &s);
        let (o, why) = verdict(&late, &r, &s, &Stop::AllSent);
        assert_eq!(o, Outcome::Failed);
        assert!(why.starts_with("403s began at request 150, after 110"), "{why}");

        // The same late block is within range when WAF is given 1 s to react at 100 requests/s.
        let s1 = settings(1);
        let late = analyse(&samples(200, 10, Some(150)), &r, &s1);
        assert_eq!(late.expected_first_403, Range { from: 90, to: 210 });
        assert_eq!(verdict(&late, &r, &s1, &Stop::AllSent).0, Outcome::Passed);

        let first = analyse(&samples(50, 10, Some(1)), &r, &s);
        let (o, why) = verdict(&first, &r, &s, &Stop::AllSent);
        assert_eq!(o, Outcome::Failed);
        assert!(why.starts_with("403 from the first request"), "{why}");
    }

    #[test]
    fn no_403_is_a_failure_only_when_the_limit_was_crossed_long_enough() {
        let (r, s) = (rule(100), settings(0));
        let never = analyse(&samples(200, 10, None), &r, &s);
        assert_eq!(never.max_in_window, 200);
        let (o, why) = verdict(&never, &r, &s, &Stop::AllSent);
        assert_eq!((o, why.as_str()), (Outcome::Failed, "no 403 after 200 requests; 403s were expected from request 90 to 110"));

        // Crossed, but stopped before WAF had its delay.
        let s5 = settings(5);
        let short = analyse(&samples(150, 10, None), &r, &s5);
        assert_eq!(short.expected_first_403.to, 610);
        assert_eq!(verdict(&short, &r, &s5, &Stop::AllSent).0, Outcome::Inconclusive);

        // Too slow: one request every 4 s, 75 in any 300 s window.
        let slow = analyse(&samples(150, 4000, None), &r, &s);
        assert_eq!(slow.max_in_window, 75);
        let (o, why) = verdict(&slow, &r, &s, &Stop::AllSent);
        assert_eq!(o, Outcome::Inconclusive);
        assert!(why.contains("the limit was never crossed"), "{why}");
    }

    #[test]
    fn a_rate_that_cannot_cross_the_limit_is_named_with_what_would() {
        // The seed: 2000 per 300 s, a handler that takes 2 s.
        let r = rule(2000);
        let mut s = settings(30);
        s.connections = 10;
        let why = cannot_cross(Duration::from_secs(2), &r, &s).unwrap();
        assert!(why.starts_with("cannot cross the limit: at 5.0 requests/s (10 connections, median latency 2.00s), about 1500"), "{why}");
        assert!(why.ends_with("use --connections 15 or more"), "{why}");
        s.connections = 15;
        assert_eq!(cannot_cross(Duration::from_secs(2), &r, &s), None);
        s.time_limit = Duration::from_secs(60);
        assert!(cannot_cross(Duration::from_secs(2), &r, &s).unwrap().starts_with("cannot cross the limit within the time limit"));
    }

    #[test]
    fn the_histogram_buckets_answers_by_arrival() {
        let mut x = samples(100, 100, Some(61));
        x.push(Sample {
            seq: 101,
            sent: Duration::from_secs(10),
            done: Duration::from_millis(10_500),
            status: None,
            error: Some(FailureKind::Connect),
        });
        let h = histogram(&x);
        assert_eq!(h.bucket_s, 1);
        assert_eq!(h.buckets.len(), 11);
        let total: u64 = h.buckets.iter().flat_map(|b| b.counts.values()).sum();
        assert_eq!(total, 101);
        assert_eq!(h.buckets[0].counts, BTreeMap::from([("200".into(), 9)]));
        assert_eq!(h.buckets[6].counts, BTreeMap::from([("200".into(), 1), ("403".into(), 9)]));
        assert_eq!(h.buckets[10].counts, BTreeMap::from([("403".into(), 1), ("error".into(), 1)]));
        assert_eq!(bucket_width(Duration::from_secs(100)), 5);
    }

    #[test]
    fn the_default_count_can_show_the_block() {
        assert_eq!(Settings::minimum_requests(2000, 0.1), 2201);
        assert_eq!(Settings::default_requests(2000, 0.1), 4000);
        assert_eq!(Settings::default_requests(10, 1.5), 26);
    }
}
