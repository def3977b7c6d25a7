//! What `/metrics` and `/readyz` show. The metrics are kept in `prometheus-client` metric families (the
//! Prometheus project's Rust client, which also escapes label values) and exposed in the Prometheus text
//! format (version 0.0.4); the AWS call counters are read from the SDK interceptor's snapshot at scrape
//! time. Readiness is worked out here from when each stack's passes ended.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::providers::calls::{CallCount, PaceCount};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the pass duration histogram.
pub const BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StackLabels {
    stack: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    stack: String,
    resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    stack: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    stack: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    operation: String,
}

/// The metric families of `/metrics` (registered in the order they are shown).
#[derive(Debug)]
struct Families {
    registry: Registry,
    drift: Family<ResourceLabels, Gauge>,
    duration: Family<StackLabels, Histogram, fn() -> Histogram>,
    passes: Family<ResultLabels, Counter>,
    remediations: Family<StackLabels, Counter>,
    paused: Family<ReasonLabels, Gauge>,
    last_success: Family<StackLabels, Gauge<f64, AtomicU64>>,
    /// `{stack}` 0, or `{stack, reason}` 1 while refused.
    refused: Family<Vec<(&'static str, String)>, Gauge>,
    lease_held: Family<StackLabels, Gauge>,
    takeovers: Family<StackLabels, Counter>,
}

fn pass_duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl Families {
    fn new() -> Families {
        let mut registry = Registry::default();
        let drift = Family::default();
        let duration = Family::new_with_constructor(pass_duration_histogram as fn() -> Histogram);
        let passes = Family::default();
        let remediations = Family::default();
        let paused = Family::default();
        let last_success = Family::default();
        let refused = Family::default();
        let lease_held = Family::default();
        let takeovers = Family::default();
        // (`register` ends each help text with a period; counters get their `_total` suffix.)
        registry.register("reconcile_drift", "Open drift (fields differing from the manifest) per managed resource", drift.clone());
        registry.register(
            "reconcile_pass_duration_seconds",
            "Duration of a watch pass (read, compare, record, remediate)",
            duration.clone(),
        );
        registry.register(
            "reconcile_passes",
            "Watch passes, by result (partial: some resource unreadable or backing off, or the state failed)",
            passes.clone(),
        );
        registry.register("reconcile_remediations", "Resources `watch --remediate` brought back to the manifest", remediations.clone());
        registry.register(
            "reconcile_remediation_paused",
            "1 while remediation of the stack is paused, by reason: `destroyed` (its last operation was `destroy`, until the next apply), `manifest_invalid`, `manifest_unreadable` or `manifest_other_stack` (the manifest on disk cannot be used; drift is still recorded with the last good version)",
            paused.clone(),
        );
        registry.register(
            "reconcile_last_success_timestamp_seconds",
            "Unix time of the end of the last complete pass (every resource of the stack read)",
            last_success.clone(),
        );
        registry.register(
            "reconcile_stack_refused",
            "1 while a stack is refused (pinned to another AWS account or region than the watcher's), with the reason; 0 otherwise",
            refused.clone(),
        );
        registry.register(
            "reconcile_watch_lease_held",
            "1 while this watcher holds the stack's lease (it alone watches and remediates the stack); 0 while another watcher does",
            lease_held.clone(),
        );
        registry.register(
            "reconcile_watch_lease_takeovers",
            "Times this watcher took a stack over from another watcher whose lease had expired or been released",
            takeovers.clone(),
        );
        Families { registry, drift, duration, passes, remediations, paused, last_success, refused, lease_held, takeovers }
    }

    /// The series every watched stack has from the start (zero until something happens).
    fn add_stack(&self, stack: &str) {
        let s = || StackLabels { stack: stack.to_string() };
        let _ = self.duration.get_or_create(&s());
        for result in ["complete", "partial"] {
            let _ = self.passes.get_or_create(&ResultLabels { stack: stack.to_string(), result });
        }
        let _ = self.remediations.get_or_create(&s());
        self.paused.get_or_create(&paused_labels(stack)).set(0);
        self.refused.get_or_create(&vec![("stack", stack.to_string())]).set(0);
        let _ = self.lease_held.get_or_create(&s());
        let _ = self.takeovers.get_or_create(&s());
    }
}

fn paused_labels(stack: &str) -> ReasonLabels {
    ReasonLabels { stack: stack.to_string(), reason: "destroyed".to_string() }
}

/// The AWS call counters, as one scrape sees them.
fn calls_registry(calls: &BTreeMap<(String, String), CallCount>) -> Registry {
    let mut registry = Registry::default();
    let (total, errors) = (Family::<CallLabels, Counter>::default(), Family::<CallLabels, Counter>::default());
    for ((service, operation), c) in calls {
        let labels = CallLabels { service: service.clone(), operation: operation.clone() };
        total.get_or_create(&labels).inc_by(c.calls);
        errors.get_or_create(&labels).inc_by(c.errors);
    }
    let by_service = Family::<ServiceLabels, Counter>::default();
    for ((service, _), c) in calls {
        by_service.get_or_create(&ServiceLabels { service: service.clone() }).inc_by(c.calls);
    }
    registry.register("reconcile_aws_calls", "AWS API calls (each HTTP attempt) by service and operation", total);
    registry.register("reconcile_aws_service_calls", "AWS API calls (each HTTP attempt) by service, every operation", by_service);
    registry.register("reconcile_aws_errors", "AWS API calls answered with an error (or none), by service and operation", errors);
    registry
}

/// The pacing counters (per paced service: its limited operations, and `account rate` for the calls
/// that take a token of its account-wide bucket only).
fn pacing_registry(pacing: &BTreeMap<(String, String), PaceCount>) -> Registry {
    let mut registry = Registry::default();
    let waited = Family::<CallLabels, Counter<f64, AtomicU64>>::default();
    let (paced, throttled) = (Family::<CallLabels, Counter>::default(), Family::<CallLabels, Counter>::default());
    for ((service, operation), c) in pacing {
        let labels = CallLabels { service: service.clone(), operation: operation.clone() };
        waited.get_or_create(&labels).inc_by(c.waited_ms as f64 / 1000.0);
        paced.get_or_create(&labels).inc_by(c.calls);
        throttled.get_or_create(&labels).inc_by(c.throttled);
    }
    registry.register_with_unit(
        "reconcile_pacing_wait",
        "Time AWS calls waited for the account's rate limits (client-side pacing), by service and limited operation",
        prometheus_client::registry::Unit::Seconds,
        waited,
    );
    registry.register("reconcile_paced_calls", "AWS calls (attempts) paced, by service and limited operation", paced);
    registry.register(
        "reconcile_pacing_throttled",
        "Throttling answers (429, or a 400 ThrottlingException) met by paced calls (another client spent the account's budget), by service and limited operation",
        throttled,
    );
    registry
}

/// This process's share of the account's limits per service, and the account-wide call rate that
/// allows (for the services with such a limit): compare with
/// `rate(reconcile_aws_calls_total{service=...}[1m])` for the rate used.
fn share_registry(shares: &[(&'static str, f64, Option<f64>)], watchers: u64) -> Registry {
    let mut registry = Registry::default();
    let share = Family::<ServiceLabels, Gauge<f64, AtomicU64>>::default();
    let rate = Family::<ServiceLabels, Gauge<f64, AtomicU64>>::default();
    for (service, s, r) in shares {
        let labels = ServiceLabels { service: service.to_string() };
        share.get_or_create(&labels).set(*s);
        if let Some(r) = r {
            rate.get_or_create(&labels).set(*r);
        }
    }
    registry.register("reconcile_api_share", "This process's share of the account's rate limits (--api-share), by service", share);
    registry.register(
        "reconcile_api_rate_limit_per_second",
        "The account-wide call rate this process's share allows, by service with such a limit (its calls: reconcile_aws_calls_total)",
        rate,
    );
    let sharing = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    sharing.set(i64::try_from(watchers).unwrap_or(i64::MAX));
    registry.register(
        "reconcile_api_share_watchers",
        "The watchers live on the state database (this one included) that split --api-share evenly: reconcile_api_share is this one's part",
        sharing,
    );
    registry
}

/// What readiness and the exposition need to remember about a stack.
#[derive(Debug, Clone, Default)]
struct StackMetrics {
    /// The resources with a `reconcile_drift` series (so a resource gone from the manifest loses its own).
    drift: BTreeSet<String>,
    last_success: Option<f64>,
    /// Why the stack is refused (reason label, message), e.g. pinned to another account or region.
    refused: Option<(String, String)>,
    /// When the last complete pass ended (monotonic, for readiness).
    last_success_at: Option<Instant>,
    /// Whether the last pass that ended was complete.
    last_complete: bool,
    /// When the pass now running started.
    running_since: Option<Instant>,
    /// Another watcher holds the stack's lease: this process does not watch it, and it does not count
    /// for readiness.
    standby: bool,
    /// What is wrong with the manifest on disk (reason, message): the last good version is watched
    /// and remediation paused.
    problem: Option<(String, String, bool)>,
    /// Why this process cannot hold the stack's lease itself (the state database failing, its worker
    /// stuck): not a standby, which another watcher covers, but a stack nobody may be watching.
    lease_trouble: Option<String>,
}

impl StackMetrics {
    /// Whether the stack counts for readiness: held here, or not held for a reason of this process's own.
    fn counted(&self) -> bool {
        !self.standby || self.lease_trouble.is_some()
    }

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
    /// The exposed metrics (updated while `stacks` is held, so a scrape sees each change whole).
    families: Families,
    /// A stack whose passes have been failing for longer than this is not ready.
    unready_after: Duration,
    /// Per rate-limited service: this process's share of the account's limits and the rate it allows.
    api_shares: Mutex<Vec<(&'static str, f64, Option<f64>)>>,
    /// How many watchers (this one included) split the share.
    share_watchers: AtomicU64,
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
        Metrics {
            stacks: Mutex::new(BTreeMap::new()),
            families: Families::new(),
            unready_after,
            api_shares: Default::default(),
            share_watchers: AtomicU64::new(1),
        }
    }

    /// Exposes this process's share of each rate-limited service's account limits (`--api-share`):
    /// (service, share, account-wide calls per second it allows, if the service has such a limit).
    pub fn set_api_shares(&self, shares: Vec<(&'static str, f64, Option<f64>)>) {
        *self.api_shares.lock().unwrap_or_else(|e| e.into_inner()) = shares;
    }

    /// Exposes how many watchers (this one included) split the share evenly.
    pub fn set_share_watchers(&self, watchers: usize) {
        self.share_watchers.store(watchers as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, StackMetrics>) -> T) -> T {
        let mut guard = self.stacks.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// `stack`'s record (a stack seen for the first time gets its series).
    fn with_stack<T>(&self, stack: &str, f: impl FnOnce(&mut StackMetrics, &Families) -> T) -> T {
        self.with(|s| {
            let m = s.entry(stack.to_string()).or_insert_with(|| {
                self.families.add_stack(stack);
                StackMetrics::default()
            });
            f(m, &self.families)
        })
    }

    /// A stack is watched from now on (not ready until its first successful pass).
    pub fn register(&self, stack: &str) {
        self.with_stack(stack, |_, _| ());
    }

    /// Records a finished pass; a `complete` one saw every resource of the stack. `drift` replaces the
    /// stack's drift gauges; `None` keeps them.
    pub fn pass(&self, stack: &str, elapsed: Duration, complete: bool, drift: Option<BTreeMap<String, u64>>) {
        self.with_stack(stack, |m, f| {
            let labels = StackLabels { stack: stack.to_string() };
            f.duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
            m.running_since = None;
            m.last_complete = complete;
            let result = if complete { "complete" } else { "partial" };
            f.passes.get_or_create(&ResultLabels { stack: stack.to_string(), result }).inc();
            if complete {
                m.last_success_at = Some(Instant::now());
                let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
                // To the millisecond, as before.
                let now = (now * 1000.0).round() / 1000.0;
                m.last_success = Some(now);
                f.last_success.get_or_create(&labels).set(now);
            }
            // A pass that ended after the lease was lost: its holder now reports the drift.
            if let Some(d) = drift.filter(|_| !m.standby) {
                let series = |resource: &str| ResourceLabels { stack: stack.to_string(), resource: resource.to_string() };
                for gone in m.drift.iter().filter(|r| !d.contains_key(*r)) {
                    f.drift.remove(&series(gone));
                }
                for (resource, n) in &d {
                    f.drift.get_or_create(&series(resource)).set(i64::try_from(*n).unwrap_or(i64::MAX));
                }
                m.drift = d.into_keys().collect();
            }
        });
    }

    /// A pass of `stack` starts now.
    pub fn pass_started(&self, stack: &str) {
        self.with_stack(stack, |m, _| m.running_since = Some(Instant::now()));
    }

    /// Whether the stack's last operation was `destroy` (remediation paused until the next apply).
    pub fn destroyed(&self, stack: &str, destroyed: bool) {
        self.with_stack(stack, |_, f| {
            f.paused.get_or_create(&paused_labels(stack)).set(i64::from(destroyed));
        });
    }

    /// What is wrong with the stack's manifest on disk (`Some((reason, message))`), or nothing; while
    /// `remediating`, `reconcile_remediation_paused{reason}` shows it.
    pub fn manifest_problem(&self, stack: &str, problem: Option<(&str, &str)>, remediating: bool) {
        self.with_stack(stack, |m, f| {
            let series = |reason: &str| ReasonLabels { stack: stack.to_string(), reason: reason.to_string() };
            if let Some((old, _, _)) = &m.problem
                && problem.is_none_or(|(r, _)| r != old)
            {
                f.paused.get_or_create(&series(old)).set(0);
            }
            if let Some((reason, _)) = problem {
                f.paused.get_or_create(&series(reason)).set(i64::from(remediating));
            }
            m.problem = problem.map(|(r, msg)| (r.to_string(), msg.to_string(), remediating));
        });
    }

    /// Why this process cannot hold the stack's lease itself (`None`: it can, or another watcher holds it).
    pub fn lease_trouble(&self, stack: &str, why: Option<String>) {
        self.with_stack(stack, |m, _| m.lease_trouble = why);
    }

    /// Stacks whose manifest on disk cannot be used: (stack, reason, message, whether remediation is paused).
    pub fn manifest_problems(&self) -> Vec<(String, String, String, bool)> {
        self.with(|s| {
            s.iter()
                .filter(|(_, m)| m.counted())
                .filter_map(|(k, m)| m.problem.as_ref().map(|(r, msg, paused)| (k.clone(), r.clone(), msg.clone(), *paused)))
                .collect()
        })
    }

    /// Stacks this process cannot hold the lease of, and why.
    pub fn lease_troubles(&self) -> Vec<(String, String)> {
        self.with(|s| s.iter().filter_map(|(k, m)| m.lease_trouble.as_ref().map(|why| (k.clone(), why.clone()))).collect())
    }

    pub fn remediated(&self, stack: &str, resources: u64) {
        self.with_stack(stack, |_, f| {
            f.remediations.get_or_create(&StackLabels { stack: stack.to_string() }).inc_by(resources);
        });
    }

    /// Marks the stack refused (`Some((reason, message))`) or not.
    pub fn refused(&self, stack: &str, why: Option<(&str, &str)>) {
        self.with_stack(stack, |m, f| {
            let series = |reason: Option<&str>| {
                let mut labels = vec![("stack", stack.to_string())];
                labels.extend(reason.map(|r| ("reason", r.to_string())));
                labels
            };
            if let Some((old, _)) = &m.refused {
                f.refused.remove(&series(Some(old)));
            }
            match why {
                Some((reason, _)) => {
                    f.refused.remove(&series(None));
                    f.refused.get_or_create(&series(Some(reason))).set(1);
                }
                None => {
                    f.refused.get_or_create(&series(None)).set(0);
                }
            }
            m.refused = why.map(|(r, msg)| (r.to_string(), msg.to_string()));
        });
    }

    /// Stacks whose passes have been failing for longer than the threshold, with how long since their
    /// last complete pass.
    pub fn failing(&self) -> Vec<(String, Duration)> {
        self.failing_at(Instant::now())
    }

    fn failing_at(&self, now: Instant) -> Vec<(String, Duration)> {
        self.with(|s| {
            s.iter()
                .filter(|(_, m)| m.counted())
                .filter_map(|(k, m)| m.failing_for(self.unready_after, now).map(|d| (k.clone(), d)))
                .collect()
        })
    }

    pub fn unready_after(&self) -> Duration {
        self.unready_after
    }

    /// Whether this process holds `stack`'s lease (a stack another watcher holds is left out of
    /// readiness, and its drift gauges are dropped: the holder reports them).
    pub fn lease_held(&self, stack: &str, held: bool) {
        self.with_stack(stack, |m, f| {
            f.lease_held.get_or_create(&StackLabels { stack: stack.to_string() }).set(i64::from(held));
            if !held {
                for resource in std::mem::take(&mut m.drift) {
                    f.drift.remove(&ResourceLabels { stack: stack.to_string(), resource });
                }
                m.running_since = None;
            }
            m.standby = !held;
        });
    }

    /// This process took `stack` over from another watcher.
    pub fn lease_taken_over(&self, stack: &str) {
        self.with_stack(stack, |_, f| {
            f.takeovers.get_or_create(&StackLabels { stack: stack.to_string() }).inc();
        });
    }

    /// Every watched stack this process holds has had a complete pass, none has been failing for longer
    /// than the threshold, and none is refused. A standby holding no stack is ready.
    pub fn ready(&self) -> bool {
        self.ready_at(Instant::now())
    }

    fn ready_at(&self, now: Instant) -> bool {
        self.with(|s| {
            !s.is_empty()
                && s.values().all(|m| {
                    !m.counted()
                        || m.last_success.is_some()
                            && m.refused.is_none()
                            && m.problem.is_none()
                            && m.lease_trouble.is_none()
                            && m.failing_for(self.unready_after, now).is_none()
                })
        })
    }

    /// Stacks still waiting for their first complete pass (refused ones aside).
    pub fn not_ready(&self) -> Vec<String> {
        self.with(|s| {
            s.iter()
                .filter(|(_, m)| !m.standby && m.last_success.is_none() && m.refused.is_none() && m.problem.is_none())
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// Refused stacks and why.
    pub fn refusals(&self) -> Vec<(String, String)> {
        self.with(|s| {
            s.iter().filter(|(_, m)| !m.standby).filter_map(|(k, m)| m.refused.as_ref().map(|(_, msg)| (k.clone(), msg.clone()))).collect()
        })
    }

    /// The Prometheus text exposition, with the AWS call counters of the process.
    pub fn render(&self, calls: &BTreeMap<(String, String), CallCount>, pacing: &BTreeMap<(String, String), PaceCount>) -> String {
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = self.with(|_| prometheus_text::encode(&mut out, &self.families.registry));
        let _ = prometheus_text::encode(&mut out, &calls_registry(calls));
        let _ = prometheus_text::encode(&mut out, &pacing_registry(pacing));
        let _ = prometheus_text::encode(
            &mut out,
            &share_registry(
                &self.api_shares.lock().unwrap_or_else(|e| e.into_inner()),
                self.share_watchers.load(std::sync::atomic::Ordering::Relaxed),
            ),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_api_share() {
        let m = Metrics::new(Duration::from_secs(60));
        m.set_api_shares(vec![("apigateway", 0.25, Some(2.38)), ("wafv2", 0.25, None)]);
        m.set_share_watchers(2);
        let text = m.render(&BTreeMap::new(), &BTreeMap::new());
        for want in [
            "reconcile_api_share{service=\"apigateway\"} 0.25",
            "reconcile_api_rate_limit_per_second{service=\"apigateway\"} 2.38",
            "reconcile_api_share_watchers 2",
            "reconcile_api_share{service=\"wafv2\"} 0.25",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} missing from:\n{text}");
        }
        assert!(!text.contains("reconcile_api_rate_limit_per_second{service=\"wafv2\"}"), "no account-wide rate for WAFv2:\n{text}");
    }

    #[test]
    fn pacing_waits_and_429s_per_limited_operation() {
        let m = Metrics::default();
        let pacing = BTreeMap::from([
            (
                ("apigateway".to_string(), "CreateDeployment".to_string()),
                PaceCount { calls: 3, waited_ms: 10_200, max_wait_ms: 5100, throttled: 1 },
            ),
            (
                ("apigateway".to_string(), "account rate".to_string()),
                PaceCount { calls: 40, waited_ms: 250, max_wait_ms: 106, throttled: 0 },
            ),
        ]);
        let text = m.render(&BTreeMap::new(), &pacing);
        for line in [
            "reconcile_pacing_wait_seconds_total{service=\"apigateway\",operation=\"CreateDeployment\"} 10.2",
            "reconcile_paced_calls_total{service=\"apigateway\",operation=\"CreateDeployment\"} 3",
            "reconcile_pacing_throttled_total{service=\"apigateway\",operation=\"CreateDeployment\"} 1",
            "reconcile_pacing_wait_seconds_total{service=\"apigateway\",operation=\"account rate\"} 0.25",
            "reconcile_pacing_throttled_total{service=\"apigateway\",operation=\"account rate\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
    }

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
        let text = m.render(&calls, &BTreeMap::new());
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
            "reconcile_aws_service_calls_total{service=\"lambda\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert!(text.contains("reconcile_last_success_timestamp_seconds{stack=\"s\"} "), "{text}");
        assert!(text.lines().any(|l| l == "reconcile_remediation_paused{stack=\"s\",reason=\"destroyed\"} 0"), "{text}");
    }

    #[test]
    fn label_values_are_escaped_and_help_and_types_are_as_documented() {
        let m = Metrics::default();
        let odd = "a\"b\\c\nd";
        m.pass(odd, Duration::from_millis(1), true, Some(BTreeMap::from([(odd.to_string(), 1)])));
        m.refused(odd, Some(("pinned_elsewhere", "x")));
        let calls = BTreeMap::from([((odd.to_string(), "Get\"It\"".to_string()), CallCount { calls: 1, errors: 0, throttled: 0 })]);
        let text = m.render(&calls, &BTreeMap::new());
        let escaped = "a\\\"b\\\\c\\nd";
        for line in [
            format!("reconcile_drift{{stack=\"{escaped}\",resource=\"{escaped}\"}} 1"),
            format!("reconcile_passes_total{{stack=\"{escaped}\",result=\"complete\"}} 1"),
            format!("reconcile_stack_refused{{stack=\"{escaped}\",reason=\"pinned_elsewhere\"}} 1"),
            format!("reconcile_aws_calls_total{{service=\"{escaped}\",operation=\"Get\\\"It\\\"\"}} 1"),
            "# HELP reconcile_drift Open drift (fields differing from the manifest) per managed resource.".to_string(),
            "# TYPE reconcile_passes_total counter".to_string(),
            "# HELP reconcile_remediations_total Resources `watch --remediate` brought back to the manifest.".to_string(),
            "# TYPE reconcile_last_success_timestamp_seconds gauge".to_string(),
            "# TYPE reconcile_aws_errors_total counter".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert!(
            !text.contains("reconcile_stack_refused{stack=\"a\\\"b\\\\c\\nd\"} "),
            "a refused stack has only its reason series:\n{text}"
        );
        // Every sample line stays on one line: name{labels} value.
        assert!(text.lines().all(|l| l.starts_with('#') || l.starts_with("reconcile_")), "{text}");
    }

    #[test]
    fn drift_series_follow_the_last_pass_and_stay_when_a_pass_has_none() {
        let m = Metrics::default();
        m.pass("s", Duration::from_millis(1), true, Some(BTreeMap::from([("a".into(), 1), ("b".into(), 0)])));
        m.pass("s", Duration::from_millis(1), false, None);
        assert!(m.render(&BTreeMap::new(), &BTreeMap::new()).lines().any(|l| l == "reconcile_drift{stack=\"s\",resource=\"a\"} 1"));
        m.pass("s", Duration::from_millis(1), true, Some(BTreeMap::from([("b".into(), 2)])));
        let text = m.render(&BTreeMap::new(), &BTreeMap::new());
        assert!(!text.contains("resource=\"a\""), "a resource gone from the manifest loses its series:\n{text}");
        assert!(text.lines().any(|l| l == "reconcile_drift{stack=\"s\",resource=\"b\"} 2"), "{text}");
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
        let text = m.render(&BTreeMap::new(), &BTreeMap::new());
        assert!(text.lines().any(|l| l == "reconcile_stack_refused{stack=\"away\",reason=\"pinned_elsewhere\"} 1"), "{text}");
        assert!(text.lines().any(|l| l == "reconcile_stack_refused{stack=\"home\"} 0"), "{text}");
        m.refused("away", None);
        m.pass("away", Duration::from_millis(10), true, Some(BTreeMap::new()));
        assert!(m.ready());
        assert!(m.render(&BTreeMap::new(), &BTreeMap::new()).lines().any(|l| l == "reconcile_stack_refused{stack=\"away\"} 0"));
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

    #[test]
    fn a_standby_holding_nothing_is_ready_and_the_holder_waits_for_its_first_pass() {
        let m = Metrics::default();
        m.register("s");
        m.register("t");
        assert!(!m.ready(), "holding both, no pass yet");
        m.lease_held("s", false);
        m.lease_held("t", false);
        assert!(m.ready(), "a standby holding nothing is ready");
        assert!(m.not_ready().is_empty() && m.failing().is_empty());

        // It takes `t` over: ready again once `t` had a complete pass.
        m.lease_held("t", true);
        m.lease_taken_over("t");
        assert!(!m.ready());
        assert_eq!(m.not_ready(), vec!["t".to_string()]);
        m.pass("t", Duration::from_millis(5), true, Some(BTreeMap::from([("logs".into(), 1)])));
        assert!(m.ready());
        let text = m.render(&BTreeMap::new(), &BTreeMap::new());
        for line in [
            "reconcile_watch_lease_held{stack=\"s\"} 0",
            "reconcile_watch_lease_held{stack=\"t\"} 1",
            "reconcile_watch_lease_takeovers_total{stack=\"s\"} 0",
            "reconcile_watch_lease_takeovers_total{stack=\"t\"} 1",
            "reconcile_drift{stack=\"t\",resource=\"logs\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        // Losing it drops its drift series (the new holder reports them) and its readiness, also when
        // the pass in flight ends after.
        m.lease_held("t", false);
        m.pass("t", Duration::from_millis(5), true, Some(BTreeMap::from([("logs".into(), 1)])));
        let text = m.render(&BTreeMap::new(), &BTreeMap::new());
        assert!(!text.contains("reconcile_drift{stack=\"t\""), "{text}");
        assert!(m.ready());
    }
}
