//! Client-side pacing that encodes the documented per-account control-plane request rates of the
//! services reconcile calls, so a run (or fifty stacks in one process) stays under them instead of
//! collecting throttling errors.
//!
//! The limits, per account and region, from AWS's documentation (each cited where it is encoded):
//! API Gateway about 10 requests per second in total with a burst of 40, `CreateRestApi` one every
//! 3 s, `CreateDeployment` one every 5 s, `DeleteRestApi` one every 30 s ([`APIGW_SPACING`]); Lambda
//! `GetFunction` 100 per second and `GetPolicy` 15 per second, each on its own, and 15 per second for
//! the rest of the control plane together ([`LAMBDA_RATES`]); CloudWatch Logs `DescribeLogGroups` 5
//! per second ([`LOGS_RATES`]); WAFv2 a quota per action ([`WAFV2_RATES`]). AWS publishes no request
//! rates for IAM (its quotas page limits sizes and counts only), so IAM is not paced: its throttling
//! answers are retried with the SDK's backoff. STS is called once per run.
//!
//! The client keeps a little under the limits (`APIGW_MARGIN`, [`RATE_MARGIN`]), since a request
//! released exactly on time can still arrive a hair early. Pacing sits in the HTTP layer, under the
//! SDK's retries, so every attempt of every paced call is paced the same way; each request goes to
//! the pacer of the service it is signed for (its SigV4 name), which tells its operation from the
//! method and path (API Gateway, Lambda) or the `X-Amz-Target` header (CloudWatch Logs, WAFv2).
//! `RECONCILE_PACING=off` turns pacing off (for emulators that do not enforce limits, e.g. in tests).
//!
//! The limits are per account and region: once the identity check knows them, each pacer is attached
//! to the state store's ledger ([`crate::state::pacing`]) under its service's budget and paces from
//! its record, shared with every process using the store; until then, or when the ledger fails, it
//! paces within the process. A throttling answer that still comes (another client spent the budget)
//! marks the limit spent, voids the slots given out before it, reserves the refused call's retry at
//! the earliest moment the limit allows, and tells the SDK's retry to wait just that long
//! (`x-amz-retry-after`, in place of its exponential backoff; the SDK's attempt limit still applies).
//!
//! Pacing in the HTTP layer means a request waits after the SDK signed it, and AWS refuses a SigV4
//! signature more than 5 minutes old (403, which the SDK does not retry), while a paced call can wait
//! longer than that (`DeleteRestApi` is 301 s apart at a share of 0.1, and a queue of them waits
//! several times that). A request that waited more than [`RESIGN_AFTER`] is not sent: the connector
//! keeps the slot it waited for, for the same SDK call, and answers the SDK with a throttling error
//! to retry at once (not sent to AWS, counted nowhere as a call or a throttle). The SDK signs the
//! retry afresh, and the retry takes the kept slot, due by then, so it goes without waiting again.

use std::sync::Arc;
use std::time::Duration;

use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;

use super::calls::CallStats;
use crate::state::pacing::{self, Budget, Clock, Limits, PaceLedger, Rows};

/// A token bucket plus per-operation limits of one service, kept in this process or, once attached,
/// in a shared ledger (the state store's) that every process using the store paces from.
#[derive(Debug)]
pub struct Pacer {
    service: &'static Service,
    limits: Limits,
    clock: Clock,
    /// This process's view of the budget: the whole record without a ledger, and a copy of the
    /// ledger's rows with one (so losing the ledger mid-run keeps what it said).
    local: std::sync::Mutex<Rows>,
    shared: std::sync::Mutex<Option<Shared>>,
    /// After the ledger failed: until when (clock ms) this process paces on its own before trying the
    /// ledger again.
    paused_until: std::sync::atomic::AtomicI64,
    /// Slots reserved for the next attempt of an SDK call, by the SDK's invocation id (the same on
    /// every attempt of one call): the retry of a refused call, or of one sent back to be signed again.
    held: std::sync::Mutex<std::collections::HashMap<String, Held>>,
    /// This process's cap (`--api-share` below 1): the limits scaled to its share, kept in this
    /// process only, and taken before the account's (shared) record.
    cap: Cap,
    stats: Option<Arc<CallStats>>,
}
/// A slot kept for the next attempt of an SDK call (see [`Pacer::held`]).
#[derive(Debug, Clone, Copy)]
struct Held {
    /// When the slot was reserved: a throttling answer met after it voids it.
    reserved: i64,
    /// When the attempt may go (clock ms).
    slot: i64,
    /// For an attempt sent back to be signed again (see [`RESIGN_AFTER`]): when it started waiting.
    /// Its retry is counted as the same paced call (one wait, from then on), and already went
    /// through this process's share: it does not take a second slot of it.
    resigned_since: Option<i64>,
}

/// What [`Pacer::pass`] decided for an attempt, after it waited for its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Send it (it waited this long).
    Go(Duration),
    /// It waited this long, too long for its signature: have the SDK sign it again; its slot is kept.
    Resign(Duration),
}

/// How long after it was signed a paced request may still be sent. AWS refuses a SigV4 signature
/// more than 5 minutes old ("Signature expired", a 403 the SDK does not retry); a request paced longer
/// than this is sent back to the SDK to be signed again (see [`PacedConnector`]). The minute left
/// covers the request's way to AWS and a client clock a little off AWS's (the SDK corrects the skew
/// it measures).
pub const RESIGN_AFTER: Duration = Duration::from_secs(4 * 60);

/// The header that marks the answer the connector gives, without sending the request, to have the
/// SDK sign it again (see [`RESIGN_AFTER`]): the call counters do not count it as an AWS call.
pub const RESIGN_HEADER: &str = "x-reconcile-resign";

/// A process's share of the account's limits: at most `share` of the rate and of each spacing's
/// frequency, with the same burst window. The share can change while the process runs (a watcher's
/// share is split among the watchers live on its state database).
#[derive(Debug)]
struct Cap {
    /// The share's bits (`f64::to_bits`); 1: no cap.
    share: std::sync::atomic::AtomicU64,
    rows: std::sync::Mutex<Rows>,
}

impl Default for Cap {
    fn default() -> Cap {
        Cap { share: std::sync::atomic::AtomicU64::new(1f64.to_bits()), rows: Default::default() }
    }
}

#[derive(Debug, Clone)]
struct Shared {
    ledger: Arc<dyn PaceLedger>,
    budget: Budget,
}

/// How far under API Gateway's documented limits the client stays: each spacing gets this much on
/// top, and the account bucket runs at 95% of its rate with two tokens less of burst.
pub const APIGW_MARGIN: Duration = Duration::from_millis(100);

/// API Gateway's documented account limits (AWS docs, "Amazon API Gateway quotas",
/// <https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html>): the operations
/// spaced seconds apart, on top of the account's 10 requests per second with a burst of 40.
pub const APIGW_SPACING: &[(&str, Duration)] =
    &[("CreateRestApi", Duration::from_secs(3)), ("CreateDeployment", Duration::from_secs(5)), ("DeleteRestApi", Duration::from_secs(30))];

/// The share of a documented rate (calls per second) the client uses, for the services whose limits
/// AWS states as rates: 95%, the same margin as API Gateway's account rate.
pub const RATE_MARGIN: f64 = 0.95;

/// Lambda's control plane, per account and region (AWS docs, "Lambda quotas", "API requests",
/// <https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>): "Remainder of the
/// control plane API requests (excludes invocation, GetFunction, and GetPolicy requests)", 15
/// requests per second across all those APIs together.
pub const LAMBDA_CONTROL_PLANE_PER_S: f64 = 15.0;

/// Lambda's operations with a rate of their own, apart from the rest of the control plane (same page):
/// `GetFunction` 100 requests per second (also what the function waiters poll), `GetPolicy` 15 per
/// second.
pub const LAMBDA_RATES: &[(&str, f64)] = &[("GetFunction", 100.0), ("GetPolicy", 15.0)];

/// CloudWatch Logs' documented rates, per account and region, of the operations reconcile calls (AWS
/// docs, "CloudWatch Logs quotas",
/// <https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html>):
/// `DescribeLogGroups` 5 transactions per second. The page states no rate for the others reconcile
/// calls (`CreateLogGroup`, `DeleteLogGroup`, `PutRetentionPolicy`, `DeleteRetentionPolicy`,
/// `ListTagsForResource`, `TagResource`, `UntagResource`) and none account-wide: those are not paced
/// (their throttling answers are retried with the SDK's backoff).
pub const LOGS_RATES: &[(&str, f64)] = &[("DescribeLogGroups", 5.0)];

/// WAFv2's documented fixed quotas on calls per account and region (AWS docs, "AWS WAF quotas",
/// <https://docs.aws.amazon.com/waf/latest/developerguide/limits.html>): `AssociateWebACL` and
/// `DisassociateWebACL` one request every 2 seconds, `GetWebACLForResource` and
/// `ListResourcesForWebACL` one per second, "any individual Get or List action" five per second and
/// "any individual Create, Put, or Update action" one per second. Each applies to one action; none is
/// account-wide. Listed: those four and the Get, List, Create and Update actions reconcile calls; the
/// page gives Delete and tagging actions (`DeleteWebACL`, `TagResource`, `UntagResource`) no quota, so
/// they are not paced.
pub const WAFV2_RATES: &[(&str, f64)] = &[
    ("AssociateWebACL", 0.5),
    ("DisassociateWebACL", 0.5),
    ("GetWebACLForResource", 1.0),
    ("ListResourcesForWebACL", 1.0),
    ("GetWebACL", 5.0),
    ("ListWebACLs", 5.0),
    ("ListTagsForResource", 5.0),
    ("CreateWebACL", 1.0),
    ("UpdateWebACL", 1.0),
];

/// How long a process paces on its own after the shared ledger failed, before trying it again.
const LEDGER_RETRY: Duration = Duration::from_secs(10);

/// API Gateway's SigV4 name (its budget's service).
pub const APIGW_SERVICE: &str = "apigateway";

/// The pacing statistics' name for calls without a limit of their own (they take a token of the
/// account-wide bucket only).
pub const ACCOUNT_RATE: &str = "account rate";

