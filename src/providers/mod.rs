//! Provider layer: one module per resource kind, each implementing [`Resource`] (schema, typed spec,
//! physical id, find, read / create / update / delete), listed in the [`registry`]. The functions
//! below are the engine's entry points; they hand each call to the kind's module.

pub mod apigateway;
pub mod batch;
pub mod calls;
pub mod error;
pub mod iam_role;
pub mod lambda_alias;
pub mod lambda_function;
pub mod lambda_permission;
pub mod log_group;
pub mod pace;
pub mod registry;
pub mod resource;
pub mod retry;
pub mod rules;
pub mod schema;
pub mod structured;
pub mod tags;
pub mod wafv2;

use std::collections::BTreeMap;

use aws_config::BehaviorVersion;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_apigateway::config::StalledStreamProtectionConfig;
use aws_sdk_iam::config::ProvideCredentials as _;
use aws_smithy_runtime::client::retries::{RetryPartition, TokenBucket};
use serde_json::{Map, Value};

pub use error::{ErrorClass, NotFoundOk, ProviderError, Result};
pub use registry::Kind;
pub use resource::{Provider, Resource};

use crate::artifact::Artifact;

/// Shared SDK clients, built once from the standard AWS chain (env, profiles, `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone)]
pub struct Aws {
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub apigateway: aws_sdk_apigateway::Client,
    pub wafv2: aws_sdk_wafv2::Client,
    pub sts: aws_sdk_sts::Client,
    pub region: String,
    /// Every AWS call this run made, by service and operation.
    pub calls: std::sync::Arc<calls::CallStats>,
    /// A pacer per paced service (API Gateway, Lambda, CloudWatch Logs, WAFv2; none with
    /// `RECONCILE_PACING=off`).
    pacers: Vec<std::sync::Arc<pace::Pacer>>,
    /// The share of the account's limits this process was given (`--api-share`), before any split
    /// among watchers ([`Aws::split_share`]).
    api_share: f64,
    /// Account id and partition of the caller, asked of STS once.
    account: std::sync::Arc<tokio::sync::OnceCell<(String, String)>>,
    /// When the clients were built (the rates in [`Aws::budget_rows`] are over the time since).
    started: std::time::Instant,
    /// The secret values of the run these clients work for: every error the provider layer hands
    /// up has them replaced by the sensitive marker ([`Aws::with_secrets`]).
    secrets: std::sync::Arc<crate::redact::Secrets>,
}

