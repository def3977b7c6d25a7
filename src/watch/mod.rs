//! `reconcile watch`: a long-running drift watcher.
//!
//! One task per stack runs passes one after the other (so a resource is never reconciled twice at
//! once; different stacks run concurrently). A pass re-reads the manifest if its content changed,
//! reads what the state owns through the plan layer's tolerant refresh, sorts the plan's changes
//! ([`findings`]), records drift events in the state database, and, when remediation is on for the
//! stack, carries out the updates and creates through the same executor as `apply`, holding the
//! stack's lock. Each pass yields the next one after the interval (with jitter); a failed read backs
//! off that resource alone ([`cadence`]). SIGTERM, SIGQUIT or Ctrl-C cancels the reads in flight or
//! lets a remediation finish, then the process releases what it holds and exits; SIGHUP re-reads the
//! manifests and their code now (a pass of every stack starts) and never interrupts a remediation.
//!
//! Remediation never fights the stack's users: it uses the manifest and code as they are on disk now
//! ([`sources`]), skips a pass during which an apply wrote the state or the files changed, leaves a
//! stack whose last operation was `destroy` alone, carries out only what it can finish in one pass,
//! and counts as remediated only what a read after the writes confirms.
//!
//! By concern: `supervisor` (HTTP server, signals, one task per stack, new manifest files),
//! [`sources`] (the manifests and their code on disk, and reloading them), `stack` (the per-stack
//! loop: one `StackWatcher::reconcile` per tick with a typed outcome or error, and one error
//! policy that decides what an error means), `remediate` (carrying out and checking a repair),
//! `lease` (sharing the stacks with other watchers of the same state database: only the holder of a
//! stack's lease runs its passes, and its writes are fenced with the lease's generation).

pub mod cadence;
pub mod findings;
mod lease;
pub mod metrics;
pub mod observe;
mod remediate;
pub mod server;
pub mod sources;
pub(crate) mod stack;
mod supervisor;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::manifest::ManifestError;
use crate::state::StateError;

pub use supervisor::run;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no manifest to watch: {0} holds no *.toml file")]
    NoManifests(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("stack `{stack}` is declared by both {} and {}; one watcher per stack", first.display(), second.display())]
    DuplicateStack { stack: String, first: PathBuf, second: PathBuf },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list {}: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    File(#[from] crate::input::InputError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// How the watcher runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Manifest files, or directories whose `*.toml` files are manifests (re-scanned every interval).
    pub paths: Vec<PathBuf>,
    pub interval: Duration,
    /// `/readyz` turns 503 once a stack's passes have been failing for this long (see [`metrics::unready_after`]).
    pub unready_after: Duration,
    pub listen: SocketAddr,
    /// Remediate every stack (a stack can also ask for it with `[stack] remediate = true`).
    pub remediate: bool,
    /// How long remediation waits for the stack's lock before it skips the pass.
    pub lock_timeout: Duration,
    /// Concurrent resource operations of one remediation.
    pub parallelism: usize,
    /// `--var-set`: each is one environment (var files) every manifest is watched in; empty: once,
    /// with the command line's variables.
    pub var_sets: Vec<Vec<PathBuf>>,
    /// How long a stack's watch lease lasts without renewal: when its holder dies, another watcher of
    /// the same state database takes the stack within `lease_ttl + lease_renew`.
    pub lease_ttl: Duration,
    /// How often leases are renewed, and unheld stacks tried (shorter than `lease_ttl`).
    pub lease_renew: Duration,
    /// The bounds of the HTTP endpoint.
    pub http: server::Limits,
    /// A manifest (and its code) is used once two reads at least this far apart found the same content.
    pub settle: Duration,
}
