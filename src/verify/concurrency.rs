//! The concurrency probe: rounds of N concurrent direct invocations (`lambda:Invoke`,
//! RequestResponse) of each function, counting successes, function errors and throttles, with
//! latency percentiles.
//!
//! Invocations are sent without SDK retries, so a throttle is seen and counted instead of being
//! retried away. An endpoint that cannot run functions (moto without a container engine answers 200,
//! `FunctionError: Handled` and "error running docker: …") is reported as such, not as the function's
//! error.

use std::time::{Duration, Instant};

use aws_sdk_lambda::operation::invoke::InvokeError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use super::{FunctionTarget, Latency, Outcome, Progress};
use crate::providers::{Aws, ProviderError};

/// What moto answers when it has no container engine to run a function in.
const NO_RUNTIME_MARKER: &str = "error running docker";
/// Distinct error messages kept per function.
const EXAMPLES: usize = 3;

#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: u32,
    pub rounds: u32,
    pub payload: Vec<u8>,
    /// Per invocation.
    pub timeout: Duration,
    /// For the whole probe (all functions).
    pub time_limit: Duration,
}

/// How one invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Invocation {
    Success,
    /// The function ran and failed (`X-Amz-Function-Error`).
    FunctionError {
        function_error: String,
        error_type: Option<String>,
        error_message: Option<String>,
    },
    /// The endpoint cannot run functions at all.
    Unavailable {
        message: String,
    },
    /// `TooManyRequestsException`: a concurrency limit (account, reserved) was reached.
    Throttled {
        message: String,
    },
    /// The call failed (denied, not found, timeout, connection).
    Failed {
        message: String,
    },
}

/// Classifies an answer of `lambda:Invoke`.
pub fn classify_output(status: i32, function_error: Option<&str>, payload: &[u8]) -> Invocation {
    let text = String::from_utf8_lossy(payload);
    match function_error {
        Some(_) if text.contains(NO_RUNTIME_MARKER) => Invocation::Unavailable { message: text.chars().take(300).collect() },
        Some(kind) => {
            let doc: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
            let field = |k: &str| doc.as_ref().and_then(|d| d.get(k)).and_then(|v| v.as_str()).map(|s| s.chars().take(300).collect());
            Invocation::FunctionError {
                function_error: kind.to_string(),
                error_type: field("errorType"),
                error_message: field("errorMessage"),
            }
        }
        None if (200..300).contains(&status) => Invocation::Success,
        None => Invocation::Failed { message: format!("status {status}") },
    }
}

/// Classifies a failed call of `lambda:Invoke`.
pub fn classify_error<R: std::fmt::Debug>(e: &SdkError<InvokeError, R>) -> Invocation {
    match e.as_service_error() {
        Some(InvokeError::TooManyRequestsException(t)) => Invocation::Throttled {
            message: match (t.reason(), t.message()) {
                (Some(r), Some(m)) => format!("{}: {m}", r.as_str()),
                (Some(r), None) => r.as_str().to_string(),
                (None, m) => m.unwrap_or("TooManyRequestsException").to_string(),
            },
        },
        _ => Invocation::Failed { message: String::new() },
    }
}

/// Counts of one round, or of all rounds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub invocations: u64,
    pub successes: u64,
    pub function_errors: u64,
    pub throttles: u64,
    pub unavailable: u64,
    pub other_errors: u64,
}

