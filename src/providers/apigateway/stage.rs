//! `aws_api_gateway_stage`: stages — deployment, access logs, method settings, tags.
//!
//! Physical id: `<rest_api_id>/<stage_name>`. Logging, data trace and metrics are the `*/*` method
//! settings (all methods).

use std::collections::{BTreeMap, HashSet};

use aws_sdk_apigateway::operation::create_stage::CreateStageError;
use aws_sdk_apigateway::operation::delete_stage::DeleteStageError;
use aws_sdk_apigateway::operation::get_stage::GetStageError;
use aws_sdk_apigateway::operation::get_stages::GetStagesError;
use aws_sdk_apigateway::types::{Op, PatchOperation, Stage as ApiStage};
use serde::{Deserialize, Serialize};

use super::{is_throttled, partition, patch, send_classified, split_id};
use crate::artifact::Artifact;
use crate::providers::batch::{self, Lookup};
use crate::providers::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use crate::providers::retry::{self, Backoff};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::tags::TagChanges;
use crate::providers::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, rules};

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
    identity: crate::providers::schema::Identity::Fields(&["rest_api_id", "stage_name"]),
};

/// A stage as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub rest_api_id: String,
    pub stage_name: String,
    pub deployment_id: String,
    pub description: String,
    /// Empty: no access logs.
    pub access_log_destination_arn: String,
    pub access_log_format: String,
    pub data_trace_enabled: bool,
    /// OFF, ERROR or INFO.
    pub logging_level: String,
    pub metrics_enabled: bool,
    pub tags: BTreeMap<String, String>,
}

impl StageSpec {
    /// The stage as CreateStage leaves it: no access logs, no method settings.
    fn as_created(&self) -> StageSpec {
        StageSpec {
            access_log_destination_arn: String::new(),
            access_log_format: String::new(),
            data_trace_enabled: false,
            logging_level: "OFF".into(),
            metrics_enabled: false,
            ..self.clone()
        }
    }
}

/// `aws_api_gateway_stage`: A named stage of a REST API serving one deployment, with access logging and method settings for all methods (`*/*`).
pub struct Stage;

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

/// Until the account names a CloudWatch role API Gateway can assume (IAM propagation included),
/// logging settings are refused with this message (a `BadRequestException`, told apart from other
/// bad requests only by its message).
fn is_logging_role_missing(e: &ProviderError) -> bool {
    e.code() == Some("BadRequestException") && e.message().contains("CloudWatch Logs role ARN must be set")
}

/// A name clash on CreateStage is a `ConflictException` saying so; a ConflictException is also API
/// Gateway's "concurrent modification" answer, retried rather than reported as a clash.
fn create_stage_class(e: &CreateStageError) -> ErrorClass {
    match e {
        CreateStageError::ConflictException(c) if c.message().is_some_and(|m| m.to_ascii_lowercase().contains("already exist")) => {
            ErrorClass::AlreadyExists
        }
        _ => ErrorClass::Other,
    }
}

fn flag(on: bool) -> Option<&'static str> {
    Some(if on { "true" } else { "false" })
}

/// Patch operations for the logging and method settings that differ between `current` and `desired`.
fn settings_patches(current: &StageSpec, desired: &StageSpec) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    if current.access_log_destination_arn != desired.access_log_destination_arn || current.access_log_format != desired.access_log_format {
        if desired.access_log_destination_arn.is_empty() {
            if !current.access_log_destination_arn.is_empty() {
                ops.push(patch(Op::Remove, "/accessLogSettings", None));
            }
        } else {
            ops.push(patch(Op::Replace, "/accessLogSettings/destinationArn", Some(&desired.access_log_destination_arn)));
            ops.push(patch(Op::Replace, "/accessLogSettings/format", Some(&desired.access_log_format)));
        }
    }
    if current.data_trace_enabled != desired.data_trace_enabled {
        ops.push(patch(Op::Replace, "/*/*/logging/dataTrace", flag(desired.data_trace_enabled)));
    }
    if current.logging_level != desired.logging_level {
        let level = if desired.logging_level.is_empty() { "OFF" } else { desired.logging_level.as_str() };
        ops.push(patch(Op::Replace, "/*/*/logging/loglevel", Some(level)));
    }
    if current.metrics_enabled != desired.metrics_enabled {
        ops.push(patch(Op::Replace, "/*/*/metrics/enabled", flag(desired.metrics_enabled)));
    }
    ops
}

async fn update_stage(aws: &Aws, api_id: &str, stage: &str, ops: Vec<PatchOperation>) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let request = aws.apigateway.update_stage().rest_api_id(api_id).stage_name(stage).set_patch_operations(Some(ops));
    retry::send("apigateway:UpdateStage", Backoff::THROTTLE, |e| is_throttled(e) || is_logging_role_missing(e), || request.clone().send())
        .await?;
    Ok(())
}

