//! The control endpoint, on the proxy's own port and never forwarded: `GET /__faultproxy/stats`,
//! `GET /__faultproxy/config` and `POST /__faultproxy/config` (see the crate documentation).

use serde_json::{Value, json};

use crate::faults::Shared;

/// Requests to paths under this prefix are control requests.
pub const CONTROL_PREFIX: &str = "/__faultproxy/";

/// Answers a control request: (status, JSON).
pub fn control(shared: &Shared, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let path = path.split('?').next().unwrap_or(path);
    match (method, path.trim_end_matches('/')) {
        ("GET", "/__faultproxy/stats") => (200, shared.stats_json()),
        ("GET", "/__faultproxy/config") => (200, shared.config().to_json()),
        ("POST" | "PUT", "/__faultproxy/config") => {
            let patch: Value = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return (400, json!({"error": format!("invalid JSON: {e}")})),
                }
            };
            let mut cfg = shared.config.lock().unwrap_or_else(|e| e.into_inner());
            match cfg.patched(&patch) {
                Ok(new) => {
                    if new.seed != cfg.seed {
                        shared.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    }
                    if patch.get("fail").is_some() {
                        let mut counts = shared.fail_counts.lock().unwrap_or_else(|e| e.into_inner());
                        *counts = vec![(0, 0); new.fail.len()];
                    }
                    if patch.get("hold").is_some() {
                        *shared.hold_counts.lock().unwrap_or_else(|e| e.into_inner()) = vec![0; new.hold.len()];
                    }
                    tracing::info!(config = %new.to_json(), "configuration changed");
                    *cfg = new;
                    (200, cfg.to_json())
                }
                Err(e) => (400, json!({"error": e})),
            }
        }
        (_, "/__faultproxy/stats" | "/__faultproxy/config") => (405, json!({"error": "method not allowed"})),
        _ => (404, json!({"error": "unknown faultproxy endpoint; use /__faultproxy/stats or /__faultproxy/config"})),
    }
}
