//! The region-wide API Gateway account setting (CloudWatch role).

use std::collections::BTreeMap;

use aws_sdk_apigateway::types::Op;
use serde_json::{Map, Value, json};

use super::{is_throttled, patch};
use crate::providers::retry::{Backoff, with_backoff};
use crate::providers::{Applied, Aws, Desired, Live, ProviderError, Result, str_attr};

/// The only physical id: there is one account setting per region.
const ID: &str = "account";

fn outputs(role_arn: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("cloudwatch_role_arn".into(), role_arn.to_string())])
}

/// A freshly created role is not yet visible to API Gateway: it reports missing permissions or
/// trust until IAM has propagated it.
fn is_role_propagation(e: &ProviderError) -> bool {
    if e.code() != Some("BadRequestException") {
        return false;
    }
    let m = e.message().to_ascii_lowercase();
    m.contains("does not have required permissions") || m.contains("trust")
}

pub async fn read(aws: &Aws, _id: &str) -> Result<Option<Live>> {
    let out = aws.apigateway.get_account().send().await.map_err(|e| ProviderError::sdk("apigateway:GetAccount", e))?;
    // Unset is still "there": the engine plans an update, never a create.
    let role = out.cloudwatch_role_arn().unwrap_or_default();
    let mut attrs = Map::new();
    attrs.insert("cloudwatch_role_arn".into(), json!(role));
    Ok(Some(Live { attrs, outputs: outputs(role) }))
}

async fn set_role(aws: &Aws, role_arn: &str) -> Result<Applied> {
    let request = aws.apigateway.update_account().patch_operations(patch(Op::Replace, "/cloudwatchRoleArn", Some(role_arn)));
    let out = with_backoff(
        "apigateway:UpdateAccount",
        Backoff::PROPAGATION,
        |e| is_role_propagation(e) || is_throttled(e),
        || {
            let request = request.clone();
            async move { request.send().await.map_err(|e| ProviderError::sdk("apigateway:UpdateAccount", e)) }
        },
    )
    .await?;
    Ok(Applied { physical_id: ID.to_string(), outputs: outputs(out.cloudwatch_role_arn().unwrap_or(role_arn)) })
}

/// Adopts the setting: whatever role was there is replaced by the desired one.
pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    set_role(aws, str_attr(desired.attrs, "cloudwatch_role_arn")).await
}

pub async fn update(aws: &Aws, _id: &str, _current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    set_role(aws, str_attr(desired.attrs, "cloudwatch_role_arn")).await
}

/// A region-wide setting other stacks may rely on: left in place on destroy.
pub async fn delete(_aws: &Aws, _id: &str) -> Result<()> {
    Ok(())
}
