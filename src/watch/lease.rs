//! Sharing the stacks between watchers: one lease keeper per stack, next to its watcher task.
//!
//! Every renew interval the keeper renews the stack's lease if this process holds it, or tries to take
//! it if nobody holds it (never leased, expired, or released by a watcher that stopped). It tells the
//! stack's watcher through a `watch` channel whether (and at which generation) this process holds the
//! stack; only the holder runs passes, and its passes write through a store fenced with that
//! generation. A lease that cannot be renewed for its whole TTL (the state database unreachable) is
//! given up locally, so at most one process works on a stack even then. When the watcher task ends
//! (shutdown), the keeper releases the lease, so another watcher takes the stack at its next tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::metrics::Metrics;
use crate::state::Store;
use crate::state::lease::{self, Claim, Fence};

/// The lease this process holds on a stack, as its watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) fence: Fence,
    /// Past this instant (one TTL after the last successful renewal started), the lease may be
    /// another's: no pass starts.
    pub(super) valid_until: Instant,
}

/// Whether this process holds the stack now, and the fence its writes carry.
pub(super) fn current(rx: &watch::Receiver<Option<Held>>) -> Option<Fence> {
    rx.borrow().as_ref().filter(|h| Instant::now() < h.valid_until).map(|h| h.fence.clone())
}

/// How leases are kept.
#[derive(Debug, Clone)]
pub(super) struct Timing {
    pub(super) ttl: Duration,
    pub(super) renew: Duration,
}

/// One stack's lease keeper.
pub(super) struct Keeper {
    pub(super) stack: String,
    pub(super) holder: String,
    pub(super) timing: Timing,
    pub(super) store: Store,
    pub(super) metrics: Arc<Metrics>,
    /// The manifest hash the stack's watcher uses; closed when the watcher ends.
    pub(super) hash: watch::Receiver<String>,
    /// Whether this process holds the stack (read by the watcher).
    pub(super) held: watch::Sender<Option<Held>>,
    /// The (holder's, ours) manifest hashes whose difference was last logged.
    pub(super) told: Option<(String, String)>,
    /// The stack watcher's heartbeat: a watcher silent for a whole TTL is stuck, and its lease is
    /// neither renewed nor taken.
    pub(super) beat: super::stack::Heartbeat,
    /// Whether the watcher was found stuck (logged once).
    pub(super) stuck: bool,
}

