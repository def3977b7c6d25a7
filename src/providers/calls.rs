//! Counts every AWS call (each HTTP attempt) by service and operation, with an SDK interceptor. An
//! attempt the pacer held too long to send with its signature, and had signed again, is no call (AWS
//! never saw it).
//!
//! The same interceptor carries a crash hook for tests: `RECONCILE_CRASH_AT=after:N` aborts the
//! process right after the N-th AWS response arrives (before anything is recorded), `before:N`
//! right before the N-th request is sent — the places a `kill -9` hurts most. `after-write:N` and
//! `before-write:N` count only writes (every operation but `Get*`, `List*` and `Describe*`), so a
//! test can kill a run at each of its AWS writes without knowing how many reads came first. The hook
//! is compiled only with the `test-hooks` feature (scripts/test turns it on); without it the variable
//! does nothing.

use std::collections::BTreeMap;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
#[cfg(feature = "test-hooks")]
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::Serialize;

tokio::task_local! {
    /// The resource operation a call is made for (set by the executor), to count calls per resource.
    pub static RESOURCE: std::sync::Arc<str>;
    /// The calls of one piece of work (a `watch` pass of one stack), counted apart from the others
    /// the process makes at the same time.
    pub static TALLY: Arc<Tally>;
}

/// Calls counted for one piece of work (see [`TALLY`]).
#[derive(Debug, Default)]
pub struct Tally {
    calls: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl Tally {
    pub fn new() -> Arc<Tally> {
        Arc::new(Tally::default())
    }

    /// (calls, errors) so far.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.calls.load(Relaxed), self.errors.load(Relaxed))
    }
}

/// Calls, errors and throttling answers of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CallCount {
    pub calls: u64,
    pub errors: u64,
    pub throttled: u64,
}

/// How the pacer treated the calls of one limited operation (or of the account-wide bucket) of a
/// paced service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PaceCount {
    /// Attempts paced and sent (each retry is paced again; an attempt the pacer held too long for
    /// its signature is not sent, and counts once with its retry, which goes in the slot it waited for).
    pub calls: u64,
    /// Time those attempts waited for their slot, in total and at most.
    pub waited_ms: u64,
    pub max_wait_ms: u64,
    /// Throttling answers (a 429, or a 400 `ThrottlingException`) met although paced (another client
    /// spent the budget).
    pub throttled: u64,
}

/// Shared counters for every client of one run.
#[derive(Debug, Default)]
pub struct CallStats {
    by_operation: Mutex<BTreeMap<(String, String), CallCount>>,
    by_resource: Mutex<BTreeMap<String, u64>>,
    pacing: Mutex<BTreeMap<(String, String), PaceCount>>,
    #[cfg(feature = "test-hooks")]
    sent: AtomicU64,
    #[cfg(feature = "test-hooks")]
    received: AtomicU64,
    #[cfg(feature = "test-hooks")]
    writes_sent: AtomicU64,
    #[cfg(feature = "test-hooks")]
    writes_received: AtomicU64,
    #[cfg(feature = "test-hooks")]
    crash: Option<Crash>,
}

#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    Before(u64),
    After(u64),
    BeforeWrite(u64),
    AfterWrite(u64),
}

/// Whether an operation writes (everything but the read families of the services we call).
#[cfg(feature = "test-hooks")]
fn is_write(operation: &str) -> bool {
    !["Get", "List", "Describe"].iter().any(|p| operation.starts_with(p))
}

impl CallStats {
    pub fn new() -> Arc<CallStats> {
        #[cfg(feature = "test-hooks")]
        let crash = std::env::var("RECONCILE_CRASH_AT").ok().and_then(|v| {
            let (when, n) = v.split_once(':')?;
            let n: u64 = n.parse().ok()?;
            match when {
                "before" => Some(Crash::Before(n)),
                "after" => Some(Crash::After(n)),
                "before-write" => Some(Crash::BeforeWrite(n)),
                "after-write" => Some(Crash::AfterWrite(n)),
                _ => None,
            }
        });
        Arc::new(CallStats {
            #[cfg(feature = "test-hooks")]
            crash,
            ..CallStats::default()
        })
    }

