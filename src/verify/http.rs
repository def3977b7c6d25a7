//! The probes' HTTP client: hyper with rustls (the stack of the AWS SDK's own client), HTTP/1.1,
//! keep-alive connections pooled per host, a timeout per request, bodies read up to a cap. A request
//! that fails is a [`Failure`] with its kind (name resolution, connection, TLS, timeout), reported for
//! that endpoint, never a crash.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// The most of a body that is read (the rest is not needed to judge a response).
const BODY_CAP: usize = 1 << 20;

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: ::http::HeaderMap,
    pub body: Bytes,
    pub latency: Duration,
}

/// What went wrong with a request that got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The host name does not resolve.
    Dns,
    /// No TCP connection (refused, unreachable).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke or the answer was not HTTP.
    Protocol,
    /// The URL cannot be requested.
    BadUrl,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Dns => "name does not resolve",
            FailureKind::Connect => "cannot connect",
            FailureKind::Tls => "TLS failed",
            FailureKind::Timeout => "timed out",
            FailureKind::Protocol => "connection failed",
            FailureKind::BadUrl => "bad URL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {message}", .kind.as_str())]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

enum Inner {
    Tls(Client<Https, Empty<Bytes>>),
    /// No CA certificates could be loaded: plain HTTP works, HTTPS fails with this reason.
    Plain(Client<HttpConnector, Empty<Bytes>>, String),
}

/// A client for one probe; `connections` is how many it keeps open at once per host.
pub struct HttpClient {
    inner: Inner,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(connections: usize, timeout: Duration) -> HttpClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_max_idle_per_host(connections).pool_idle_timeout(Duration::from_secs(60));
            b
        };
        // The same crypto provider as the AWS SDK's client (aws-lc).
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let inner = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider) {
            Ok(tls) => Inner::Tls(builder().build(tls.https_or_http().enable_http1().wrap_connector(http))),
            Err(e) => {
                tracing::warn!(error = %e, "no CA certificates: HTTPS requests will fail");
                Inner::Plain(builder().build(http), format!("no CA certificates could be loaded on this machine ({e})"))
            }
        };
        HttpClient { inner, timeout }
    }

    /// One GET; the latency is measured to the end of the (capped) body.
    pub async fn get(&self, url: &str) -> Result<Response, Failure> {
        let uri: ::http::Uri = url.parse().map_err(|e| Failure { kind: FailureKind::BadUrl, message: format!("{url}: {e}") })?;
        let request = ::http::Request::get(uri.clone())
            .header(::http::header::USER_AGENT, concat!("reconcile-verify/", env!("CARGO_PKG_VERSION")))
            .header(::http::header::ACCEPT, "application/json, */*")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Failure { kind: FailureKind::BadUrl, message: e.to_string() })?;
        let started = Instant::now();
        let exchange = async {
            let response = match &self.inner {
                Inner::Tls(c) => c.request(request).await,
                Inner::Plain(_, why) if uri.scheme_str() == Some("https") => {
                    return Err(Failure { kind: FailureKind::Tls, message: why.clone() });
                }
                Inner::Plain(c, _) => c.request(request).await,
            }
            .map_err(|e| classify(&e))?;
            let (parts, body) = response.into_parts();
            let body = match Limited::new(body, BODY_CAP).collect().await {
                Ok(b) => b.to_bytes(),
                // Over the cap: judged on what came (the status and headers are what matter).
                Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Bytes::new(),
                Err(e) => return Err(Failure { kind: FailureKind::Protocol, message: chain(e.as_ref()) }),
            };
            Ok(Response { status: parts.status.as_u16(), headers: parts.headers, body, latency: started.elapsed() })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(Failure { kind: FailureKind::Timeout, message: format!("no answer within {:?}", self.timeout) }),
        }
    }
}

/// An error and its sources, `: `-separated.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = s.source();
    }
    parts.join(": ")
}

fn classify(e: &hyper_util::client::legacy::Error) -> Failure {
    let message = chain(e);
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("dns error") || lower.contains("failed to lookup address") {
        FailureKind::Dns
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        FailureKind::Tls
    } else if e.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Protocol
    };
    Failure { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure_not_a_crash() {
        // Bind then drop: the port is free and nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = HttpClient::new(1, Duration::from_secs(5));
        let e = client.get(&format!("http://127.0.0.1:{port}/x")).await.unwrap_err();
        assert_eq!(e.kind, FailureKind::Connect, "{e}");
        let e = client.get("not a url").await.unwrap_err();
        assert_eq!(e.kind, FailureKind::BadUrl, "{e}");
    }
}