/// A paced service: how its requests are recognised and their operations told apart.
#[derive(Debug)]
pub struct Service {
    /// The SigV4 signing name: requests signed for it go to its pacer; its ledger budget's service.
    pub sigv4: &'static str,
    /// Its name in the call statistics (`aws_calls`, `pacing`, `api_budget`, `/metrics`), which the
    /// SDK gives it (CloudWatch Logs signs as `logs` but counts as `cloudwatchlogs`).
    pub stats: &'static str,
    /// For people (log lines).
    pub name: &'static str,
    /// The error code the service throttles with, which the SDK retries as a throttle (at no cost to
    /// its retry quota): what the connector answers to have a request signed again.
    throttle_code: &'static str,
    /// The operation a request (method, URI, `X-Amz-Target`) counts as, when it has a limit of its own
    /// or stands apart from the account bucket; `None`: the account bucket only.
    operation: fn(&str, &str, Option<&str>) -> Option<&'static str>,
}

pub static API_GATEWAY: Service = Service {
    sigv4: APIGW_SERVICE,
    stats: "apigateway",
    name: "API Gateway",
    throttle_code: "TooManyRequestsException",
    operation: |method, uri, _| apigw_operation(method, uri),
};
pub static LAMBDA: Service = Service {
    sigv4: "lambda",
    stats: "lambda",
    name: "Lambda",
    throttle_code: "TooManyRequestsException",
    operation: |method, uri, _| lambda_operation(method, uri),
};
pub static LOGS: Service = Service {
    sigv4: "logs",
    stats: "cloudwatchlogs",
    name: "CloudWatch Logs",
    throttle_code: "ThrottlingException",
    operation: |_, _, target| target_operation(target, LOGS_RATES),
};
pub static WAFV2: Service = Service {
    sigv4: "wafv2",
    stats: "wafv2",
    name: "WAFv2",
    throttle_code: "ThrottlingException",
    operation: |_, _, target| target_operation(target, WAFV2_RATES),
};

/// Milliseconds between two calls at `per_s` calls per second, kept at [`RATE_MARGIN`] of it.
fn gap_ms(per_s: f64) -> i64 {
    (1000.0 / (per_s * RATE_MARGIN)).ceil() as i64
}

