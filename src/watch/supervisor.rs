//! The supervisor: the HTTP endpoint, signals, one task per stack, and manifest files that appear in
//! watched directories.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::lease::{Keeper, Timing};
use super::metrics::Metrics;
use super::server;
use super::sources::Sources;
use super::stack::StackWatcher;
use super::{Config, WatchError};
use crate::manifest::Manifest;
use crate::providers::Aws;
use crate::state::Store;

/// What every stack task shares.
pub(super) struct Ctx {
    pub(super) config: Config,
    pub(super) store: Store,
    pub(super) aws: Aws,
    pub(super) metrics: Arc<Metrics>,
    /// The collection reads of the current pass window, shared by every stack's pass in it.
    pub(super) reads: crate::providers::batch::Window,
    /// This process's watch lease holder id (`host:pid:random`).
    pub(super) holder: String,
    /// No pass starts before this instant: a watcher joining others waits until they have counted
    /// it and lowered their parts of the API share (see [`ShareSplit`]).
    pub(super) passes_from: std::sync::OnceLock<std::time::Instant>,
}

/// Runs until SIGTERM or Ctrl-C; returns after the passes in flight ended and the HTTP server stopped.
pub async fn run(config: Config, store: Store, aws: Aws) -> Result<(), WatchError> {
    let sources = Sources::new(&config.paths, &config.var_sets);
    // Files are read off the async workers.
    let (sources, initial) = tokio::task::spawn_blocking(move || {
        let mut sources = sources;
        let initial = sources.scan_initial();
        (sources, initial)
    })
    .await
    .map_err(|e| WatchError::Internal(e.to_string()))?;
    let initial = initial?;
    let mut sources = Some(sources);

    let (stop_tx, stop_rx) = watch::channel(false);
    // Also flipped when the state file vanishes (every stack is recorded there: nothing is left to watch).
    let stop_all = stop_tx.clone();
    let (hup_tx, hup_rx) = watch::channel(0u64);
    tokio::spawn(signals(stop_tx, hup_tx));

    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|source| WatchError::Listen { addr: config.listen, source })?;
    let bound = listener.local_addr().map_err(|source| WatchError::Listen { addr: config.listen, source })?;
    println!("listening on http://{bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    tracing::info!(address = %bound, "serving /healthz, /readyz and /metrics");

    let metrics = Arc::new(Metrics::new(config.unready_after));
    metrics.set_api_shares(aws.api_shares());
    let (server_stop_tx, server_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = server::router(metrics.clone(), aws.calls.clone());
    let nofile = server::raise_nofile_limit();
    let limits = server::Limits { max_connections: server::fd_budget(config.http.max_connections, nofile), ..config.http };
    if limits.max_connections < config.http.max_connections {
        tracing::warn!(
            open_file_limit = nofile,
            configured = config.http.max_connections,
            max_connections = limits.max_connections,
            "the open-file limit is low: the HTTP endpoint takes fewer connections, keeping files for AWS, the state and the manifests"
        );
    }
    tracing::info!(
        open_file_limit = nofile,
        max_connections = limits.max_connections,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        idle_timeout_s = limits.idle_timeout.as_secs_f64(),
        "HTTP endpoint limits"
    );
    let server = tokio::spawn(server::serve(listener, app, limits, server_stop_rx));

    let holder = crate::state::lease::holder_id();
    let reads = crate::providers::batch::Window::new(config.interval);
    let ctx = Arc::new(Ctx { config, store, aws, metrics, reads, holder, passes_from: Default::default() });
    tracing::info!(
        stacks = initial.len(),
        interval_s = ctx.config.interval.as_secs_f64(),
        remediate = ctx.config.remediate,
        holder = %ctx.holder,
        lease_ttl_s = ctx.config.lease_ttl.as_secs_f64(),
        lease_renew_s = ctx.config.lease_renew.as_secs_f64(),
        "watching (each stack by whichever watcher of this state holds its lease)"
    );
    let mut tasks = JoinSet::new();
    // The share is split before this process's first pass, then kept in step with the other watchers.
    let mut split = ShareSplit::default();
    if split.recount(&ctx).await > 1 {
        // Joining watchers already live: they lower their parts once they see this one's leases, at
        // their next recount (one renew interval); until then this one makes no AWS calls.
        let _ = ctx.passes_from.set(std::time::Instant::now() + ctx.config.lease_renew + JOIN_MARGIN);
    }
    tasks.spawn(split.run(ctx.clone(), stop_rx.clone()));
    for (path, manifest) in initial {
        spawn_stack(&mut tasks, &ctx, path, manifest, stop_rx.clone(), hup_rx.clone());
    }

    // New manifest files in watched directories join without a restart (at once on SIGHUP).
    let mut stop = stop_rx.clone();
    let mut hup = hup_rx.clone();
    let mut lost = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(ctx.config.interval) => {
                if let Err(e) = super::stack::state_file_lost(&ctx) {
                    let _ = stop_all.send(true);
                    lost = Some(e);
                    continue;
                }
                for (path, manifest) in scan_new(&mut sources).await {
                    spawn_stack(&mut tasks, &ctx, path, manifest, stop_rx.clone(), hup_rx.clone());
                }
            }
            Ok(()) = hup.changed() => {
                for (path, manifest) in scan_new(&mut sources).await {
                    spawn_stack(&mut tasks, &ctx, path, manifest, stop_rx.clone(), hup_rx.clone());
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(error = %e, "a stack watcher ended unexpectedly");
                }
            }
        }
    }
    tracing::info!("stopping: letting the passes in flight end");
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "a stack watcher ended unexpectedly");
        }
    }
    let _ = server_stop_tx.send(());
    let _ = server.await;
    ctx.store.close().await;
    tracing::info!("stopped");
    match lost {
        Some(e) => Err(WatchError::State(e)),
        None => Ok(()),
    }
}

