//! Deployments: snapshots of a REST API that stages serve.
//!
//! Physical id: `<rest_api_id>/<deployment_id>`. `triggers` cannot be read from AWS, so `read` leaves
//! it out and the engine keeps the last applied value.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::split_id;
use crate::providers::{Applied, Aws, Desired, Live, ProviderError, Result, str_attr};

fn outputs(deployment_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("id".into(), deployment_id.to_string())])
}

pub async fn read(aws: &Aws, id: &str) -> Result<Option<Live>> {
    let (api_id, deployment_id) = split_id("deployment", id)?;
    let out = match aws.apigateway.get_deployment().rest_api_id(api_id).deployment_id(deployment_id).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => return Ok(None),
        Err(e) => {
            let err = ProviderError::sdk("apigateway:GetDeployment", e);
            // Some endpoints (moto) answer a bare 500 for an unknown deployment id: tell "gone"
            // apart from a real failure by listing the API's deployments.
            if matches!(err, ProviderError::Unsupported { .. }) && !exists(aws, api_id, deployment_id).await? {
                return Ok(None);
            }
            return Err(err);
        }
    };
    let mut attrs = Map::new();
    attrs.insert("rest_api_id".into(), json!(api_id));
    attrs.insert("description".into(), json!(out.description().unwrap_or_default()));
    Ok(Some(Live { attrs, outputs: outputs(out.id().unwrap_or(deployment_id)) }))
}

/// Every deployment of the API; `None` if the API itself is gone.
async fn list(aws: &Aws, api_id: &str) -> Result<Option<Vec<aws_sdk_apigateway::types::Deployment>>> {
    let items = aws
        .apigateway
        .get_deployments()
        .rest_api_id(api_id)
        .into_paginator()
        .page_size(500)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await;
    match items {
        Ok(items) => Ok(Some(items)),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(None),
        Err(e) => Err(ProviderError::sdk("apigateway:GetDeployments", e)),
    }
}

/// Whether the API lists the deployment (false if the API itself is gone).
async fn exists(aws: &Aws, api_id: &str, deployment_id: &str) -> Result<bool> {
    Ok(list(aws, api_id).await?.is_some_and(|items| items.iter().any(|d| d.id() == Some(deployment_id))))
}

/// The newest deployment of the API whose physical id is not in `taken` (deployments carry no name
/// or tags): for recovering an interrupted create.
pub async fn find(aws: &Aws, api_id: &str, taken: &std::collections::HashSet<String>) -> Result<Option<(String, Live)>> {
    let Some(items) = list(aws, api_id).await? else { return Ok(None) };
    let newest = items
        .iter()
        .filter_map(|d| d.id().map(|id| (d.created_date().map(|t| t.secs()).unwrap_or_default(), format!("{api_id}/{id}"))))
        .filter(|(_, physical)| !taken.contains(physical))
        .max();
    let Some((_, physical)) = newest else { return Ok(None) };
    Ok(read(aws, &physical).await?.map(|l| (physical, l)))
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let api_id = str_attr(d, "rest_api_id");
    let description = str_attr(d, "description");
    let out = send_retrying!(
        "apigateway:CreateDeployment",
        aws.apigateway.create_deployment().rest_api_id(api_id).set_description((!description.is_empty()).then(|| description.to_string()))
    )?;
    let deployment_id = out.id().ok_or_else(|| ProviderError::Other("apigateway:CreateDeployment returned no id".into()))?;
    Ok(Applied { physical_id: format!("{api_id}/{deployment_id}"), outputs: outputs(deployment_id) })
}

/// Every field forces a new deployment, so there is nothing to change in place.
pub async fn update(aws: &Aws, id: &str, _current: &Map<String, Value>, _desired: Desired<'_>) -> Result<Applied> {
    let live = read(aws, id).await?.ok_or_else(|| ProviderError::Other(format!("deployment {id} vanished during update")))?;
    Ok(Applied { physical_id: id.to_string(), outputs: live.outputs })
}

pub async fn delete(aws: &Aws, id: &str) -> Result<()> {
    let (api_id, deployment_id) = split_id("deployment", id)?;
    let request = aws.apigateway.delete_deployment().rest_api_id(api_id).deployment_id(deployment_id);
    match send_retrying!("apigateway:DeleteDeployment", request) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NotFoundException") => Ok(()),
        Err(e) => Err(e),
    }
}

// ---- the kind: schema and the registry's entry ----

use crate::providers::Kind;
use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema};

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
};

/// `aws_api_gateway_deployment`: A snapshot of a REST API's routes that stages serve. Any change to `triggers` makes a new deployment; stages move to it, then the old one is deleted.
pub struct Deployment;

impl Resource for Deployment {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::Deployment;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(_spec: &Self::Spec) -> Option<String> {
        None
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
        taken: &std::collections::HashSet<String>,
    ) -> Result<Option<(String, Observed<Self::Spec>)>> {
        Ok(find(aws, super::super::str_attr(spec, "rest_api_id"), taken)
            .await?
            .map(|(id, l)| (id, Observed { spec: l.attrs, outputs: l.outputs })))
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
