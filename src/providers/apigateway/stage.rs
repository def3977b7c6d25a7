//! Stages: deployment, access logs, method settings, tags.
//!
//! Physical id: `<rest_api_id>/<stage_name>`. Logging, data trace and metrics are the `*/*` method
//! settings (all methods).

use std::collections::BTreeMap;

use aws_sdk_apigateway::types::{Op, PatchOperation};
use serde_json::{Map, Value, json};

use super::{is_throttled, partition, patch, split_id};
use crate::providers::{Applied, Aws, Desired, Live, ProviderError, Result, changed, str_attr, string_map, tag_changes, tags_value};

const ALL_METHODS: &str = "*/*";

fn stage_arn(region: &str, api_id: &str, stage: &str) -> String {
    format!("arn:{}:apigateway:{region}::/restapis/{api_id}/stages/{stage}", partition(region))
}

fn outputs(region: &str, api_id: &str, stage: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("arn".into(), stage_arn(region, api_id, stage)),
        ("invoke_url".into(), format!("https://{api_id}.execute-api.{region}.amazonaws.com/{stage}")),
        ("name".into(), stage.to_string()),
    ])
}

fn bool_attr(attrs: &Map<String, Value>, key: &str) -> bool {
    attrs.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Until the account names a CloudWatch role API Gateway can assume (IAM propagation included),
/// logging settings are refused with this message.
fn is_logging_role_missing(e: &ProviderError) -> bool {
    e.code() == Some("BadRequestException") && e.message().contains("CloudWatch Logs role ARN must be set")
}

pub async fn read(aws: &Aws, id: &str) -> Result<Option<Live>> {
    let (api_id, stage_name) = split_id("stage", id)?;
    let out = match aws.apigateway.get_stage().rest_api_id(api_id).stage_name(stage_name).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => return Ok(None),
        Err(e) => return Err(ProviderError::sdk("apigateway:GetStage", e)),
    };
    let all = out.method_settings().and_then(|m| m.get(ALL_METHODS));
    let access = out.access_log_settings();
    let tags: BTreeMap<String, String> = out.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    let name = out.stage_name().unwrap_or(stage_name);
    let mut attrs = Map::new();
    attrs.insert("rest_api_id".into(), json!(api_id));
    attrs.insert("stage_name".into(), json!(name));
    attrs.insert("deployment_id".into(), json!(out.deployment_id().unwrap_or_default()));
    attrs.insert("description".into(), json!(out.description().unwrap_or_default()));
    attrs.insert("access_log_destination_arn".into(), json!(access.and_then(|a| a.destination_arn()).unwrap_or_default()));
    attrs.insert("access_log_format".into(), json!(access.and_then(|a| a.format()).unwrap_or_default()));
    attrs.insert("data_trace_enabled".into(), json!(all.is_some_and(|s| s.data_trace_enabled())));
    attrs.insert("logging_level".into(), json!(all.and_then(|s| s.logging_level()).unwrap_or("OFF")));
    attrs.insert("metrics_enabled".into(), json!(all.is_some_and(|s| s.metrics_enabled())));
    attrs.insert("tags".into(), tags_value(&tags));
    Ok(Some(Live { attrs, outputs: outputs(&aws.region, api_id, name) }))
}

/// Patch operations for the logging and method settings that differ between `current` and `desired`.
fn settings_patches(current: &Map<String, Value>, desired: &Map<String, Value>) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    if changed(current, desired, "access_log_destination_arn") || changed(current, desired, "access_log_format") {
        let destination = str_attr(desired, "access_log_destination_arn");
        if destination.is_empty() {
            if !str_attr(current, "access_log_destination_arn").is_empty() {
                ops.push(patch(Op::Remove, "/accessLogSettings", None));
            }
        } else {
            ops.push(patch(Op::Replace, "/accessLogSettings/destinationArn", Some(destination)));
            ops.push(patch(Op::Replace, "/accessLogSettings/format", Some(str_attr(desired, "access_log_format"))));
        }
    }
    if changed(current, desired, "data_trace_enabled") {
        let on = bool_attr(desired, "data_trace_enabled");
        ops.push(patch(Op::Replace, "/*/*/logging/dataTrace", Some(if on { "true" } else { "false" })));
    }
    if changed(current, desired, "logging_level") {
        let level = match str_attr(desired, "logging_level") {
            "" => "OFF",
            level => level,
        };
        ops.push(patch(Op::Replace, "/*/*/logging/loglevel", Some(level)));
    }
    if changed(current, desired, "metrics_enabled") {
        let on = bool_attr(desired, "metrics_enabled");
        ops.push(patch(Op::Replace, "/*/*/metrics/enabled", Some(if on { "true" } else { "false" })));
    }
    ops
}

/// A stage as CreateStage leaves it: no access logs, no method settings.
fn defaults() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("access_log_destination_arn".into(), json!(""));
    m.insert("access_log_format".into(), json!(""));
    m.insert("data_trace_enabled".into(), json!(false));
    m.insert("logging_level".into(), json!("OFF"));
    m.insert("metrics_enabled".into(), json!(false));
    m
}

