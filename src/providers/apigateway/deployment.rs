//! `aws_api_gateway_deployment`: snapshots of a REST API that stages serve.
//!
//! Physical id: `<rest_api_id>/<deployment_id>`. `triggers` cannot be read from AWS, so `read` leaves
//! it out and the engine keeps the last applied value.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_apigateway::operation::delete_deployment::DeleteDeploymentError;
use aws_sdk_apigateway::operation::get_deployment::GetDeploymentError;
use aws_sdk_apigateway::operation::get_deployments::GetDeploymentsError;
use serde::{Deserialize, Serialize};

use super::{is_throttled, send_classified, split_id};
use crate::artifact::Artifact;
use crate::providers::batch::{self, Lookup};
use crate::providers::resource::{NameCheck, Observed, Placement, Resource};
use crate::providers::retry::{self, Backoff};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema};
use crate::providers::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_api_gateway_deployment",
    doc: "A snapshot of a REST API's routes that stages serve. Any change to `triggers` makes a new deployment; stages move to it, then the old one is deleted.",
    fields: &[
        Field::new("rest_api_id", T::String, "The API, usually `${api.id}`").required().force_new(),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")).force_new(),
        Field::new("triggers", T::StringMap, "Values whose change makes a new deployment, usually `{ model = \"${api.model_hash}\" }`")
            .default(DefaultValue::EmptyMap)
            .force_new(),
    ],
    physical_name: "",
    create_before_destroy: true,
    retain_on_delete: false,
    outputs: &[("id", "Deployment id")],
    taggable: false,
    singleton: false,
    identity: crate::providers::schema::Identity::Assigned,
};

/// A deployment as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub rest_api_id: String,
    pub description: String,
    /// Always there in the manifest; AWS does not keep them, so `read` reports none (and the live
    /// attributes have no `triggers` key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<BTreeMap<String, String>>,
}

/// `aws_api_gateway_deployment`: A snapshot of a REST API's routes that stages serve. Any change to `triggers` makes a new deployment; stages move to it, then the old one is deleted.
pub struct Deployment;

fn outputs(deployment_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("id".into(), deployment_id.to_string())])
}

fn observed(api_id: &str, deployment_id: &str, id: Option<&str>, description: Option<&str>) -> Observed<DeploymentSpec> {
    let spec = DeploymentSpec { rest_api_id: api_id.to_string(), description: description.unwrap_or_default().to_string(), triggers: None };
    Observed { spec, outputs: outputs(id.unwrap_or(deployment_id)) }
}

/// Every deployment of the API; `None` if the API itself is gone.
async fn list(aws: &Aws, api_id: &str) -> Result<Option<Vec<aws_sdk_apigateway::types::Deployment>>> {
    list_pages(aws, api_id, usize::MAX).await
}

/// The deployments of the API on at most `max_pages` pages of `GetDeployments`; `None` if the API
/// itself is gone.
async fn list_pages(aws: &Aws, api_id: &str, max_pages: usize) -> Result<Option<Vec<aws_sdk_apigateway::types::Deployment>>> {
    let mut pages = aws.apigateway.get_deployments().rest_api_id(api_id).into_paginator().page_size(500).send();
    let mut items = Vec::new();
    for _ in 0..max_pages {
        let Some(page) = pages.next().await else { break };
        let page = page
            .map_err(|e| {
                ProviderError::sdk_classified("apigateway:GetDeployments", e, |e| match e {
                    GetDeploymentsError::NotFoundException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
                })
            })
            .or_gone()?;
        let Some(page) = page else { return Ok(None) };
        items.extend(page.items.unwrap_or_default());
    }
    Ok(Some(items))
}

/// Whether the API lists the deployment (false if the API itself is gone).
async fn exists(aws: &Aws, api_id: &str, deployment_id: &str) -> Result<bool> {
    Ok(list(aws, api_id).await?.is_some_and(|items| items.iter().any(|d| d.id() == Some(deployment_id))))
}

impl Resource for Deployment {
    type Spec = DeploymentSpec;
    const KIND: Kind = Kind::Deployment;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    /// AWS assigns the id.
    fn physical_id(_spec: &DeploymentSpec) -> Option<String> {
        None
    }

