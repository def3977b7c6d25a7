//! Client-side pacing that encodes API Gateway's documented per-account control-plane limits, so a
//! run (or fifty stacks in one process) stays under them instead of collecting 429s.
//!
//! The limits (AWS docs, "Amazon API Gateway quotas"): about 10 requests per second in total with
//! a burst of 40, `CreateRestApi` one every 3 s, `CreateDeployment` one every 5 s, `DeleteRestApi`
//! one every 30 s. The client keeps a little under them (`APIGW_MARGIN`), since a request released
//! exactly on time can still arrive a hair early. Pacing sits in the HTTP layer, under the SDK's
//! retries, so every attempt of every API Gateway call is paced the same way. `RECONCILE_PACING=off`
//! turns it off (for emulators that do not enforce limits, e.g. in tests).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token bucket plus minimum spacings per operation.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    spacing: &'static [(&'static str, Duration)],
    /// Added to every spacing, so requests released exactly on time still arrive after the limit's
    /// token is back (arrival times jitter by connection setup and scheduling).
    margin: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    next: HashMap<&'static str, Instant>,
}

/// How far under the documented limits the client stays: each spacing gets this much on top, and the
/// account bucket runs at 95% of its rate with two tokens less of burst.
pub const APIGW_MARGIN: Duration = Duration::from_millis(100);

/// API Gateway's documented account limits.
pub const APIGW_SPACING: &[(&str, Duration)] =
    &[("CreateRestApi", Duration::from_secs(3)), ("CreateDeployment", Duration::from_secs(5)), ("DeleteRestApi", Duration::from_secs(30))];

impl Pacer {
    pub fn new(rate: f64, burst: f64, spacing: &'static [(&'static str, Duration)]) -> Pacer {
        Pacer {
            rate,
            burst,
            spacing,
            margin: Duration::ZERO,
            state: Mutex::new(State { tokens: burst, refilled: Instant::now(), next: HashMap::new() }),
        }
    }

    /// The same pacer, keeping `margin` more than each spacing between limited operations.
    pub fn with_margin(self, margin: Duration) -> Pacer {
        Pacer { margin, ..self }
    }

    /// API Gateway's limits (10 requests per second, burst 40, and the spacings), kept with a margin.
    pub fn api_gateway() -> Pacer {
        Pacer::new(10.0 * 0.95, 40.0 - 2.0, APIGW_SPACING).with_margin(APIGW_MARGIN)
    }

    /// Reserves the next slot for `operation` and waits for it.
    pub async fn acquire(&self, operation: Option<&str>) {
        let at = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            s.tokens = (s.tokens + now.duration_since(s.refilled).as_secs_f64() * self.rate).min(self.burst);
            s.refilled = now;
            // The token is taken now; if the bucket is empty we owe it, and wait until it refills.
            s.tokens -= 1.0;
            let mut at = if s.tokens >= 0.0 { now } else { now + Duration::from_secs_f64(-s.tokens / self.rate) };
            if let Some((op, gap)) = operation.and_then(|o| self.spacing.iter().find(|(name, _)| *name == o)) {
                let slot = s.next.get(op).copied().unwrap_or(now).max(at);
                s.next.insert(op, slot + *gap + self.margin);
                at = slot;
            }
            at
        };
        if at > Instant::now() {
            tracing::debug!(?operation, wait_ms = (at - Instant::now()).as_millis() as u64, "pacing API Gateway call");
            tokio::time::sleep_until(at).await;
        }
    }
}

/// The API Gateway operations that have their own limit, told apart by method and URI (a full URL,
/// as the HTTP layer sees it, or just a path).
pub fn apigw_operation(method: &str, uri: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path_of(uri).split(['?', '#']).next().unwrap_or("").trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["restapis"]) => Some("CreateRestApi"),
        ("DELETE", ["restapis", _]) => Some("DeleteRestApi"),
        ("POST", ["restapis", _, "deployments"]) => Some("CreateDeployment"),
        _ => None,
    }
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

/// The SDK's default HTTPS client, with API Gateway requests paced.
pub fn http_client(pacer: Arc<Pacer>) -> SharedHttpClient {
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
    SharedHttpClient::new(PacedClient { inner, pacer })
}

#[derive(Debug, Clone)]
struct PacedClient {
    inner: SharedHttpClient,
    pacer: Arc<Pacer>,
}

impl HttpClient for PacedClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(PacedConnector { inner: self.inner.http_connector(settings, components), pacer: self.pacer.clone() })
    }
}

#[derive(Debug, Clone)]
struct PacedConnector {
    inner: SharedHttpConnector,
    pacer: Arc<Pacer>,
}

impl HttpConnector for PacedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if service(&request) != Some("apigateway") {
            return self.inner.call(request);
        }
        let operation = apigw_operation(request.method(), request.uri());
        let (inner, pacer) = (self.inner.clone(), self.pacer.clone());
        HttpConnectorFuture::new(async move {
            pacer.acquire(operation).await;
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let pacer = Arc::new(Pacer::api_gateway());
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
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING);
        let start = Instant::now();
        for _ in 0..3 {
            pacer.acquire(Some("CreateDeployment")).await;
        }
        assert_eq!((Instant::now() - start).as_secs(), 10, "three deployments: at 0 s, 5 s and 10 s");

        // 40 calls of burst, then 10 per second: 60 more calls take about 6 s.
        let pacer = Pacer::new(10.0, 40.0, APIGW_SPACING);
        let start = Instant::now();
        for _ in 0..100 {
            pacer.acquire(None).await;
        }
        let took = Instant::now() - start;
        assert!(took >= Duration::from_millis(5900) && took <= Duration::from_millis(6100), "{took:?}");
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

    #[tokio::test(start_paused = true)]
    async fn the_connector_paces_signed_api_gateway_requests_by_their_full_url() {
        let recorder = Recorder(Default::default(), Instant::now());
        let connector = PacedConnector { inner: SharedHttpConnector::new(recorder.clone()), pacer: Arc::new(Pacer::api_gateway()) };
        let calls = [
            ("POST", "http://127.0.0.1:4566/restapis", "apigateway"),
            ("POST", "http://127.0.0.1:4566/restapis", "apigateway"),
            ("POST", "http://127.0.0.1:4566/restapis/a1/deployments", "apigateway"),
            ("POST", "http://127.0.0.1:4566/restapis/a1/deployments", "apigateway"),
            ("POST", "http://127.0.0.1:4566/2015-03-31/functions", "lambda"),
        ];
        let tasks: Vec<_> = calls.iter().map(|(m, u, s)| tokio::spawn(connector.call(request(m, u, s)))).collect();
        for t in tasks {
            t.await.expect("task").expect("response");
        }
        let seen = recorder.0.lock().expect("lock").clone();
        let at =
            |suffix: &str| -> Vec<u64> { seen.iter().filter(|(u, _)| u.ends_with(suffix)).map(|(_, d)| d.as_millis() as u64).collect() };
        let apis = at("/restapis");
        assert_eq!(apis.len(), 2);
        assert!(apis[0] == 0 && apis[1] >= 3000, "CreateRestApi spaced 3 s apart: {seen:?}");
        let deployments = at("/deployments");
        assert!(deployments[0] == 0 && deployments[1] >= 5000, "CreateDeployment spaced 5 s apart: {seen:?}");
        assert_eq!(at("/functions"), vec![0], "other services are not paced");
    }
}