/// [`Sources::scan_new`] in a blocking task (it reads directories and files).
async fn scan_new(sources: &mut Option<Sources>) -> Vec<(PathBuf, Manifest)> {
    let Some(mut s) = sources.take() else { return Vec::new() };
    match tokio::task::spawn_blocking(move || {
        let found = s.scan_new();
        (s, found)
    })
    .await
    {
        Ok((s, found)) => {
            *sources = Some(s);
            found
        }
        Err(e) => {
            tracing::error!(error = %e, "scanning the watched directories failed; new manifest files are not picked up until a restart");
            Vec::new()
        }
    }
}

/// Splits this process's API share (`--api-share`, 0.5 by default for watch) evenly among the watchers
/// live on the state database (those holding a stack's lease, this one included), so that however many
/// watchers share one state, together they keep to the share one would: an apply at the rest of the
/// budget still meets no 429s. Recounted every lease renew interval. A part shrinks at once when
/// more watchers are counted, and grows only when fewer have been counted at two recounts in a row (a
/// renew interval apart): a standby taking over a dead watcher's stacks is counted by then, so the
/// parts never add up to more than the share meanwhile. A joining watcher starts its passes one renew
/// interval after it counted the others, by when they have counted it (see [`Ctx::passes_from`]). All
/// watchers on the database are counted, whatever account they work in: a part is never more than
/// the share, at worst less than it could be.
#[derive(Debug, Default)]
struct ShareSplit {
    /// The watchers the share is split among now (0: not counted yet).
    among: usize,
    /// Fewer watchers counted at the last recount than `among`: how many.
    fewer: Option<usize>,
}

/// How long after one renew interval a joining watcher waits on top, for its own first lease claims.
const JOIN_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

impl ShareSplit {
    async fn run(mut self, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ctx.config.lease_renew) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            self.recount(&ctx).await;
        }
    }

    /// Counts the live watchers and sets this one's part; returns how many it is split among.
    async fn recount(&mut self, ctx: &Ctx) -> usize {
        let mut holders = match ctx.store.live_holders(crate::state::lease::now_ms()).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the watchers live on the state database; keeping the current API share");
                return self.among.max(1);
            }
        };
        if !holders.contains(&ctx.holder) {
            holders.push(ctx.holder.clone());
        }
        let counted = holders.len();
        let among = match self.decide(counted) {
            Some(among) => among,
            None => return self.among,
        };
        let share = ctx.aws.split_share(among);
        ctx.metrics.set_api_shares(ctx.aws.api_shares());
        ctx.metrics.set_share_watchers(among);
        if let Some(share) = share.filter(|_| among > 1 || self.among > 1) {
            tracing::info!(
                watchers = among,
                share,
                "{among} watcher(s) live on this state database split the watch API share: this one now uses {share} of the account's limits"
            );
        }
        self.among = among;
        among
    }

    /// The count to split by after counting `counted` live watchers, if it changes: more at once,
    /// fewer only when seen twice in a row (the larger of the two).
    fn decide(&mut self, counted: usize) -> Option<usize> {
        if self.among == 0 || counted > self.among {
            self.fewer = None;
            return Some(counted);
        }
        if counted == self.among {
            self.fewer = None;
            return None;
        }
        match self.fewer.replace(counted) {
            Some(before) => {
                self.fewer = None;
                Some(before.max(counted))
            }
            None => None,
        }
    }
}

