//! `aws_api_gateway_account`: the region-wide API Gateway account setting (CloudWatch role).

use std::collections::{BTreeMap, HashSet};

use aws_sdk_apigateway::types::Op;
use serde::{Deserialize, Serialize};

use super::{is_throttled, patch};
use crate::artifact::Artifact;
use crate::providers::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use crate::providers::retry::{self, Backoff};
use crate::providers::schema::{Field, FieldType as T, KindSchema};
use crate::providers::{Applied, Aws, Kind, ProviderError, Result};

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
    identity: crate::providers::schema::Identity::Fields(&[]),
};

/// The account setting as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// Empty when no role is set.
    pub cloudwatch_role_arn: String,
}

/// `aws_api_gateway_account`: The region-wide API Gateway setting naming the role API Gateway uses to write CloudWatch logs (needed before stages can log). Adopted if already set; never reset on destroy.
pub struct Account;

/// The only physical id: there is one account setting per region.
const ID: &str = "account";

fn outputs(role_arn: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("cloudwatch_role_arn".into(), role_arn.to_string())])
}

/// A freshly created role is not yet visible to API Gateway: it reports missing permissions or
/// trust until IAM has propagated it (a `BadRequestException`, told apart from other bad requests
/// only by its message).
fn is_role_propagation(e: &ProviderError) -> bool {
    if e.code() != Some("BadRequestException") {
        return false;
    }
    let m = e.message().to_ascii_lowercase();
    m.contains("does not have required permissions") || m.contains("trust")
}

async fn set_role(aws: &Aws, role_arn: &str) -> Result<Applied> {
    let request = aws.apigateway.update_account().patch_operations(patch(Op::Replace, "/cloudwatchRoleArn", Some(role_arn)));
    let out = retry::send(
        "apigateway:UpdateAccount",
        Backoff::PROPAGATION,
        |e| is_role_propagation(e) || is_throttled(e),
        || request.clone().send(),
    )
    .await?;
    Ok(Applied { physical_id: ID.to_string(), outputs: outputs(out.cloudwatch_role_arn().unwrap_or(role_arn)) })
}

impl Resource for Account {
    type Spec = AccountSpec;
    const KIND: Kind = Kind::ApiGatewayAccount;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(_spec: &AccountSpec) -> Option<String> {
        Some(ID.to_string())
    }

    fn name_check(_spec: &AccountSpec) -> NameCheck {
        // The one setting of the account and region is always there: its create adopts it.
        NameCheck::Nothing
    }

    fn placement(_id: &str) -> Placement {
        // The one setting there is in every region: present anywhere.
        Placement::Anywhere
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    /// A region-wide setting: there is only ever the one.
    fn assigned_id(_outputs: &BTreeMap<String, String>) -> Option<String> {
        None
    }

    fn derived_outputs(_spec: &AccountSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
    }

    /// Unset is still "there": the engine plans an update, never a create.
    async fn read(aws: &Aws, _id: &str) -> Result<Option<Observed<AccountSpec>>> {
        let out = aws.apigateway.get_account().send().await.map_err(|e| ProviderError::sdk("apigateway:GetAccount", e))?;
        let role = out.cloudwatch_role_arn().unwrap_or_default();
        Ok(Some(Observed { spec: AccountSpec { cloudwatch_role_arn: role.to_string() }, outputs: outputs(role) }))
    }

    async fn find(aws: &Aws, spec: &AccountSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<AccountSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    /// Adopts the setting: whatever role was there is replaced by the desired one.
    async fn create(aws: &Aws, spec: &AccountSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        set_role(aws, &spec.cloudwatch_role_arn).await
    }

    async fn update(aws: &Aws, _id: &str, _current: &AccountSpec, desired: &AccountSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        set_role(aws, &desired.cloudwatch_role_arn).await
    }

    /// A region-wide setting other stacks may rely on: left in place on destroy.
    async fn delete(_aws: &Aws, _id: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_round_trip() {
        let attrs = json!({"cloudwatch_role_arn": "arn:aws:iam::123456789012:role/apigw-cloudwatch"});
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::ApiGatewayAccount.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap().as_deref(), Some("account"));
        let wrong = json!({"cloudwatch_role_arn": 1});
        assert!(matches!(provider.normalize(wrong.as_object().unwrap()), Err(ProviderError::Spec { .. })), "no silent default");
        let unknown = json!({"cloudwatch_role_arn": "", "throttle": 10});
        assert!(provider.normalize(unknown.as_object().unwrap()).is_err(), "an unknown field is refused, not dropped");
    }
}
