//! When each resource is read next: every pass while its reads succeed; after a failed read, that
//! resource alone backs off exponentially (2×, 4×, 8×… the interval, capped at [`MAX_BACKOFF`] or the
//! interval if that is longer), and the others keep their pace. Each stack's passes fall at its own
//! place in the interval ([`phase`], [`next_pass`]), so a process watching many stacks spreads their
//! reads over the interval.

use std::collections::HashMap;
use std::hash::Hasher;
use std::time::{Duration, Instant};

/// The longest a failing resource waits between reads (unless the interval itself is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// How long a resource waits after its `failures`-th failed read in a row (`failures` ≥ 1).
pub fn backoff_delay(interval: Duration, failures: u32) -> Duration {
    let cap = MAX_BACKOFF.max(interval);
    let factor = 2u32.saturating_pow(failures.min(20));
    interval.saturating_mul(factor).min(cap)
}

/// Where in the interval `stack`'s passes fall: a fixed fraction of the interval drawn from its name,
/// so the passes of many stacks are spread over the interval instead of starting together (and a
/// stack keeps its place whoever watches it).
pub fn phase(stack: &str, interval: Duration) -> Duration {
    // DefaultHasher::new() has fixed keys: the same name gets the same place in every process.
    let mut h = std::hash::DefaultHasher::new();
    h.write(stack.as_bytes());
    let unit = (h.finish() % 10_000) as f64 / 10_000.0; // 0..1
    interval.mul_f64(unit)
}

/// When the next pass of a stack at `phase` starts: the first instant of its place in the interval
/// grid (from `epoch`, every `interval`) that is at least half an interval after `now`.
pub fn next_pass(epoch: Instant, now: Instant, interval: Duration, phase: Duration) -> Instant {
    let interval = interval.max(Duration::from_millis(1));
    let earliest = now.saturating_duration_since(epoch) + interval / 2;
    let first = epoch + phase;
    if earliest <= phase {
        return first;
    }
    let k = (earliest - phase).as_nanos().div_ceil(interval.as_nanos());
    first + interval.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
}

/// The grid's origin for this process's watch passes.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    failures: u32,
    next_due: Instant,
}

/// Per-resource read schedule of one stack.
#[derive(Debug, Clone)]
pub struct Cadence {
    interval: Duration,
    backing_off: HashMap<String, Clock>,
}

impl Cadence {
    pub fn new(interval: Duration) -> Cadence {
        Cadence { interval, backing_off: HashMap::new() }
    }

    /// Whether `resource` is read in a pass starting at `now`. Passes come about one interval apart
    /// (from half an interval to one and a half), so a resource due within half an interval is read now rather than a pass late.
    pub fn due(&self, resource: &str, now: Instant) -> bool {
        self.backing_off.get(resource).is_none_or(|c| c.next_due <= now + self.interval / 2)
    }

    /// A successful read: back to every pass.
    pub fn succeeded(&mut self, resource: &str) {
        self.backing_off.remove(resource);
    }

    /// A failed read: returns how long the resource now waits.
    pub fn failed(&mut self, resource: &str, now: Instant) -> Duration {
        let failures = self.backing_off.get(resource).map_or(0, |c| c.failures) + 1;
        let delay = backoff_delay(self.interval, failures);
        self.backing_off.insert(resource.to_string(), Clock { failures, next_due: now + delay });
        delay
    }

    /// Whether some resource is waiting after failed reads.
    pub fn backing_off(&self) -> bool {
        !self.backing_off.is_empty()
    }

    /// Forgets the resources `keep` rejects (no longer in the state).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.backing_off.retain(|name, _| keep(name));
    }

    /// Failed reads in a row of `resource`.
    pub fn failures(&self, resource: &str) -> u32 {
        self.backing_off.get(resource).map_or(0, |c| c.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_twice_the_interval_and_is_capped() {
        let i = Duration::from_secs(60);
        let got: Vec<u64> = (1..=6).map(|n| backoff_delay(i, n).as_secs()).collect();
        assert_eq!(got, vec![120, 240, 480, 600, 600, 600]);
        assert_eq!(backoff_delay(i, u32::MAX), MAX_BACKOFF);
        // An interval longer than the cap is never shortened.
        assert_eq!(backoff_delay(Duration::from_secs(3600), 3), Duration::from_secs(3600));
        assert_eq!(backoff_delay(Duration::from_secs(1), 1), Duration::from_secs(2));
    }

    #[test]
    fn a_failing_resource_backs_off_alone_and_recovers_on_success() {
        let i = Duration::from_secs(10);
        let mut c = Cadence::new(i);
        let t0 = Instant::now();
        assert!(c.due("a", t0) && c.due("b", t0));
        assert_eq!(c.failed("a", t0), Duration::from_secs(20));
        // Next pass (one interval later): `a` waits, `b` is read.
        assert!(!c.due("a", t0 + i) && c.due("b", t0 + i));
        // Two intervals later (a little early, as jitter may make it): `a` is due again.
        assert!(c.due("a", t0 + i * 2 - Duration::from_secs(1)));
        assert_eq!(c.failed("a", t0 + i * 2), Duration::from_secs(40));
        assert_eq!(c.failures("a"), 2);
        assert!(!c.due("a", t0 + i * 4));
        assert!(c.backing_off());
        c.succeeded("a");
        assert!(c.due("a", t0 + i * 4));
        assert_eq!(c.failures("a"), 0);
        assert!(!c.backing_off());
        c.failed("gone", t0);
        c.retain(|n| n != "gone");
        assert!(!c.backing_off());
    }

    #[test]
    fn passes_of_many_stacks_are_spread_over_the_interval() {
        let i = Duration::from_secs(60);
        let phases: Vec<Duration> = (0..50).map(|n| phase(&format!("stack-{n}"), i)).collect();
        assert!(phases.iter().all(|p| *p < i));
        assert_eq!(phase("stack-1", i), phases[1], "a stack keeps its place");
        // Spread: no tenth of the interval holds more than a quarter of the stacks.
        for slot in 0..10 {
            let n = phases.iter().filter(|p| p.as_secs() / 6 == slot).count();
            assert!(n <= 12, "{n} stacks start in the same tenth of the interval: {phases:?}");
        }
        let t0 = Instant::now();
        let p = Duration::from_secs(20);
        // Right after a pass at t0 + 20 s, the next one is at t0 + 80 s: one interval later, same place.
        assert_eq!(next_pass(t0, t0 + Duration::from_secs(21), i, p), t0 + Duration::from_secs(80));
        // At start (the first pass ran at once), the next one is at its place, at least half an interval on.
        assert_eq!(next_pass(t0, t0, i, Duration::from_secs(40)), t0 + Duration::from_secs(40));
        assert_eq!(next_pass(t0, t0, i, Duration::from_secs(10)), t0 + Duration::from_secs(70));
        // A long pass skips the places it overran.
        assert_eq!(next_pass(t0, t0 + Duration::from_secs(150), i, p), t0 + Duration::from_secs(200));
    }
}