impl Pacer {
    /// API Gateway's shape: `rate` per second with `burst`, and `spacing` between the calls of some
    /// operations on top of their token.
    pub fn new(rate: f64, burst: f64, spacing: &'static [(&'static str, Duration)]) -> Pacer {
        Pacer::with_limits(
            &API_GATEWAY,
            Limits {
                interval_ms: (1000.0 / rate).ceil() as i64,
                burst: burst.floor() as i64,
                spacing: spacing.iter().map(|(op, gap)| (*op, gap.as_millis() as i64)).collect(),
                apart: Vec::new(),
            },
        )
    }

    /// A pacer of `service` keeping to `limits`.
    pub fn with_limits(service: &'static Service, limits: Limits) -> Pacer {
        Pacer {
            service,
            limits,
            clock: Clock::system(),
            local: Default::default(),
            shared: Default::default(),
            paused_until: Default::default(),
            held: Default::default(),
            cap: Cap::default(),
            stats: None,
        }
    }

    /// A service whose limits AWS states as rates: `account_per_s` for the calls without a rate of
    /// their own (`None`: no account-wide limit), and `rates` per operation, each apart from the
    /// account's (plus `apart`: operations outside it with no limit at all), all at [`RATE_MARGIN`].
    /// AWS states no burst for these: the client keeps one call per interval (a bucket of one token),
    /// which stays under N calls in any second however AWS counts them.
    fn from_rates(
        service: &'static Service,
        account_per_s: Option<f64>,
        rates: &'static [(&'static str, f64)],
        apart: &[&'static str],
    ) -> Pacer {
        Pacer::with_limits(
            service,
            Limits {
                interval_ms: account_per_s.map_or(0, gap_ms),
                burst: i64::from(account_per_s.is_some()),
                spacing: rates.iter().map(|(op, per_s)| (*op, gap_ms(*per_s))).collect(),
                apart: rates.iter().map(|(op, _)| *op).chain(apart.iter().copied()).collect(),
            },
        )
    }

    /// The service this pacer paces.
    pub fn service(&self) -> &'static Service {
        self.service
    }

    /// The same pacer, using at most `share` (0 < share ≤ 1) of the account's limits: the rate and
    /// each limited operation's frequency times `share`, the burst times `share` (at least one call).
    /// A watcher at 0.5 and an apply at 0.5 never push the account over its request rate together,
    /// even when they do not share a ledger (another state store, another machine); for the operations
    /// spaced seconds apart only a shared ledger keeps two processes' calls apart (a share halves each
    /// one's frequency). 1 (or more): no cap.
    pub fn with_share(self, share: f64) -> Pacer {
        self.set_share(share);
        self
    }

    /// From now on, uses at most `share` of the account's limits (as [`Pacer::with_share`]); calls
    /// already waiting keep the slots they were given.
    pub fn set_share(&self, share: f64) {
        let share = if share.is_finite() && share > 0.0 && share < 1.0 { share } else { 1.0 };
        let before = f64::from_bits(self.cap.share.swap(share.to_bits(), std::sync::atomic::Ordering::Relaxed));
        if share > before {
            // A larger share takes effect at once: slots reserved under the smaller one are brought
            // forward to where the new limits put them (the bucket no emptier than it may be now).
            let limits = self.capped_limits();
            if let Ok(mut rows) = self.cap.rows.lock() {
                pacing::bring_forward(&mut rows, limits.as_ref(), self.clock.now_ms());
            }
        }
    }

    /// The share of the account's limits this process keeps to (1: all of them).
    pub fn share(&self) -> f64 {
        f64::from_bits(self.cap.share.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The limits scaled to this process's share, if it is below 1.
    fn capped_limits(&self) -> Option<Limits> {
        let share = self.share();
        (share < 1.0).then(|| Limits {
            interval_ms: (self.limits.interval_ms as f64 / share).ceil() as i64,
            burst: ((self.limits.burst as f64 * share).floor() as i64).max(1),
            spacing: self.limits.spacing.iter().map(|(op, gap)| (*op, (*gap as f64 / share).ceil() as i64)).collect(),
            apart: self.limits.apart.clone(),
        })
    }

    /// The limits in force for this process (its share included).
    fn current_limits(&self) -> Limits {
        self.capped_limits().unwrap_or_else(|| self.limits.clone())
    }

    /// The account-wide rate this process may use, in calls per second (its share included); `None`
    /// for a service with per-operation limits only.
    pub fn rate_per_s(&self) -> Option<f64> {
        let interval_ms = self.current_limits().interval_ms;
        (interval_ms > 0).then(|| 1000.0 / interval_ms as f64)
    }

    /// Each operation with a limit of its own and the rate this process may call it at, in calls per
    /// second (its share included).
    pub fn operation_rates(&self) -> Vec<(&'static str, f64)> {
        self.current_limits().spacing.iter().map(|(op, gap)| (*op, 1000.0 / (*gap).max(1) as f64)).collect()
    }

    /// Takes a slot of this process's share (in this process only); returns when the call may go.
    fn capped(&self, operation: Option<&str>) -> Option<i64> {
        let limits = self.capped_limits()?;
        let now = self.clock.now_ms();
        let mut rows = self.cap.rows.lock().ok()?;
        pacing::prune(&mut rows, now);
        Some(pacing::reserve(&mut rows, &limits, operation, now))
    }

    /// The same pacer, keeping `margin` more than each spacing between limited operations.
    pub fn with_margin(mut self, margin: Duration) -> Pacer {
        for (_, gap) in &mut self.limits.spacing {
            *gap += margin.as_millis() as i64;
        }
        self
    }

    /// The same pacer, reading time from `clock` (tests: a clock on tokio's paused time).
    pub fn with_clock(self, clock: Clock) -> Pacer {
        Pacer { clock, ..self }
    }

    /// The same pacer, counting waits and throttling answers in `stats`.
    pub fn with_stats(self, stats: Arc<CallStats>) -> Pacer {
        Pacer { stats: Some(stats), ..self }
    }

    /// API Gateway's limits (10 requests per second, burst 40, and the spacings), kept with a margin.
    pub fn api_gateway() -> Pacer {
        Pacer::new(10.0 * 0.95, 40.0 - 2.0, APIGW_SPACING).with_margin(APIGW_MARGIN)
    }

    /// Lambda's limits: the control plane's 15 per second, `GetFunction` and `GetPolicy` at their own
    /// rates apart from it, and invocations outside it (not paced: reconcile does not invoke through
    /// the SDK, and their limits are concurrency, not a request rate).
    pub fn lambda() -> Pacer {
        Pacer::from_rates(&LAMBDA, Some(LAMBDA_CONTROL_PLANE_PER_S), LAMBDA_RATES, &["Invoke"])
    }

    /// CloudWatch Logs' limits: `DescribeLogGroups`' rate; nothing account-wide.
    pub fn logs() -> Pacer {
        Pacer::from_rates(&LOGS, None, LOGS_RATES, &[])
    }

    /// WAFv2's limits: a rate per action; nothing account-wide.
    pub fn wafv2() -> Pacer {
        Pacer::from_rates(&WAFV2, None, WAFV2_RATES, &[])
    }

    /// A pacer for each paced service (IAM is not: AWS publishes no rate for it).
    pub fn all() -> Vec<Pacer> {
        vec![Pacer::api_gateway(), Pacer::lambda(), Pacer::logs(), Pacer::wafv2()]
    }

    /// The operation a request of this pacer's service counts as (see [`Service`]).
    pub fn operation_of(&self, method: &str, uri: &str, target: Option<&str>) -> Option<&'static str> {
        (self.service.operation)(method, uri, target)
    }

    /// Whether a call of `operation` is paced at all: it takes a token of the account bucket, or has a
    /// limit of its own.
    pub fn paces(&self, operation: Option<&str>) -> bool {
        self.limits.limits(self.limited(operation))
    }

    /// From now on, paces from `ledger`'s record of `budget` (shared with every process using it);
    /// a no-op when already attached to that budget.
    pub fn attach(&self, ledger: Arc<dyn PaceLedger>, budget: Budget) {
        let Ok(mut shared) = self.shared.lock() else { return };
        if shared.as_ref().is_none_or(|s| s.budget != budget) {
            tracing::debug!(account = %budget.account_id, region = %budget.region, service = %budget.service, "pacing from the state store's ledger");
            *shared = Some(Shared { ledger, budget });
        }
    }
    /// Whether a shared ledger is in use.
    pub fn is_shared(&self) -> bool {
        self.shared().is_some()
    }

    fn shared(&self) -> Option<Shared> {
        if self.clock.now_ms() < self.paused_until.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.shared.lock().ok().and_then(|s| s.clone())
    }

    /// After the ledger failed (a busy or unwritable state file): pacing goes on in this process, from
    /// the last rows the ledger gave, and the ledger is tried again after `LEDGER_RETRY`.
    fn degrade(&self, error: &crate::state::StateError) {
        let now = self.clock.now_ms();
        let until = now + LEDGER_RETRY.as_millis() as i64;
        if self.paused_until.fetch_max(until, std::sync::atomic::Ordering::Relaxed) <= now {
            tracing::warn!(service = self.service.name, error = %error, retry_in_s = LEDGER_RETRY.as_secs(), "the state store's pacing ledger failed; pacing this service's calls within this process only until it answers again (other processes' calls are not accounted for meanwhile)");
        }
    }

    /// Merges the ledger's rows into the local copy (each time the later of the two, whatever order
    /// concurrent answers arrive in).
    fn mirror(&self, rows: Rows) {
        if let Ok(mut local) = self.local.lock() {
            for (bucket, row) in rows {
                let mine = local.entry(bucket).or_default();
                mine.at_ms = mine.at_ms.max(row.at_ms);
                mine.spent_ms = mine.spent_ms.max(row.spent_ms);
            }
        }
    }

    /// Runs `change` on the local rows at the clock's time.
    fn locally(&self, change: impl FnOnce(&mut Rows, i64) -> i64) -> i64 {
        let now = self.clock.now_ms();
        match self.local.lock() {
            Ok(mut rows) => {
                pacing::prune(&mut rows, now);
                change(&mut rows, now)
            }
            Err(_) => now,
        }
    }

    /// The operation a call counts as, if it has a limit of its own or stands apart from the account
    /// bucket; `None`: a call that takes a token of the account bucket only.
    fn limited<'a>(&self, operation: Option<&'a str>) -> Option<&'a str> {
        operation.filter(|o| self.limits.spacing_of(o).is_some() || self.limits.apart.contains(o))
    }

    /// Reserves a slot: returns it.
    async fn reserve(&self, operation: Option<&str>) -> i64 {
        if let Some(s) = self.shared() {
            match s.ledger.reserve(&s.budget, &self.limits, operation, &self.clock).await {
                Ok((slot, rows)) => {
                    self.mirror(rows);
                    return slot;
                }
                Err(e) => self.degrade(&e),
            }
        }
        self.locally(|rows, now| pacing::reserve(rows, &self.limits, operation, now))
    }

    /// Whether the slot of `operation` reserved at `reserved` was voided by a 429 since.
    async fn overtaken(&self, operation: &str, reserved: i64) -> bool {
        if let Some(s) = self.shared() {
            match s.ledger.row(&s.budget, operation).await {
                Ok(row) => return pacing::overtaken(row, &self.limits, operation, reserved),
                Err(e) => self.degrade(&e),
            }
        }
        let row = self.local.lock().ok().and_then(|rows| rows.get(operation).copied());
        pacing::overtaken(row, &self.limits, operation, reserved)
    }

    /// Reserves the next slot for `operation` and waits for it (outside any transaction); returns how
    /// long it waited.
    pub async fn acquire(&self, operation: Option<&str>) -> Duration {
        self.acquire_for(operation, None).await
    }

    /// [`Pacer::acquire`] for an attempt of the SDK call `invocation`: a retry after a 429 takes the
    /// slot reserved for it then.
    pub async fn acquire_for(&self, operation: Option<&str>, invocation: Option<&str>) -> Duration {
        match self.pass(operation, invocation, None).await {
            Pass::Go(waited) | Pass::Resign(waited) => waited,
        }
    }

    /// Reserves the next slot for an attempt of `operation` (the SDK call `invocation`'s, which takes
    /// the slot kept for it, if any) and waits for it. An attempt signed at `signed` (clock ms) that
    /// has waited more than [`RESIGN_AFTER`] since is not to be sent: its slot is kept for the SDK
    /// call's retry, which goes at once, and the wait is counted with the retry's (one paced call).
    async fn pass(&self, operation: Option<&str>, invocation: Option<&str>, signed: Option<i64>) -> Pass {
        let operation = self.limited(operation);
        if !self.limits.limits(operation) {
            return Pass::Go(Duration::ZERO);
        }
        let mut held = invocation.and_then(|id| self.held.lock().ok()?.remove(id));
        let resumed = held.and_then(|h| h.resigned_since);
        let start = resumed.unwrap_or_else(|| self.clock.now_ms());
        // This process's share first (its own record), then the account's. A retry sent back to be
        // signed again had its share's slot already.
        if resumed.is_none()
            && let Some(slot) = self.capped(operation)
        {
            self.clock.sleep_until(slot).await;
        }
        let (reserved, slot) = loop {
            let (reserved, slot) = match held.take() {
                Some(given) => (given.reserved, given.slot),
                None => (self.clock.now_ms(), self.reserve(operation).await),
            };
            let wait = slot - self.clock.now_ms();
            if wait > 0 {
                tracing::debug!(service = self.service.name, ?operation, wait_ms = wait, "pacing a call to the service's limits");
                self.clock.sleep_until(slot).await;
            }
            // A 429 met meanwhile (by any process using the ledger) voided the operation's slots given
            // out before it: this one is reserved again.
            match operation {
                Some(op) if self.overtaken(op, reserved).await => {
                    tracing::debug!(operation = op, "slot voided by a 429; reserving again");
                }
                _ => break (reserved, slot),
            }
        };
        let now = self.clock.now_ms();
        let waited = Duration::from_millis((now - start).max(0) as u64);
        if let (Some(signed), Some(id)) = (signed, invocation)
            && now - signed > RESIGN_AFTER.as_millis() as i64
        {
            self.hold(id, Held { reserved, slot, resigned_since: Some(start) });
            tracing::info!(
                service = self.service.name,
                ?operation,
                waited_s = (now - signed) / 1000,
                "a paced call waited longer than its signature stays valid; having it signed again, it goes at once"
            );
            return Pass::Resign(waited);
        }
        if let Some(stats) = &self.stats {
            stats.paced(self.service.stats, operation.unwrap_or(ACCOUNT_RATE), waited);
        }
        Pass::Go(waited)
    }

    /// Keeps `held` for the next attempt of the SDK call `invocation`; forgets those long past (their
    /// call ended, or was dropped, without a retry).
    fn hold(&self, invocation: &str, held: Held) {
        let now = self.clock.now_ms();
        if let Ok(mut all) = self.held.lock() {
            all.retain(|_, h| h.slot > now - 60_000);
            all.insert(invocation.to_string(), held);
        }
    }

    /// Records that the endpoint refused a paced call of `operation` with a throttling answer (another
    /// client spent the budget): marks the bucket spent and reserves the retry's slot at the earliest
    /// moment the limit allows (held for the SDK call `invocation`); returns how long until then. A
    /// call this pacer does not limit marks nothing (zero).
    pub async fn spent(&self, operation: Option<&str>, invocation: Option<&str>) -> Duration {
        let operation = self.limited(operation);
        if !self.limits.limits(operation) {
            return Duration::ZERO;
        }
        let now = self.clock.now_ms();
        let mut answer = None;
        if let Some(s) = self.shared() {
            match s.ledger.spent(&s.budget, &self.limits, operation, &self.clock).await {
                Ok((slot, rows)) => {
                    let at = rows.get(operation.unwrap_or(pacing::ACCOUNT_BUCKET)).map_or(now, |r| r.spent_ms);
                    self.mirror(rows);
                    answer = Some((at, slot));
                }
                Err(e) => self.degrade(&e),
            }
        }
        let (at, slot) = match answer {
            Some(a) => a,
            None => {
                let mut at = now;
                let slot = self.locally(|rows, now| {
                    at = now;
                    pacing::spent(rows, &self.limits, operation, now)
                });
                (at, slot)
            }
        };
        if let Some(id) = invocation {
            // Reserved just after the 429 (a later one voids it).
            self.hold(id, Held { reserved: at + 1, slot, resigned_since: None });
        }
        if let Some(stats) = &self.stats {
            stats.pace_throttled(self.service.stats, operation.unwrap_or(ACCOUNT_RATE));
        }
        let wait = Duration::from_millis((slot - self.clock.now_ms()).max(0) as u64);
        tracing::info!(
            service = self.service.name,
            ?operation,
            retry_in_ms = wait.as_millis() as u64,
            "the service throttled a paced call (another client is using the account's budget); retrying when the limit allows"
        );
        wait
    }
}

/// The API Gateway operations that have their own limit, told apart by method and URI (a full URL,
/// as the HTTP layer sees it, or just a path).
pub fn apigw_operation(method: &str, uri: &str) -> Option<&'static str> {
    let segments = segments(uri);
    match (method, segments.as_slice()) {
        ("POST", ["restapis"]) => Some("CreateRestApi"),
        ("DELETE", ["restapis", _]) => Some("DeleteRestApi"),
        ("POST", ["restapis", _, "deployments"]) => Some("CreateDeployment"),
        _ => None,
    }
}

/// The Lambda operations that stand apart from the rest of the control plane, told apart by method
/// and URI (`/<api version>/functions/<name>…`): `GetFunction` and `GetPolicy` (rates of their own)
/// and the invocations (outside the control plane's limit). Every other Lambda call shares the
/// control plane's rate.
pub fn lambda_operation(method: &str, uri: &str) -> Option<&'static str> {
    match (method, segments(uri).as_slice()) {
        ("GET", [_, "functions", _]) => Some("GetFunction"),
        ("GET", [_, "functions", _, "policy"]) => Some("GetPolicy"),
        (_, [_, "functions", _, "invocations" | "invoke-async" | "response-streaming-invocations"]) => Some("Invoke"),
        _ => None,
    }
}

