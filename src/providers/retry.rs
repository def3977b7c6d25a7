//! Retries for the eventual-consistency errors AWS documents (on top of the SDK's own retries for
//! throttling, 5xx, timeouts and connection resets): capped exponential backoff with jitter.

use std::future::Future;
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{ErrorClass, ProviderError};

/// How long and how often to retry.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max_delay: Duration,
    pub budget: Duration,
}

impl Backoff {
    /// IAM propagation takes seconds, occasionally over a minute.
    pub const PROPAGATION: Backoff =
        Backoff { initial: Duration::from_millis(500), max_delay: Duration::from_secs(8), budget: Duration::from_secs(120) };

    /// API Gateway's control-plane limits (about 10 requests/s per account, CreateRestApi one per 3 s,
    /// DeleteRestApi one per 30 s, CreateDeployment one per 5 s): slow, long retries.
    pub const THROTTLE: Backoff =
        Backoff { initial: Duration::from_secs(1), max_delay: Duration::from_secs(30), budget: Duration::from_secs(180) };

    /// The delay before attempt `n` (1-based retry number), with up to 25% jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let base = self.initial.saturating_mul(2u32.saturating_pow(n.saturating_sub(1))).min(self.max_delay);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
        base + jitter
    }
}

/// Runs `op` until it succeeds, fails with an error `retryable` rejects, or the budget runs out.
pub async fn with_backoff<T, F, Fut>(
    what: &str,
    policy: Backoff,
    retryable: impl Fn(&ProviderError) -> bool,
    mut op: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && start.elapsed() < policy.budget => {
                attempt += 1;
                let delay = policy.delay(attempt);
                tracing::info!(what, attempt, ?delay, error = %e, "retrying after backoff (AWS is still settling)");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends an SDK request (`call` builds and sends it afresh each attempt, e.g.
/// `|| request.clone().send()`), retrying the errors `retryable` accepts under `policy`.
pub async fn send<T, E, F, Fut>(
    operation: &'static str,
    policy: Backoff,
    retryable: impl Fn(&ProviderError) -> bool,
    call: F,
) -> Result<T, ProviderError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    send_classified(operation, policy, retryable, |_| ErrorClass::Other, call).await
}

/// [`send`], with `classify` telling from the operation's typed error what an error means (see
/// [`ProviderError::sdk_classified`]).
pub async fn send_classified<T, E, F, Fut>(
    operation: &'static str,
    policy: Backoff,
    retryable: impl Fn(&ProviderError) -> bool,
    classify: impl Fn(&E) -> ErrorClass,
    call: F,
) -> Result<T, ProviderError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let classify = &classify;
    with_backoff(operation, policy, retryable, || {
        let sent = call();
        async move { sent.await.map_err(|e| ProviderError::sdk_classified(operation, e, classify)) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_is_retryable() {
        let calls = AtomicU32::new(0);
        let policy = Backoff { initial: Duration::from_millis(10), max_delay: Duration::from_millis(40), budget: Duration::from_secs(5) };
        let out = with_backoff(
            "t",
            policy,
            |e| e.to_string().contains("later"),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 { Err(ProviderError::Other("try later".into())) } else { Ok(n) }
            },
        )
        .await;
        assert_eq!(out.unwrap(), 3);
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = with_backoff(
            "t",
            policy,
            |e| e.to_string().contains("later"),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(ProviderError::Other("fatal".into()))
            },
        )
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn delay_grows_and_is_capped() {
        let p = Backoff::PROPAGATION;
        assert!(p.delay(1) >= Duration::from_millis(500) && p.delay(1) < Duration::from_millis(700));
        assert!(p.delay(10) <= Duration::from_secs(10));
    }
}