impl Counts {
    fn add(&mut self, i: &Invocation) {
        self.invocations += 1;
        match i {
            Invocation::Success => self.successes += 1,
            Invocation::FunctionError { .. } => self.function_errors += 1,
            Invocation::Unavailable { .. } => self.unavailable += 1,
            Invocation::Throttled { .. } => self.throttles += 1,
            Invocation::Failed { .. } => self.other_errors += 1,
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.invocations += o.invocations;
        self.successes += o.successes;
        self.function_errors += o.function_errors;
        self.throttles += o.throttles;
        self.unavailable += o.unavailable;
        self.other_errors += o.other_errors;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    #[serde(flatten)]
    pub counts: Counts,
    /// Of successful invocations.
    pub latency: Option<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionReport {
    pub function: String,
    pub resource: String,
    pub outcome: Outcome,
    /// Why it did not pass, for people.
    pub reason: Option<String>,
    pub concurrency: u32,
    pub rounds_planned: u32,
    pub rounds_run: u32,
    #[serde(flatten)]
    pub counts: Counts,
    /// Of successful invocations, over all rounds.
    pub latency: Option<Latency>,
    pub rounds: Vec<Round>,
    /// A few of the errors seen (distinct).
    pub examples: Vec<Invocation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: Outcome,
    pub functions: Vec<FunctionReport>,
}

/// A Lambda client like the run's, without retries (a throttle must be seen, not retried) and with
/// the per-invocation timeout.
fn invoke_client(aws: &Aws, timeout: Duration) -> aws_sdk_lambda::Client {
    let config = aws
        .lambda
        .config()
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build())
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

async fn invoke(client: &aws_sdk_lambda::Client, function: &str, payload: &[u8]) -> (Invocation, Duration) {
    let started = Instant::now();
    let result = client.invoke().function_name(function).payload(aws_smithy_types::Blob::new(payload)).send().await;
    let elapsed = started.elapsed();
    let outcome = match result {
        Ok(out) => classify_output(out.status_code(), out.function_error(), out.payload().map(|b| b.as_ref()).unwrap_or_default()),
        Err(e) => match classify_error(&e) {
            Invocation::Failed { .. } => Invocation::Failed { message: ProviderError::sdk("lambda:Invoke", e).to_string() },
            other => other,
        },
    };
    (outcome, elapsed)
}

fn summary(c: &Counts) -> String {
    format!(
        "{} ok, {} function errors, {} throttled{}{}",
        c.successes,
        c.function_errors,
        c.throttles,
        if c.unavailable > 0 { format!(", {} could not run", c.unavailable) } else { String::new() },
        if c.other_errors > 0 { format!(", {} failed calls", c.other_errors) } else { String::new() },
    )
}

pub async fn run(aws: &Aws, functions: &[FunctionTarget], s: &Settings, progress: Progress) -> Report {
    let client = invoke_client(aws, s.timeout);
    let deadline = Instant::now() + s.time_limit;
    let mut reports = Vec::new();
    for f in functions {
        reports.push(probe_function(&client, f, s, deadline, progress).await);
    }
    Report { outcome: Outcome::worst(reports.iter().map(|r| r.outcome)), functions: reports }
}

async fn probe_function(
    client: &aws_sdk_lambda::Client,
    f: &FunctionTarget,
    s: &Settings,
    deadline: Instant,
    progress: Progress,
) -> FunctionReport {
    let mut total = Counts::default();
    let mut rounds = Vec::new();
    let mut all_latencies = Vec::new();
    let mut examples: Vec<Invocation> = Vec::new();
    let mut stopped = None;
    for round in 1..=s.rounds {
        if Instant::now() >= deadline {
            stopped = Some(format!("the time limit was reached after {} of {} rounds", round - 1, s.rounds));
            break;
        }
        let mut counts = Counts::default();
        let mut latencies = Vec::new();
        let mut pending: FuturesUnordered<_> = (0..s.concurrency).map(|_| invoke(client, &f.name, &s.payload)).collect();
        while let Some((outcome, elapsed)) = pending.next().await {
            counts.add(&outcome);
            if outcome == Invocation::Success {
                latencies.push(elapsed);
            } else if examples.len() < EXAMPLES && !examples.contains(&outcome) {
                examples.push(outcome);
            }
            progress.status(&format!(
                "concurrency: {} round {round}/{}: {}/{} done ({})",
                f.name,
                s.rounds,
                counts.invocations,
                s.concurrency,
                summary(&counts)
            ));
        }
        progress.note(&format!("concurrency: {} round {round}/{}: {}", f.name, s.rounds, summary(&counts)));
        total.merge(&counts);
        rounds.push(Round { round, latency: Latency::of(&latencies), counts: counts.clone() });
        all_latencies.extend(latencies);
        if counts.successes == 0 && counts.unavailable > 0 {
            // Nothing can run here: more rounds would say the same.
            break;
        }
    }
    let (outcome, reason) = if total.unavailable > 0 && total.successes == 0 {
        (
            Outcome::Inconclusive,
            Some(format!(
                "functions cannot run at this endpoint ({} of {} invocations answered that no runtime is available, e.g. an emulator \
                 without a container engine); this is not the function's error",
                total.unavailable, total.invocations
            )),
        )
    } else if total.function_errors + total.throttles + total.other_errors + total.unavailable > 0 {
        (Outcome::Failed, Some(summary(&total)))
    } else if let Some(why) = stopped {
        (Outcome::Inconclusive, Some(why))
    } else {
        (Outcome::Passed, None)
    };
    FunctionReport {
        function: f.name.clone(),
        resource: f.resource.clone(),
        outcome,
        reason,
        concurrency: s.concurrency,
        rounds_planned: s.rounds,
        rounds_run: rounds.len() as u32,
        counts: total,
        latency: Latency::of(&all_latencies),
        rounds,
        examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulator_without_a_runtime_is_told_from_a_function_error() {
        // What moto 5.2.5 answers without a container engine (captured from a real Invoke).
        let moto = b"error running docker: Error while fetching server API version: ('Connection aborted.', \
                     FileNotFoundError(2, 'No such file or directory'))";
        let i = classify_output(200, Some("Handled"), moto);
        assert!(matches!(&i, Invocation::Unavailable { message } if message.starts_with("error running docker")), "{i:?}");

        // A function that failed (moto's answer to a response over 6 MB, as Lambda's).
        let too_large = br#"{"errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).", "errorType": "Function.ResponseSizeTooLarge"}"#;
        assert_eq!(
            classify_output(200, Some("Unhandled"), too_large),
            Invocation::FunctionError {
                function_error: "Unhandled".into(),
                error_type: Some("Function.ResponseSizeTooLarge".into()),
                error_message: Some("Response payload size exceeded maximum allowed payload size (6291556 bytes).".into()),
            }
        );
        assert_eq!(classify_output(200, None, br#"{"statusCode": 200}"#), Invocation::Success);
        assert_eq!(classify_output(200, Some("Unhandled"), b"not json").to_string_lossy(), "Unhandled");
    }

    #[test]
    fn a_too_many_requests_exception_is_a_throttle() {
        use aws_sdk_lambda::types::ThrottleReason;
        use aws_sdk_lambda::types::error::TooManyRequestsException;
        let raw = aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(429).unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        let err = InvokeError::TooManyRequestsException(
            TooManyRequestsException::builder().message("Rate Exceeded.").reason(ThrottleReason::ConcurrentInvocationLimitExceeded).build(),
        );
        let e = SdkError::service_error(err, raw);
        assert_eq!(classify_error(&e), Invocation::Throttled { message: "ConcurrentInvocationLimitExceeded: Rate Exceeded.".into() });
    }

    impl Invocation {
        fn to_string_lossy(&self) -> String {
            match self {
                Invocation::FunctionError { function_error, .. } => function_error.clone(),
                other => format!("{other:?}"),
            }
        }
    }
}
