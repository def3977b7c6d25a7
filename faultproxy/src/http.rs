//! The HTTP side, on hyper: the HTTP/1.1 server each client connection is served by, the client that
//! forwards to the upstream, and what a request goes through in between (the control endpoint,
//! `--apigw-limits`, the `fail` rules, the added latency and the rate-drawn faults).

use std::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::control::{CONTROL_PREFIX, control};
use crate::faults::{Fault, Rng, Shared, fingerprint};
use crate::protocol::{access_key_of, describe, fault_response, header, operation_of, protocol_of, rule_response, service_of};

/// Largest body accepted, of a request or of an upstream answer (Lambda zips travel base64-encoded
/// in JSON).
const MAX_BODY: usize = 256 * 1024 * 1024;

/// An answer the proxy makes up itself (a fault, a `fail` rule, the control endpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    /// In order, names spelled as AWS spells them (on the wire hyper writes them in lower case,
    /// which HTTP/1.1 allows and the SDKs expect).
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// `close`: the client asked to close the connection after this exchange (`Connection: close`).
    pub fn new(status: u16, mut headers: Vec<(&'static str, String)>, body: Vec<u8>, close: bool) -> Reply {
        if close {
            headers.push(("Connection", "close".into()));
        }
        Reply { status, headers, body }
    }

    /// Pretty-printed JSON and a newline.
    pub fn json(status: u16, value: &Value, close: bool) -> Reply {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Reply::new(status, vec![("Content-Type", "application/json".into())], body, close)
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            match HeaderValue::try_from(value) {
                Ok(v) => {
                    response.headers_mut().append(name, v);
                }
                Err(e) => tracing::warn!(name, error = %e, "header value left out of an answer"),
            }
        }
        response
    }
}

/// The request gets no answer: its connection is closed instead (`--drop-rate`).
#[derive(Debug)]
pub struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl Error for Dropped {}

/// The pooled HTTP/1.1 client requests are forwarded with.
pub type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

pub fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // A pooled connection the upstream closed meanwhile is retried on a fresh one (the client's default).
    Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector)
}

/// Serves one client connection, in a task of its own, until it closes.
pub fn spawn_connection(shared: Arc<Shared>, client: UpstreamClient, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    tokio::spawn(async move {
        let service = service_fn(move |request| handle(Arc::clone(&shared), client.clone(), request));
        if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
            tracing::debug!(%peer, error = %e, "downstream connection ended");
        }
    });
}

/// Headers a proxy must not pass on (RFC 9110 §7.6.1); the framing ones are rewritten.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.contains(&name.as_str())
}

