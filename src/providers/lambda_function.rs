//! Lambda functions: configuration, code (by content hash), tags.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Architecture, Environment, FunctionCode, Runtime};
use serde_json::{Map, Value, json};

use super::retry::{Backoff, with_backoff};
use super::schema::CODE_SHA256;
use super::{Applied, Aws, Desired, Live, ProviderError, Result, changed, int_attr, str_attr, string_map, tag_changes};

const SETTLE: Duration = Duration::from_secs(300);

/// The error Lambda gives while a new role has not propagated through IAM yet.
fn is_role_propagation(e: &ProviderError) -> bool {
    e.code() == Some("InvalidParameterValueException") && e.message().contains("cannot be assumed by Lambda")
}

fn outputs(arn: &str, name: &str, sha: &str, region: &str) -> BTreeMap<String, String> {
    let partition = arn.split(':').nth(1).unwrap_or("aws");
    BTreeMap::from([
        ("arn".into(), arn.to_string()),
        ("name".into(), name.to_string()),
        ("invoke_arn".into(), format!("arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations")),
        ("code_sha256".into(), sha.to_string()),
    ])
}

pub async fn read(aws: &Aws, name: &str) -> Result<Option<Live>> {
    let out = match aws.lambda.get_function().function_name(name).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
            return Ok(None);
        }
        Err(e) => return Err(ProviderError::sdk("lambda:GetFunction", e)),
    };
    let Some(c) = out.configuration() else {
        return Ok(None);
    };
    let env: BTreeMap<String, String> =
        c.environment().and_then(|e| e.variables()).map(|v| v.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    let tags: BTreeMap<String, String> = out.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    let mut attrs = Map::new();
    attrs.insert("function_name".into(), json!(c.function_name().unwrap_or(name)));
    attrs.insert("runtime".into(), json!(c.runtime().map(|r| r.as_str()).unwrap_or_default()));
    attrs.insert("handler".into(), json!(c.handler().unwrap_or_default()));
    attrs.insert("role".into(), json!(c.role().unwrap_or_default()));
    attrs.insert("memory_size".into(), json!(c.memory_size().unwrap_or(128)));
    attrs.insert("timeout".into(), json!(c.timeout().unwrap_or(3)));
    attrs.insert("description".into(), json!(c.description().unwrap_or_default()));
    attrs.insert("architecture".into(), json!(c.architectures().first().map_or("x86_64", |a| a.as_str())));
    attrs.insert("environment".into(), super::tags_value(&env));
    attrs.insert("tags".into(), super::tags_value(&tags));
    attrs.insert(CODE_SHA256.into(), json!(c.code_sha256().unwrap_or_default()));
    let outputs = outputs(c.function_arn().unwrap_or_default(), name, c.code_sha256().unwrap_or_default(), &aws.region);
    Ok(Some(Live { attrs, outputs }))
}

/// The plain and the secret variables together, as Lambda keeps them.
fn environment(d: &Map<String, Value>) -> Environment {
    let mut vars = string_map(d, "environment");
    vars.extend(string_map(d, "secret_environment"));
    Environment::builder().set_variables(Some(vars.into_iter().collect())).build()
}

fn zip(desired: Desired<'_>) -> Result<Blob> {
    let artifact = desired.artifact.ok_or_else(|| ProviderError::Other("no code was packaged for this function".into()))?;
    Ok(Blob::new(artifact.zip.as_slice()))
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let name = str_attr(d, "function_name");
    let code = FunctionCode::builder().zip_file(zip(desired)?).build();
    let request = aws
        .lambda
        .create_function()
        .function_name(name)
        .runtime(Runtime::from(str_attr(d, "runtime")))
        .handler(str_attr(d, "handler"))
        .role(str_attr(d, "role"))
        .code(code)
        .memory_size(int_attr(d, "memory_size") as i32)
        .timeout(int_attr(d, "timeout") as i32)
        .description(str_attr(d, "description"))
        .architectures(Architecture::from(str_attr(d, "architecture")))
        .environment(environment(d))
        .set_tags(Some(string_map(d, "tags").into_iter().collect()));
    // A role created seconds ago may not be assumable yet: retry that documented error with backoff.
    let out = with_backoff("lambda:CreateFunction", Backoff::PROPAGATION, is_role_propagation, || {
        let request = request.clone();
        async move { request.send().await.map_err(|e| ProviderError::sdk("lambda:CreateFunction", e)) }
    })
    .await?;
    let outputs = outputs(out.function_arn().unwrap_or_default(), name, out.code_sha256().unwrap_or_default(), &aws.region);
    // The function exists from here on: one that never becomes Active is incomplete (the next apply
    // replaces it), recorded rather than lost.
    aws.lambda.wait_until_function_active_v2().function_name(name).wait(SETTLE).await.map_err(|e| {
        ProviderError::Timeout { operation: "lambda:GetFunction (until Active)", detail: e.to_string() }.after_create(name, outputs.clone())
    })?;
    Ok(Applied { physical_id: name.to_string(), outputs })
}

async fn wait_updated(aws: &Aws, name: &str) -> Result<()> {
    aws.lambda
        .wait_until_function_updated_v2()
        .function_name(name)
        .wait(SETTLE)
        .await
        .map(|_| ())
        .map_err(|e| ProviderError::Timeout { operation: "lambda:GetFunction (until LastUpdateStatus Successful)", detail: e.to_string() })
}

