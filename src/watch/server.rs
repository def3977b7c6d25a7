//! The HTTP endpoint: `/healthz`, `/readyz` and Prometheus `/metrics`, served with bounds a daemon
//! listening on the network needs ([`Limits`]): HTTP/1 only, a header-read timeout (which hyper also
//! applies to an idle keep-alive connection waiting for its next request), an idle timeout (no byte
//! either way), and a cap on open connections well below the open-file limit, so a slowloris can
//! never take the files the watcher's own work (AWS, state, manifests) needs. At the cap, a new
//! connection evicts the oldest one that is not serving a request (a half-open or idle one): a real
//! client, which sends its request at once, gets an answer whatever number of connections an
//! attacker opens; when every connection is serving a request, the new one is closed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::metrics::Metrics;
use crate::providers::calls::CallStats;

/// How the endpoint bounds its clients (`watch --http-*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must send a request's whole header within this (and an idle keep-alive connection
    /// is closed after it too).
    pub header_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// The most connections open at once (lowered to keep file descriptors in reserve, see [`fd_budget`]).
    pub max_connections: usize,
}

/// File descriptors kept for the watcher's own work: AWS connections, the state database, manifest
/// and code files.
pub const FD_RESERVE: u64 = 128;

/// Raises the soft open-file limit to the hard one (so the reserve is as large as the host allows) and
/// returns the limit now in force (`None` when it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        // rlim_t is u64 on Linux, not everywhere.
        #[allow(clippy::unnecessary_cast)]
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap for an open-file limit: the configured one, but never more than half the limit
/// nor more than the limit less [`FD_RESERVE`] (at least 1).
pub fn fd_budget(configured: usize, nofile: Option<u64>) -> usize {
    let Some(limit) = nofile else { return configured.max(1) };
    let room = (limit / 2).min(limit.saturating_sub(FD_RESERVE)).max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1)
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    calls: Arc<CallStats>,
}

pub fn router(metrics: Arc<Metrics>, calls: Arc<CallStats>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { metrics, calls })
}

/// 200 while the process runs.
async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 once every stack has had a complete pass (every resource read) and none has been failing for
/// longer than the threshold; 503 otherwise, naming the stacks, and while a stack is refused (pinned to
/// another account or region; the others are still watched).
async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    if s.metrics.ready() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let waiting = s.metrics.not_ready();
        let failing = s.metrics.failing();
        let mut body = String::new();
        if !waiting.is_empty() {
            body.push_str(&format!("waiting for a first pass of: {}\n", waiting.join(", ")));
        }
        for (stack, since) in failing {
            body.push_str(&format!(
                "{stack}: no complete pass for {} s (passes failing for longer than {} s)\n",
                since.as_secs(),
                s.metrics.unready_after().as_secs()
            ));
        }
        for (stack, why) in s.metrics.refusals() {
            body.push_str(&format!("refused: {stack}: {why}\n"));
        }
        for (stack, reason, why, paused) in s.metrics.manifest_problems() {
            let what = if paused { "remediation paused" } else { "watching its last good version" };
            body.push_str(&format!(
                "{stack}: {what} ({reason}): the manifest on disk cannot be used; drift is recorded with the last good version: {why}\n"
            ));
        }
        for (stack, why) in s.metrics.lease_troubles() {
            body.push_str(&format!("{stack}: not watched: {why}\n"));
        }
        if body.is_empty() {
            body.push_str("no stack watched yet\n");
        }
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    let body = s.metrics.render(&s.calls.snapshot(), &s.calls.pacing());
    ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], body)
}

/// One open connection as the accept loop sees it.
struct Open {
    /// Serving a request now (not to be evicted).
    serving: Arc<AtomicBool>,
    /// Dropping (or sending on) it closes the connection.
    evict: oneshot::Sender<()>,
}