impl Aws {
    /// Loads configuration (the standard AWS chain: env, profiles, `AWS_ENDPOINT_URL`; `region`
    /// overrides the chain's) and checks that a region and credentials are there (no AWS call is made). `api_share`: the share of each
    /// rate-limited service's account limits this process
    /// uses (`--api-share`; 1: all of them).
    pub async fn connect(region: Option<String>, api_share: f64) -> Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r));
        }
        if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() {
            // The one retry policy for every call: throttling, 5xx, timeouts and connection resets are
            // retried with capped exponential backoff and full jitter (0.2 s doubling to 20 s, 10
            // attempts, like Terraform's generous defaults); everything else fails at once.
            loader = loader.retry_config(
                RetryConfig::standard()
                    .with_max_attempts(10)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            );
        }
        let stats = calls::CallStats::new();
        let pacers: Vec<_> = if pace::enabled() {
            pace::Pacer::all().into_iter().map(|p| std::sync::Arc::new(p.with_share(api_share).with_stats(stats.clone()))).collect()
        } else {
            Vec::new()
        };
        if !pacers.is_empty() {
            loader = loader.http_client(pace::http_client(pacers.clone()));
        }
        // The SDK's upload stall check starts its 5 s grace period when the request is handed to the
        // HTTP layer, where the pacer may hold it longer than that (the tenth CreateDeployment in a
        // row waits 45 s, the hundredth queued Lambda call 7 s): it would fail paced calls as
        // timeouts. It is off for uploads to the paced services; downloads stay checked.
        let paced_uploads = StalledStreamProtectionConfig::enabled().upload_enabled(false).build();
        let config = loader.load().await;
        let region = config.region().map(|r| r.to_string()).ok_or(ProviderError::NoRegion)?;
        if !is_region_name(&region) {
            return Err(ProviderError::Other(format!(
                "`{region}` is not an AWS region name (like `us-east-1`); check AWS_REGION, --region or the profile's region"
            )));
        }
        let Some(creds) = config.credentials_provider() else {
            return Err(ProviderError::NoCredentials("no credentials provider is configured".into()));
        };
        if let Err(e) = creds.provide_credentials().await {
            return Err(ProviderError::NoCredentials(e.to_string()));
        }
        let count = calls::CountCalls(stats.clone());
        // Throttling retries cost nothing from the retry quota: being told to slow down is no sign of
        // an outage, and fifty stacks in one run must not run it dry.
        let quota = TokenBucket::builder().capacity(5000).throttling_retry_cost(0).build();
        let partition = RetryPartition::custom("reconcile").token_bucket(quota).build();
        Ok(Aws {
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(&config).interceptor(count.clone()).retry_partition(partition.clone()).build(),
            ),
            lambda: aws_sdk_lambda::Client::from_conf(
                aws_sdk_lambda::config::Builder::from(&config)
                    .interceptor(count.clone())
                    .retry_partition(partition.clone())
                    .stalled_stream_protection(paced_uploads.clone())
                    .build(),
            ),
            logs: aws_sdk_cloudwatchlogs::Client::from_conf(
                aws_sdk_cloudwatchlogs::config::Builder::from(&config)
                    .interceptor(count.clone())
                    .retry_partition(partition.clone())
                    .stalled_stream_protection(paced_uploads.clone())
                    .build(),
            ),
            apigateway: aws_sdk_apigateway::Client::from_conf(
                aws_sdk_apigateway::config::Builder::from(&config)
                    .interceptor(count.clone())
                    .retry_partition(partition.clone())
                    .stalled_stream_protection(paced_uploads.clone())
                    .build(),
            ),
            wafv2: aws_sdk_wafv2::Client::from_conf(
                aws_sdk_wafv2::config::Builder::from(&config)
                    .interceptor(count.clone())
                    .retry_partition(partition.clone())
                    .stalled_stream_protection(paced_uploads)
                    .build(),
            ),
            sts: aws_sdk_sts::Client::from_conf(
                aws_sdk_sts::config::Builder::from(&config).interceptor(count).retry_partition(partition).build(),
            ),
            region,
            calls: stats,
            pacers,
            api_share,
            account: Default::default(),
            started: std::time::Instant::now(),
            secrets: Default::default(),
        })
    }

    /// These clients (sharing their connections, pacing and call counts) for a run whose secret
    /// values are `secrets`: no error the provider layer returns through them quotes one.
    pub fn with_secrets(&self, secrets: crate::redact::Secrets) -> Aws {
        Aws { secrets: std::sync::Arc::new(secrets), ..self.clone() }
    }

    /// The secret values of the run (see [`Aws::with_secrets`]).
    pub fn secrets(&self) -> &crate::redact::Secrets {
        &self.secrets
    }

    /// Paces each paced service's calls from `ledger`'s record of the account's recent use of that
    /// service in this client's region (shared with every process using the same state store), now
    /// that the account is known.
    pub fn share_pacing(&self, ledger: std::sync::Arc<dyn crate::state::pacing::PaceLedger>, here: &crate::state::Identity) {
        for pacer in &self.pacers {
            pacer.attach(
                ledger.clone(),
                crate::state::pacing::Budget {
                    account_id: here.account_id.clone(),
                    region: here.region.clone(),
                    service: pacer.service().sigv4.into(),
                },
            );
        }
    }

    /// Per rate-limited service: the share of the account's limits this process keeps to
    /// (`--api-share`), the rates that allows (account-wide, for a service that has such a limit, and
    /// per operation with a limit of its own), and the rate it used since it connected (its calls,
    /// every attempt included, over the time since).
    pub fn budget_rows(&self) -> Vec<Value> {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let snapshot = self.calls.snapshot();
        let round = |x: f64| (x * 100.0).round() / 100.0;
        self.pacers
            .iter()
            .map(|pacer| {
                let service = pacer.service();
                let calls: u64 = snapshot.iter().filter(|((s, _), _)| s == service.stats).map(|(_, c)| c.calls).sum();
                let operations: Map<String, Value> =
                    pacer.operation_rates().into_iter().map(|(op, rate)| (op.to_string(), round(rate).into())).collect();
                serde_json::json!({
                    "service": service.stats,
                    "share": pacer.share(),
                    "configured_share": self.api_share.min(1.0),
                    "rate_limit_per_s": pacer.rate_per_s().map(round),
                    "operation_limits_per_s": operations,
                    "calls": calls,
                    "elapsed_s": round(elapsed),
                    "rate_per_s": round(calls as f64 / elapsed),
                })
            })
            .collect()
    }

    /// Splits this process's share (`--api-share`) evenly among `among` processes (the watchers live on
    /// one state database, this one included): each rate-limited service's pacer keeps to
    /// `api_share / among` from its next call on. Returns the share now in force (`None`: nothing is
    /// paced, `RECONCILE_PACING=off`).
    pub fn split_share(&self, among: usize) -> Option<f64> {
        let share = self.api_share.min(1.0) / among.max(1) as f64;
        for pacer in &self.pacers {
            pacer.set_share(share);
        }
        (!self.pacers.is_empty()).then_some(share)
    }

    /// The share of the account's limits this process keeps to, per rate-limited service (by its
    /// name in the call statistics), with the account-wide rate that allows (`None` for a service
    /// limited per operation only).
    pub fn api_shares(&self) -> Vec<(&'static str, f64, Option<f64>)> {
        self.pacers.iter().map(|p| (p.service().stats, p.share(), p.rate_per_s())).collect()
    }

    /// The account id of the credentials in use (asked of STS once, when first needed).
    pub async fn account_id(&self) -> Result<String> {
        Ok(self.caller().await?.0)
    }

    /// Who and where this client works: the caller's account and partition (one
    /// sts:GetCallerIdentity, made once) and the configured region.
    pub async fn identity(&self) -> Result<crate::state::Identity> {
        let (account_id, partition) = self.caller().await?;
        Ok(crate::state::Identity { account_id, partition, region: self.region.clone() })
    }

    async fn caller(&self) -> Result<(String, String)> {
        self.account
            .get_or_try_init(|| async {
                let out = self.sts.get_caller_identity().send().await.map_err(|e| ProviderError::sdk("sts:GetCallerIdentity", e))?;
                let account = out.account.ok_or_else(|| ProviderError::Other("sts:GetCallerIdentity returned no account".into()))?;
                // arn:<partition>:sts::<account>:assumed-role/… (or :iam:: for users and root)
                let partition =
                    out.arn.as_deref().and_then(|arn| arn.split(':').nth(1)).filter(|p| !p.is_empty()).map(str::to_string).ok_or_else(
                        || ProviderError::Other("sts:GetCallerIdentity returned no caller ARN (needed for the partition)".into()),
                    )?;
                Ok((account, partition))
            })
            .await
            .cloned()
    }
}

