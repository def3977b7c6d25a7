//! `aws_wafv2_web_acl_association`: a web ACL protecting a resource (an API Gateway stage).
//!
//! Physical id: the protected resource's ARN (a resource has at most one web ACL).

use std::collections::{BTreeMap, HashSet};

use aws_sdk_wafv2::operation::disassociate_web_acl::DisassociateWebACLError;
use aws_sdk_wafv2::operation::get_web_acl_for_resource::GetWebACLForResourceError;
use serde::{Deserialize, Serialize};

use crate::artifact::Artifact;
use crate::providers::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use crate::providers::retry::{self, Backoff};
use crate::providers::schema::{Field, FieldType as T, KindSchema};
use crate::providers::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_wafv2_web_acl_association",
    doc: "Associates a web ACL with a resource such as an API Gateway stage.",
    fields: &[
        Field::new("web_acl_arn", T::String, "Web ACL ARN, usually `${acl.arn}`").required().force_new(),
        Field::new("resource_arn", T::String, "Protected resource ARN, e.g. `${prod_stage.arn}`").required().force_new(),
    ],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("id", "The protected resource's ARN")],
    taggable: false,
    singleton: false,
    identity: crate::providers::schema::Identity::Fields(&["resource_arn"]),
};

/// An association as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationSpec {
    pub web_acl_arn: String,
    pub resource_arn: String,
}

/// `aws_wafv2_web_acl_association`: Associates a web ACL with a resource such as an API Gateway stage.
pub struct Association;

/// The API Gateway stage (`<rest_api_id>/<stage_name>`) a protected resource's ARN names, if it is
/// one: `arn:<partition>:apigateway:<region>::/restapis/<api>/stages/<stage>`.
pub fn stage_of(resource_arn: &str) -> Option<String> {
    let path = resource_arn.split_once(":apigateway:")?.1.split_once("::/restapis/")?.1;
    let (api, stage) = path.split_once("/stages/")?;
    (!api.is_empty() && !stage.is_empty() && !stage.contains('/')).then(|| format!("{api}/{stage}"))
}

/// The region of an ARN (`arn:<partition>:<service>:<region>:…`).
fn arn_region(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:")?.split(':').nth(2)
}

/// Whether an ARN names a WAFv2 regional web ACL (`arn:<partition>:wafv2:<region>:<account>:regional/webacl/<name>/<id>`).
fn is_wafv2_acl(arn: &str) -> bool {
    arn.strip_prefix("arn:").and_then(|rest| rest.split(':').nth(1)).is_some_and(|service| service == "wafv2")
        && arn.contains(":regional/webacl/")
}

fn outputs(resource_arn: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("id".to_string(), resource_arn.to_string())])
}

/// WAF cannot see a resource that was created moments ago (e.g. a new API Gateway stage) yet.
/// (The retry helper's predicate sees the converted error: this is the code of the SDK's
/// `WafUnavailableEntityException` variant.)
fn is_settling(e: &ProviderError) -> bool {
    e.code() == Some("WAFUnavailableEntityException")
}