/// Every stage of the REST API by name (one `GetStages`, the batch's collection read); `None` if
/// the API is gone.
async fn listed(aws: &Aws, api_id: String) -> Result<Option<batch::Collection<ApiStage>>> {
    let out = aws
        .apigateway
        .get_stages()
        .rest_api_id(&api_id)
        .send()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("apigateway:GetStages", e, |e| match e {
                GetStagesError::NotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            })
        })
        .or_gone()?;
    Ok(out.map(|out| out.item.unwrap_or_default().into_iter().filter_map(|s| Some((s.stage_name.clone()?, s))).collect()))
}

/// The stage `<rest_api_id>/<stage_name>` as API Gateway describes it: from the batch's `GetStages`
/// listing of its REST API when the run reads several of its stages (or its web ACL association
/// too), else one `GetStage`; `None` if it (or its REST API) is gone.
async fn fetch(aws: &Aws, id: &str) -> Result<Option<ApiStage>> {
    let (api_id, stage_name) = split_id("stage", id)?;
    Ok(Some(match batch::lookup(aws, Kind::Stage, id, |api, _| listed(aws, api)).await {
        Lookup::Found(stage) => stage,
        Lookup::Gone => return Ok(None),
        Lookup::Unknown => {
            let out = aws
                .apigateway
                .get_stage()
                .rest_api_id(api_id)
                .stage_name(stage_name)
                .send()
                .await
                .map_err(|e| {
                    ProviderError::sdk_classified("apigateway:GetStage", e, |e| match e {
                        GetStageError::NotFoundException(_) => ErrorClass::NotFound,
                        _ => ErrorClass::Other,
                    })
                })
                .or_gone()?;
            let Some(out) = out else { return Ok(None) };
            ApiStage::builder()
                .set_deployment_id(out.deployment_id)
                .set_stage_name(out.stage_name)
                .set_description(out.description)
                .set_method_settings(out.method_settings)
                .set_access_log_settings(out.access_log_settings)
                .set_tags(out.tags)
                .set_web_acl_arn(out.web_acl_arn)
                .build()
        }
    }))
}

/// The ARN of the web ACL API Gateway says protects the stage `<rest_api_id>/<stage_name>`
/// (`webAclArn`, which AWS WAF sets on the stage when it associates a web ACL with it): `None` if the
/// stage is gone, `Some(None)` if it names none. Read with the stage (see [`fetch`]), so a run that
/// reads a REST API's stages learns their associations without WAF's own `GetWebACLForResource`,
/// which AWS allows once per second per account.
pub async fn web_acl_of(aws: &Aws, id: &str) -> Result<Option<Option<String>>> {
    Ok(fetch(aws, id).await?.map(|stage| stage.web_acl_arn))
}

