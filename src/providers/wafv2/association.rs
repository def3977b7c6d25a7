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
