//! API Gateway (REST): APIs, deployments, stages and the account setting.

use aws_sdk_apigateway::types::{Op, PatchOperation};

use crate::providers::ProviderError;

/// Sends a fluent request, retrying API Gateway's throttling and concurrent-modification errors
/// (`$retryable`, default [`is_throttled`]) with [`Backoff::THROTTLE`](crate::providers::retry::Backoff::THROTTLE).
macro_rules! send_retrying {
    ($op:expr, $request:expr) => {
        send_retrying!($op, $request, $crate::providers::apigateway::is_throttled)
    };
    ($op:expr, $request:expr, $retryable:expr) => {{
        let request = $request;
        $crate::providers::retry::with_backoff($op, $crate::providers::retry::Backoff::THROTTLE, $retryable, || {
            let request = request.clone();
            async move { request.send().await.map_err(|e| $crate::providers::ProviderError::sdk($op, e)) }
        })
        .await
    }};
}

pub mod account;
pub mod deployment;
pub mod rest_api;
pub mod stage;

/// API Gateway's rate limits (`TooManyRequestsException`) and "concurrent modification" conflicts
/// are worth waiting out; other conflicts (e.g. a duplicate path part) are not.
pub(crate) fn is_throttled(e: &ProviderError) -> bool {
    match e.code() {
        Some("TooManyRequestsException") => true,
        Some("ConflictException") => e.message().to_ascii_lowercase().contains("concurrent modification"),
        _ => false,
    }
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