async fn update_stage(aws: &Aws, api_id: &str, stage: &str, ops: Vec<PatchOperation>) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    send_retrying!(
        "apigateway:UpdateStage",
        aws.apigateway.update_stage().rest_api_id(api_id).stage_name(stage).set_patch_operations(Some(ops)),
        |e: &ProviderError| is_throttled(e) || is_logging_role_missing(e)
    )?;
    Ok(())
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let api_id = str_attr(d, "rest_api_id");
    let stage = str_attr(d, "stage_name");
    let description = str_attr(d, "description");
    let tags = string_map(d, "tags");
    send_retrying!(
        "apigateway:CreateStage",
        aws.apigateway
            .create_stage()
            .rest_api_id(api_id)
            .stage_name(stage)
            .deployment_id(str_attr(d, "deployment_id"))
            .set_description((!description.is_empty()).then(|| description.to_string()))
            .set_tags((!tags.is_empty()).then(|| tags.into_iter().collect()))
    )?;
    let (id, outputs) = (format!("{api_id}/{stage}"), outputs(&aws.region, api_id, stage));
    // The stage exists from here on: failed settings leave it incomplete, to be recorded, not lost.
    if let Err(e) = update_stage(aws, api_id, stage, settings_patches(&defaults(), d)).await {
        return Err(e.after_create(id, outputs));
    }
    Ok(Applied { physical_id: id, outputs })
}

pub async fn update(aws: &Aws, id: &str, current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    let (api_id, stage) = split_id("stage", id)?;
    let d = desired.attrs;
    let mut ops = Vec::new();
    if changed(current, d, "deployment_id") {
        ops.push(patch(Op::Replace, "/deploymentId", Some(str_attr(d, "deployment_id"))));
    }
    if changed(current, d, "description") {
        ops.push(patch(Op::Replace, "/description", Some(str_attr(d, "description"))));
    }
    ops.extend(settings_patches(current, d));
    update_stage(aws, api_id, stage, ops).await?;

    let arn = stage_arn(&aws.region, api_id, stage);
    let (set, remove) = tag_changes(current, d);
    if !set.is_empty() {
        send_retrying!(
            "apigateway:TagResource",
            aws.apigateway.tag_resource().resource_arn(&arn).set_tags(Some(set.into_iter().collect()))
        )?;
    }
    if !remove.is_empty() {
        send_retrying!("apigateway:UntagResource", aws.apigateway.untag_resource().resource_arn(&arn).set_tag_keys(Some(remove)))?;
    }
    Ok(Applied { physical_id: id.to_string(), outputs: outputs(&aws.region, api_id, stage) })
}

pub async fn delete(aws: &Aws, id: &str) -> Result<()> {
    let (api_id, stage) = split_id("stage", id)?;
    let request = aws.apigateway.delete_stage().rest_api_id(api_id).stage_name(stage);
    match send_retrying!("apigateway:DeleteStage", request) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NotFoundException") => Ok(()),
        Err(e) => Err(e),
    }
}

// ---- the kind: schema and the registry's entry ----

use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::{Kind, rules};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_api_gateway_stage",
    doc: "A named stage of a REST API serving one deployment, with access logging and method settings for all methods (`*/*`).",
    fields: &[
        Field::new("rest_api_id", T::String, "The API, usually `${api.id}`").required().force_new(),
        Field::new("stage_name", T::String, "Stage name (the first path segment of the invoke URL)")
            .required()
            .force_new()
            .check(rules::stage_name),
        Field::new("deployment_id", T::String, "Deployment served, usually `${deployment.id}`").required(),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")),
        Field::new("access_log_destination_arn", T::String, "Log group ARN for access logs (`${log_group.arn}`); empty = off")
            .default(DefaultValue::Str(""))
            .check(rules::optional_arn),
        Field::new("access_log_format", T::String, "Access log line format, e.g. JSON with `$context.requestId`")
            .default(DefaultValue::Str("")),
        Field::new("data_trace_enabled", T::Boolean, "Log full requests and responses (all methods)").default(DefaultValue::Bool(false)),
        Field::new("logging_level", T::String, "Execution logging level (all methods)")
            .default(DefaultValue::Str("OFF"))
            .one_of(&["OFF", "ERROR", "INFO"]),
        Field::new("metrics_enabled", T::Boolean, "Detailed CloudWatch metrics (all methods)").default(DefaultValue::Bool(false)),
        TAGS,
    ],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("arn", "`arn:aws:apigateway:<region>::/restapis/<id>/stages/<name>` (for WAF associations)"),
        ("invoke_url", "`https://<id>.execute-api.<region>.amazonaws.com/<stage>`"),
        ("name", "Stage name"),
    ],
    taggable: true,
    singleton: false,
};

/// `aws_api_gateway_stage`: A named stage of a REST API serving one deployment, with access logging and method settings for all methods (`*/*`).
pub struct Stage;

impl Resource for Stage {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::Stage;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &Self::Spec) -> Option<String> {
        Some(format!("{}/{}", super::super::str_attr(spec, "rest_api_id"), super::super::str_attr(spec, "stage_name")))
    }

    fn parent(id: &str) -> Option<(Kind, String)> {
        id.split_once('/').map(|(api, _)| (Kind::RestApi, api.to_string()))
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    fn derived_outputs(_spec: &Self::Spec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
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
}