impl Keeper {
    /// Keeps the lease until the watcher ends, then releases it.
    pub(super) async fn run(mut self) {
        loop {
            self.tick().await;
            tokio::select! {
                _ = tokio::time::sleep(self.timing.renew) => {}
                changed = self.hash.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        self.release().await;
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.timing.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// One renewal, or one attempt to take the stack.
    async fn tick(&mut self) {
        let stack = self.stack.clone();
        let started = Instant::now();
        let hash = self.hash.borrow().clone();
        let held = self.held.borrow().clone();
        if let Some(silent) = self.beat.silent_for().filter(|s| *s >= self.timing.ttl) {
            if !self.stuck {
                tracing::error!(
                    stack,
                    silent_s = silent.as_secs(),
                    "the stack's watcher has shown no progress for a whole lease TTL (stuck in a blocking call?): its lease is not renewed, so another watcher can take the stack"
                );
                self.stuck = true;
            }
            self.metrics.lease_trouble(&stack, Some(format!("its watcher has shown no progress for {} s (stuck)", silent.as_secs())));
            if held.is_some() {
                self.lose();
            }
            return;
        }
        if std::mem::take(&mut self.stuck) {
            tracing::info!(stack, "the stack's watcher makes progress again");
        }
        if let Some(held) = held {
            match self.store.renew_lease(&held.fence, &hash, lease::now_ms(), self.ttl_ms()).await {
                Ok(true) => {
                    self.metrics.lease_trouble(&stack, None);
                    // A renewal is not news to the watcher: no wake-up.
                    self.held.send_if_modified(|h| {
                        if let Some(h) = h {
                            h.valid_until = started + self.timing.ttl;
                        }
                        false
                    });
                }
                Ok(false) => {
                    let now = self.store.lease(&stack).await.ok().flatten();
                    tracing::warn!(
                        stack,
                        generation = held.fence.generation,
                        now_held_by = now.as_ref().map(|l| l.holder.as_str()).unwrap_or("nobody"),
                        "lost the stack's lease (another watcher took it over): no longer watching it"
                    );
                    self.metrics.lease_trouble(&stack, None);
                    self.lose();
                }
                Err(e) if Instant::now() >= held.valid_until => {
                    tracing::warn!(
                        stack,
                        error = %e,
                        "cannot renew the stack's lease and it has expired: no longer watching it until the state database answers"
                    );
                    self.metrics.lease_trouble(&stack, Some(format!("this watcher lost the stack's lease: cannot renew it ({e})")));
                    self.lose();
                }
                Err(e) => tracing::warn!(stack, error = %e, "cannot renew the stack's lease; retrying at the next tick"),
            }
            return;
        }
        match self.store.claim_lease(&stack, &self.holder, &hash, lease::now_ms(), self.ttl_ms()).await {
            Ok(Claim::Claimed { lease, previous }) => {
                let took_over = previous.as_ref().filter(|p| p.holder != self.holder);
                if let Some(p) = took_over {
                    tracing::info!(
                        stack,
                        generation = lease.generation,
                        previous_holder = %p.holder,
                        previous_expired_ms_ago = lease.acquired_at.saturating_sub(p.expires_at),
                        "took the stack over: watching it"
                    );
                    self.metrics.lease_taken_over(&stack);
                } else {
                    tracing::info!(stack, generation = lease.generation, "holding the stack's lease: watching it");
                }
                self.told = None;
                self.metrics.lease_trouble(&stack, None);
                self.metrics.lease_held(&stack, true);
                self.held.send_replace(Some(Held { fence: lease.fence(), valid_until: started + self.timing.ttl }));
            }
            Ok(Claim::HeldBy(other)) => {
                self.metrics.lease_trouble(&stack, None);
                self.metrics.lease_held(&stack, false);
                self.compare(&other, &hash);
            }
            Err(e) => {
                tracing::warn!(stack, error = %e, "cannot read or take the stack's lease; retrying at the next tick");
                self.metrics.lease_trouble(&stack, Some(format!("cannot read or take the stack's lease ({e})")));
            }
        }
    }

    /// Logs (once per change) that the holder watches the stack with another manifest than ours.
    fn compare(&mut self, other: &lease::Lease, ours: &str) {
        if other.manifest_hash == ours {
            self.told = None;
            return;
        }
        let pair = (other.manifest_hash.clone(), ours.to_string());
        if self.told.as_ref() != Some(&pair) {
            tracing::warn!(
                stack = %self.stack,
                holder = %other.holder,
                holder_manifest_sha256 = %other.manifest_hash,
                own_manifest_sha256 = %ours,
                "this watcher's manifest of the stack differs from the one its holder uses; the holder's version is used"
            );
            self.told = Some(pair);
        }
    }

    fn lose(&mut self) {
        self.metrics.lease_held(&self.stack, false);
        self.held.send_replace(None);
    }

    /// Gives the lease up so another watcher takes the stack at once.
    async fn release(&mut self) {
        let Some(held) = self.held.borrow().clone() else { return };
        match self.store.release_lease(&held.fence, lease::now_ms()).await {
            Ok(true) => tracing::info!(stack = %self.stack, "released the stack's lease"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(stack = %self.stack, error = %e, "cannot release the stack's lease; another watcher takes it once it expires")
            }
        }
        self.lose();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stuck_watcher_s_lease_is_neither_renewed_nor_taken_and_the_stack_is_not_ready() {
        let store = Store::memory().await.unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.register("s");
        let (_hash_tx, hash) = watch::channel("h".to_string());
        let (held, held_rx) = watch::channel(None);
        let beat = super::super::stack::Heartbeat::default();
        let mut keeper = Keeper {
            stack: "s".into(),
            holder: "me".into(),
            timing: Timing { ttl: Duration::from_millis(200), renew: Duration::from_millis(50) },
            store,
            metrics: metrics.clone(),
            hash,
            held,
            told: None,
            beat: beat.clone(),
            stuck: false,
        };
        keeper.tick().await;
        assert!(held_rx.borrow().is_some(), "a live watcher holds its stack");

        // The watcher starts working and then shows nothing for longer than the TTL.
        beat.beat();
        tokio::time::sleep(Duration::from_millis(250)).await;
        keeper.tick().await;
        assert!(held_rx.borrow().is_none(), "a stuck watcher's lease was renewed");
        assert!(!metrics.ready());
        assert!(metrics.lease_troubles().iter().any(|(s, why)| s == "s" && why.contains("stuck")), "{:?}", metrics.lease_troubles());
        keeper.tick().await;
        assert!(held_rx.borrow().is_none(), "nor taken again while it is stuck");

        // It makes progress again: it holds the stack again.
        beat.idle();
        keeper.tick().await;
        assert!(held_rx.borrow().is_some());
        assert!(metrics.lease_troubles().is_empty());
    }
}