impl Resource for Association {
    type Spec = AssociationSpec;
    const KIND: Kind = Kind::WebAclAssociation;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &AssociationSpec) -> Option<String> {
        Some(spec.resource_arn.clone())
    }

    fn name_check(spec: &AssociationSpec) -> NameCheck {
        NameCheck::Read(spec.resource_arn.clone())
    }

    fn placement(_id: &str) -> Placement {
        // A link between two resources that say where they are themselves.
        Placement::Anywhere
    }

    fn parent(id: &str) -> Option<(Kind, String)> {
        stage_of(id).map(|stage| (Kind::Stage, stage))
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    /// An association is the pair it links; it belongs to its stage.
    fn assigned_id(_outputs: &BTreeMap<String, String>) -> Option<String> {
        None
    }

    fn derived_outputs(_spec: &AssociationSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
    }

    /// An API Gateway stage's association is read from the stage itself (`webAclArn`, which WAF
    /// sets when it associates a web ACL with the stage): one `GetStages` serves every stage of a REST
    /// API and their associations, where WAF's `GetWebACLForResource` is allowed once per second per
    /// account (a fleet of stacks would wait on it). A stage that names no web ACL is asked of WAF
    /// itself before the association is called gone: the stage's field may lag a moment behind a new
    /// association, and WAF's answer is the authority.
    async fn read(aws: &Aws, resource_arn: &str) -> Result<Option<Observed<AssociationSpec>>> {
        // Only a stage of the client's region can be read with the stage (the ARN's region is where
        // WAF looks; a stage elsewhere is WAF's to answer for, as before).
        let here = arn_region(resource_arn) == Some(aws.region.as_str());
        if let Some(stage) = stage_of(resource_arn).filter(|_| here) {
            match crate::providers::apigateway::stage::web_acl_of(aws, &stage).await {
                // The stage is gone, and its association with it.
                Ok(None) => return Ok(None),
                // A WAFv2 web ACL (a WAF Classic one, `arn:…:waf-regional:…`, is no WAFv2 association:
                // WAF's own answer says what there is).
                Ok(Some(Some(web_acl_arn))) if is_wafv2_acl(&web_acl_arn) => {
                    let spec = AssociationSpec { web_acl_arn, resource_arn: resource_arn.to_string() };
                    return Ok(Some(Observed { spec, outputs: outputs(resource_arn) }));
                }
                Ok(Some(_)) => {}
                // E.g. a role that may read WAF but not API Gateway: WAF's answer, as without this.
                Err(e) => tracing::debug!(resource_arn, error = %e, "cannot read the stage for its web ACL; asking WAF"),
            }
        }
        let out = aws
            .wafv2
            .get_web_acl_for_resource()
            .resource_arn(resource_arn)
            .send()
            .await
            .map_err(|e| {
                ProviderError::sdk_classified("wafv2:GetWebACLForResource", e, |e| match e {
                    GetWebACLForResourceError::WafNonexistentItemException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
                })
            })
            .or_gone()?;
        let Some(acl) = out.as_ref().and_then(|o| o.web_acl()) else {
            return Ok(None);
        };
        let spec = AssociationSpec { web_acl_arn: acl.arn().to_string(), resource_arn: resource_arn.to_string() };
        Ok(Some(Observed { spec, outputs: outputs(resource_arn) }))
    }

    async fn find(aws: &Aws, spec: &AssociationSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<AssociationSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &AssociationSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let request = aws.wafv2.associate_web_acl().web_acl_arn(&spec.web_acl_arn).resource_arn(&spec.resource_arn);
        retry::send("wafv2:AssociateWebACL", Backoff::PROPAGATION, is_settling, || request.clone().send()).await?;
        Ok(Applied { physical_id: spec.resource_arn.clone(), outputs: outputs(&spec.resource_arn) })
    }

    /// Both fields force replacement: nothing to change in place.
    async fn update(
        aws: &Aws,
        id: &str,
        _current: &AssociationSpec,
        _desired: &AssociationSpec,
        _artifact: Option<&Artifact>,
    ) -> Result<Applied> {
        let live = Self::read(aws, id)
            .await?
            .ok_or_else(|| ProviderError::Other(format!("web ACL association for {id} vanished during update")))?;
        Ok(Applied { physical_id: id.to_string(), outputs: live.outputs })
    }

    async fn delete(aws: &Aws, resource_arn: &str) -> Result<()> {
        aws.wafv2
            .disassociate_web_acl()
            .resource_arn(resource_arn)
            .send()
            .await
            .map_err(|e| {
                ProviderError::sdk_classified("wafv2:DisassociateWebACL", e, |e| match e {
                    DisassociateWebACLError::WafNonexistentItemException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
                })
            })
            .or_gone()
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tells_a_stage_and_a_wafv2_acl_by_their_arns() {
        let stage = "arn:aws:apigateway:eu-west-1::/restapis/a1b2c3/stages/prod";
        assert_eq!(stage_of(stage).as_deref(), Some("a1b2c3/prod"));
        assert_eq!(arn_region(stage), Some("eu-west-1"));
        assert_eq!(stage_of("arn:aws:apigateway:eu-west-1::/restapis/a1b2c3"), None);
        assert_eq!(stage_of("arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1"), None);
        assert!(is_wafv2_acl("arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/acl/1b2c"));
        assert!(is_wafv2_acl("arn:aws-cn:wafv2:cn-north-1:123456789012:regional/webacl/acl/1b2c"));
        assert!(!is_wafv2_acl("arn:aws:waf-regional:eu-west-1:123456789012:webacl/1b2c"), "WAF Classic");
        assert!(!is_wafv2_acl("arn:aws:wafv2:us-east-1:123456789012:global/webacl/acl/1b2c"), "CloudFront's scope");
    }

    #[test]
    fn spec_round_trip() {
        let attrs = json!({
            "web_acl_arn": "arn:aws:wafv2:us-east-1:123456789012:regional/webacl/acl/1b2c",
            "resource_arn": "arn:aws:apigateway:us-east-1::/restapis/a1b2c3/stages/prod",
        });
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::WebAclAssociation.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap().as_deref(), Some("arn:aws:apigateway:us-east-1::/restapis/a1b2c3/stages/prod"));
        let wrong = json!({"web_acl_arn": 1, "resource_arn": "r"});
        assert!(matches!(provider.normalize(wrong.as_object().unwrap()), Err(ProviderError::Spec { .. })), "no silent default");
        let missing = json!({"web_acl_arn": "a"});
        assert!(provider.normalize(missing.as_object().unwrap()).is_err(), "a missing field is refused, not read as empty");
        let unknown = json!({"web_acl_arn": "a", "resource_arn": "r", "acl": "x"});
        assert!(provider.normalize(unknown.as_object().unwrap()).is_err(), "an unknown field is refused, not dropped");
    }
}