impl Resource for Stage {
    type Spec = StageSpec;
    const KIND: Kind = Kind::Stage;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &StageSpec) -> Option<String> {
        Some(format!("{}/{}", spec.rest_api_id, spec.stage_name))
    }

    fn name_check(spec: &StageSpec) -> NameCheck {
        NameCheck::Read(format!("{}/{}", spec.rest_api_id, spec.stage_name))
    }

    fn placement(_id: &str) -> Placement {
        Placement::Regional
    }

    fn parent(id: &str) -> Option<(Kind, String)> {
        id.split_once('/').map(|(api, _)| (Kind::RestApi, api.to_string()))
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    /// None: a stage is named, not numbered, and the dates AWS reports are not kept by every endpoint (moto makes them up); it belongs
    /// to its REST API, whose id its physical id holds, and its tags decide.
    fn assigned_id(_outputs: &BTreeMap<String, String>) -> Option<String> {
        None
    }

    fn derived_outputs(_spec: &StageSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// An update applies the settings a failed create did not.
    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<StageSpec>>> {
        let (api_id, stage_name) = split_id("stage", id)?;
        let Some(out) = fetch(aws, id).await? else { return Ok(None) };
        let all = out.method_settings().and_then(|m| m.get(ALL_METHODS));
        let access = out.access_log_settings();
        let name = out.stage_name().unwrap_or(stage_name);
        let spec = StageSpec {
            rest_api_id: api_id.to_string(),
            stage_name: name.to_string(),
            deployment_id: out.deployment_id().unwrap_or_default().to_string(),
            description: out.description().unwrap_or_default().to_string(),
            access_log_destination_arn: access.and_then(|a| a.destination_arn()).unwrap_or_default().to_string(),
            access_log_format: access.and_then(|a| a.format()).unwrap_or_default().to_string(),
            data_trace_enabled: all.is_some_and(|s| s.data_trace_enabled()),
            logging_level: all.and_then(|s| s.logging_level()).unwrap_or("OFF").to_string(),
            metrics_enabled: all.is_some_and(|s| s.metrics_enabled()),
            tags: out.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default(),
        };
        Ok(Some(Observed { outputs: outputs(&aws.region, api_id, name), spec }))
    }

    async fn find(aws: &Aws, spec: &StageSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<StageSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &StageSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let (api_id, stage) = (spec.rest_api_id.as_str(), spec.stage_name.as_str());
        let request = aws
            .apigateway
            .create_stage()
            .rest_api_id(api_id)
            .stage_name(stage)
            .deployment_id(&spec.deployment_id)
            .set_description((!spec.description.is_empty()).then(|| spec.description.clone()))
            .set_tags((!spec.tags.is_empty()).then(|| spec.tags.clone().into_iter().collect()));
        send_classified("apigateway:CreateStage", create_stage_class, || request.clone().send()).await?;
        let (id, outputs) = (format!("{api_id}/{stage}"), outputs(&aws.region, api_id, stage));
        // The stage exists from here on: failed settings leave it incomplete, to be recorded, not lost.
        if let Err(e) = update_stage(aws, api_id, stage, settings_patches(&spec.as_created(), spec)).await {
            return Err(e.after_create(id, outputs));
        }
        Ok(Applied { physical_id: id, outputs })
    }

    async fn update(aws: &Aws, id: &str, current: &StageSpec, desired: &StageSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let (api_id, stage) = split_id("stage", id)?;
        let mut ops = Vec::new();
        if current.deployment_id != desired.deployment_id {
            ops.push(patch(Op::Replace, "/deploymentId", Some(&desired.deployment_id)));
        }
        if current.description != desired.description {
            ops.push(patch(Op::Replace, "/description", Some(&desired.description)));
        }
        ops.extend(settings_patches(current, desired));
        update_stage(aws, api_id, stage, ops).await?;

        let arn = stage_arn(&aws.region, api_id, stage);
        let arn = arn.as_str();
        TagChanges::between(&current.tags, &desired.tags)
            .apply(
                |set| async move {
                    let request = aws.apigateway.tag_resource().resource_arn(arn).set_tags(Some(set.into_iter().collect()));
                    retry::send("apigateway:TagResource", Backoff::THROTTLE, is_throttled, || request.clone().send()).await.map(drop)
                },
                |keys| async move {
                    let request = aws.apigateway.untag_resource().resource_arn(arn).set_tag_keys(Some(keys));
                    retry::send("apigateway:UntagResource", Backoff::THROTTLE, is_throttled, || request.clone().send()).await.map(drop)
                },
            )
            .await?;
        Ok(Applied { physical_id: id.to_string(), outputs: outputs(&aws.region, api_id, stage) })
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        let (api_id, stage) = split_id("stage", id)?;
        let request = aws.apigateway.delete_stage().rest_api_id(api_id).stage_name(stage);
        send_classified(
            "apigateway:DeleteStage",
            |e| match e {
                DeleteStageError::NotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            },
            || request.clone().send(),
        )
        .await
        .or_gone()
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs() -> serde_json::Value {
        json!({
            "rest_api_id": "a1b2c3",
            "stage_name": "prod",
            "deployment_id": "d1",
            "description": "",
            "access_log_destination_arn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/apigw/prod",
            "access_log_format": "{\"requestId\":\"$context.requestId\"}",
            "data_trace_enabled": false,
            "logging_level": "INFO",
            "metrics_enabled": true,
            "tags": {"reconcile:stack": "s"},
        })
    }

    #[test]
    fn spec_round_trip() {
        let attrs = attrs();
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::Stage.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap().as_deref(), Some("a1b2c3/prod"));
        let mut wrong = attrs.clone();
        wrong["metrics_enabled"] = json!("true");
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent default");
        let mut unknown = attrs.clone();
        unknown.insert("variables".into(), json!({}));
        assert!(provider.normalize(&unknown).is_err(), "an unknown field is refused, not dropped");
    }

    #[test]
    fn a_stage_name_clash_is_already_exists_and_a_concurrent_modification_is_not() {
        use aws_sdk_apigateway::types::error::ConflictException;
        let conflict = |m: &str| CreateStageError::ConflictException(ConflictException::builder().message(m).build());
        assert_eq!(create_stage_class(&conflict("Stage already exists")), ErrorClass::AlreadyExists);
        assert_eq!(create_stage_class(&conflict("Unable to complete operation due to concurrent modification")), ErrorClass::Other);
    }

    #[test]
    fn a_created_stage_gets_only_the_settings_it_asks_for() {
        let spec: StageSpec = serde_json::from_value(attrs()).unwrap();
        let paths: Vec<_> = settings_patches(&spec.as_created(), &spec).iter().map(|p| p.path().unwrap_or_default().to_string()).collect();
        assert_eq!(
            paths,
            ["/accessLogSettings/destinationArn", "/accessLogSettings/format", "/*/*/logging/loglevel", "/*/*/metrics/enabled"]
        );
        let plain = spec.as_created();
        assert!(settings_patches(&plain.as_created(), &plain).is_empty());
        let removed: Vec<_> = settings_patches(&spec, &plain).iter().map(|p| (p.op().cloned(), p.path().map(str::to_string))).collect();
        assert_eq!(removed[0], (Some(Op::Remove), Some("/accessLogSettings".to_string())));
    }
}