/// Whether any `name` header lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `error` and its sources, for a log line or an answer.
fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// Forwards a request to the upstream; its answer comes back whole, re-framed with Content-Length.
async fn forward(
    client: &UpstreamClient,
    upstream: SocketAddr,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: Bytes,
    close: bool,
) -> Result<Response<Full<Bytes>>, String> {
    let framed = headers.contains_key(CONTENT_LENGTH) || has_token(headers, TRANSFER_ENCODING, "chunked");
    let length = body.len();
    let mut request = Request::builder()
        .method(method.clone())
        .uri(format!("http://{upstream}{target}"))
        .body(Full::new(body))
        .map_err(|e| format!("cannot forward {method} {target}: {e}"))?;
    for (name, value) in headers.iter().filter(|(n, _)| !is_hop_by_hop(n) && *n != CONTENT_LENGTH && *n != EXPECT) {
        request.headers_mut().append(name, value.clone());
    }
    if length > 0 || framed {
        request.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    let answer = client.request(request).await.map_err(|e| chain(&e))?;
    let (parts, incoming) = answer.into_parts();
    let body = Limited::new(incoming, MAX_BODY).collect().await.map_err(|e| format!("reading the answer: {}", chain(&*e)))?.to_bytes();
    // No body allowed (HEAD, 204, 304): the headers are passed as they are, Content-Length included.
    let bodiless = *method == Method::HEAD || matches!(parts.status.as_u16(), 204 | 304);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = parts.status;
    let passed =
        |n: &HeaderName| if bodiless { *n != CONNECTION && n.as_str() != "keep-alive" } else { !is_hop_by_hop(n) && *n != CONTENT_LENGTH };
    for (name, value) in parts.headers.iter().filter(|(n, _)| passed(n)) {
        response.headers_mut().append(name, value.clone());
    }
    if close {
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// `fail` rules apply to every AWS request (whatever `--only` says), never to `/moto-api`.
fn eligible_for_rules(service: &str, cfg: &Config) -> bool {
    service != "moto-api" && !cfg.fail.is_empty()
}

/// Answers one request: the control endpoint, a made-up answer (limit, rule, fault) or the upstream's.
async fn handle(shared: Arc<Shared>, client: UpstreamClient, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, incoming) = request.into_parts();
    let method = parts.method.as_str();
    let head = &parts.headers;
    // Absolute form (a client using us as an HTTP proxy) becomes origin form.
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_string();
    let close =
        if parts.version == Version::HTTP_10 { !has_token(head, CONNECTION, "keep-alive") } else { has_token(head, CONNECTION, "close") };

    let body = match Limited::new(incoming, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!(error = %chain(&*e), "could not read the request body");
            return Ok(Reply::json(400, &json!({"error": chain(&*e)}), true).into_response());
        }
    };

    if target.starts_with(CONTROL_PREFIX) {
        let (status, value) = control(&shared, method, &target, &body);
        return Ok(Reply::json(status, &value, close).into_response());
    }

    let service = if target.starts_with("/moto-api/") || target == "/moto-api" {
        "moto-api".to_string()
    } else {
        service_of(head, &target).unwrap_or_else(|| "unknown".to_string())
    };
    shared.stats().bump(&service, |c| c.requests += 1);

    let cfg = shared.config();
    // Checked on arrival, so the added latency does not change the spacing the client kept.
    let over_limit = shared.over_apigw_limit(&cfg, &service, method, &target);
    // Each request's line is written when it is answered; `in_ms` (this instant to then) gives its
    // arrival, the moment the limits judged it.
    let arrived = tokio::time::Instant::now();
    let eligible = service != "moto-api" && cfg.applies_to(&service);
    let (delay, fault, mut rng, key) = if eligible {
        let amz_target = header(head, "x-amz-target").unwrap_or_default();
        let fp = fingerprint(&service, method, amz_target, &target, &body);
        tracing::trace!(fp = %format!("{fp:016x}"), %method, %target, amz_target, body = %String::from_utf8_lossy(&body[..body.len().min(400)]), "request");
        let (delay, fault, rng, n) = shared.decide(&cfg, fp);
        (delay, fault, rng, format!("{fp:016x}#{n}"))
    } else {
        (Duration::ZERO, Fault::Forward, Rng::new(0), String::new())
    };
    if !delay.is_zero() {
        shared.stats().added_latency_ms += u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        tokio::time::sleep(delay).await;
    }
    let what = describe(method, &target, head, &body);
    // Which client sent it (several processes may share the proxy and its API Gateway limits).
    let key_id = access_key_of(head, &target).unwrap_or_default();
    if let Some(limit) = over_limit {
        {
            let mut stats = shared.stats();
            stats.bump(&service, |c| c.limited += 1);
            *stats.apigw_limited.entry(limit).or_default() += 1;
        }
        tracing::info!(%service, limit, request = %what, %key_id, in_ms = arrived.elapsed().as_millis() as u64, "API Gateway limit exceeded: answering 429");
        return Ok(fault_response(Fault::Throttle, protocol_of(head, &body), &service, &rng.request_id(), close).into_response());
    }
    let operation =
        (service != "moto-api").then(|| operation_of(protocol_of(head, &body), &service, method, &target, head, &body)).flatten();
    if let Some(op) = &operation {
        *shared.stats().by_operation.entry(format!("{service}:{op}")).or_default() += 1;
    }
    if service != "moto-api"
        && let Some(rule) = shared.holding_rule(&cfg, &service, operation.as_deref())
    {
        // AWS carries the call out; its client never hears back (until it is killed).
        let forwarded = forward(&client, shared.upstream, &parts.method, &target, head, body.clone(), close).await;
        shared.stats().bump(&service, |c| c.held += 1);
        let status = forwarded.as_ref().map(|r| r.status().as_u16()).unwrap_or_default();
        tracing::info!(%service, operation = %rule.operation, request = %what, status, %key_id, "hold: forwarded, holding the answer back");
        std::future::pending::<()>().await;
    }
    if eligible_for_rules(&service, &cfg) {
        let protocol = protocol_of(head, &body);
        if let Some(rule) = shared.failing_rule(&cfg, &service, operation.as_deref()) {
            shared.stats().bump(&service, |c| c.failed += 1);
            tracing::info!(%service, operation = %rule.operation, status = rule.status, request = %what, %key_id, in_ms = arrived.elapsed().as_millis() as u64, "fault: failing this call of the operation");
            return Ok(rule_response(&rule.answering(&body), protocol, &service, &rng.request_id(), close).into_response());
        }
    }
    match fault {
        Fault::Drop => {
            shared.stats().bump(&service, |c| c.dropped += 1);
            tracing::info!(%service, request = %what, %key, %key_id, in_ms = arrived.elapsed().as_millis() as u64, "fault: dropping the connection");
            // hyper closes the connection without answering when the service fails.
            Err(Dropped)
        }
        Fault::Throttle | Fault::Error => {
            let protocol = protocol_of(head, &body);
            if fault == Fault::Throttle {
                shared.stats().bump(&service, |c| c.throttled += 1);
            } else {
                shared.stats().bump(&service, |c| c.errored += 1);
            }
            tracing::info!(%service, ?protocol, ?fault, request = %what, %key, %key_id, in_ms = arrived.elapsed().as_millis() as u64, "fault: answering an error");
            Ok(fault_response(fault, protocol, &service, &rng.request_id(), close).into_response())
        }
        Fault::Forward => match forward(&client, shared.upstream, &parts.method, &target, head, body, close).await {
            Ok(response) => {
                shared.stats().bump(&service, |c| c.forwarded += 1);
                tracing::debug!(%service, request = %what, %key, status = response.status().as_u16(), %key_id, in_ms = arrived.elapsed().as_millis() as u64, "forwarded");
                Ok(response)
            }
            Err(e) => {
                shared.stats().bump(&service, |c| c.upstream_errors += 1);
                tracing::warn!(%service, request = %what, error = %e, %key_id, in_ms = arrived.elapsed().as_millis() as u64, "upstream failed");
                let msg = json!({"message": format!("faultproxy: upstream {} failed: {e}", shared.upstream)});
                Ok(Reply::json(502, &msg, close).into_response())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn config(patch: Value) -> Config {
        let base = Config {
            latency_ms: 0,
            jitter_ms: 0,
            throttle_rate: 0.0,
            error_rate: 0.0,
            drop_rate: 0.0,
            seed: 1,
            only: vec![],
            apigw_limits: false,
            fail: Vec::new(),
            hold: Vec::new(),
        };
        base.patched(&patch).unwrap()
    }

    /// An upstream answering each connection's one request, chunked and closing, with the request's
    /// head and body as it received them.
    async fn echo_upstream() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let echo = loop {
                        let n = stream.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "the proxy closed before a whole request");
                        seen.extend_from_slice(&chunk[..n]);
                        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let length =
                            head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        if seen.len() >= end + 4 + length {
                            break seen;
                        }
                    };
                    let (a, b) = echo.split_at(echo.len() / 2);
                    let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
                    for part in [a, b] {
                        answer.extend(format!("{:x}\r\n", part.len()).bytes());
                        answer.extend_from_slice(part);
                        answer.extend(b"\r\n");
                    }
                    answer.extend(b"0\r\n\r\n");
                    stream.write_all(&answer).await.unwrap();
                });
            }
        });
        addr
    }

    /// The proxy in front of `upstream`, on a free port.
    async fn start_proxy(upstream: SocketAddr, config: Config) -> (SocketAddr, Arc<Shared>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::new(upstream, config));
        let client = upstream_client();
        let serving = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                spawn_connection(Arc::clone(&serving), client.clone(), stream, peer);
            }
        });
        (addr, shared)
    }

    /// Sends `raw` on a fresh connection and reads until the proxy closes it.
    async fn exchange(proxy: SocketAddr, raw: &str) -> String {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8(answer).unwrap()
    }

    const SIGNED: &str = "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/apigateway/aws4_request, \
                          SignedHeaders=host, Signature=abc\r\n";

    #[tokio::test]
    async fn requests_are_forwarded_whole_and_answers_come_back_reframed() {
        let (proxy, shared) = start_proxy(echo_upstream().await, config(json!({}))).await;
        let request = format!(
            "POST /restapis?mode=x HTTP/1.1\r\nHost: proxy.test\r\n{SIGNED}Transfer-Encoding: chunked\r\nConnection: close\r\n\
             X-Custom: kept\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        );
        let answer = exchange(proxy, &request).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200 ok"), "{answer}");
        // The chunked answer is re-framed with its length; the client asked to close, and is told so.
        assert!(!head.contains("transfer-encoding"), "{answer}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{answer}");
        assert!(head.contains("connection: close"), "{answer}");
        // The upstream got the method, target, end-to-end headers and the de-chunked body.
        let echoed = body.to_ascii_lowercase();
        assert!(echoed.starts_with("post /restapis?mode=x http/1.1\r\n"), "{body}");
        assert!(echoed.contains("host: proxy.test\r\n") && echoed.contains("x-custom: kept\r\n"), "{body}");
        assert!(echoed.contains("content-length: 11\r\n") && !echoed.contains("transfer-encoding"), "{body}");
        assert!(body.ends_with("\r\n\r\nhello world"), "{body}");
        let stats = shared.stats_json();
        assert_eq!((stats["requests"].as_u64(), stats["forwarded"].as_u64()), (Some(1), Some(1)), "{stats}");
        assert_eq!(stats["by_service"]["apigateway"]["forwarded"], json!(1), "{stats}");
    }

    #[tokio::test]
    async fn a_dropped_request_gets_its_connection_closed_without_an_answer() {
        let (proxy, shared) = start_proxy(echo_upstream().await, config(json!({"drop_rate": 1.0}))).await;
        let answer = exchange(proxy, &format!("GET /restapis HTTP/1.1\r\nHost: proxy.test\r\n{SIGNED}\r\n")).await;
        assert_eq!(answer, "");
        let stats = shared.stats_json();
        assert_eq!((stats["dropped"].as_u64(), stats["forwarded"].as_u64()), (Some(1), Some(0)), "{stats}");
        // The control endpoint is never faulted.
        let control = exchange(proxy, "GET /__faultproxy/config HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n").await;
        assert!(control.starts_with("HTTP/1.1 200 OK\r\n") && control.contains("\"drop_rate\": 1.0"), "{control}");
    }

    #[tokio::test]
    async fn an_upstream_that_is_down_is_answered_502() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let (proxy, shared) = start_proxy(closed, config(json!({}))).await;
        let answer = exchange(proxy, &format!("GET /restapis HTTP/1.1\r\nHost: proxy.test\r\n{SIGNED}Connection: close\r\n\r\n")).await;
        assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{answer}");
        assert!(answer.contains(&format!("faultproxy: upstream {closed} failed")), "{answer}");
        assert_eq!(shared.stats_json()["upstream_errors"], json!(1));
    }
}
