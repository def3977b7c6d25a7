//! Provider errors: the AWS error code and message, with the operation that failed.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{operation}: {code}: {message}")]
    Aws { operation: &'static str, code: String, message: String, status: Option<u16> },
    #[error("{operation}: cannot reach the AWS endpoint ({detail}); check AWS_ENDPOINT_URL, the network, or the region")]
    Unreachable { operation: &'static str, detail: String },
    #[error(
        "{operation}: the endpoint answered with something that is not an AWS response (HTTP {status}); it may not support this operation"
    )]
    Unsupported { operation: &'static str, status: u16 },
    #[error("{operation}: timed out: {detail}")]
    Timeout { operation: &'static str, detail: String },
    #[error("no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION), pass --region, or set `region` in your AWS profile")]
    NoRegion,
    #[error("no AWS credentials found ({0}): set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    NoCredentials(String),
    #[error("{0}")]
    Other(String),
    /// A create made the resource (`id`) but a later call of the same create failed (`source`): the
    /// resource exists and must be recorded (as incomplete) or removed, never forgotten.
    #[error("{source}")]
    Incomplete { id: String, outputs: std::collections::BTreeMap<String, String>, source: Box<ProviderError> },
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

impl ProviderError {
    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ProviderError::Aws { code, .. } => Some(code),
            ProviderError::Incomplete { source, .. } => source.code(),
            _ => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            ProviderError::Aws { message, .. } => message,
            ProviderError::Incomplete { source, .. } => source.message(),
            _ => "",
        }
    }

    /// Marks a failure that came after the create call made the resource `id`.
    pub fn after_create(self, id: impl Into<String>, outputs: std::collections::BTreeMap<String, String>) -> ProviderError {
        match self {
            e @ ProviderError::Incomplete { .. } => e,
            source => ProviderError::Incomplete { id: id.into(), outputs, source: Box::new(source) },
        }
    }

    /// Converts an SDK error, keeping the AWS code and message.
    pub fn sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::DispatchFailure(f) => {
                let detail = if f.is_io() || f.is_timeout() {
                    format!("{:?}", f.as_connector_error().map(|c| c.to_string()).unwrap_or_default())
                } else {
                    format!("{err:?}")
                };
                if f.is_timeout() {
                    ProviderError::Timeout { operation, detail }
                } else {
                    ProviderError::Unreachable { operation, detail: detail.trim_matches('"').to_string() }
                }
            }
            SdkError::TimeoutError(_) => ProviderError::Timeout { operation, detail: "no answer in time".into() },
            _ => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                match err.code() {
                    Some(code) => ProviderError::Aws {
                        operation,
                        code: code.to_string(),
                        message: err.message().unwrap_or_default().to_string(),
                        status,
                    },
                    None => match status {
                        Some(status) => ProviderError::Unsupported { operation, status },
                        None => {
                            ProviderError::Other(format!("{operation}: {}", aws_smithy_types::error::display::DisplayErrorContext(&err)))
                        }
                    },
                }
            }
        }
    }
}