    /// `(service, operation) → counts`, sorted.
    pub fn snapshot(&self) -> BTreeMap<(String, String), CallCount> {
        self.by_operation.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Calls made on behalf of each resource operation of an apply.
    pub fn by_resource(&self) -> BTreeMap<String, u64> {
        self.by_resource.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn total(&self) -> CallCount {
        self.snapshot().into_values().fold(CallCount::default(), add)
    }

    /// `service → counts` (every operation of the service), sorted.
    pub fn by_service(&self) -> BTreeMap<String, CallCount> {
        let mut services: BTreeMap<String, CallCount> = BTreeMap::new();
        for ((service, _), c) in self.snapshot() {
            let total = services.entry(service).or_default();
            *total = add(*total, c);
        }
        services
    }

    /// The counts per service as a JSON-friendly list.
    pub fn service_rows(&self) -> Vec<serde_json::Value> {
        self.by_service()
            .into_iter()
            .map(|(service, c)| serde_json::json!({"service": service, "calls": c.calls, "errors": c.errors, "throttled": c.throttled}))
            .collect()
    }

    /// A paced attempt of `operation` (or [`super::pace::ACCOUNT_RATE`]) waited `waited`.
    pub fn paced(&self, service: &str, operation: &str, waited: std::time::Duration) {
        if let Ok(mut m) = self.pacing.lock() {
            let c = m.entry((service.to_string(), operation.to_string())).or_default();
            let ms = waited.as_millis() as u64;
            c.calls += 1;
            c.waited_ms += ms;
            c.max_wait_ms = c.max_wait_ms.max(ms);
        }
    }

    /// A paced attempt of `operation` met a throttling answer.
    pub fn pace_throttled(&self, service: &str, operation: &str) {
        if let Ok(mut m) = self.pacing.lock() {
            m.entry((service.to_string(), operation.to_string())).or_default().throttled += 1;
        }
    }

    /// `(service, limited operation) → pacing counts`, sorted.
    pub fn pacing(&self) -> BTreeMap<(String, String), PaceCount> {
        self.pacing.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The pacing counts as a JSON-friendly list.
    pub fn pacing_rows(&self) -> Vec<serde_json::Value> {
        self.pacing()
            .into_iter()
            .map(|((service, operation), c)| {
                serde_json::json!({"service": service, "operation": operation, "calls": c.calls, "waited_ms": c.waited_ms,
                    "max_wait_ms": c.max_wait_ms, "throttled": c.throttled})
            })
            .collect()
    }

    /// As a JSON-friendly list.
    pub fn rows(&self) -> Vec<serde_json::Value> {
        self.snapshot()
            .into_iter()
            .map(|((service, operation), c)| {
                serde_json::json!({"service": service, "operation": operation, "calls": c.calls, "errors": c.errors, "throttled": c.throttled})
            })
            .collect()
    }
}

fn add(a: CallCount, c: CallCount) -> CallCount {
    CallCount { calls: a.calls + c.calls, errors: a.errors + c.errors, throttled: a.throttled + c.throttled }
}

/// The interceptor installed on every SDK client.
#[derive(Debug, Clone)]
pub struct CountCalls(pub Arc<CallStats>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "reconcile::CountCalls"
    }

    #[cfg(feature = "test-hooks")]
    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let n = self.0.sent.fetch_add(1, Ordering::SeqCst) + 1;
        if self.0.crash == Some(Crash::Before(n)) {
            eprintln!("RECONCILE_CRASH_AT: aborting before AWS call {n}");
            std::process::abort();
        }
        if let Some(Crash::BeforeWrite(at)) = self.0.crash
            && cfg.load::<Metadata>().is_some_and(|m| is_write(m.name()))
            && self.0.writes_sent.fetch_add(1, Ordering::SeqCst) + 1 == at
        {
            eprintln!("RECONCILE_CRASH_AT: aborting before AWS write {at}");
            std::process::abort();
        }
        Ok(())
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The pacer's answer to a request it held too long to send with its signature (see
        // `pace::RESIGN_AFTER`): AWS never saw it, so it is no call, no error and no throttle.
        if ctx.response().is_some_and(|r| r.headers().contains_key(super::pace::RESIGN_HEADER)) {
            return Ok(());
        }
        let (service, operation) = cfg.load::<Metadata>().map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        let (error, throttled) = match ctx.response() {
            Some(r) => {
                let status = r.status().as_u16();
                let kind = r.headers().get("x-amzn-errortype").unwrap_or_default();
                (status >= 400, status == 429 || kind.contains("Throttl") || kind.contains("TooManyRequests"))
            }
            None => (true, false),
        };
        if let Ok(mut m) = self.0.by_operation.lock() {
            let c = m.entry((service.to_lowercase().replace(' ', ""), operation.to_string())).or_default();
            c.calls += 1;
            c.errors += u64::from(error);
            c.throttled += u64::from(throttled);
        }
        let _ = TALLY.try_with(|t| {
            use std::sync::atomic::Ordering::Relaxed;
            t.calls.fetch_add(1, Relaxed);
            t.errors.fetch_add(u64::from(error), Relaxed);
        });
        if let Ok(resource) = RESOURCE.try_with(|r| r.to_string())
            && let Ok(mut m) = self.0.by_resource.lock()
        {
            *m.entry(resource).or_default() += 1;
        }
        #[cfg(feature = "test-hooks")]
        {
            let n = self.0.received.fetch_add(1, Ordering::SeqCst) + 1;
            if self.0.crash == Some(Crash::After(n)) {
                eprintln!("RECONCILE_CRASH_AT: aborting after AWS call {n}");
                std::process::abort();
            }
            if let Some(Crash::AfterWrite(at)) = self.0.crash
                && is_write(operation)
                && self.0.writes_received.fetch_add(1, Ordering::SeqCst) + 1 == at
            {
                eprintln!("RECONCILE_CRASH_AT: aborting after AWS write {at} ({operation})");
                std::process::abort();
            }
        }
        Ok(())
    }
}
