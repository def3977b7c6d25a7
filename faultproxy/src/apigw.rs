//! API Gateway's account-level control-plane limits (`--apigw-limits`), which moto does not enforce:
//! token buckets checked when a request arrives.

use std::collections::BTreeMap;
use std::time::Instant;

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
pub struct ApigwLimits {
    total: Bucket,
    operations: BTreeMap<&'static str, Bucket>,
}

impl ApigwLimits {
    pub fn new(now: Instant) -> ApigwLimits {
        ApigwLimits {
            total: Bucket::new(APIGW_RATE, APIGW_BURST, now),
            operations: APIGW_OPERATION_SPACING.iter().map(|(op, every)| (*op, Bucket::new(1.0 / every, 1.0, now))).collect(),
        }
    }

    /// Admits a request (taking its tokens) or names the limit it is over; a refused request takes
    /// no token.
    pub fn admit(&mut self, operation: Option<&'static str>, now: Instant) -> Result<(), &'static str> {
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
pub fn apigw_operation(method: &str, target: &str) -> Option<&'static str> {
    let path = target.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.to_ascii_uppercase().as_str(), segments.as_slice()) {
        ("POST", ["restapis"]) => Some("CreateRestApi"),
        ("DELETE", ["restapis", _]) => Some("DeleteRestApi"),
        ("POST", ["restapis", _, "deployments"]) => Some("CreateDeployment"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