/// The operation named by a JSON-protocol request's `X-Amz-Target` (`Logs_20140328.DescribeLogGroups`,
/// `AWSWAF_20190729.GetWebACL`), if it is one of `limited`.
fn target_operation(target: Option<&str>, limited: &'static [(&'static str, f64)]) -> Option<&'static str> {
    let action = target?.rsplit('.').next()?.trim();
    limited.iter().map(|(op, _)| *op).find(|op| *op == action)
}

/// The path segments of a URI (a full URL, as the HTTP layer sees it, or just a path), without its
/// query.
fn segments(uri: &str) -> Vec<&str> {
    path_of(uri).split(['?', '#']).next().unwrap_or("").trim_matches('/').split('/').collect()
}

/// The path (and query) of a URI: what follows `scheme://authority`, or the URI itself when it is
/// already a path.
fn path_of(uri: &str) -> &str {
    match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => uri,
    }
}

/// The signing service of a request (`Credential=AKID/date/region/SERVICE/aws4_request`).
fn service(request: &HttpRequest) -> Option<&str> {
    let auth = request.headers().get("authorization")?;
    let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
    scope.split('/').nth(3)
}

/// Whether pacing is on (`RECONCILE_PACING=off` turns it off).
pub fn enabled() -> bool {
    !matches!(std::env::var("RECONCILE_PACING").as_deref(), Ok("off" | "0" | "false"))
}

/// The SDK's default HTTPS client, with the requests of the services of `pacers` paced.
pub fn http_client(pacers: Vec<Arc<Pacer>>) -> SharedHttpClient {
    let inner = aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut builder = aws_smithy_http_client::ConnectorBuilder::default()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc));
        builder.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            builder.set_sleep_impl(c.sleep_impl());
        }
        builder.set_proxy_config(Some(aws_smithy_http_client::proxy::ProxyConfig::from_env()));
        builder.build()
    });
    SharedHttpClient::new(PacedClient { inner, pacers: pacers.into() })
}

/// The attempt number in the SDK's `amz-sdk-request` header (`attempt=2; max=10`).
fn attempt_of(header: &str) -> Option<u32> {
    header.split(';').find_map(|part| part.trim().strip_prefix("attempt=")?.trim().parse().ok())
}

/// The error codes of a rate throttle: `TooManyRequestsException` (API Gateway and Lambda, with HTTP
/// 429) and `ThrottlingException` (CloudWatch Logs and WAFv2, HTTP 400: the common throttling error
/// of AWS's JSON-protocol services; `Throttling` in older ones). Errors about counts of resources
/// (`LimitExceededException` with a 400, WAFv2's `WAFLimitsExceededException`) say nothing about the
/// request rate and are not throttles.
const THROTTLING_CODES: &[&str] = &["TooManyRequestsException", "ThrottlingException", "Throttling"];

/// Whether an error code (`ThrottlingException`, `com.amazonaws.logs#ThrottlingException`, or an
/// `x-amzn-errortype` value with a `:…` suffix) is a rate throttle.
fn is_throttling_code(code: &str) -> bool {
    let code = code.split(':').next().unwrap_or_default();
    THROTTLING_CODES.contains(&code.rsplit('#').next().unwrap_or_default().trim())
}

/// Whether a response is a throttling answer: a 429 (API Gateway's `TooManyRequestsException`, or
/// `LimitExceededException` for a rate; Lambda's `TooManyRequestsException`), or a throttling error
/// code in the `x-amzn-errortype` header or, for a 400 without one, the JSON body's `__type` (read
/// here, error bodies are small, and put back for the SDK).
async fn is_throttled(response: &mut HttpResponse) -> Result<bool, ConnectorError> {
    let status = response.status().as_u16();
    if status == 429 {
        return Ok(true);
    }
    if let Some(kind) = response.headers().get("x-amzn-errortype") {
        return Ok(is_throttling_code(kind));
    }
    if status != 400 {
        return Ok(false);
    }
    // An error body is a small JSON document; one known to be large is left to the SDK unread (and a
    // stalled one times out below).
    let length = response.headers().get("content-length").and_then(|l| l.parse::<u64>().ok()).or(response.body().content_length());
    if length.is_some_and(|l| l > MAX_ERROR_BODY) {
        return Ok(false);
    }
    let read = ByteStream::new(response.take_body()).collect();
    let body = match tokio::time::timeout(ERROR_BODY_TIMEOUT, read).await {
        Ok(body) => body.map_err(|e| ConnectorError::io(e.into()))?.into_bytes(),
        // A stalled error body: a transient failure, which the SDK retries.
        Err(elapsed) => return Err(ConnectorError::timeout(elapsed.into())),
    };
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| ["__type", "code"].iter().find_map(|k| v.get(*k).and_then(|c| c.as_str()).map(str::to_string)));
    *response.body_mut() = SdkBody::from(body);
    Ok(code.is_some_and(|c| is_throttling_code(&c)))
}

/// The largest 400 body read for its error code (AWS's error documents are a few hundred bytes).
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// How long reading a 400 body for its error code may take.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct PacedClient {
    inner: SharedHttpClient,
    pacers: Arc<[Arc<Pacer>]>,
}

impl HttpClient for PacedClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector { inner: self.inner.http_connector(settings, components), pacers: self.pacers.clone() })
    }
}

/// Sends each request signed for a paced service through that service's pacer. A request held longer
/// than [`RESIGN_AFTER`] is not sent: the SDK gets [`resign_answer`] and retries it at once, signed
/// again, into the slot it waited for.
#[derive(Debug, Clone)]
struct PacedConnector {
    inner: SharedHttpConnector,
    pacers: Arc<[Arc<Pacer>]>,
}

impl PacedConnector {
    /// The pacer of the service `request` is signed for, and the operation it counts as, if the
    /// pacer limits it.
    fn route(&self, request: &HttpRequest) -> Option<(Arc<Pacer>, Option<&'static str>)> {
        let signed_for = service(request)?;
        let pacer = self.pacers.iter().find(|p| p.service.sigv4 == signed_for)?;
        let operation = pacer.operation_of(request.method(), request.uri(), request.headers().get("x-amz-target"));
        pacer.paces(operation).then(|| (pacer.clone(), operation))
    }
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let Some((pacer, operation)) = self.route(&request) else {
            return self.inner.call(request);
        };
        // The SDK signed the request just before handing it over: its signature's age counts from now.
        let signed = pacer.clock.now_ms();
        let invocation = request.headers().get("amz-sdk-invocation-id").map(str::to_string);
        let attempt = request.headers().get("amz-sdk-request").and_then(attempt_of).unwrap_or(1);
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            if let Pass::Resign(waited) = pacer.pass(operation, invocation.as_deref(), Some(signed)).await {
                return Ok(resign_answer(pacer.service, waited));
            }
            let mut response = inner.call(request).await?;
            if is_throttled(&mut response).await? {
                // Tell the SDK's retry when the limit allows the call again (it waits that instead of
                // its exponential backoff, and still gives up after its attempts); the retry passes
                // through the pacer, which holds it until its slot. An account-wide bucket frees a
                // token every fraction of a second: a second throttle there means someone outside
                // keeps it empty, and the SDK's backoff applies from then on (the pacer still holds
                // each retry for a token).
                let wait = pacer.spent(operation, invocation.as_deref()).await.as_millis() as u64;
                if pacer.limited(operation).is_some() || attempt <= 1 {
                    let asked = response.headers().get("x-amz-retry-after").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                    response.headers_mut().insert("x-amz-retry-after", wait.max(asked).max(1).to_string());
                }
            }
            Ok(response)
        })
    }
}

