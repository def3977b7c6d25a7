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

// ---- the kind: schema and the registry's entry ----

use crate::providers::Kind;
use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{Field, FieldType as T, KindSchema};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_api_gateway_account",
    doc: "The region-wide API Gateway setting naming the role API Gateway uses to write CloudWatch logs (needed before stages can log). Adopted if already set; never reset on destroy.",
    fields: &[Field::new("cloudwatch_role_arn", T::String, "Role API Gateway assumes to push logs").required()],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: true,
    outputs: &[("cloudwatch_role_arn", "The role in effect")],
    taggable: false,
    singleton: true,
};

/// `aws_api_gateway_account`: The region-wide API Gateway setting naming the role API Gateway uses to write CloudWatch logs (needed before stages can log). Adopted if already set; never reset on destroy.
pub struct Account;

impl Resource for Account {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::ApiGatewayAccount;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(_spec: &Self::Spec) -> Option<String> {
        Some("account".to_string())
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
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
