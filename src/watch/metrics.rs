//! What `/metrics` and `/readyz` show, rendered in the Prometheus text format (version 0.0.4).
//!
//! The format is a handful of lines per family; rendering it here keeps the dependency tree small and
//! lets the AWS call counters be read straight from the SDK interceptor's snapshot at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::providers::calls::CallCount;

/// Upper bounds (seconds) of the pass duration histogram.
pub const BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket (not cumulative).
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Default)]
struct StackMetrics {
    /// Open drift fields per managed resource (0 for those in sync).
    drift: BTreeMap<String, u64>,
    duration: Histogram,
    last_success: Option<f64>,
    passes_complete: u64,
    passes_partial: u64,
    remediations: u64,
    /// Why the stack is refused (reason label, message), e.g. pinned to another account or region.
    refused: Option<(String, String)>,
    /// When the last complete pass ended (monotonic, for readiness).
    last_success_at: Option<Instant>,
    /// Whether the last pass that ended was complete.
    last_complete: bool,
    /// When the pass now running started.
    running_since: Option<Instant>,
    /// The stack's last operation was `destroy`: remediation is paused until the next apply.
    destroyed: bool,
}

impl StackMetrics {
    /// Passes have been failing (partial, or one still running) for longer than `after` since the last
    /// complete one; returns for how long.
    fn failing_for(&self, after: Duration, now: Instant) -> Option<Duration> {
        let since = now.saturating_duration_since(self.last_success_at?);
        let stuck = self.running_since.is_some_and(|s| now.saturating_duration_since(s) > after);
        ((!self.last_complete || stuck) && since > after).then_some(since)
    }
}

/// Shared by the stack tasks (writers) and the HTTP server (reader).
#[derive(Debug)]
pub struct Metrics {
    stacks: Mutex<BTreeMap<String, StackMetrics>>,
    /// A stack whose passes have been failing for longer than this is not ready.
    unready_after: Duration,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new(DEFAULT_UNREADY_AFTER)
    }
}

/// The least time passes must have been failing before `/readyz` says so (see [`unready_after`]).
pub const MIN_UNREADY_AFTER: Duration = Duration::from_secs(30);
/// [`Metrics::default`]'s readiness threshold.
pub const DEFAULT_UNREADY_AFTER: Duration = Duration::from_secs(180);

/// The default readiness threshold for an interval: three intervals, at least [`MIN_UNREADY_AFTER`].
pub fn unready_after(interval: Duration) -> Duration {
    (interval * 3).max(MIN_UNREADY_AFTER)
}