/// The answer given to the SDK, instead of sending a request that waited `waited` for its slot, longer
/// than its signature stays valid: the service's throttling error, which the SDK retries (signing the
/// request again) at no cost to its retry quota (`Aws::connect` sets throttling retries free), after
/// `x-amz-retry-after`: 0 ms (a retry policy that bounds it below by its backoff, Retry Behavior 2.1,
/// waits a fraction of a second more). It costs one of the SDK's attempts. Marked with
/// [`RESIGN_HEADER`] so that the call counters leave it out: AWS never saw it.
fn resign_answer(service: &Service, waited: Duration) -> HttpResponse {
    let message = format!(
        "not sent: the request waited {} s for its slot under the service's rate limits, longer than a request signature stays valid; the SDK signs it again and it goes at once",
        waited.as_secs()
    );
    let body = serde_json::json!({"__type": service.throttle_code, "message": message}).to_string();
    let mut response = HttpResponse::new(http::StatusCode::TOO_MANY_REQUESTS.into(), SdkBody::from(body));
    let headers = response.headers_mut();
    headers.insert("x-amzn-errortype", service.throttle_code);
    headers.insert("content-type", "application/json");
    headers.insert("x-amz-retry-after", "0");
    headers.insert(RESIGN_HEADER, "1");
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use tokio::time::Instant;

    #[test]
    fn reads_the_attempt_number() {
        assert_eq!(attempt_of("attempt=1; max=10"), Some(1));
        assert_eq!(attempt_of("ttl=20261202T030000Z; attempt=3; max=10"), Some(3));
        assert_eq!(attempt_of("max=10"), None);
    }

    #[test]
    fn tells_the_limited_operations_apart() {
        assert_eq!(apigw_operation("POST", "/restapis"), Some("CreateRestApi"));
        assert_eq!(apigw_operation("DELETE", "/restapis/abc123"), Some("DeleteRestApi"));
        assert_eq!(apigw_operation("POST", "/restapis/abc123/deployments"), Some("CreateDeployment"));
        assert_eq!(apigw_operation("GET", "/restapis/abc123/deployments"), None);
        assert_eq!(apigw_operation("DELETE", "/restapis/abc123/stages/prod"), None);
        // The HTTP layer sees full URLs, not paths.
        assert_eq!(apigw_operation("POST", "http://127.0.0.1:4566/restapis"), Some("CreateRestApi"));
        assert_eq!(apigw_operation("POST", "https://apigateway.us-east-1.amazonaws.com/restapis/a1/deployments"), Some("CreateDeployment"));
        assert_eq!(apigw_operation("DELETE", "https://apigateway.eu-west-1.amazonaws.com/restapis/a1?x=1"), Some("DeleteRestApi"));
        assert_eq!(apigw_operation("GET", "https://apigateway.eu-west-1.amazonaws.com/restapis"), None);
        assert_eq!(apigw_operation("POST", "https://apigateway.eu-west-1.amazonaws.com"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_limits() {
        let pacer = Arc::new(Pacer::api_gateway().with_clock(Clock::at(1_000_000)));
        let start = Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let pacer = pacer.clone();
                tokio::spawn(async move {
                    pacer.acquire(Some(if i % 2 == 0 { "CreateDeployment" } else { "CreateRestApi" })).await;
                    Instant::now() - start
                })
            })
            .collect();
        let mut deployments = Vec::new();
        let mut apis = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            let at = t.await.unwrap().as_millis();
            if i % 2 == 0 { deployments.push(at) } else { apis.push(at) }
        }
        deployments.sort();
        apis.sort();
        assert_eq!(deployments, vec![0, 5100, 10200], "one deployment every 5 s (+ margin), whoever asks");
        assert_eq!(apis, vec![0, 3100, 6200], "one REST API every 3 s (+ margin), independent of deployments");
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_limited_operations_and_bounds_the_rate() {
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING).with_clock(Clock::at(1_000_000));
        let start = Instant::now();
        for _ in 0..3 {
            pacer.acquire(Some("CreateDeployment")).await;
        }
        assert_eq!((Instant::now() - start).as_secs(), 10, "three deployments: at 0 s, 5 s and 10 s");

        // 40 calls of burst, then 10 per second: 60 more calls take about 6 s.
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING).with_clock(Clock::at(1_000_000));
        let start = Instant::now();
        for _ in 0..100 {
            pacer.acquire(None).await;
        }
        let took = Instant::now() - start;
        assert!(took >= Duration::from_millis(5900) && took <= Duration::from_millis(6100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_caps_the_rate_and_the_spacing() {
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING).with_share(0.5).with_clock(Clock::at(1_000_000));
        assert_eq!(pacer.share(), 0.5);
        assert_eq!(pacer.rate_per_s(), Some(5.0));
        let start = Instant::now();
        for _ in 0..3 {
            pacer.acquire(Some("CreateDeployment")).await;
        }
        assert_eq!((Instant::now() - start).as_secs(), 20, "half the frequency: at 0 s, 10 s and 20 s");

        // Half the burst (20 calls), then 5 per second: 80 more calls take 16 s.
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING).with_share(0.5).with_clock(Clock::at(1_000_000));
        let start = Instant::now();
        for _ in 0..100 {
            pacer.acquire(None).await;
        }
        let took = Instant::now() - start;
        assert!(took >= Duration::from_millis(15_900) && took <= Duration::from_millis(16_100), "{took:?}");

        // A share of 1 or more (or nonsense) is no cap.
        for share in [1.0, 2.0, 0.0, f64::NAN] {
            assert_eq!(Pacer::new(10.0, 40.0, APIGW_SPACING).with_share(share).share(), 1.0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_changed_while_running_applies_to_the_next_calls() {
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING).with_share(0.5).with_clock(Clock::at(1_000_000));
        let start = Instant::now();
        pacer.acquire(Some("CreateDeployment")).await;
        pacer.acquire(Some("CreateDeployment")).await;
        assert_eq!((Instant::now() - start).as_secs(), 10, "at 0.5: one deployment every 10 s");

        // Split between two watchers: a quarter, a deployment every 20 s (from the last slot given).
        pacer.set_share(0.25);
        assert_eq!((pacer.share(), pacer.rate_per_s()), (0.25, Some(2.5)));
        pacer.acquire(Some("CreateDeployment")).await;
        pacer.acquire(Some("CreateDeployment")).await;
        assert_eq!(
            (Instant::now() - start).as_secs(),
            20 + 20,
            "the slot after the change was already given at 0.5 (20 s), the next one 20 s later"
        );

        // Back to the whole budget: no cap at all.
        pacer.set_share(1.0);
        assert_eq!((pacer.share(), pacer.rate_per_s()), (1.0, Some(10.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_larger_share_takes_effect_at_once_for_slots_already_reserved() {
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING).with_share(0.1).with_clock(Clock::at(1_000_000));
        let start = Instant::now();
        pacer.acquire(Some("DeleteRestApi")).await;
        // At 0.1 the next DeleteRestApi would wait 300 s; the share goes back to 0.5 (a watcher left).
        pacer.set_share(0.5);
        pacer.acquire(Some("DeleteRestApi")).await;
        assert_eq!((Instant::now() - start).as_secs(), 60, "the spacing at 0.5 (30 s / 0.5), not the 300 s reserved at 0.1");
    }

    /// An inner connector that answers 200 at once and records when (since its start) each request
    /// reached it.
    #[derive(Debug, Clone)]
    struct Recorder(Arc<std::sync::Mutex<Vec<(String, Duration)>>>, Instant);

    impl HttpConnector for Recorder {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            if let Ok(mut seen) = self.0.lock() {
                seen.push((request.uri().to_string(), Instant::now() - self.1));
            }
            let response =
                aws_smithy_runtime_api::http::Response::new(200u16.try_into().expect("200"), aws_smithy_types::body::SdkBody::empty());
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    fn request(method: &str, uri: &str, service: &str) -> HttpRequest {
        let mut r = HttpRequest::new(aws_smithy_types::body::SdkBody::empty());
        r.set_method(method).expect("method");
        r.set_uri(uri).expect("uri");
        let auth = format!("AWS4-HMAC-SHA256 Credential=AKID/20261125/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00");
        r.headers_mut().insert("authorization", auth);
        r
    }

    /// A connector pacing every paced service (each pacer on the test clock), over `inner`.
    fn connector_over(inner: impl HttpConnector + 'static) -> PacedConnector {
        let pacers: Vec<Arc<Pacer>> = Pacer::all().into_iter().map(|p| Arc::new(p.with_clock(Clock::at(1_000_000)))).collect();
        PacedConnector { inner: SharedHttpConnector::new(inner), pacers: pacers.into() }
    }

    #[tokio::test(start_paused = true)]
    async fn the_connector_paces_signed_requests_by_service_and_operation() {
        let recorder = Recorder(Default::default(), Instant::now());
        let connector = connector_over(recorder.clone());
        let logs = |action: &str| format!("Logs_20140328.{action}");
        let waf = |action: &str| format!("AWSWAF_20190729.{action}");
        let mut calls: Vec<(String, String, String, Option<String>)> = Vec::new();
        let mut call = |m: &str, u: &str, s: &str, t: Option<String>| calls.push((m.into(), u.into(), s.into(), t));
        for _ in 0..2 {
            call("POST", "http://127.0.0.1:4566/restapis", "apigateway", None);
            call("POST", "http://127.0.0.1:4566/restapis/a1/deployments", "apigateway", None);
            // GetPolicy has a rate of its own (15/s), apart from the control plane's.
            call("GET", "http://127.0.0.1:4566/2015-03-31/functions/f1/policy", "lambda", None);
            call("POST", "http://127.0.0.1:4566/2015-03-31/functions/f1/invocations", "lambda", None);
            call("POST", "http://127.0.0.1:4566/?describe", "logs", Some(logs("DescribeLogGroups")));
            call("POST", "http://127.0.0.1:4566/?create", "logs", Some(logs("CreateLogGroup")));
            call("POST", "http://127.0.0.1:4566/?associate", "wafv2", Some(waf("AssociateWebACL")));
            call("POST", "http://127.0.0.1:4566/?delete", "wafv2", Some(waf("DeleteWebACL")));
            call("GET", "http://127.0.0.1:4566/?role", "iam", None);
        }
        // The control plane: 15 per second (at 95%), one call per interval, GetFunction not among them.
        for i in 0..3 {
            call("POST", &format!("http://127.0.0.1:4566/2015-03-31/functions/f{i}/versions"), "lambda", None);
            call("GET", "http://127.0.0.1:4566/2015-03-31/functions/f1?Qualifier=live", "lambda", None);
        }
        let tasks: Vec<_> = calls
            .iter()
            .map(|(m, u, s, t)| {
                let mut r = request(m, u, s);
                if let Some(t) = t {
                    r.headers_mut().insert("x-amz-target", t.clone());
                }
                tokio::spawn(connector.call(r))
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("response");
        }
        let seen = recorder.0.lock().expect("lock").clone();
        let at = |suffix: &str| -> Vec<u64> {
            let mut at: Vec<u64> = seen.iter().filter(|(u, _)| u.ends_with(suffix)).map(|(_, d)| d.as_millis() as u64).collect();
            at.sort();
            at
        };
        assert_eq!(at("/restapis"), vec![0, 3100], "CreateRestApi spaced 3 s (+ margin) apart: {seen:?}");
        assert_eq!(at("/deployments"), vec![0, 5100], "CreateDeployment spaced 5 s (+ margin) apart: {seen:?}");
        assert_eq!(at("/policy"), vec![0, 71], "GetPolicy at 15 per second (95%): {seen:?}");
        assert_eq!(at("/versions"), vec![0, 71, 142], "the rest of Lambda's control plane at 15 per second: {seen:?}");
        assert_eq!(at("Qualifier=live"), vec![0, 11, 22], "GetFunction at its own 100 per second: {seen:?}");
        assert_eq!(at("/invocations"), vec![0, 0], "invocations are outside the control plane: {seen:?}");
        assert_eq!(at("?describe"), vec![0, 211], "DescribeLogGroups at 5 per second: {seen:?}");
        assert_eq!(at("?create"), vec![0, 0], "no documented rate for CreateLogGroup: not paced: {seen:?}");
        assert_eq!(at("?associate"), vec![0, 2106], "AssociateWebACL one every 2 s: {seen:?}");
        assert_eq!(at("?delete"), vec![0, 0], "no documented quota for WAFv2's Delete actions: {seen:?}");
        assert_eq!(at("?role"), vec![0, 0], "IAM is not paced: {seen:?}");
    }

    /// Answers every request with `status` and a JSON error body of `code` (no `x-amzn-errortype`
    /// header, as CloudWatch Logs and WAFv2 answer).
    #[derive(Debug, Clone)]
    struct JsonError(u16, &'static str);

    impl HttpConnector for JsonError {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let body = format!(r#"{{"__type":"{}","message":"Rate exceeded"}}"#, self.1);
            let response = aws_smithy_runtime_api::http::Response::new(self.0.try_into().expect("status"), SdkBody::from(body));
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_rate_throttle_spends_the_budget() {
        let throttles = [
            (400, "ThrottlingException", "logs", "Logs_20140328.DescribeLogGroups"),
            (400, "com.amazonaws.logs#ThrottlingException", "logs", "Logs_20140328.DescribeLogGroups"),
            (400, "ThrottlingException", "wafv2", "AWSWAF_20190729.AssociateWebACL"),
        ];
        for (status, code, service, target) in throttles {
            let connector = connector_over(JsonError(status, code));
            let mut r = request("POST", "http://127.0.0.1:4566/", service);
            r.headers_mut().insert("x-amz-target", target);
            let response = connector.call(r).await.expect("response");
            assert!(response.headers().get("x-amz-retry-after").is_some(), "{code} from {service} is a throttle");
            let body = response.body().bytes().expect("the body is put back in memory");
            assert!(std::str::from_utf8(body).expect("utf-8").contains(code), "the SDK still reads the error");
        }
        for (status, code) in [(400, "WAFLimitsExceededException"), (400, "ResourceNotFoundException"), (400, "LimitExceededException")] {
            let connector = connector_over(JsonError(status, code));
            let mut r = request("POST", "http://127.0.0.1:4566/", "wafv2");
            r.headers_mut().insert("x-amz-target", "AWSWAF_20190729.AssociateWebACL");
            let response = connector.call(r).await.expect("response");
            assert_eq!(response.headers().get("x-amz-retry-after"), None, "{code} is no rate throttle");
        }
        // Lambda's throttle is a 429.
        let connector = connector_over(JsonError(429, "TooManyRequestsException"));
        let response = connector.call(request("GET", "http://127.0.0.1:4566/2015-03-31/functions/f1", "lambda")).await.expect("response");
        assert_eq!(response.headers().get("x-amz-retry-after"), Some("11"), "GetFunction's next slot, 1/95 s later");
    }

    #[test]
    fn tells_lambda_and_json_operations_apart() {
        assert_eq!(lambda_operation("GET", "/2015-03-31/functions/Hello"), Some("GetFunction"));
        assert_eq!(
            lambda_operation("GET", "https://lambda.us-east-1.amazonaws.com/2015-03-31/functions/Hello?Qualifier=3"),
            Some("GetFunction")
        );
        assert_eq!(
            lambda_operation("GET", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3AHello/policy"),
            Some("GetPolicy")
        );
        assert_eq!(lambda_operation("POST", "/2015-03-31/functions/Hello/policy"), None, "AddPermission is control plane");
        assert_eq!(lambda_operation("GET", "/2015-03-31/functions/Hello/configuration"), None);
        assert_eq!(lambda_operation("DELETE", "/2015-03-31/functions/Hello"), None);
        assert_eq!(lambda_operation("GET", "/2017-03-31/tags/arn"), None);
        assert_eq!(lambda_operation("POST", "/2015-03-31/functions/Hello/invocations"), Some("Invoke"));
        assert_eq!(target_operation(Some("Logs_20140328.DescribeLogGroups"), LOGS_RATES), Some("DescribeLogGroups"));
        assert_eq!(target_operation(Some("Logs_20140328.CreateLogGroup"), LOGS_RATES), None);
        assert_eq!(target_operation(Some("AWSWAF_20190729.GetWebACL"), WAFV2_RATES), Some("GetWebACL"));
        assert_eq!(target_operation(Some("AWSWAF_20190729.GetWebACLForResource"), WAFV2_RATES), Some("GetWebACLForResource"));
        assert_eq!(target_operation(None, WAFV2_RATES), None);
    }

    #[tokio::test(start_paused = true)]
    async fn lambda_keeps_to_its_control_plane_rate_and_get_function_to_its_own() {
        // 30 control plane calls at 15 per second (95%: one every 71 ms): 29 intervals.
        let pacer = Pacer::lambda().with_clock(Clock::at(1_000_000));
        assert_eq!(pacer.rate_per_s().map(|r| (r * 100.0).round() / 100.0), Some(14.08));
        let start = Instant::now();
        for _ in 0..30 {
            pacer.acquire(None).await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(29 * 71));

        // GetFunction is not slowed by the control plane's bucket, even when it is owed for seconds.
        let pacer = Arc::new(Pacer::lambda().with_clock(Clock::at(1_000_000)));
        let start = Instant::now();
        let control: Vec<_> = (0..60)
            .map(|_| {
                let pacer = pacer.clone();
                tokio::spawn(async move { pacer.acquire(None).await })
            })
            .collect();
        for _ in 0..30 {
            pacer.acquire(Some("GetFunction")).await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(29 * 11), "100 per second (95%), whatever else is queued");
        for t in control {
            t.await.expect("task");
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(59 * 71));

        // At half the share: half the rate.
        let pacer = Pacer::lambda().with_share(0.5).with_clock(Clock::at(1_000_000));
        let start = Instant::now();
        for _ in 0..30 {
            pacer.acquire(None).await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(29 * 142));
        assert_eq!(pacer.operation_rates().iter().find(|(op, _)| *op == "GetFunction").map(|(_, r)| r.round()), Some(45.0));
    }

    #[tokio::test(start_paused = true)]
    async fn logs_and_wafv2_keep_to_their_operations_rates_only() {
        let logs = Pacer::logs().with_clock(Clock::at(1_000_000));
        assert_eq!(logs.rate_per_s(), None, "no account-wide rate");
        let start = Instant::now();
        for _ in 0..10 {
            logs.acquire(Some("DescribeLogGroups")).await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(9 * 211), "5 per second (95%)");
        let start = Instant::now();
        for _ in 0..50 {
            assert_eq!(logs.acquire(Some("CreateLogGroup")).await, Duration::ZERO);
            assert_eq!(logs.acquire(None).await, Duration::ZERO);
        }
        assert_eq!(Instant::now() - start, Duration::ZERO, "operations without a documented rate are not held");
        assert!(!logs.paces(Some("CreateLogGroup")) && !logs.paces(None) && logs.paces(Some("DescribeLogGroups")));

        // Each WAFv2 action on its own: two associations 2 s apart, reads meanwhile at 5 per second.
        let waf = Arc::new(Pacer::wafv2().with_clock(Clock::at(1_000_000)));
        let start = Instant::now();
        let associate = tokio::spawn({
            let waf = waf.clone();
            async move {
                waf.acquire(Some("AssociateWebACL")).await;
                waf.acquire(Some("AssociateWebACL")).await;
                Instant::now() - start
            }
        });
        for _ in 0..5 {
            waf.acquire(Some("GetWebACL")).await;
        }
        assert_eq!(Instant::now() - start, Duration::from_millis(4 * 211));
        assert_eq!(associate.await.expect("task"), Duration::from_millis(2106), "one every 2 s (95%)");
        // A share below 1 slows each action, still apart.
        waf.set_share(0.5);
        let start = Instant::now();
        waf.acquire(Some("CreateWebACL")).await;
        waf.acquire(Some("CreateWebACL")).await;
        assert_eq!(Instant::now() - start, Duration::from_millis(2106));
    }

    fn budget() -> Budget {
        Budget { account_id: "123456789012".into(), region: "us-east-1".into(), service: APIGW_SERVICE.into() }
    }

    /// Two stores on one state file (two processes' views of it); then tokio's time is paused.
    async fn two_stores(dir: &std::path::Path) -> (crate::state::Store, crate::state::Store) {
        let path = dir.join("state.db");
        let a = crate::state::Store::open(&path).await.expect("open");
        let b = crate::state::Store::open(&path).await.expect("open again");
        tokio::time::pause();
        (a, b)
    }

    /// The SQLite ledger, each call made on the blocking pool. With tokio's time paused, the runtime
    /// jumps to the next timer whenever it waits, e.g. on SQLite's worker thread: it would fire the
    /// pool's acquire timeout. A blocking task holds the clock still meanwhile, as real time is.
    #[derive(Debug)]
    struct OffThread(crate::state::Store);

    impl OffThread {
        fn run<'a, T: Send + 'static>(
            &'a self,
            call: impl FnOnce(crate::state::Store) -> BoxFuture<'static, crate::state::Result<T>> + Send + 'static,
        ) -> BoxFuture<'a, crate::state::Result<T>> {
            let (store, handle) = (self.0.clone(), tokio::runtime::Handle::current());
            Box::pin(async move { tokio::task::spawn_blocking(move || handle.block_on(call(store))).await.expect("blocking task") })
        }
    }

    impl PaceLedger for OffThread {
        fn reserve<'a>(
            &'a self,
            b: &'a Budget,
            l: &'a Limits,
            op: Option<&'a str>,
            c: &'a Clock,
        ) -> BoxFuture<'a, crate::state::Result<(i64, Rows)>> {
            let (b, l, op, c) = (b.clone(), l.clone(), op.map(str::to_string), *c);
            self.run(move |store| Box::pin(async move { store.reserve(&b, &l, op.as_deref(), &c).await }))
        }

        fn spent<'a>(
            &'a self,
            b: &'a Budget,
            l: &'a Limits,
            op: Option<&'a str>,
            c: &'a Clock,
        ) -> BoxFuture<'a, crate::state::Result<(i64, Rows)>> {
            let (b, l, op, c) = (b.clone(), l.clone(), op.map(str::to_string), *c);
            self.run(move |store| Box::pin(async move { store.spent(&b, &l, op.as_deref(), &c).await }))
        }

        fn row<'a>(&'a self, b: &'a Budget, bucket: &'a str) -> BoxFuture<'a, crate::state::Result<Option<pacing::Row>>> {
            let (b, bucket) = (b.clone(), bucket.to_string());
            self.run(move |store| Box::pin(async move { store.row(&b, &bucket).await }))
        }
    }

    /// Closes a store on the blocking pool (see [`OffThread`]), with time held still.
    async fn close(store: &crate::state::Store) {
        let (store, handle) = (store.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || handle.block_on(store.close())).await.expect("blocking task");
    }

    /// A pacer of "another process": its own clock on the same (paused) time, attached to `store`.
    fn process(store: &crate::state::Store) -> Arc<Pacer> {
        let pacer = Pacer::api_gateway().with_clock(Clock::at(1_000_000));
        pacer.attach(Arc::new(OffThread(store.clone())), budget());
        Arc::new(pacer)
    }

    #[tokio::test]
    async fn two_pacers_on_one_store_never_exceed_the_spacing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_stores(dir.path()).await;
        let (pa, pb) = (process(&a), process(&b));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (pacer, op) =
                    (if i % 2 == 0 { pa.clone() } else { pb.clone() }, if i < 4 { "CreateDeployment" } else { "CreateRestApi" });
                tokio::spawn(async move {
                    pacer.acquire(Some(op)).await;
                    (op, pacer.clock.now_ms())
                })
            })
            .collect();
        let mut released: Vec<(&str, i64)> = Vec::new();
        for t in tasks {
            released.push(t.await.unwrap());
        }
        assert!(pa.is_shared() && pb.is_shared(), "no ledger error");
        for (op, gap) in [("CreateDeployment", 5100), ("CreateRestApi", 3100)] {
            let mut at: Vec<i64> = released.iter().filter(|(o, _)| *o == op).map(|(_, t)| *t).collect();
            at.sort();
            assert_eq!(at.len(), 4);
            assert!(at.windows(2).all(|w| w[1] - w[0] >= gap), "{op} released {at:?}: closer than {gap} ms");
            assert!(at[3] - at[0] <= 3 * gap + 100, "{op} released {at:?}: no slot wasted");
        }
    }

    #[tokio::test]
    async fn each_service_paces_from_its_own_budget_in_the_shared_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_stores(dir.path()).await;
        let lambda = |store: &crate::state::Store| {
            let pacer = Pacer::lambda().with_clock(Clock::at(1_000_000));
            pacer.attach(Arc::new(OffThread(store.clone())), Budget { service: "lambda".into(), ..budget() });
            Arc::new(pacer)
        };
        let (la, lb) = (lambda(&a), lambda(&b));
        // API Gateway's calls (ten tokens of its bucket, a second of its rate) are another budget: they
        // do not hold Lambda's.
        let apigw = process(&a);
        for _ in 0..10 {
            assert_eq!(apigw.acquire(None).await, Duration::ZERO);
        }
        let start = la.clock.now_ms();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let pacer = if i % 2 == 0 { la.clone() } else { lb.clone() };
                tokio::spawn(async move {
                    pacer.acquire(None).await;
                    pacer.clock.now_ms()
                })
            })
            .collect();
        let mut released = Vec::new();
        for t in tasks {
            released.push(t.await.unwrap());
        }
        released.sort();
        assert!(la.is_shared() && lb.is_shared(), "no ledger error");
        assert!(released.windows(2).all(|w| w[1] - w[0] >= 71), "one control plane call per 71 ms, whichever process: {released:?}");
        assert!(released[0] - start < 71, "the first goes at once: {released:?} from {start}");
        assert!(released[5] - released[0] <= 5 * 71 + 100, "no slot wasted: {released:?}");
    }

    #[tokio::test]
    async fn a_new_process_paces_from_what_the_last_one_did() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_stores(dir.path()).await;
        let first = process(&a);
        // The account's burst (38 with the margin), used up by the first process, the last call a deployment.
        for _ in 0..37 {
            first.acquire(None).await;
        }
        first.acquire(Some("CreateDeployment")).await;
        let done = first.clock.now_ms();
        drop(first);
        close(&a).await;
        let second = process(&b);
        assert!(second.acquire(None).await >= Duration::from_millis(100), "the account bucket is remembered: no burst left");
        assert!(second.acquire(Some("CreateDeployment")).await >= Duration::from_millis(4900), "nor a spacing");
        assert!(second.clock.now_ms() - done >= 5100, "one deployment every 5 s (+ margin), whichever process makes it");
        // Only what the windows need is kept: once they pass, the ledger empties itself.
        tokio::time::sleep(Duration::from_secs(10)).await;
        second.acquire(None).await;
        tokio::time::resume();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT bucket, at_ms FROM pace_ledger").fetch_all(&b.pool_for_tests()).await.unwrap();
        assert_eq!(rows.len(), 1, "only the account bucket's row, for the call just made: {rows:?}");
    }

    #[tokio::test]
    async fn a_ledger_error_degrades_to_pacing_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _b) = two_stores(dir.path()).await;
        let pacer = process(&a);
        pacer.acquire(Some("CreateDeployment")).await;
        close(&a).await;
        let start = Instant::now();
        pacer.acquire(Some("CreateDeployment")).await;
        assert!(!pacer.is_shared(), "the broken ledger is set aside for a while");
        assert!(Instant::now() - start >= Duration::from_millis(5100), "what the ledger said is kept: the spacing still holds");
    }

    /// An HTTP client whose connector is given.
    #[derive(Debug, Clone)]
    struct Fixed(SharedHttpConnector);

    impl HttpClient for Fixed {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            self.0.clone()
        }
    }

    /// Answers the first `refuse` requests with API Gateway's 429, then 201; records when each came.
    #[derive(Debug, Clone)]
    struct Refuser(Arc<std::sync::Mutex<Vec<Duration>>>, Instant, usize);

    impl HttpConnector for Refuser {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let n = {
                let mut seen = self.0.lock().expect("lock");
                seen.push(Instant::now() - self.1);
                seen.len()
            };
            let (status, body) = if n <= self.2 { (429u16, r#"{"message":"Too Many Requests"}"#) } else { (201, r#"{"id":"d1"}"#) };
            let mut response = aws_smithy_runtime_api::http::Response::new(status.try_into().expect("status"), body.into());
            if status == 429 {
                response.headers_mut().insert("x-amzn-errortype", "TooManyRequestsException");
            }
            response.headers_mut().insert("content-type", "application/json");
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    fn apigw_client(connector: Refuser, pacer: Arc<Pacer>, attempts: u32) -> aws_sdk_apigateway::Client {
        let http = SharedHttpClient::new(PacedClient {
            inner: SharedHttpClient::new(Fixed(SharedHttpConnector::new(connector))),
            pacers: vec![pacer].into(),
        });
        let config = aws_sdk_apigateway::Config::builder()
            .behavior_version(aws_sdk_apigateway::config::BehaviorVersion::latest())
            .region(aws_sdk_apigateway::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_apigateway::config::Credentials::new("AKID", "SECRET", None, None, "test"))
            .http_client(http)
            // The retry policy `Aws::connect` sets.
            .retry_config(
                aws_sdk_apigateway::config::retry::RetryConfig::standard()
                    .with_max_attempts(attempts)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .stalled_stream_protection(aws_sdk_apigateway::config::StalledStreamProtectionConfig::disabled())
            .build();
        aws_sdk_apigateway::Client::from_conf(config)
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_retried_one_spacing_later_and_the_policy_still_gives_up() {
        let stats = CallStats::new();
        let pacer = Arc::new(Pacer::api_gateway().with_clock(Clock::at(1_000_000)).with_stats(stats.clone()));
        let refuser = Refuser(Default::default(), Instant::now(), 1);
        let client = apigw_client(refuser.clone(), pacer.clone(), 10);
        client.create_deployment().rest_api_id("a1").stage_name("prod").send().await.expect("the retry succeeds");
        let seen = refuser.0.lock().unwrap().clone();
        assert_eq!(seen, vec![Duration::ZERO, Duration::from_millis(5100)], "retried one spacing (+ margin) after the 429, no later");
        let paced = stats.pacing()[&(APIGW_SERVICE.to_string(), "CreateDeployment".to_string())];
        assert_eq!((paced.calls, paced.throttled), (2, 1), "{paced:?}");

        // Refused every time: the SDK's attempts bound it, each one spacing after the last.
        let refuser = Refuser(Default::default(), Instant::now(), usize::MAX);
        let client = apigw_client(refuser.clone(), Arc::new(Pacer::api_gateway().with_clock(Clock::at(1_000_000))), 3);
        let err = client.create_deployment().rest_api_id("a1").stage_name("prod").send().await.expect_err("gives up");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(429));
        let seen: Vec<u128> = refuser.0.lock().unwrap().iter().map(|d| d.as_millis()).collect();
        assert_eq!(seen, vec![0, 5100, 10200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_overtakes_slots_already_given_out() {
        let pacer = Arc::new(Pacer::api_gateway().with_clock(Clock::at(1_000_000)));
        let start = Instant::now();
        pacer.acquire(Some("CreateDeployment")).await;
        // A second call got the next slot (5.1 s) and waits for it; then the first is refused at 1 s.
        let waiting = tokio::spawn({
            let pacer = pacer.clone();
            async move {
                pacer.acquire(Some("CreateDeployment")).await;
                Instant::now() - start
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(pacer.spent(Some("CreateDeployment"), Some("call-1")).await, Duration::from_millis(5100));
        tokio::time::sleep(Duration::from_millis(5100)).await;
        assert_eq!(pacer.acquire_for(Some("CreateDeployment"), Some("call-1")).await, Duration::ZERO, "its slot was held for it");
        assert_eq!(Instant::now() - start, Duration::from_millis(6100), "the retry goes at the earliest moment");
        assert_eq!(
            waiting.await.unwrap(),
            Duration::from_millis(11_200),
            "the slot given out before the 429 was too soon; it is taken again"
        );
    }

    /// Pacers of every paced service on the test clock at `share`, counting in `stats`.
    fn pacers_at(share: f64, stats: &Arc<CallStats>) -> Vec<Arc<Pacer>> {
        Pacer::all().into_iter().map(|p| Arc::new(p.with_clock(Clock::at(1_000_000)).with_share(share).with_stats(stats.clone()))).collect()
    }

    /// A request of attempt `attempt` of the SDK call `invocation`, as the SDK hands it over.
    fn attempt(method: &str, uri: &str, invocation: &str, attempt: u32) -> HttpRequest {
        let mut r = request(method, uri, APIGW_SERVICE);
        r.headers_mut().insert("amz-sdk-invocation-id", invocation.to_string());
        r.headers_mut().insert("amz-sdk-request", format!("attempt={attempt}; max=10"));
        r
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_held_past_its_signature_is_sent_back_once_and_its_retry_goes_at_its_slot() {
        let stats = CallStats::new();
        let recorder = Recorder(Default::default(), Instant::now());
        // At a share of 0.1, DeleteRestApi calls are 301 s apart: the second waits past RESIGN_AFTER.
        let connector = PacedConnector { inner: SharedHttpConnector::new(recorder.clone()), pacers: pacers_at(0.1, &stats).into() };
        let start = Instant::now();
        let first = connector.call(attempt("DELETE", "http://127.0.0.1:4566/restapis/a1", "call-1", 1)).await.expect("response");
        assert_eq!(first.status().as_u16(), 200);

        let second = connector.call(attempt("DELETE", "http://127.0.0.1:4566/restapis/a2", "call-2", 1)).await.expect("response");
        assert_eq!(Instant::now() - start, Duration::from_millis(301_000), "it waited for its slot");
        assert_eq!(recorder.0.lock().expect("lock").len(), 1, "but was not sent with a signature that old");
        assert_eq!(second.status().as_u16(), 429);
        assert!(second.headers().contains_key(RESIGN_HEADER), "marked as not sent");
        assert_eq!(second.headers().get("x-amzn-errortype"), Some("TooManyRequestsException"), "a throttle the SDK retries for free");
        assert_eq!(second.headers().get("x-amz-retry-after"), Some("0"), "at once");

        // The SDK's retry (signed again) takes the slot kept for it, due: no second wait, no bounce.
        let retry = connector.call(attempt("DELETE", "http://127.0.0.1:4566/restapis/a2", "call-2", 2)).await.expect("response");
        assert_eq!(retry.status().as_u16(), 200);
        assert_eq!(Instant::now() - start, Duration::from_millis(301_000), "the retry went at once");
        let seen: Vec<u128> = recorder.0.lock().expect("lock").iter().map(|(_, d)| d.as_millis()).collect();
        assert_eq!(seen, vec![0, 301_000]);

        // One paced call per request sent, the bounced attempt's wait counted with its retry; no throttle.
        let paced = stats.pacing()[&(APIGW_SERVICE.to_string(), "DeleteRestApi".to_string())];
        assert_eq!(paced, crate::providers::calls::PaceCount { calls: 2, waited_ms: 301_000, max_wait_ms: 301_000, throttled: 0 });

        // The slot was not given twice: the next delete is one spacing after the retry's.
        connector.call(attempt("DELETE", "http://127.0.0.1:4566/restapis/a3", "call-3", 1)).await.expect("response");
        assert_eq!(Instant::now() - start, Duration::from_millis(602_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_wait_or_a_request_without_an_invocation_id_is_sent() {
        let stats = CallStats::new();
        let recorder = Recorder(Default::default(), Instant::now());
        // At the whole share DeleteRestApi calls are 30.1 s apart, well within a signature's validity.
        let connector = PacedConnector { inner: SharedHttpConnector::new(recorder.clone()), pacers: pacers_at(1.0, &stats).into() };
        for (i, id) in ["call-1", "call-2"].into_iter().enumerate() {
            let response =
                connector.call(attempt("DELETE", &format!("http://127.0.0.1:4566/restapis/a{i}"), id, 1)).await.expect("response");
            assert_eq!(response.status().as_u16(), 200);
        }
        // Without the SDK's invocation id no slot can be kept for a retry: it is sent however late.
        let connector = PacedConnector { inner: SharedHttpConnector::new(recorder.clone()), pacers: pacers_at(0.1, &stats).into() };
        for i in 0..2 {
            let response = connector.call(request("DELETE", &format!("http://127.0.0.1:4566/restapis/b{i}"), APIGW_SERVICE)).await;
            assert_eq!(response.expect("response").status().as_u16(), 200);
        }
        let seen: Vec<u128> = recorder.0.lock().expect("lock").iter().map(|(_, d)| d.as_millis()).collect();
        assert_eq!(seen, vec![0, 30_100, 30_100, 331_100]);
    }

    /// A client of the SDK crate `$sdk` over `http`, with the retry policy `Aws::connect` sets and the
    /// call counters; its retry quota has nothing in it, apart from throttling retries, which are free
    /// (as `Aws::connect` makes them).
    macro_rules! sdk_client {
        ($sdk:ident, $http:expr, $stats:expr) => {
            sdk_client!($sdk, $http, $stats, |retry| retry)
        };
        ($sdk:ident, $http:expr, $stats:expr, $retry:expr) => {{
            use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
            let quota = TokenBucket::builder().capacity(0).throttling_retry_cost(0).build();
            let config = $sdk::Config::builder()
                .behavior_version($sdk::config::BehaviorVersion::latest())
                .region($sdk::config::Region::new("us-east-1"))
                .credentials_provider($sdk::config::Credentials::new("AKID", "SECRET", None, None, "test"))
                .http_client($http)
                .retry_config(($retry)(
                    $sdk::config::retry::RetryConfig::standard()
                        .with_max_attempts(10)
                        .with_initial_backoff(Duration::from_millis(200))
                        .with_max_backoff(Duration::from_secs(20)),
                ))
                .stalled_stream_protection($sdk::config::StalledStreamProtectionConfig::disabled())
                .retry_partition(RetryPartition::custom("test").token_bucket(quota).build())
                .interceptor(crate::providers::calls::CountCalls($stats.clone()))
                .build();
            $sdk::Client::from_conf(config)
        }};
    }

    /// The paced HTTP client over `inner`, with `pacers`.
    fn paced_over(inner: impl HttpConnector + 'static, pacers: Vec<Arc<Pacer>>) -> SharedHttpClient {
        SharedHttpClient::new(PacedClient { inner: SharedHttpClient::new(Fixed(SharedHttpConnector::new(inner))), pacers: pacers.into() })
    }

    /// Records each request's arrival and `amz-sdk-request` header, and answers 200 `{}`.
    #[derive(Debug, Clone)]
    struct Attempts(Arc<std::sync::Mutex<Vec<(u128, String)>>>, Instant);

    impl HttpConnector for Attempts {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let header = request.headers().get("amz-sdk-request").unwrap_or_default().to_string();
            self.0.lock().expect("lock").push(((Instant::now() - self.1).as_millis(), header));
            let response = aws_smithy_runtime_api::http::Response::new(200u16.try_into().expect("200"), SdkBody::from("{}"));
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    impl Attempts {
        /// When each request came and which attempt of its call it was, sorted by time.
        fn seen(&self) -> Vec<(u128, u32)> {
            let mut seen: Vec<(u128, u32)> = self.0.lock().expect("lock").iter().map(|(at, h)| (*at, attempt_of(h).unwrap_or(0))).collect();
            seen.sort();
            seen
        }
    }

    #[tokio::test(start_paused = true)]
    async fn through_the_sdk_a_queue_longer_than_a_signature_lives_is_signed_again_not_refused() {
        // The executor's ten parallel deletes at the whole share: DeleteRestApi 30.1 s apart, so the
        // ninth waits 240.8 s and the tenth 270.9 s, past RESIGN_AFTER.
        let stats = CallStats::new();
        let endpoint = Attempts(Default::default(), Instant::now());
        let client = sdk_client!(aws_sdk_apigateway, paced_over(endpoint.clone(), pacers_at(1.0, &stats)), stats);
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { client.delete_rest_api().rest_api_id(format!("a{i}")).send().await })
            })
            .collect();
        for call in calls {
            call.await.expect("task").expect("every delete succeeds");
        }
        let want: Vec<(u128, u32)> = (0..10u128).map(|i| (i * 30_100, if i < 8 { 1 } else { 2 })).collect();
        assert_eq!(endpoint.seen(), want, "each at its slot, none later; the two that waited too long sent as the SDK's second attempt");
        let counted = stats.snapshot()[&("apigateway".to_string(), "DeleteRestApi".to_string())];
        assert_eq!(counted, crate::providers::calls::CallCount { calls: 10, errors: 0, throttled: 0 }, "the bounces are no AWS calls");
        let paced = stats.pacing()[&(APIGW_SERVICE.to_string(), "DeleteRestApi".to_string())];
        assert_eq!((paced.calls, paced.max_wait_ms, paced.throttled), (10, 270_900, 0), "{paced:?}");

        // WAFv2 (the JSON protocol, throttling with `ThrottlingException`): AssociateWebACL 2.106 s
        // apart, 421.2 s at a share of 0.005.
        let stats = CallStats::new();
        let endpoint = Attempts(Default::default(), Instant::now());
        let client = sdk_client!(aws_sdk_wafv2, paced_over(endpoint.clone(), pacers_at(0.005, &stats)), stats);
        let calls: Vec<_> = (0..2)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(
                    async move { client.associate_web_acl().web_acl_arn("arn:acl").resource_arn(format!("arn:stage{i}")).send().await },
                )
            })
            .collect();
        for call in calls {
            call.await.expect("task").expect("both associations succeed");
        }
        assert_eq!(endpoint.seen(), vec![(0, 1), (421_200, 2)]);
        let counted = stats.snapshot()[&("wafv2".to_string(), "AssociateWebACL".to_string())];
        assert_eq!(counted, crate::providers::calls::CallCount { calls: 2, errors: 0, throttled: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn under_retry_behavior_2_1_the_retry_comes_within_its_first_backoff() {
        // Retry Behavior 2.1 (`AWS_NEW_RETRIES_2026`) bounds `x-amz-retry-after` below by the
        // exponential backoff: the retry comes up to one initial backoff (0.2 s) after the bounce,
        // still in the kept slot (now past), not one spacing later.
        let stats = CallStats::new();
        let endpoint = Attempts(Default::default(), Instant::now());
        let client = sdk_client!(
            aws_sdk_apigateway,
            paced_over(endpoint.clone(), pacers_at(0.1, &stats)),
            stats,
            |retry: aws_smithy_types::retry::RetryConfig| { retry.with_retry_spec(aws_smithy_types::retry::RetrySpec::v2_1()) }
        );
        for i in 0..2 {
            client.delete_rest_api().rest_api_id(format!("a{i}")).send().await.expect("the delete succeeds");
        }
        let seen = endpoint.seen();
        assert_eq!((seen.len(), seen[0], seen[1].1), (2, (0, 1), 2), "{seen:?}");
        assert!((301_000..=301_200).contains(&seen[1].0), "{seen:?}");
        let counted = stats.snapshot()[&("apigateway".to_string(), "DeleteRestApi".to_string())];
        assert_eq!(counted, crate::providers::calls::CallCount { calls: 2, errors: 0, throttled: 0 });
    }
}