/// A resource as AWS has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// Attributes in the manifest's shape (only what the kind's schema knows).
    pub attrs: Map<String, Value>,
    pub outputs: BTreeMap<String, String>,
}

/// The result of a create or update.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub physical_id: String,
    pub outputs: BTreeMap<String, String>,
}

/// What a provider is asked to make real: resolved attributes and, for code, the zip.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub attrs: &'a Map<String, Value>,
    pub artifact: Option<&'a Artifact>,
}

// The entry points below are the one way out of the provider layer: each error they hand up has the
// run's secret values (`aws.secrets()`) replaced by the sensitive marker, whatever AWS quoted.

/// Reads the resource with physical id `id`; `None` if it does not exist.
pub async fn read(aws: &Aws, kind: Kind, id: &str) -> Result<Option<Live>> {
    kind.provider().read(aws, id).await.map_err(|e| e.redacted(aws.secrets()))
}

pub async fn create(aws: &Aws, kind: Kind, desired: Desired<'_>) -> Result<Applied> {
    kind.provider().create(aws, desired).await.map_err(|e| e.redacted(aws.secrets()))
}

/// Brings the resource from `current` (its live attributes) to `desired`.
pub async fn update(aws: &Aws, kind: Kind, id: &str, current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    kind.provider().update(aws, id, current, desired).await.map_err(|e| e.redacted(aws.secrets()))
}

/// Deletes the resource; one already gone is success.
pub async fn delete(aws: &Aws, kind: Kind, id: &str) -> Result<()> {
    kind.provider().delete(aws, id).await.map_err(|e| e.redacted(aws.secrets()))
}

/// Whether an update finishes a resource whose create did not (see [`ProviderError::Incomplete`]):
/// it brings a role's policies, a stage's settings or a log group's retention from what AWS has to
/// the manifest. A function that never became active is replaced instead.
pub fn finishes_incomplete(kind: Kind) -> bool {
    kind.provider().finishes_incomplete()
}

/// The physical id a resource must have, for kinds where the desired attributes fix it.
pub fn physical_id_of(kind: Kind, d: &Map<String, Value>) -> Option<String> {
    match kind.provider().physical_id(d) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(%kind, error = %e, "cannot tell the physical id");
            None
        }
    }
}

/// The physical id as AWS identifies the resource, for telling whether two ids name the same one:
/// a Lambda permission's function may be written as a name or as an ARN.
pub fn canonical_id(kind: Kind, id: &str) -> String {
    kind.provider().canonical_id(id)
}