/// Serves `app` on `listener` within `limits` until `stop` fires; connections still open then are closed.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, mut stop: oneshot::Receiver<()>) {
    let mut open: BTreeMap<u64, Open> = BTreeMap::new();
    let mut tasks: JoinSet<u64> = JoinSet::new();
    let mut next_id = 0u64;
    let mut told_accept: Option<(String, Instant)> = None;
    let mut evicted = 0u64;
    let mut told_evicted = Instant::now();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(id) = done {
                    open.remove(&id);
                }
            }
            // A connection evicted keeps its file until its task has ended: while more than a few are
            // still closing, no new one is accepted, so a flood of connects cannot outrun the closing
            // and the files in use stay within the cap (and the reserve is never touched).
            accepted = listener.accept(), if tasks.len() < limits.max_connections + closing_slack(limits.max_connections) => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and the like: say what it is (once a minute), and do not spin on it.
                        let what = e.raw_os_error().and_then(crate::providers::error::local_errno).map(str::to_string).unwrap_or_else(|| e.to_string());
                        if told_accept.as_ref().is_none_or(|(w, at)| *w != what || at.elapsed() > Duration::from_secs(60)) {
                            tracing::warn!(error = %e, "the HTTP endpoint cannot accept a connection: {what}");
                            told_accept = Some((what, Instant::now()));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if open.len() >= limits.max_connections {
                    // The oldest connection not serving a request makes room; none: the new one is closed.
                    let idle = open.iter().find(|(_, o)| !o.serving.load(Ordering::Relaxed)).map(|(id, _)| *id);
                    match idle.and_then(|id| open.remove(&id)) {
                        Some(o) => {
                            let _ = o.evict.send(());
                        }
                        None => {
                            drop(stream);
                            continue;
                        }
                    }
                    evicted += 1;
                    if told_evicted.elapsed() > Duration::from_secs(60) || evicted == 1 {
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            evicted,
                            "the HTTP endpoint is at its connection cap: closing the oldest connections that send no request"
                        );
                        told_evicted = Instant::now();
                    }
                }
                let id = next_id;
                next_id += 1;
                let serving = Arc::new(AtomicBool::new(false));
                let (evict, evicted_rx) = oneshot::channel();
                open.insert(id, Open { serving: serving.clone(), evict });
                tasks.spawn(connection(id, stream, app.clone(), limits, serving, evicted_rx));
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// How many connections beyond the cap may still be closing (evicted, their tasks not yet ended)
/// before the accept loop waits for them.
fn closing_slack(max_connections: usize) -> usize {
    (max_connections / 8).max(1)
}

/// One connection: HTTP/1 with the header timeout, closed when idle too long or evicted.
async fn connection(
    id: u64,
    stream: TcpStream,
    app: Router,
    limits: Limits,
    serving: Arc<AtomicBool>,
    mut evicted: oneshot::Receiver<()>,
) -> u64 {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = hyper_util::rt::TokioIo::new(Tracked { inner: stream, start, last: last.clone() });
    let flag = serving.clone();
    let app = hyper_util::service::TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let flag = flag.clone();
        flag.store(true, Ordering::Relaxed);
        let answer = hyper::service::Service::call(&app, req);
        async move {
            let answer = answer.await;
            flag.store(false, Ordering::Relaxed);
            answer
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut conn => break,
            _ = &mut evicted => break,
            _ = tokio::time::sleep(tick) => {
                let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= limits.idle_timeout && !serving.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    id
}

/// A stream that notes when it last moved a byte (milliseconds after `start`).
struct Tracked {
    inner: TcpStream,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Tracked {
    fn touch(&self) {
        self.last.store(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::fd_budget;

    #[test]
    fn the_connection_cap_keeps_files_in_reserve() {
        assert_eq!(fd_budget(64, Some(256)), 64);
        assert_eq!(fd_budget(512, Some(256)), 128, "never more than half the limit");
        assert_eq!(fd_budget(512, Some(1024)), 512);
        assert_eq!(fd_budget(2000, Some(1024)), 512);
        assert_eq!(fd_budget(64, Some(100)), 1, "a tiny limit still serves one");
        assert_eq!(fd_budget(64, None), 64);
    }
}
