//! `aws_lambda_function`: a Lambda function — configuration, code (by content hash), tags, and with
//! `publish` a numbered version published whenever the code or configuration changes.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::operation::create_function::CreateFunctionError;
use aws_sdk_lambda::operation::delete_function::DeleteFunctionError;
use aws_sdk_lambda::operation::get_function::GetFunctionError;
use aws_sdk_lambda::operation::list_versions_by_function::ListVersionsByFunctionError;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Architecture, Environment, FunctionCode, FunctionConfiguration, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use super::retry::{self, Backoff};
use super::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use super::tags::TagChanges;
use super::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, rules};
use crate::artifact::Artifact;

const SETTLE: Duration = Duration::from_secs(300);

/// The tag that marks a function whose versions reconcile publishes (`publish = true`): only for such a
/// function does `read` list its versions (one more call), so the functions that do not publish cost
/// what they did. `reconcile:` tags are reserved, so no manifest sets it; `read` leaves it out of `tags`.
const PUBLISH_TAG: &str = "reconcile:publish";

pub const LAMBDA_RUNTIMES: &[&str] = &[
    "python3.9",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "nodejs18.x",
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "java11",
    "java17",
    "java21",
    "java25",
    "dotnet8",
    "ruby3.2",
    "ruby3.3",
    "ruby3.4",
    "provided.al2",
    "provided.al2023",
];

/// `Name`, `Name:qualifier`, `123456789012:function:Name` or a function ARN → the function's name
/// (with its qualifier, which names another policy).
pub(crate) fn function_name(f: &str) -> &str {
    f.split_once("function:").map_or(f, |(_, rest)| rest)
}

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_lambda_function",
    doc: "A Lambda function whose code is a file or folder next to the manifest, zipped in-process.",
    fields: &[
        Field::new("function_name", T::String, "Function name").required().force_new().check(rules::lambda_function_name),
        Field::new("runtime", T::String, "Runtime identifier").required().one_of(LAMBDA_RUNTIMES),
        Field::new("handler", T::String, "Handler, e.g. `index.handler`").required().check(rules::lambda_handler),
        Field::new("role", T::String, "Execution role ARN, usually `${role.arn}`").required(),
        Field::new("code", T::Path, "File or folder with the code, relative to the manifest").required(),
        Field::new("memory_size", T::Integer { min: 128, max: 10240 }, "Memory in MB").default(DefaultValue::Int(128)),
        Field::new("timeout", T::Integer { min: 1, max: 900 }, "Timeout in seconds").default(DefaultValue::Int(3)),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")).check(rules::lambda_description),
        Field::new("architecture", T::String, "Instruction set").default(DefaultValue::Str("x86_64")).one_of(&["x86_64", "arm64"]),
        Field::new("environment", T::StringMap, "Environment variables")
            .default(DefaultValue::EmptyMap)
            .keys("environment variable name", rules::lambda_env_name),
        Field::new(
            "secret_environment",
            T::StringMap,
            "Environment variables whose values are never shown nor stored in the state (only a keyed fingerprint)",
        )
        .default(DefaultValue::EmptyMap)
        .keys("environment variable name", rules::lambda_env_name)
        .secret(),
        Field::new("publish", T::Boolean, "Publish a new version whenever the code or configuration changes")
            .default(DefaultValue::Bool(false)),
        TAGS,
    ],
    physical_name: "function_name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("arn", "Function ARN"),
        ("name", "Function name"),
        ("invoke_arn", "ARN API Gateway uses to invoke the function"),
        ("code_sha256", "Base64 SHA-256 of the deployed zip"),
        ("version", "The latest published version (`$LATEST` when `publish` is false)"),
        ("qualified_arn", "Function ARN with `:<version>`"),
    ],
    taggable: true,
    singleton: false,
    identity: crate::providers::schema::Identity::Fields(&["function_name"]),
};

/// A function as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub function_name: String,
    pub runtime: String,
    pub handler: String,
    pub role: String,
    /// The code's path: the manifest's (and the state's) only; AWS knows the code by `code_sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub memory_size: i64,
    pub timeout: i64,
    pub description: String,
    pub architecture: String,
    /// As `read` reports it: every variable, the secret ones included (the plan moves those to
    /// `secret_environment` before comparing).
    pub environment: BTreeMap<String, String>,
    /// The manifest's secret variables; `read` cannot tell them apart and leaves this out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_environment: Option<BTreeMap<String, String>>,
    /// Desired: publish versions. Read: a version of the current code and configuration is published
    /// (false when one is owed, e.g. an apply died between the update and PublishVersion).
    #[serde(default)]
    pub publish: bool,
    pub tags: BTreeMap<String, String>,
    /// Computed from the code (manifest) / Lambda's `CodeSha256` (read).
    pub code_sha256: String,
}