/// The id AWS gave the resource when it was made, from its outputs (live, or as recorded): see
/// [`Resource::assigned_id`]. `None` for kinds where AWS assigns nothing that tells two makings apart.
pub fn assigned_id(kind: Kind, outputs: &BTreeMap<String, String>) -> Option<String> {
    kind.provider().assigned_id(outputs)
}

/// The resource a resource belongs to, as (kind, physical id): a deployment's or a stage's REST API,
/// a permission's function, the API Gateway stage an association protects. For kinds without tags,
/// the parent's owner owns the child.
pub fn parent_of(kind: Kind, id: &str) -> Option<(Kind, String)> {
    kind.provider().parent(id)
}

/// Looks for what an interrupted create may have made, from the desired attributes: by physical
/// name where it is unique, by name and ownership tags for REST APIs, the newest unowned deployment
/// of the API. `taken` holds the physical ids the state already owns. Tag ownership is checked by
/// the caller.
pub async fn find(
    aws: &Aws,
    kind: Kind,
    d: &Map<String, Value>,
    taken: &std::collections::HashSet<String>,
) -> Result<Option<(String, Live)>> {
    kind.provider().find(aws, d, taken).await.map_err(|e| e.redacted(aws.secrets()))
}

/// Outputs that follow from the desired attributes alone, known at plan time even before the
/// resource exists (e.g. a REST API's `model_hash`, which deployments use as a trigger).
pub fn derived_outputs(kind: Kind, desired: &Map<String, Value>) -> BTreeMap<String, String> {
    match kind.provider().derived_outputs(desired) {
        Ok(outputs) => outputs,
        Err(e) => {
            tracing::warn!(%kind, error = %e, "cannot derive outputs");
            BTreeMap::new()
        }
    }
}

/// Outputs an update from `current` to `desired` gives new AWS-assigned values (unknown until apply).
/// Attributes that do not fit the kind's spec yet (a typed value still unknown) say nothing.
pub fn unknown_after_update(kind: Kind, current: &Map<String, Value>, desired: &Map<String, Value>) -> Vec<&'static str> {
    match kind.provider().unknown_after_update(current, desired) {
        Ok(outputs) => outputs,
        Err(e) => {
            tracing::debug!(%kind, error = %e, "cannot tell which outputs an update changes");
            Vec::new()
        }
    }
}

/// The ARN partition of a region (`aws`, `aws-cn`, `aws-us-gov`, the ISO partitions), for ARNs built
/// without an AWS call.
pub(crate) fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-isof-") {
        "aws-iso-f"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("eu-isoe-") {
        "aws-iso-e"
    } else {
        "aws"
    }
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, `us-isob-east-1`…
pub(crate) fn is_region_name(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "cn-north-1", "us-isob-east-1", "ap-southeast-5"] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in ["", "useast1", "us-east", "US-EAST-1", "us-east-1a", "moon-1"] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn ids_name_the_same_resource_whatever_way_they_are_written() {
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:Hello/AllowApi";
        assert_eq!(canonical_id(Kind::LambdaPermission, arn), "Hello/AllowApi");
        assert_eq!(canonical_id(Kind::LambdaPermission, "123456789012:function:Hello/AllowApi"), "Hello/AllowApi");
        assert_eq!(canonical_id(Kind::LambdaPermission, "Hello:live/AllowApi"), "Hello:live/AllowApi", "an alias has its own policy");
        assert_eq!(canonical_id(Kind::LogGroup, "a/b"), "a/b");
    }

    #[test]
    fn untaggable_resources_belong_to_a_parent() {
        assert_eq!(parent_of(Kind::Deployment, "api1/dep1"), Some((Kind::RestApi, "api1".into())));
        assert_eq!(parent_of(Kind::Stage, "api1/prod"), Some((Kind::RestApi, "api1".into())));
        assert_eq!(
            parent_of(Kind::LambdaPermission, "arn:aws:lambda:us-east-1:1:function:Hello:live/Sid"),
            Some((Kind::LambdaFunction, "Hello".into()))
        );
        assert_eq!(
            parent_of(Kind::WebAclAssociation, "arn:aws:apigateway:us-east-1::/restapis/api1/stages/prod"),
            Some((Kind::Stage, "api1/prod".into()))
        );
        assert_eq!(parent_of(Kind::WebAclAssociation, "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/x/y"), None);
        assert_eq!(parent_of(Kind::ApiGatewayAccount, "account"), None);
    }
}
