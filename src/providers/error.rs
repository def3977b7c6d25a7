//! Provider errors: the AWS error code and message, with the operation that failed.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{operation}: {code}: {message}")]
    Aws { operation: &'static str, code: String, message: String, status: Option<u16>, class: ErrorClass },
    #[error("{operation}: cannot reach the AWS endpoint ({detail}); check AWS_ENDPOINT_URL, the network, or the region")]
    Unreachable { operation: &'static str, detail: String },
    /// The call could not even be made because this host ran out of something (open files, memory):
    /// not a problem of the endpoint, and no change of AWS_ENDPOINT_URL fixes it.
    #[error(
        "{operation}: this process ran out of a local resource ({detail}); the call did not reach AWS. Raise the open-file limit (`ulimit -n`, systemd `LimitNOFILE=`) or find what holds the files"
    )]
    LocalResource { operation: &'static str, detail: String },
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
    /// Attributes that do not fit the kind's typed spec: validation lets through something the
    /// provider cannot take (a bug, reported as such rather than read as empty values).
    #[error("the attributes of this {kind} do not fit its spec ({detail}); this is a bug in reconcile's validation")]
    Spec { kind: &'static str, detail: String },
    /// A create made the resource (`id`) but a later call of the same create failed (`source`): the
    /// resource exists and must be recorded (as incomplete) or removed, never forgotten.
    #[error("{source}")]
    Incomplete { id: String, outputs: std::collections::BTreeMap<String, String>, source: Box<ProviderError> },
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// What an AWS error answer means to the engine, decided by the kind that made the call from the
/// SDK's typed error (`is_resource_not_found_exception()`…), not from error-code strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorClass {
    /// The resource is not there (reads turn it into `None`, deletes into success).
    NotFound,
    /// A create found the name taken.
    AlreadyExists,
    #[default]
    Other,
}

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

    /// Whether AWS said the resource is not there.
    pub fn is_not_found(&self) -> bool {
        self.class() == ErrorClass::NotFound
    }

    /// Whether AWS said a create's name is taken.
    pub fn is_already_exists(&self) -> bool {
        self.class() == ErrorClass::AlreadyExists
    }

    fn class(&self) -> ErrorClass {
        match self {
            ProviderError::Aws { class, .. } => *class,
            ProviderError::Incomplete { source, .. } => source.class(),
            _ => ErrorClass::Other,
        }
    }

    /// This error with every form of the run's secret values replaced by the sensitive marker, in
    /// every text it carries (an AWS message may quote the request: Lambda's answer to an
    /// environment over 4 KB quotes every variable).
    pub fn redacted(self, secrets: &crate::redact::Secrets) -> ProviderError {
        if secrets.is_empty() {
            return self;
        }
        let r = |s: String| secrets.redact_string(s);
        match self {
            ProviderError::Aws { operation, code, message, status, class } => {
                ProviderError::Aws { operation, code: r(code), message: r(message), status, class }
            }
            ProviderError::Unreachable { operation, detail } => ProviderError::Unreachable { operation, detail: r(detail) },
            ProviderError::LocalResource { operation, detail } => ProviderError::LocalResource { operation, detail: r(detail) },
            ProviderError::Timeout { operation, detail } => ProviderError::Timeout { operation, detail: r(detail) },
            ProviderError::NoCredentials(detail) => ProviderError::NoCredentials(r(detail)),
            ProviderError::Other(detail) => ProviderError::Other(r(detail)),
            ProviderError::Spec { kind, detail } => ProviderError::Spec { kind, detail: r(detail) },
            ProviderError::Incomplete { id, outputs, source } => {
                ProviderError::Incomplete { id, outputs, source: Box::new(source.redacted(secrets)) }
            }
            e @ (ProviderError::Unsupported { .. } | ProviderError::NoRegion) => e,
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
        ProviderError::sdk_classified(operation, err, |_| ErrorClass::Other)
    }

    /// Converts an SDK error, with `classify` telling from the operation's typed error what it means:
    /// `|e| if e.is_resource_not_found_exception() { ErrorClass::NotFound } else { ErrorClass::Other }`.
    pub fn sdk_classified<E>(
        operation: &'static str,
        err: SdkError<E, HttpResponse>,
        classify: impl FnOnce(&E) -> ErrorClass,
    ) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let class = err.as_service_error().map_or(ErrorClass::Other, classify);
        match &err {
            SdkError::DispatchFailure(f) => {
                let detail = if f.is_io() || f.is_timeout() {
                    format!("{:?}", f.as_connector_error().map(|c| c.to_string()).unwrap_or_default())
                } else {
                    format!("{err:?}")
                };
                if let Some(local) = local_resource(&err) {
                    ProviderError::LocalResource { operation, detail: local }
                } else if f.is_timeout() {
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
                        class,
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

/// The local resource an error's cause ran out of (EMFILE, ENFILE, ENOMEM, ENOBUFS), if that is
/// what it is: found by walking the error's sources to the `std::io::Error` the connector met.
fn local_resource(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(what) = io.raw_os_error().and_then(local_errno)
        {
            return Some(format!("{what}: {io}"));
        }
        next = e.source();
    }
    None
}

/// The name of an errno that says this host ran out of something.
pub fn local_errno(code: i32) -> Option<&'static str> {
    match code {
        libc::EMFILE => Some("EMFILE, too many open files in this process"),
        libc::ENFILE => Some("ENFILE, too many open files on this host"),
        libc::ENOMEM => Some("ENOMEM, out of memory"),
        libc::ENOBUFS => Some("ENOBUFS, no buffer space"),
        _ => None,
    }
}

/// "Not found is fine": turns a not-found answer into `None`.
pub trait NotFoundOk<T> {
    fn or_gone(self) -> Result<Option<T>>;
}

impl<T> NotFoundOk<T> for Result<T> {
    fn or_gone(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_lambda::operation::get_function::GetFunctionError;
    use aws_smithy_runtime_api::client::result::ConnectorError;

    use super::*;

    fn io_failure(e: std::io::Error) -> ProviderError {
        ProviderError::sdk::<GetFunctionError>("GetFunction", SdkError::dispatch_failure(ConnectorError::io(Box::new(e))))
    }

    #[test]
    fn running_out_of_files_is_reported_as_what_it_is_not_as_an_unreachable_endpoint() {
        let e = io_failure(std::io::Error::from_raw_os_error(libc::EMFILE));
        assert!(matches!(e, ProviderError::LocalResource { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("EMFILE") && !text.contains("AWS_ENDPOINT_URL"), "{text}");
        let refused = io_failure(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(refused, ProviderError::Unreachable { .. }), "a refused connection is still the endpoint: {refused:?}");
    }
}
