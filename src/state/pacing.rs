//! The pacing ledger: the recent use of an account's rate-limited API budgets (one per paced service:
//! API Gateway, Lambda, CloudWatch Logs, WAFv2), kept in the state store so that every process using
//! the store paces from one record — back-to-back runs, concurrent applies of different stacks, a
//! watcher remediating while someone applies.
//!
//! A budget ([`Budget`]: account, region, service) is a handful of rows ([`Rows`]): one for the
//! account-wide token bucket (for a service that has one) and one per operation with its own limit.
//! Each row holds one time (unix milliseconds, wall clock, since processes share it): for the token
//! bucket, when it is full again (the bucket as a "theoretical arrival time", GCRA); for an operation,
//! its next free slot. A row
//! whose time has passed says nothing any more (full bucket, free slot) and is deleted by the next
//! reservation of any budget: the ledger holds at most a few rows per account and region in use, and
//! only while the limits' windows need them.
//!
//! [`reserve`] and [`spent`] are the arithmetic, the same for every backend; [`PaceLedger`] is what a
//! backend implements (SQLite in [`super::Store`]; a PostgreSQL store implements the same three calls
//! with `SELECT … FOR UPDATE` in a transaction). A reservation is one short write transaction that
//! reads the budget's rows, reserves and commits; the caller then sleeps until its slot outside any
//! transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;

use super::Result;

/// Whose budget: the limits are per account and region, per service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Budget {
    pub account_id: String,
    pub region: String,
    /// The SigV4 service name (`apigateway`, `lambda`, `logs`, `wafv2`).
    pub service: String,
}

/// A service's limits, as the client keeps them (margins included).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Milliseconds per token of the account-wide bucket (the inverse of its rate); 0 for a service
    /// whose documented limits are all per operation (CloudWatch Logs, WAFv2): no bucket.
    pub interval_ms: i64,
    /// Tokens the account-wide bucket holds.
    pub burst: i64,
    /// Operations with their own limit, and the milliseconds kept between two of them.
    pub spacing: Vec<(&'static str, i64)>,
    /// Operations that take no token of the account-wide bucket: their own limit (in `spacing`), if
    /// any, is all they keep to. AWS documents some rates apart from the account's (Lambda's
    /// `GetFunction`, 100 per second of its own beside the 15 per second the rest of the control
    /// plane shares) and some calls outside it (Lambda's invocations); the operations of `spacing`
    /// not listed here take a token as well (API Gateway's `CreateDeployment`).
    pub apart: Vec<&'static str>,
}

impl Limits {
    /// The spacing of `operation`, if it has its own limit.
    pub fn spacing_of(&self, operation: &str) -> Option<i64> {
        self.spacing.iter().find(|(o, _)| *o == operation).map(|(_, ms)| *ms)
    }

    /// Whether a call of `operation` (`None`: one without a limit of its own) takes a token of the
    /// account-wide bucket.
    pub fn takes_token(&self, operation: Option<&str>) -> bool {
        self.interval_ms > 0 && !operation.is_some_and(|o| self.apart.contains(&o))
    }

    /// Whether a call of `operation` is limited at all (a token, a spacing or both).
    pub fn limits(&self, operation: Option<&str>) -> bool {
        self.takes_token(operation) || operation.is_some_and(|o| self.spacing_of(o).is_some())
    }
}

/// The row of the account-wide token bucket.
pub const ACCOUNT_BUCKET: &str = "";

/// One row of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Row {
    /// The account bucket: when it is full again; an operation: its next free slot (unix ms).
    pub at_ms: i64,
    /// When a throttling answer (a 429, or a 400 `ThrottlingException`) last told us the budget was
    /// spent by someone we do not know of (unix ms, 0: never).
    pub spent_ms: i64,
}

/// A budget's rows, by bucket ([`ACCOUNT_BUCKET`] or an operation name).
pub type Rows = BTreeMap<String, Row>;

/// Takes a token (unless the operation's limit is apart from the account bucket, or there is none)
/// and, for an operation with its own limit, its next slot, at `now`: returns when the call may be
/// sent (never before `now`).
pub fn reserve(rows: &mut Rows, limits: &Limits, operation: Option<&str>, now: i64) -> i64 {
    let mut slot = now;
    if limits.takes_token(operation) {
        let bucket = rows.entry(ACCOUNT_BUCKET.to_string()).or_default();
        let full = bucket.at_ms.max(now) + limits.interval_ms;
        bucket.at_ms = full;
        // The token is taken now; with the bucket empty it is owed, and the call waits until it is back.
        slot = (full - limits.burst * limits.interval_ms).max(now);
    }
    if let Some((op, gap)) = operation.and_then(|o| limits.spacing_of(o).map(|g| (o, g))) {
        let row = rows.entry(op.to_string()).or_default();
        slot = row.at_ms.max(slot);
        row.at_ms = slot + gap;
    }
    slot
}