impl FunctionSpec {
    /// The plain and the secret variables together, as Lambda keeps them.
    fn variables(&self) -> BTreeMap<String, String> {
        let mut vars = self.environment.clone();
        vars.extend(self.secret_environment.clone().unwrap_or_default());
        vars
    }

    fn config_differs(&self, other: &FunctionSpec) -> bool {
        self.runtime != other.runtime
            || self.handler != other.handler
            || self.role != other.role
            || self.memory_size != other.memory_size
            || self.timeout != other.timeout
            || self.description != other.description
            || self.environment != other.environment
            || self.secret_environment.clone().unwrap_or_default() != other.secret_environment.clone().unwrap_or_default()
    }

    fn code_differs(&self, other: &FunctionSpec) -> bool {
        self.code_sha256 != other.code_sha256 || self.architecture != other.architecture
    }
}

fn int32(v: i64, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| ProviderError::Other(format!("{what} {v} is out of range")))
}

/// The error Lambda gives while a new role has not propagated through IAM yet (the code, as the
/// retry predicate sees the converted error).
fn is_role_propagation(e: &ProviderError) -> bool {
    e.code() == Some("InvalidParameterValueException") && e.message().contains("cannot be assumed by Lambda")
}

/// Lambda refuses a second update while one is in progress; the waiter covers ours, this covers others'.
fn is_update_in_progress(e: &ProviderError) -> bool {
    e.code() == Some("ResourceConflictException") || is_role_propagation(e)
}

fn outputs(arn: &str, name: &str, sha: &str, version: &str, region: &str) -> BTreeMap<String, String> {
    let partition = arn.split(':').nth(1).unwrap_or("aws");
    BTreeMap::from([
        ("arn".into(), arn.to_string()),
        ("name".into(), name.to_string()),
        ("invoke_arn".into(), format!("arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations")),
        ("code_sha256".into(), sha.to_string()),
        ("version".into(), version.to_string()),
        ("qualified_arn".into(), format!("{arn}:{version}")),
    ])
}

/// What a published version is a snapshot of: code and configuration as `PublishVersion` copies them.
/// Absent and empty compare equal (GetFunction and ListVersionsByFunction need not agree on leaving
/// an empty description or environment out), so a version is never owed for nothing.
fn snapshot(c: &FunctionConfiguration) -> impl PartialEq + use<'_> {
    (
        c.code_sha256().unwrap_or_default(),
        c.runtime().map(|r| r.as_str()).unwrap_or_default(),
        c.handler().unwrap_or_default(),
        c.role().unwrap_or_default(),
        c.memory_size().unwrap_or_default(),
        c.timeout().unwrap_or_default(),
        c.description().unwrap_or_default(),
        c.environment().and_then(|e| e.variables()).map(|v| v.iter().collect::<BTreeMap<_, _>>()).unwrap_or_default(),
        c.architectures().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
    )
}

/// The newest published version, and whether it holds `$LATEST`'s code and configuration.
async fn newest_version(aws: &Aws, name: &str, latest: &FunctionConfiguration) -> Result<Option<(String, bool)>> {
    let mut marker = None;
    let mut newest: Option<(u64, FunctionConfiguration)> = None;
    loop {
        let out = aws.lambda.list_versions_by_function().function_name(name).set_marker(marker).send().await.map_err(|e| {
            ProviderError::sdk_classified("lambda:ListVersionsByFunction", e, |e| match e {
                ListVersionsByFunctionError::ResourceNotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            })
        })?;
        for v in out.versions() {
            // `$LATEST` is listed too; published versions are numbers.
            let Some(n) = v.version().and_then(|n| n.parse::<u64>().ok()) else { continue };
            if newest.as_ref().is_none_or(|(m, _)| n > *m) {
                newest = Some((n, v.clone()));
            }
        }
        match out.next_marker {
            Some(m) if !m.is_empty() => marker = Some(m),
            _ => break,
        }
    }
    Ok(newest.map(|(n, v)| (n.to_string(), snapshot(&v) == snapshot(latest))))
}

