//! Associations of a web ACL with a resource (an API Gateway stage).
//!
//! Physical id: the protected resource's ARN (a resource has at most one web ACL).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::providers::retry::{Backoff, with_backoff};
use crate::providers::{Applied, Aws, Desired, Live, ProviderError, Result, str_attr};

fn outputs(resource_arn: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("id".to_string(), resource_arn.to_string())])
}

pub async fn read(aws: &Aws, resource_arn: &str) -> Result<Option<Live>> {
    let out = match aws.wafv2.get_web_acl_for_resource().resource_arn(resource_arn).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_waf_nonexistent_item_exception()) => {
            return Ok(None);
        }
        Err(e) => return Err(ProviderError::sdk("wafv2:GetWebACLForResource", e)),
    };
    let Some(acl) = out.web_acl() else {
        return Ok(None);
    };
    let mut attrs = Map::new();
    attrs.insert("web_acl_arn".into(), json!(acl.arn()));
    attrs.insert("resource_arn".into(), json!(resource_arn));
    Ok(Some(Live { attrs, outputs: outputs(resource_arn) }))
}

/// WAF cannot see a resource that was created moments ago (e.g. a new API Gateway stage) yet.
fn is_settling(e: &ProviderError) -> bool {
    e.code() == Some("WAFUnavailableEntityException")
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let resource_arn = str_attr(d, "resource_arn");
    let request = aws.wafv2.associate_web_acl().web_acl_arn(str_attr(d, "web_acl_arn")).resource_arn(resource_arn);
    with_backoff("wafv2:AssociateWebACL", Backoff::PROPAGATION, is_settling, || {
        let request = request.clone();
        async move { request.send().await.map_err(|e| ProviderError::sdk("wafv2:AssociateWebACL", e)) }
    })
    .await?;
    Ok(Applied { physical_id: resource_arn.to_string(), outputs: outputs(resource_arn) })
}

/// Both fields force replacement: nothing to change in place.
pub async fn update(aws: &Aws, id: &str, _current: &Map<String, Value>, _desired: Desired<'_>) -> Result<Applied> {
    let live = read(aws, id).await?.ok_or_else(|| ProviderError::Other(format!("web ACL association for {id} vanished during update")))?;
    Ok(Applied { physical_id: id.to_string(), outputs: live.outputs })
}

pub async fn delete(aws: &Aws, resource_arn: &str) -> Result<()> {
    match aws.wafv2.disassociate_web_acl().resource_arn(resource_arn).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_waf_nonexistent_item_exception()) => Ok(()),
        Err(e) => Err(ProviderError::sdk("wafv2:DisassociateWebACL", e)),
    }
}

// ---- the kind: schema and the registry's entry ----

use crate::providers::Kind;
use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{Field, FieldType as T, KindSchema};

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
};

/// `aws_wafv2_web_acl_association`: Associates a web ACL with a resource such as an API Gateway stage.
pub struct Association;

impl Resource for Association {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::WebAclAssociation;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &Self::Spec) -> Option<String> {
        Some(super::super::str_attr(spec, "resource_arn").to_string())
    }

    fn parent(id: &str) -> Option<(Kind, String)> {
        {
            // arn:<partition>:apigateway:<region>::/restapis/<api>/stages/<stage>
            let path = id.split_once(":apigateway:")?.1.split_once("::/restapis/")?.1;
            let (api, stage) = path.split_once("/stages/")?;
            (!api.is_empty() && !stage.is_empty() && !stage.contains('/')).then(|| (Kind::Stage, format!("{api}/{stage}")))
        }
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
