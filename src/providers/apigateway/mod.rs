//! API Gateway (REST): APIs, deployments, stages and the account setting.

use std::future::Future;

use aws_sdk_apigateway::types::{Op, PatchOperation};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::providers::retry::Backoff;
use crate::providers::{ErrorClass, ProviderError};

pub mod account;
pub mod deployment;
pub mod rest_api;
pub mod stage;

/// API Gateway's rate limits (`TooManyRequestsException`) and "concurrent modification" conflicts
/// are worth waiting out; other conflicts (e.g. a duplicate path part) are not. The retry helper
/// hands this the converted error (every operation has its own typed error enum, each with its own
/// `TooManyRequestsException` and `ConflictException` variants), so it reads the code the SDK's
/// variant was built from; the "concurrent modification" message tells the conflicts apart.
pub(crate) fn is_throttled(e: &ProviderError) -> bool {
    match e.code() {
        Some("TooManyRequestsException") => true,
        Some("ConflictException") => e.message().to_ascii_lowercase().contains("concurrent modification"),
        _ => false,
    }
}

/// [`retry::send_classified`](crate::providers::retry::send_classified) with API Gateway's backoff
/// and [`is_throttled`].
pub(crate) async fn send_classified<T, E, F, Fut>(
    operation: &'static str,
    classify: impl Fn(&E) -> ErrorClass,
    call: F,
) -> Result<T, ProviderError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    crate::providers::retry::send_classified(operation, Backoff::THROTTLE, is_throttled, classify, call).await
}

pub(crate) use crate::providers::partition;

/// `arn:<partition>:apigateway:<region>::/restapis/<id>`
pub(crate) fn rest_api_arn(region: &str, api_id: &str) -> String {
    format!("arn:{}:apigateway:{region}::/restapis/{api_id}", partition(region))
}

pub(crate) fn patch(op: Op, path: &str, value: Option<&str>) -> PatchOperation {
    PatchOperation::builder().op(op).path(path).set_value(value.map(str::to_string)).build()
}

/// Splits a `<rest_api_id>/<name>` physical id.
pub(crate) fn split_id<'a>(kind: &str, id: &'a str) -> Result<(&'a str, &'a str), ProviderError> {
    match id.split_once('/') {
        Some((api, rest)) if !api.is_empty() && !rest.is_empty() => Ok((api, rest)),
        _ => Err(ProviderError::Other(format!("malformed {kind} id {id:?}: expected \"<rest_api_id>/<{kind}>\""))),
    }
}