    fn name_check(_spec: &DeploymentSpec) -> NameCheck {
        // AWS assigns deployment ids; a deployment has no name to clash.
        NameCheck::Nothing
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

    /// The deployment id (also in the physical id).
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String> {
        outputs.get("id").cloned()
    }

    fn derived_outputs(_spec: &DeploymentSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<DeploymentSpec>>> {
        let (api_id, deployment_id) = split_id("deployment", id)?;
        let listed = |api: String, max_pages| async move {
            Ok(list_pages(aws, &api, max_pages).await?.map(|items| items.into_iter().filter_map(|d| Some((d.id.clone()?, d))).collect()))
        };
        match batch::lookup(aws, Kind::Deployment, id, listed).await {
            Lookup::Found(d) => return Ok(Some(observed(api_id, deployment_id, d.id(), d.description()))),
            Lookup::Gone => return Ok(None),
            Lookup::Unknown => {}
        }
        let out = aws.apigateway.get_deployment().rest_api_id(api_id).deployment_id(deployment_id).send().await.map_err(|e| {
            ProviderError::sdk_classified("apigateway:GetDeployment", e, |e| match e {
                GetDeploymentError::NotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            })
        });
        let out = match out.or_gone() {
            Ok(Some(out)) => out,
            Ok(None) => return Ok(None),
            // Some endpoints (moto) answer a bare 500 for an unknown deployment id: tell "gone"
            // apart from a real failure by listing the API's deployments.
            Err(err @ ProviderError::Unsupported { .. }) => {
                if !exists(aws, api_id, deployment_id).await? {
                    return Ok(None);
                }
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        Ok(Some(observed(api_id, deployment_id, out.id(), out.description())))
    }

    /// The newest deployment of the API whose physical id is not in `taken` (deployments carry no
    /// name or tags): for recovering an interrupted create.
    async fn find(aws: &Aws, spec: &DeploymentSpec, taken: &HashSet<String>) -> Result<Option<(String, Observed<DeploymentSpec>)>> {
        let api_id = spec.rest_api_id.as_str();
        let Some(items) = list(aws, api_id).await? else { return Ok(None) };
        let newest = items
            .iter()
            .filter_map(|d| d.id().map(|id| (d.created_date().map(|t| t.secs()).unwrap_or_default(), format!("{api_id}/{id}"))))
            .filter(|(_, physical)| !taken.contains(physical))
            .max();
        let Some((_, physical)) = newest else { return Ok(None) };
        Ok(Self::read(aws, &physical).await?.map(|o| (physical, o)))
    }

    async fn create(aws: &Aws, spec: &DeploymentSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let api_id = spec.rest_api_id.as_str();
        let request = aws
            .apigateway
            .create_deployment()
            .rest_api_id(api_id)
            .set_description((!spec.description.is_empty()).then(|| spec.description.clone()));
        let out = retry::send("apigateway:CreateDeployment", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
        let deployment_id = out.id().ok_or_else(|| ProviderError::Other("apigateway:CreateDeployment returned no id".into()))?;
        Ok(Applied { physical_id: format!("{api_id}/{deployment_id}"), outputs: outputs(deployment_id) })
    }

    /// Every field forces a new deployment, so there is nothing to change in place.
    async fn update(
        aws: &Aws,
        id: &str,
        _current: &DeploymentSpec,
        _desired: &DeploymentSpec,
        _artifact: Option<&Artifact>,
    ) -> Result<Applied> {
        let live = Self::read(aws, id).await?.ok_or_else(|| ProviderError::Other(format!("deployment {id} vanished during update")))?;
        Ok(Applied { physical_id: id.to_string(), outputs: live.outputs })
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        let (api_id, deployment_id) = split_id("deployment", id)?;
        let request = aws.apigateway.delete_deployment().rest_api_id(api_id).deployment_id(deployment_id);
        send_classified(
            "apigateway:DeleteDeployment",
            |e| match e {
                DeleteDeploymentError::NotFoundException(_) => ErrorClass::NotFound,
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

    #[test]
    fn spec_round_trip() {
        let attrs = json!({"rest_api_id": "a1b2c3", "description": "", "triggers": {"model": "dc9c28b32587f3e7133d8116"}});
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::Deployment.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap(), None, "AWS assigns the id");
        let read = DeploymentSpec { rest_api_id: "a1b2c3".into(), description: "".into(), triggers: None };
        assert_eq!(serde_json::to_value(&read).unwrap(), json!({"rest_api_id": "a1b2c3", "description": ""}), "read reports no triggers");
        let wrong = json!({"rest_api_id": "a1", "description": "", "triggers": {"model": 1}});
        assert!(matches!(provider.normalize(wrong.as_object().unwrap()), Err(ProviderError::Spec { .. })), "no silent default");
        let unknown = json!({"rest_api_id": "a1", "description": "", "triggers": {}, "stage_name": "dev"});
        assert!(provider.normalize(unknown.as_object().unwrap()).is_err(), "an unknown field is refused, not dropped");
    }
}