/// Lambda refuses a second update while one is in progress; the waiter covers ours, this covers others'.
fn is_update_in_progress(e: &ProviderError) -> bool {
    e.code() == Some("ResourceConflictException") || is_role_propagation(e)
}

pub async fn update(aws: &Aws, name: &str, current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    if changed(current, d, CODE_SHA256) || changed(current, d, "architecture") {
        let request = aws
            .lambda
            .update_function_code()
            .function_name(name)
            .zip_file(zip(desired)?)
            .architectures(Architecture::from(str_attr(d, "architecture")));
        with_backoff("lambda:UpdateFunctionCode", Backoff::PROPAGATION, is_update_in_progress, || {
            let request = request.clone();
            async move { request.send().await.map_err(|e| ProviderError::sdk("lambda:UpdateFunctionCode", e)) }
        })
        .await?;
        wait_updated(aws, name).await?;
    }
    let config_fields = ["runtime", "handler", "role", "memory_size", "timeout", "description", "environment", "secret_environment"];
    if config_fields.iter().any(|f| changed(current, d, f)) {
        let request = aws
            .lambda
            .update_function_configuration()
            .function_name(name)
            .runtime(Runtime::from(str_attr(d, "runtime")))
            .handler(str_attr(d, "handler"))
            .role(str_attr(d, "role"))
            .memory_size(int_attr(d, "memory_size") as i32)
            .timeout(int_attr(d, "timeout") as i32)
            .description(str_attr(d, "description"))
            .environment(environment(d));
        with_backoff("lambda:UpdateFunctionConfiguration", Backoff::PROPAGATION, is_update_in_progress, || {
            let request = request.clone();
            async move { request.send().await.map_err(|e| ProviderError::sdk("lambda:UpdateFunctionConfiguration", e)) }
        })
        .await?;
        wait_updated(aws, name).await?;
    }
    let live = read(aws, name).await?.ok_or_else(|| ProviderError::Other(format!("function {name} vanished during update")))?;
    let arn = live.outputs.get("arn").cloned().unwrap_or_default();
    let (set, remove) = tag_changes(current, d);
    if !set.is_empty() {
        aws.lambda
            .tag_resource()
            .resource(&arn)
            .set_tags(Some(set.into_iter().collect()))
            .send()
            .await
            .map_err(|e| ProviderError::sdk("lambda:TagResource", e))?;
    }
    if !remove.is_empty() {
        aws.lambda
            .untag_resource()
            .resource(&arn)
            .set_tag_keys(Some(remove))
            .send()
            .await
            .map_err(|e| ProviderError::sdk("lambda:UntagResource", e))?;
    }
    Ok(Applied { physical_id: name.to_string(), outputs: live.outputs })
}

pub async fn delete(aws: &Aws, name: &str) -> Result<()> {
    match aws.lambda.delete_function().function_name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(()),
        Err(e) => Err(ProviderError::sdk("lambda:DeleteFunction", e)),
    }
}

// ---- the kind: schema and the registry's entry ----

use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::{Kind, rules};

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
            "Environment variables whose values are never shown nor stored in the state (only a hash)",
        )
        .default(DefaultValue::EmptyMap)
        .keys("environment variable name", rules::lambda_env_name)
        .secret(),
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
    ],
    taggable: true,
    singleton: false,
};

/// `aws_lambda_function`: A Lambda function whose code is a file or folder next to the manifest, zipped in-process.
pub struct LambdaFunction;

impl Resource for LambdaFunction {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::LambdaFunction;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &Self::Spec) -> Option<String> {
        Some(super::str_attr(spec, "function_name").to_string())
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        function_name(id).to_string()
    }

    fn derived_outputs(_spec: &Self::Spec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        false
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<Self::Spec>>> {
        Ok(read(aws, id).await?.map(|l| Observed { spec: l.attrs, outputs: l.outputs }))
    }

    async fn find(
        aws: &Aws,
        spec: &Self::Spec,
        _taken: &std::collections::HashSet<String>,
    ) -> Result<Option<(String, Observed<Self::Spec>)>> {
        crate::providers::resource::find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &Self::Spec, artifact: Option<&crate::artifact::Artifact>) -> Result<Applied> {
        create(aws, Desired { attrs: spec, artifact }).await
    }

    async fn update(
        aws: &Aws,
        id: &str,
        current: &Self::Spec,
        desired: &Self::Spec,
        artifact: Option<&crate::artifact::Artifact>,
    ) -> Result<Applied> {
        update(aws, id, current, Desired { attrs: desired, artifact }).await
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        delete(aws, id).await
    }

    /// Lambda's quota on the environment: names and values of both maps together.
    fn check(attrs: &Map<String, Value>) -> Vec<(&'static str, String)> {
        let size: usize = ["environment", "secret_environment"]
            .iter()
            .filter_map(|f| attrs.get(*f).and_then(Value::as_object))
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if size <= rules::LAMBDA_ENV_MAX_BYTES {
            return Vec::new();
        }
        let field = if attrs.contains_key("environment") { "environment" } else { "secret_environment" };
        vec![(
            field,
            format!(
                "the environment variables take {size} bytes (names and values, `environment` and `secret_environment` together); Lambda allows {}",
                rules::LAMBDA_ENV_MAX_BYTES
            ),
        )]
    }
}