impl Metrics {
    /// Metrics whose readiness turns false once a stack's passes have been failing for `unready_after`.
    pub fn new(unready_after: Duration) -> Metrics {
        Metrics { stacks: Mutex::new(BTreeMap::new()), unready_after }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, StackMetrics>) -> T) -> T {
        let mut guard = self.stacks.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// A stack is watched from now on (not ready until its first successful pass).
    pub fn register(&self, stack: &str) {
        self.with(|s| {
            s.entry(stack.to_string()).or_default();
        });
    }

    /// Records a finished pass; a `complete` one saw every resource of the stack. `drift` replaces the
    /// stack's drift gauges; `None` keeps them.
    pub fn pass(&self, stack: &str, elapsed: Duration, complete: bool, drift: Option<BTreeMap<String, u64>>) {
        self.with(|s| {
            let m = s.entry(stack.to_string()).or_default();
            m.duration.observe(elapsed.as_secs_f64());
            m.running_since = None;
            m.last_complete = complete;
            if complete {
                m.last_success_at = Some(Instant::now());
                m.passes_complete += 1;
                m.last_success = Some(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
            } else {
                m.passes_partial += 1;
            }
            if let Some(d) = drift {
                m.drift = d;
            }
        });
    }

    /// A pass of `stack` starts now.
    pub fn pass_started(&self, stack: &str) {
        self.with(|s| s.entry(stack.to_string()).or_default().running_since = Some(Instant::now()));
    }

    /// Whether the stack's last operation was `destroy` (remediation paused until the next apply).
    pub fn destroyed(&self, stack: &str, destroyed: bool) {
        self.with(|s| s.entry(stack.to_string()).or_default().destroyed = destroyed);
    }

    pub fn remediated(&self, stack: &str, resources: u64) {
        self.with(|s| s.entry(stack.to_string()).or_default().remediations += resources);
    }

    /// Marks the stack refused (`Some((reason, message))`) or not.
    pub fn refused(&self, stack: &str, why: Option<(&str, &str)>) {
        self.with(|s| s.entry(stack.to_string()).or_default().refused = why.map(|(r, m)| (r.to_string(), m.to_string())));
    }

    /// Stacks whose passes have been failing for longer than the threshold, with how long since their
    /// last complete pass.
    pub fn failing(&self) -> Vec<(String, Duration)> {
        self.failing_at(Instant::now())
    }

    fn failing_at(&self, now: Instant) -> Vec<(String, Duration)> {
        self.with(|s| s.iter().filter_map(|(k, m)| m.failing_for(self.unready_after, now).map(|d| (k.clone(), d))).collect())
    }

    pub fn unready_after(&self) -> Duration {
        self.unready_after
    }

    /// Every watched stack has had a complete pass, none has been failing for longer than the threshold,
    /// and none is refused.
    pub fn ready(&self) -> bool {
        self.ready_at(Instant::now())
    }

    fn ready_at(&self, now: Instant) -> bool {
        self.with(|s| {
            !s.is_empty()
                && s.values().all(|m| m.last_success.is_some() && m.refused.is_none() && m.failing_for(self.unready_after, now).is_none())
        })
    }

    /// Stacks still waiting for their first complete pass (refused ones aside).
    pub fn not_ready(&self) -> Vec<String> {
        self.with(|s| s.iter().filter(|(_, m)| m.last_success.is_none() && m.refused.is_none()).map(|(k, _)| k.clone()).collect())
    }

    /// Refused stacks and why.
    pub fn refusals(&self) -> Vec<(String, String)> {
        self.with(|s| s.iter().filter_map(|(k, m)| m.refused.as_ref().map(|(_, msg)| (k.clone(), msg.clone()))).collect())
    }

    /// The Prometheus text exposition, with the AWS call counters of the process.
    pub fn render(&self, calls: &BTreeMap<(String, String), CallCount>) -> String {
        let stacks = self.with(|s| s.clone());
        let mut out = String::new();
        family(&mut out, "reconcile_drift", "gauge", "Open drift (fields differing from the manifest) per managed resource.");
        for (stack, m) in &stacks {
            for (resource, n) in &m.drift {
                let _ = writeln!(out, "reconcile_drift{{stack=\"{}\",resource=\"{}\"}} {n}", esc(stack), esc(resource));
            }
        }
        family(&mut out, "reconcile_pass_duration_seconds", "histogram", "Duration of a watch pass (read, compare, record, remediate).");
        for (stack, m) in &stacks {
            let h = &m.duration;
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(out, "reconcile_pass_duration_seconds_bucket{{stack=\"{}\",le=\"{b}\"}} {cumulative}", esc(stack));
            }
            let _ = writeln!(out, "reconcile_pass_duration_seconds_bucket{{stack=\"{}\",le=\"+Inf\"}} {}", esc(stack), h.count);
            let _ = writeln!(out, "reconcile_pass_duration_seconds_sum{{stack=\"{}\"}} {}", esc(stack), h.sum);
            let _ = writeln!(out, "reconcile_pass_duration_seconds_count{{stack=\"{}\"}} {}", esc(stack), h.count);
        }
        family(
            &mut out,
            "reconcile_passes_total",
            "counter",
            "Watch passes, by result (partial: some resource unreadable or backing off, or the state failed).",
        );
        for (stack, m) in &stacks {
            let _ = writeln!(out, "reconcile_passes_total{{stack=\"{}\",result=\"complete\"}} {}", esc(stack), m.passes_complete);
            let _ = writeln!(out, "reconcile_passes_total{{stack=\"{}\",result=\"partial\"}} {}", esc(stack), m.passes_partial);
        }
        family(&mut out, "reconcile_remediations_total", "counter", "Resources `watch --remediate` brought back to the manifest.");
        for (stack, m) in &stacks {
            let _ = writeln!(out, "reconcile_remediations_total{{stack=\"{}\"}} {}", esc(stack), m.remediations);
        }
        family(
            &mut out,
            "reconcile_remediation_paused",
            "gauge",
            "1 while remediation of the stack is paused because its last operation was `destroy` (until the next apply).",
        );
        for (stack, m) in &stacks {
            let _ =
                writeln!(out, "reconcile_remediation_paused{{stack=\"{}\",reason=\"destroyed\"}} {}", esc(stack), u8::from(m.destroyed));
        }
        family(
            &mut out,
            "reconcile_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the end of the last complete pass (every resource of the stack read).",
        );
        for (stack, m) in &stacks {
            if let Some(t) = m.last_success {
                let _ = writeln!(out, "reconcile_last_success_timestamp_seconds{{stack=\"{}\"}} {t:.3}", esc(stack));
            }
        }
        family(
            &mut out,
            "reconcile_stack_refused",
            "gauge",
            "1 while a stack is refused (pinned to another AWS account or region than the watcher's), with the reason; 0 otherwise.",
        );
        for (stack, m) in &stacks {
            match &m.refused {
                Some((reason, _)) => {
                    let _ = writeln!(out, "reconcile_stack_refused{{stack=\"{}\",reason=\"{}\"}} 1", esc(stack), esc(reason));
                }
                None => {
                    let _ = writeln!(out, "reconcile_stack_refused{{stack=\"{}\"}} 0", esc(stack));
                }
            }
        }
        family(&mut out, "reconcile_aws_calls_total", "counter", "AWS API calls (each HTTP attempt) by service and operation.");
        for ((service, op), c) in calls {
            let _ = writeln!(out, "reconcile_aws_calls_total{{service=\"{}\",operation=\"{}\"}} {}", esc(service), esc(op), c.calls);
        }
        family(
            &mut out,
            "reconcile_aws_errors_total",
            "counter",
            "AWS API calls answered with an error (or none), by service and operation.",
        );
        for ((service, op), c) in calls {
            let _ = writeln!(out, "reconcile_aws_errors_total{{service=\"{}\",operation=\"{}\"}} {}", esc(service), esc(op), c.errors);
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gauges_histogram_and_counters_and_readiness_follows_first_success() {
        let m = Metrics::default();
        assert!(!m.ready(), "no stack yet: not ready");
        m.register("s");
        m.register("t");
        m.pass("s", Duration::from_millis(300), true, Some(BTreeMap::from([("fn".into(), 2), ("logs".into(), 0)])));
        assert!(!m.ready());
        assert_eq!(m.not_ready(), vec!["t".to_string()]);
        m.pass("t", Duration::from_secs(3), false, None);
        assert!(!m.ready(), "a partial pass does not make a stack ready");
        m.pass("t", Duration::from_secs(3), true, Some(BTreeMap::new()));
        assert!(m.ready());

        let calls = BTreeMap::from([(("lambda".to_string(), "GetFunction".to_string()), CallCount { calls: 3, errors: 1, throttled: 0 })]);
        let text = m.render(&calls);
        for line in [
            "# TYPE reconcile_drift gauge",
            "reconcile_drift{stack=\"s\",resource=\"fn\"} 2",
            "reconcile_drift{stack=\"s\",resource=\"logs\"} 0",
            "# TYPE reconcile_pass_duration_seconds histogram",
            "reconcile_pass_duration_seconds_bucket{stack=\"s\",le=\"0.25\"} 0",
            "reconcile_pass_duration_seconds_bucket{stack=\"s\",le=\"0.5\"} 1",
            "reconcile_pass_duration_seconds_bucket{stack=\"t\",le=\"+Inf\"} 2",
            "reconcile_pass_duration_seconds_count{stack=\"t\"} 2",
            "reconcile_passes_total{stack=\"t\",result=\"partial\"} 1",
            "reconcile_aws_calls_total{service=\"lambda\",operation=\"GetFunction\"} 3",
            "reconcile_aws_errors_total{service=\"lambda\",operation=\"GetFunction\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert!(text.contains("reconcile_last_success_timestamp_seconds{stack=\"s\"} "), "{text}");
        assert!(text.lines().any(|l| l == "reconcile_remediation_paused{stack=\"s\",reason=\"destroyed\"} 0"), "{text}");
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
    #[test]
    fn a_refused_stack_is_reported_alone_and_keeps_the_watcher_unready() {
        let m = Metrics::default();
        m.register("home");
        m.register("away");
        m.pass("home", Duration::from_millis(10), true, Some(BTreeMap::new()));
        m.refused("away", Some(("pinned_elsewhere", "stack `away` lives in account 1 (aws) in us-east-1 …")));
        m.pass("away", Duration::from_millis(1), false, None);
        assert!(!m.ready());
        assert!(m.not_ready().is_empty(), "a refused stack is not waiting for a pass");
        assert_eq!(m.refusals(), vec![("away".to_string(), "stack `away` lives in account 1 (aws) in us-east-1 …".to_string())]);
        let text = m.render(&BTreeMap::new());
        assert!(text.lines().any(|l| l == "reconcile_stack_refused{stack=\"away\",reason=\"pinned_elsewhere\"} 1"), "{text}");
        assert!(text.lines().any(|l| l == "reconcile_stack_refused{stack=\"home\"} 0"), "{text}");
        m.refused("away", None);
        m.pass("away", Duration::from_millis(10), true, Some(BTreeMap::new()));
        assert!(m.ready());
        assert!(m.render(&BTreeMap::new()).lines().any(|l| l == "reconcile_stack_refused{stack=\"away\"} 0"));
    }

    #[test]
    fn readiness_turns_false_while_passes_fail_for_longer_than_the_threshold_and_back() {
        // The clock is looked at ahead of time (`later`), not slept on.
        let m = Metrics::new(Duration::from_secs(60));
        let later = || Instant::now() + Duration::from_secs(61);
        m.register("s");
        m.pass_started("s");
        m.pass("s", Duration::from_millis(1), true, None);
        assert!(m.ready());
        // Failing passes, but not for long yet: still ready.
        m.pass_started("s");
        m.pass("s", Duration::from_millis(1), false, None);
        assert!(m.ready() && m.failing().is_empty());
        assert!(!m.ready_at(later()));
        assert_eq!(m.failing_at(later()).len(), 1);
        // A pass that hangs counts as failing too.
        m.pass_started("s");
        m.pass("s", Duration::from_millis(1), true, None);
        assert!(m.ready());
        m.pass_started("s");
        assert!(m.ready(), "a pass just started");
        assert!(!m.ready_at(later()), "a pass running for longer than the threshold");
        m.pass("s", Duration::from_millis(1), true, None);
        assert!(m.ready());
        // A slow interval with complete passes never turns readiness off.
        assert!(m.ready_at(later()));
        assert_eq!(unready_after(Duration::from_secs(60)), Duration::from_secs(180));
        assert_eq!(unready_after(Duration::from_secs(1)), MIN_UNREADY_AFTER);
    }
}