/// Flips `stop` on the first SIGTERM, SIGQUIT or Ctrl-C; counts SIGHUPs in `hup` (reload now).
/// Every signal whose default action ends the process and that a daemon is commonly sent is handled,
/// so none ends it with the stack's lock held.
async fn signals(stop: watch::Sender<bool>, hup: watch::Sender<u64>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (term, quit, mut hangup) = (signal(SignalKind::terminate()), signal(SignalKind::quit()), signal(SignalKind::hangup()));
        let (mut term, mut quit) = match (term, quit) {
            (Ok(t), Ok(q)) => (t, q),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM and SIGQUIT");
                let _ = tokio::signal::ctrl_c().await;
                let _ = stop.send(true);
                return;
            }
        };
        if let Err(e) = &hangup {
            tracing::error!(error = %e, "cannot listen for SIGHUP");
        }
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break }
                _ = quit.recv() => { tracing::info!("SIGQUIT received"); break }
                _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt received"); break }
                Some(()) = async { match &mut hangup { Ok(h) => h.recv().await, Err(_) => std::future::pending().await } } => {
                    tracing::info!("SIGHUP received: re-reading the manifests and their code now; a remediation in flight goes on");
                    hup.send_modify(|n| *n += 1);
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &hup;
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received");
    }
    let _ = stop.send(true);
}

fn spawn_stack(
    tasks: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    path: PathBuf,
    manifest: Manifest,
    stop: watch::Receiver<bool>,
    hup: watch::Receiver<u64>,
) {
    ctx.metrics.register(&manifest.stack);
    let stack = manifest.stack.clone();
    let watcher = StackWatcher::new(path, manifest, ctx.config.interval, ctx.config.settle);
    // The watcher publishes the manifest hash it uses (closing the channel when it ends); the keeper
    // tells it whether this process holds the stack.
    let (hash_tx, hash_rx) = watch::channel(watcher.manifest_hash());
    let (held_tx, held_rx) = watch::channel(None);
    let keeper = Keeper {
        stack,
        holder: ctx.holder.clone(),
        timing: Timing { ttl: ctx.config.lease_ttl, renew: ctx.config.lease_renew },
        store: ctx.store.clone(),
        metrics: ctx.metrics.clone(),
        hash: hash_rx,
        held: held_tx,
        told: None,
        beat: watcher.heartbeat(),
        stuck: false,
    };
    tasks.spawn(keeper.run());
    tasks.spawn(watcher.run(ctx.clone(), stop, hup, held_rx, hash_tx));
}

#[cfg(test)]
mod tests {
    use super::ShareSplit;

    #[test]
    fn a_part_shrinks_at_once_and_grows_only_after_two_counts() {
        let mut split = ShareSplit::default();
        let mut step = |counted| {
            let decided = split.decide(counted);
            if let Some(n) = decided {
                split.among = n;
            }
            decided
        };
        assert_eq!(step(1), Some(1), "the first count");
        assert_eq!(step(3), Some(3), "more watchers: at once");
        assert_eq!(step(2), None, "fewer: not yet (a standby may be about to take the stacks over)");
        assert_eq!(step(3), None, "it did: no change");
        assert_eq!(step(2), None);
        assert_eq!(step(1), Some(2), "fewer twice in a row: the larger of the two counts");
        assert_eq!(step(1), None);
        assert_eq!(step(1), Some(1));
        assert_eq!(step(1), None, "unchanged");
    }
}