/// Marks the bucket of `operation` (or the account bucket) spent at `now`, as a throttling answer (a
/// 429) says it is, and
/// reserves the refused call's retry at the earliest moment the limit allows: returns that slot.
///
/// An operation's slots given out before the 429 are void (see [`overtaken`]): its timeline starts
/// again from the 429, retry first. The account bucket is marked empty; calls already given tokens go
/// ahead (a 429 among them is retried the same way). A call limited by neither (see
/// [`Limits::limits`]) marks nothing.
pub fn spent(rows: &mut Rows, limits: &Limits, operation: Option<&str>, now: i64) -> i64 {
    match operation.and_then(|o| limits.spacing_of(o).map(|g| (o, g))) {
        Some((op, gap)) => {
            let row = rows.entry(op.to_string()).or_default();
            row.at_ms = now + gap;
            row.spent_ms = now;
        }
        None if limits.takes_token(operation) => {
            let row = rows.entry(ACCOUNT_BUCKET.to_string()).or_default();
            row.at_ms = row.at_ms.max(now + limits.burst * limits.interval_ms);
            row.spent_ms = now;
        }
        None => {}
    }
    reserve(rows, limits, operation, now)
}

/// Whether a slot of `operation` reserved at `reserved` was voided by a 429 met since (by any process
/// using the ledger): it must be reserved again.
pub fn overtaken(row: Option<Row>, limits: &Limits, operation: &str, reserved: i64) -> bool {
    limits.spacing_of(operation).is_some() && row.is_some_and(|r| r.spent_ms >= reserved)
}

/// Brings every row forward to at most where `limits` would put it from `now` (an empty account
/// bucket, an operation's next slot one spacing away; `None`: no limits, every row free now): after
/// the limits grew, slots reserved under the smaller ones are not waited out.
pub fn bring_forward(rows: &mut Rows, limits: Option<&Limits>, now: i64) {
    for (bucket, row) in rows.iter_mut() {
        let furthest = match limits {
            None => now,
            Some(l) if bucket == ACCOUNT_BUCKET => now + l.interval_ms * l.burst,
            Some(l) => now + l.spacing_of(bucket).unwrap_or(0),
        };
        row.at_ms = row.at_ms.min(furthest);
    }
}

/// Drops the rows that say nothing any more at `now` (a full bucket, a free slot).
pub fn prune(rows: &mut Rows, now: i64) {
    rows.retain(|_, r| r.at_ms > now);
}

/// Wall-clock milliseconds. The system clock is read at every call (processes compare their times
/// in the shared ledger, so a long-running process must not drift from the wall clock while suspended
/// or after the clock is set), and never goes backwards within the process. A test clock runs on
/// tokio's clock from a given time, so tests can run with paused time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the system clock.
    test: Option<(i64, tokio::time::Instant)>,
}

/// The latest system time this process has read (milliseconds since the epoch).
static LAST_SYSTEM_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { test: None }
    }

    /// A clock that reads `ms` now and runs on tokio's clock (tests).
    pub fn at(ms: i64) -> Clock {
        Clock { test: Some((ms, tokio::time::Instant::now())) }
    }

    pub fn now_ms(&self) -> i64 {
        match self.test {
            Some((base_ms, base)) => base_ms + base.elapsed().as_millis() as i64,
            None => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                let last = LAST_SYSTEM_MS.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                now.max(last)
            }
        }
    }

    /// Sleeps until `ms` (at once if it has passed).
    pub async fn sleep_until(&self, ms: i64) {
        let wait = ms - self.now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
    }
}