fn zip(artifact: Option<&Artifact>) -> Result<Blob> {
    let artifact = artifact.ok_or_else(|| ProviderError::Other("no code was packaged for this function".into()))?;
    Ok(Blob::new(artifact.zip.as_slice()))
}

/// Waits until the function's last update is done; its configuration then.
async fn wait_updated(aws: &Aws, name: &str) -> Result<Option<FunctionConfiguration>> {
    let done = aws.lambda.wait_until_function_updated_v2().function_name(name).wait(SETTLE).await.map_err(|e| ProviderError::Timeout {
        operation: "lambda:GetFunction (until LastUpdateStatus Successful)",
        detail: e.to_string(),
    })?;
    Ok(done.as_result().ok().and_then(|out| out.configuration().cloned()))
}

/// Publishes `$LATEST` as a new version, only if it still is what we deployed: `code_sha256` is the
/// code we uploaded and `revision` the revision our update left (someone else's change in between
/// makes Lambda refuse with `PreconditionFailedException`, and the next plan shows it).
async fn publish(aws: &Aws, name: &str, code_sha256: &str, revision: Option<String>) -> Result<String> {
    let request = aws.lambda.publish_version().function_name(name).code_sha256(code_sha256).set_revision_id(revision);
    let out = retry::send("lambda:PublishVersion", Backoff::PROPAGATION, is_update_in_progress, || request.clone().send()).await?;
    let version = out.version().unwrap_or_default().to_string();
    tracing::info!(function = name, version, "published a version");
    Ok(version)
}

pub struct LambdaFunction;

impl LambdaFunction {
    async fn tag(aws: &Aws, arn: &str, set: BTreeMap<String, String>) -> Result<()> {
        aws.lambda
            .tag_resource()
            .resource(arn)
            .set_tags(Some(set.into_iter().collect()))
            .send()
            .await
            .map(drop)
            .map_err(|e| ProviderError::sdk("lambda:TagResource", e))
    }

    async fn untag(aws: &Aws, arn: &str, keys: Vec<String>) -> Result<()> {
        aws.lambda
            .untag_resource()
            .resource(arn)
            .set_tag_keys(Some(keys))
            .send()
            .await
            .map(drop)
            .map_err(|e| ProviderError::sdk("lambda:UntagResource", e))
    }
}

/// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]` without its qualifier.
fn unqualified(arn: &str) -> String {
    arn.split(':').take(7).collect::<Vec<_>>().join(":")
}

async fn get_function(aws: &Aws, name: &str) -> Result<Option<aws_sdk_lambda::operation::get_function::GetFunctionOutput>> {
    aws.lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("lambda:GetFunction", e, |e| match e {
                GetFunctionError::ResourceNotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            })
        })
        .or_gone()
}

