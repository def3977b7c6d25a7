//! The HTTP endpoint: `/healthz`, `/readyz` and Prometheus `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;
use crate::providers::calls::CallStats;

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