/// A store that keeps pacing ledgers. Every call is one short, atomic write transaction (or a read);
/// none waits for a slot inside it.
pub trait PaceLedger: Send + Sync + std::fmt::Debug {
    /// Reserves a call of `operation` (see [`reserve`]) in `budget` at the clock's time: returns the
    /// slot and the budget's rows after it.
    fn reserve<'a>(
        &'a self,
        budget: &'a Budget,
        limits: &'a Limits,
        operation: Option<&'a str>,
        clock: &'a Clock,
    ) -> BoxFuture<'a, Result<(i64, Rows)>>;

    /// Marks the bucket spent (see [`spent`]): returns the earliest retry and the rows after it.
    fn spent<'a>(
        &'a self,
        budget: &'a Budget,
        limits: &'a Limits,
        operation: Option<&'a str>,
        clock: &'a Clock,
    ) -> BoxFuture<'a, Result<(i64, Rows)>>;

    /// One row of the budget, if it says anything.
    fn row<'a>(&'a self, budget: &'a Budget, bucket: &'a str) -> BoxFuture<'a, Result<Option<Row>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { interval_ms: 100, burst: 3, spacing: vec![("CreateDeployment", 5000)], apart: Vec::new() }
    }

    #[test]
    fn reservations_follow_the_bucket_and_the_spacing() {
        let l = limits();
        let mut rows = Rows::new();
        // Three tokens of burst, then one every 100 ms.
        let slots: Vec<i64> = (0..5).map(|_| reserve(&mut rows, &l, None, 1000)).collect();
        assert_eq!(slots, vec![1000, 1000, 1000, 1100, 1200]);
        let mut rows = Rows::new();
        assert_eq!(reserve(&mut rows, &l, Some("CreateDeployment"), 1000), 1000);
        assert_eq!(reserve(&mut rows, &l, Some("CreateDeployment"), 1000), 6000);
        assert_eq!(reserve(&mut rows, &l, Some("GetRestApis"), 1000), 1000, "other operations only take a token");
        // After the windows the rows say nothing and are dropped.
        prune(&mut rows, 11_000);
        assert!(rows.is_empty(), "{rows:?}");
    }

    #[test]
    fn a_429_spends_the_bucket_and_voids_the_slots_given_out() {
        let l = limits();
        let mut rows = Rows::new();
        assert_eq!(reserve(&mut rows, &l, Some("CreateDeployment"), 0), 0);
        assert_eq!(reserve(&mut rows, &l, Some("CreateDeployment"), 0), 5000, "a second call waits its turn");
        // The first is refused at 100 ms: someone else spent the budget. Its retry gets the earliest
        // slot, one spacing later; the slot given out before the 429 is void.
        assert_eq!(spent(&mut rows, &l, Some("CreateDeployment"), 100), 5100);
        let row = rows.get("CreateDeployment").copied();
        assert!(overtaken(row, &l, "CreateDeployment", 0));
        assert!(!overtaken(row, &l, "CreateDeployment", 200));
        assert!(!overtaken(row, &l, "GetRestApis", 0));
        assert_eq!(reserve(&mut rows, &l, Some("CreateDeployment"), 5000), 10_100, "reserved again, after the retry");
        // A 429 on the account bucket: one token interval.
        let mut rows = Rows::new();
        assert_eq!(spent(&mut rows, &l, None, 100), 200);
        assert_eq!(reserve(&mut rows, &l, None, 100), 300);
    }

    #[test]
    fn an_operation_apart_from_the_account_bucket_takes_no_token() {
        // Lambda's shape: a control plane bucket, and GetFunction with a rate of its own.
        let l = Limits { interval_ms: 100, burst: 1, spacing: vec![("GetFunction", 10)], apart: vec!["GetFunction", "Invoke"] };
        let mut rows = Rows::new();
        let reads: Vec<i64> = (0..3).map(|_| reserve(&mut rows, &l, Some("GetFunction"), 1000)).collect();
        assert_eq!(reads, vec![1000, 1010, 1020], "its own spacing only");
        assert!(!rows.contains_key(ACCOUNT_BUCKET), "no token taken: {rows:?}");
        let others: Vec<i64> = (0..3).map(|_| reserve(&mut rows, &l, None, 1000)).collect();
        assert_eq!(others, vec![1000, 1100, 1200], "the rest of the control plane is not slowed by the reads");
        assert_eq!(reserve(&mut rows, &l, Some("Invoke"), 1000), 1000, "apart and without a limit of its own: free");
        assert_eq!((l.limits(Some("GetFunction")), l.limits(None), l.limits(Some("Invoke"))), (true, true, false));
        // A 429 on GetFunction spends its own row, not the bucket.
        assert_eq!(spent(&mut rows, &l, Some("GetFunction"), 1005), 1015);
        assert_eq!(reserve(&mut rows, &l, None, 1200), 1300);
    }

    #[test]
    fn a_service_without_an_account_bucket_limits_only_its_operations() {
        // WAFv2's shape: per-operation rates, nothing account-wide.
        let l = Limits { interval_ms: 0, burst: 0, spacing: vec![("AssociateWebACL", 2000)], apart: vec!["AssociateWebACL"] };
        let mut rows = Rows::new();
        assert_eq!((0..5).map(|_| reserve(&mut rows, &l, None, 1000)).max(), Some(1000), "unlimited calls go at once");
        assert!(rows.is_empty(), "and leave no row: {rows:?}");
        assert!(!l.limits(None) && !l.limits(Some("DeleteWebACL")) && l.limits(Some("AssociateWebACL")));
        assert_eq!(reserve(&mut rows, &l, Some("AssociateWebACL"), 1000), 1000);
        assert_eq!(reserve(&mut rows, &l, Some("AssociateWebACL"), 1000), 3000);
        // Nothing to mark for an unlimited call.
        assert_eq!(spent(&mut rows, &l, None, 1500), 1500);
        assert_eq!(rows.len(), 1, "{rows:?}");
    }
}