impl Resource for LambdaFunction {
    type Spec = FunctionSpec;
    const KIND: Kind = Kind::LambdaFunction;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &FunctionSpec) -> Option<String> {
        Some(spec.function_name.clone())
    }

    fn name_check(spec: &FunctionSpec) -> NameCheck {
        NameCheck::Read(spec.function_name.clone())
    }

    fn placement(_id: &str) -> Placement {
        Placement::RegionalArn
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        function_name(id).to_string()
    }

    /// The function ARN. AWS gives a re-made function the same one, so this tells only the account, region and partition apart; the
    /// ownership tags decide the rest (a revision id changes with every update, drift included, so it cannot stand for the making).
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String> {
        outputs.get("arn").cloned()
    }

    fn derived_outputs(_spec: &FunctionSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// An update that publishes makes a new version: what refers to it learns the number at apply.
    fn unknown_after_update(current: &FunctionSpec, desired: &FunctionSpec) -> Vec<&'static str> {
        let publishes = desired.publish && (!current.publish || desired.code_differs(current) || desired.config_differs(current));
        let stops = current.publish && !desired.publish;
        if publishes || stops { vec!["version", "qualified_arn"] } else { Vec::new() }
    }

    fn finishes_incomplete() -> bool {
        false
    }

    async fn read(aws: &Aws, name: &str) -> Result<Option<Observed<FunctionSpec>>> {
        let Some(out) = get_function(aws, name).await? else {
            return Ok(None);
        };
        let Some(c) = out.configuration() else {
            return Ok(None);
        };
        // GetFunction answers without the tags when the caller may not `lambda:ListTags`: the tags are
        // then unknown, not empty, and whose function this is cannot be told (an empty map would read as
        // lost ownership tags, or as tags to put back).
        if let Some(e) = out.tags_error() {
            return Err(ProviderError::Other(format!(
                "GetFunction returned {name} without its tags ({}: {}); reconcile reads a function's tags to know it is this \
                 stack's: allow `lambda:ListTags` on it",
                e.error_code(),
                e.message()
            )));
        }
        let mut tags: BTreeMap<String, String> =
            out.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        let (version, published) = match tags.remove(PUBLISH_TAG) {
            Some(_) => newest_version(aws, name, c).await?.unwrap_or_else(|| ("$LATEST".into(), false)),
            None => ("$LATEST".into(), false),
        };
        let sha = c.code_sha256().unwrap_or_default();
        let arn = unqualified(c.function_arn().unwrap_or_default());
        let spec = FunctionSpec {
            function_name: c.function_name().unwrap_or(name).to_string(),
            runtime: c.runtime().map(|r| r.as_str()).unwrap_or_default().to_string(),
            handler: c.handler().unwrap_or_default().to_string(),
            role: c.role().unwrap_or_default().to_string(),
            code: None,
            memory_size: c.memory_size().map_or(128, i64::from),
            timeout: c.timeout().map_or(3, i64::from),
            description: c.description().unwrap_or_default().to_string(),
            architecture: c.architectures().first().map_or("x86_64", |a| a.as_str()).to_string(),
            environment: c
                .environment()
                .and_then(|e| e.variables())
                .map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            secret_environment: None,
            publish: published,
            tags,
            code_sha256: sha.to_string(),
        };
        Ok(Some(Observed { outputs: outputs(&arn, name, sha, &version, &aws.region), spec }))
    }

    async fn find(aws: &Aws, spec: &FunctionSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<FunctionSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &FunctionSpec, artifact: Option<&Artifact>) -> Result<Applied> {
        let name = spec.function_name.as_str();
        let mut tags = spec.tags.clone();
        if spec.publish {
            tags.insert(PUBLISH_TAG.into(), "true".into());
        }
        let request = aws
            .lambda
            .create_function()
            .function_name(name)
            .runtime(Runtime::from(spec.runtime.as_str()))
            .handler(&spec.handler)
            .role(&spec.role)
            .code(FunctionCode::builder().zip_file(zip(artifact)?).build())
            .memory_size(int32(spec.memory_size, "memory_size")?)
            .timeout(int32(spec.timeout, "timeout")?)
            .description(&spec.description)
            .architectures(Architecture::from(spec.architecture.as_str()))
            .environment(Environment::builder().set_variables(Some(spec.variables().into_iter().collect())).build())
            // The first version is published with the function, in the same call: nothing to owe.
            .publish(spec.publish)
            .set_tags(Some(tags.into_iter().collect()));
        // A role created seconds ago may not be assumable yet: retry that documented error with backoff.
        let out = retry::send_classified(
            "lambda:CreateFunction",
            Backoff::PROPAGATION,
            is_role_propagation,
            |e| match e {
                // A conflict is also "an update is in progress"; only "already exists" is a name clash.
                CreateFunctionError::ResourceConflictException(c)
                    if c.message().is_some_and(|m| m.to_ascii_lowercase().contains("already exist")) =>
                {
                    ErrorClass::AlreadyExists
                }
                _ => ErrorClass::Other,
            },
            || request.clone().send(),
        )
        .await?;
        let version = if spec.publish { out.version().unwrap_or("$LATEST") } else { "$LATEST" };
        let arn = unqualified(out.function_arn().unwrap_or_default());
        let outputs = outputs(&arn, name, out.code_sha256().unwrap_or_default(), version, &aws.region);
        // The function exists from here on: one that never becomes Active is incomplete (the next apply
        // replaces it), recorded rather than lost.
        aws.lambda.wait_until_function_active_v2().function_name(name).wait(SETTLE).await.map_err(|e| {
            ProviderError::Timeout { operation: "lambda:GetFunction (until Active)", detail: e.to_string() }
                .after_create(name, outputs.clone())
        })?;
        Ok(Applied { physical_id: name.to_string(), outputs })
    }

    async fn update(aws: &Aws, name: &str, current: &FunctionSpec, desired: &FunctionSpec, artifact: Option<&Artifact>) -> Result<Applied> {
        // The revision our last change left, for PublishVersion's guard.
        let mut deployed_revision = None;
        let code_changed = desired.code_differs(current);
        if code_changed {
            let request = aws
                .lambda
                .update_function_code()
                .function_name(name)
                .zip_file(zip(artifact)?)
                .architectures(Architecture::from(desired.architecture.as_str()));
            retry::send("lambda:UpdateFunctionCode", Backoff::PROPAGATION, is_update_in_progress, || request.clone().send()).await?;
            deployed_revision = wait_updated(aws, name).await?.and_then(|c| c.revision_id);
        }
        let config_changed = desired.config_differs(current);
        if config_changed {
            let request = aws
                .lambda
                .update_function_configuration()
                .function_name(name)
                .runtime(Runtime::from(desired.runtime.as_str()))
                .handler(&desired.handler)
                .role(&desired.role)
                .memory_size(int32(desired.memory_size, "memory_size")?)
                .timeout(int32(desired.timeout, "timeout")?)
                .description(&desired.description)
                .environment(Environment::builder().set_variables(Some(desired.variables().into_iter().collect())).build());
            retry::send("lambda:UpdateFunctionConfiguration", Backoff::PROPAGATION, is_update_in_progress, || request.clone().send())
                .await?;
            deployed_revision = wait_updated(aws, name).await?.and_then(|c| c.revision_id);
        }
        let got = get_function(aws, name).await?.ok_or_else(|| ProviderError::Other(format!("function {name} vanished during update")))?;
        let config = got.configuration.unwrap_or_else(|| FunctionConfiguration::builder().build());
        let arn = unqualified(config.function_arn().unwrap_or_default());
        // A version is owed when the code or configuration changed, or when `read` found the newest one
        // behind `$LATEST` (an earlier apply stopped before publishing) or none at all.
        let published = if desired.publish && (code_changed || config_changed || !current.publish) {
            let revision = deployed_revision.or_else(|| config.revision_id().map(str::to_string));
            Some(publish(aws, name, &desired.code_sha256, revision).await?)
        } else {
            None
        };
        // Tagged after publishing: until then `read` sees no version of this code (and owes one).
        let mut tags = TagChanges::between(&current.tags, &desired.tags);
        if desired.publish && !current.publish {
            tags.set.insert(PUBLISH_TAG.into(), "true".into());
        } else if !desired.publish && current.publish {
            tags.remove.push(PUBLISH_TAG.into());
        }
        let arn_ref = arn.as_str();
        tags.apply(|set| Self::tag(aws, arn_ref, set), |keys| Self::untag(aws, arn_ref, keys)).await?;
        let version = match published {
            Some(v) => v,
            None if desired.publish => newest_version(aws, name, &config).await?.map_or_else(|| "$LATEST".to_string(), |(v, _)| v),
            None => "$LATEST".to_string(),
        };
        Ok(Applied {
            physical_id: name.to_string(),
            outputs: outputs(&arn, name, config.code_sha256().unwrap_or_default(), &version, &aws.region),
        })
    }

    async fn delete(aws: &Aws, name: &str) -> Result<()> {
        aws.lambda
            .delete_function()
            .function_name(name)
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                ProviderError::sdk_classified("lambda:DeleteFunction", e, |e| match e {
                    DeleteFunctionError::ResourceNotFoundException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
                })
            })
            .or_gone()
            .map(drop)
    }

    /// Lambda's quota on the environment, measured as Lambda measures it: the JSON text of the
    /// `Variables` map it is sent (both maps together), `{"NAME":"value",…}` with its quotes, colons,
    /// commas and escapes, in UTF-8 bytes. (Counting names and values alone lets through an
    /// environment Lambda refuses, with an answer that quotes every variable.)
    fn check(attrs: &Map<String, Value>) -> Vec<(&'static str, String)> {
        let vars: Map<String, Value> = ["environment", "secret_environment"]
            .iter()
            .filter_map(|f| attrs.get(*f).and_then(Value::as_object))
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect();
        let size = Value::Object(vars).to_string().len();
        if size <= rules::LAMBDA_ENV_MAX_BYTES {
            return Vec::new();
        }
        let field = if attrs.contains_key("environment") { "environment" } else { "secret_environment" };
        vec![(
            field,
            format!(
                "the environment variables take {size} bytes as Lambda measures them (the JSON text of `environment` and `secret_environment` together, `{{\"NAME\":\"value\",…}}`); Lambda allows {}",
                rules::LAMBDA_ENV_MAX_BYTES
            ),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_version_matches_latest_whether_empty_values_are_left_out_or_sent_empty() {
        use aws_sdk_lambda::types::EnvironmentResponse;
        let base = || FunctionConfiguration::builder().code_sha256("abc").handler("h.handler").memory_size(512).timeout(10);
        let latest =
            base().description("").environment(EnvironmentResponse::builder().set_variables(Some(Default::default())).build()).build();
        let version = base().build();
        assert!(snapshot(&latest) == snapshot(&version), "absent and empty are the same configuration");
        let changed = base().description("new").build();
        assert!(snapshot(&latest) != snapshot(&changed), "a real change still owes a version");
    }

    #[test]
    fn spec_round_trip() {
        let provider = Kind::LambdaFunction.provider();
        // As the manifest gives it: the code's path and the secret variables are there.
        let desired = json!({
            "function_name": "Hello", "runtime": "python3.13", "handler": "index.handler",
            "role": "arn:aws:iam::123456789012:role/r", "code": "lambda", "memory_size": 256, "timeout": 10,
            "description": "d", "architecture": "arm64", "environment": {"A": "1"},
            "secret_environment": {"DB_PASS": "x"}, "publish": true,
            "tags": {"reconcile:stack": "s", "team": "x"}, "code_sha256": "q2lU0m9yJYQ+0NZ0Zo6vPDL2cFb1Wn5NqhAK3Tj4oMo="
        });
        let desired = desired.as_object().unwrap();
        assert_eq!(&provider.normalize(desired).unwrap(), desired, "manifest attributes -> spec -> manifest attributes");
        assert_eq!(provider.physical_id(desired).unwrap().as_deref(), Some("Hello"));
        // As `read` reports it: no path, no secret map (every variable is in `environment`).
        let mut live = desired.clone();
        live.remove("code");
        live.remove("secret_environment");
        live.insert("environment".into(), json!({"A": "1", "DB_PASS": "x"}));
        assert_eq!(provider.normalize(&live).unwrap(), live, "live attributes keep their shape");
        let spec: FunctionSpec = serde_json::from_value(Value::Object(desired.clone())).unwrap();
        assert_eq!(spec.variables(), BTreeMap::from([("A".into(), "1".into()), ("DB_PASS".into(), "x".into())]));
        let mut wrong = desired.clone();
        wrong.insert("memory_size".into(), json!("256"));
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent default");
        let mut unknown = desired.clone();
        unknown.insert("memory".into(), json!(256));
        assert!(provider.normalize(&unknown).is_err(), "an unknown field is refused, not dropped");
    }

    #[test]
    fn a_version_is_owed_only_when_publishing_and_something_changed() {
        let base: FunctionSpec = serde_json::from_value(json!({
            "function_name": "f", "runtime": "python3.13", "handler": "h", "role": "r", "memory_size": 128, "timeout": 3,
            "description": "", "architecture": "x86_64", "environment": {}, "publish": true, "tags": {}, "code_sha256": "A"
        }))
        .unwrap();
        assert!(LambdaFunction::unknown_after_update(&base, &base).is_empty(), "nothing changed: the version stays");
        let code = FunctionSpec { code_sha256: "B".into(), ..base.clone() };
        assert_eq!(LambdaFunction::unknown_after_update(&base, &code), vec!["version", "qualified_arn"]);
        let config = FunctionSpec { timeout: 9, ..base.clone() };
        assert_eq!(LambdaFunction::unknown_after_update(&base, &config), vec!["version", "qualified_arn"]);
        let owed = FunctionSpec { publish: false, ..base.clone() };
        assert_eq!(LambdaFunction::unknown_after_update(&owed, &base), vec!["version", "qualified_arn"], "read found a version owed");
        let off = FunctionSpec { publish: false, code_sha256: "B".into(), ..base.clone() };
        assert!(LambdaFunction::unknown_after_update(&owed, &off).is_empty(), "not publishing: the version stays `$LATEST`");
    }

    #[test]
    fn qualified_arns_lose_their_qualifier() {
        assert_eq!(unqualified("arn:aws:lambda:us-east-1:1:function:f:3"), "arn:aws:lambda:us-east-1:1:function:f");
        assert_eq!(unqualified("arn:aws:lambda:us-east-1:1:function:f"), "arn:aws:lambda:us-east-1:1:function:f");
    }
}
