//! `aws_api_gateway_rest_api`: REST APIs with their resource tree, methods and integrations.
//!
//! Physical id: the REST API id. `routes` is the flattened view of the resource tree: one entry per
//! method, keyed by `(path, method)`; resources exist only to hold methods.

mod routes;

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_apigateway::operation::delete_method::DeleteMethodError;
use aws_sdk_apigateway::operation::delete_resource::DeleteResourceError;
use aws_sdk_apigateway::operation::delete_rest_api::DeleteRestApiError;
use aws_sdk_apigateway::operation::get_method::GetMethodError;
use aws_sdk_apigateway::operation::get_resources::GetResourcesError;
use aws_sdk_apigateway::operation::get_rest_api::GetRestApiError;
use aws_sdk_apigateway::types::{EndpointConfiguration, EndpointType, IntegrationType, Op, Resource as ApiResource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use routes::Route;

use super::{is_throttled, partition, patch, rest_api_arn, send_classified};
use crate::artifact::Artifact;
use crate::providers::batch::{self, Lookup};
use crate::providers::resource::{NameCheck, Observed, Placement, Resource};
use crate::providers::retry::{self, Backoff};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::tags::TagChanges;
use crate::providers::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, rules};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_api_gateway_rest_api",
    doc: "An API Gateway REST API with its resource tree, methods and integrations (`routes`).",
    fields: &[
        Field::new("name", T::String, "API name").required().check(rules::rest_api_name),
        Field::new("description", T::String, "Description").default(DefaultValue::Str("")),
        Field::new("endpoint_type", T::String, "Endpoint type")
            .default(DefaultValue::Str("REGIONAL"))
            .one_of(&["REGIONAL", "EDGE", "PRIVATE"])
            .force_new(),
        Field::new("routes", T::JsonList, "Methods by path, each with its integration; see the manifest reference")
            .default(DefaultValue::EmptyList)
            .identity(&["method", "path"]),
        TAGS,
    ],
    physical_name: "name",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[
        ("id", "REST API id"),
        ("root_resource_id", "Id of the `/` resource"),
        ("arn", "`arn:aws:apigateway:<region>::/restapis/<id>`"),
        ("execution_arn", "`arn:aws:execute-api:<region>:<account>:<id>`, for Lambda permissions"),
        ("model_hash", "Hash of the routes: a deployment trigger that changes when any method or integration changes"),
    ],
    taggable: true,
    singleton: false,
    identity: crate::providers::schema::Identity::Fields(&["name"]),
};

/// A REST API as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestApiSpec {
    pub name: String,
    pub description: String,
    /// REGIONAL, EDGE or PRIVATE.
    pub endpoint_type: String,
    pub tags: BTreeMap<String, String>,
    /// Sorted by path and method when read.
    pub routes: Vec<Route>,
}

/// `aws_api_gateway_rest_api`: An API Gateway REST API with its resource tree, methods and integrations (`routes`).
pub struct RestApi;

fn not_found_on_get_rest_api(e: &GetRestApiError) -> ErrorClass {
    if e.is_not_found_exception() { ErrorClass::NotFound } else { ErrorClass::Other }
}

/// All resources of the API with their methods embedded; `None` if the API is gone.
async fn resources(aws: &Aws, api_id: &str) -> Result<Option<Vec<ApiResource>>> {
    aws.apigateway
        .get_resources()
        .rest_api_id(api_id)
        .embed("methods")
        .into_paginator()
        .page_size(500)
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| {
            ProviderError::sdk_classified("apigateway:GetResources", e, |e| match e {
                GetResourcesError::NotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            })
        })
        .or_gone()
}

/// The resources of an API that must be there (one being changed).
async fn existing_resources(aws: &Aws, api_id: &str) -> Result<Vec<ApiResource>> {
    resources(aws, api_id).await?.ok_or_else(|| ProviderError::Other(format!("REST API {api_id} vanished while being changed")))
}

/// The routes the resource tree holds, sorted by path and method.
async fn live_routes(aws: &Aws, api_id: &str, resources: &[ApiResource]) -> Result<Vec<Route>> {
    let mut routes = Vec::new();
    for r in resources {
        let (Some(path), Some(methods)) = (r.path(), r.resource_methods()) else {
            continue;
        };
        for (key, m) in methods {
            if m.authorization_type().is_some() || m.method_integration().is_some() {
                routes.push(Route::from_method(
                    path,
                    key,
                    m.http_method(),
                    m.authorization_type(),
                    m.method_responses(),
                    m.method_integration(),
                ));
                continue;
            }
            // Not embedded (only the method's name came back): ask for the method itself.
            let Some(resource_id) = r.id() else { continue };
            let out = aws.apigateway.get_method().rest_api_id(api_id).resource_id(resource_id).http_method(key).send().await.map_err(|e| {
                ProviderError::sdk_classified("apigateway:GetMethod", e, |e| match e {
                    GetMethodError::NotFoundException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
                })
            });
            let Some(out) = out.or_gone()? else { continue };
            routes.push(Route::from_method(
                path,
                key,
                out.http_method(),
                out.authorization_type(),
                out.method_responses(),
                out.method_integration(),
            ));
        }
    }
    routes.sort_by_key(Route::key);
    Ok(routes)
}

fn root_id(resources: &[ApiResource]) -> Option<&str> {
    resources.iter().find(|r| r.path() == Some("/")).and_then(ApiResource::id)
}

async fn outputs(aws: &Aws, api_id: &str, root_resource_id: &str, routes: &[Route]) -> Result<BTreeMap<String, String>> {
    let region = &aws.region;
    let account = aws.account_id().await?;
    Ok(BTreeMap::from([
        ("id".into(), api_id.to_string()),
        ("root_resource_id".into(), root_resource_id.to_string()),
        ("arn".into(), rest_api_arn(region, api_id)),
        ("execution_arn".into(), format!("arn:{}:execute-api:{region}:{account}:{api_id}", partition(region))),
        ("model_hash".into(), routes::model_hash(routes)),
    ]))
}

/// Puts `routes` into the API (creating the resources their paths need); returns the root resource id.
async fn build_routes<'a>(aws: &Aws, api_id: &str, routes: impl Iterator<Item = &'a Route>) -> Result<String> {
    let resources = existing_resources(aws, api_id).await?;
    let mut ids = path_ids(&resources);
    for route in routes {
        let resource_id = ensure_path(aws, api_id, &mut ids, &route.path).await?;
        put_route(aws, api_id, &resource_id, route).await?;
    }
    ids.get("/").cloned().ok_or_else(|| ProviderError::Other(format!("REST API {api_id} has no root resource")))
}

fn path_ids(resources: &[ApiResource]) -> HashMap<String, String> {
    resources.iter().filter_map(|r| Some((r.path()?.to_string(), r.id()?.to_string()))).collect()
}

/// The id of the resource at `path`, creating missing segments (and reusing existing ones).
async fn ensure_path(aws: &Aws, api_id: &str, ids: &mut HashMap<String, String>, path: &str) -> Result<String> {
    let mut current = "/".to_string();
    let mut id = ids.get("/").cloned().ok_or_else(|| ProviderError::Other(format!("REST API {api_id} has no root resource")))?;
    for segment in routes::segments(path) {
        let next = if current == "/" { format!("/{segment}") } else { format!("{current}/{segment}") };
        id = match ids.get(&next) {
            Some(existing) => existing.clone(),
            None => {
                let request = aws.apigateway.create_resource().rest_api_id(api_id).parent_id(&id).path_part(segment);
                let out = retry::send("apigateway:CreateResource", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
                let new = out.id().ok_or_else(|| ProviderError::Other("apigateway:CreateResource returned no id".into()))?.to_string();
                ids.insert(next.clone(), new.clone());
                new
            }
        };
        current = next;
    }
    Ok(id)
}

/// PutMethod, its method responses, the integration and its integration responses.
async fn put_route(aws: &Aws, api_id: &str, resource_id: &str, route: &Route) -> Result<()> {
    let api = &aws.apigateway;
    let request =
        api.put_method().rest_api_id(api_id).resource_id(resource_id).http_method(&route.method).authorization_type(&route.authorization);
    retry::send("apigateway:PutMethod", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
    for code in &route.method_responses {
        let request = api.put_method_response().rest_api_id(api_id).resource_id(resource_id).http_method(&route.method).status_code(code);
        retry::send("apigateway:PutMethodResponse", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
    }
    let Some(i) = &route.integration else {
        return Ok(());
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let request = api
        .put_integration()
        .rest_api_id(api_id)
        .resource_id(resource_id)
        .http_method(&route.method)
        .r#type(IntegrationType::from(i.kind.as_str()))
        .set_uri(non_empty(&i.uri))
        .set_integration_http_method(non_empty(&i.http_method))
        .set_credentials(non_empty(&i.credentials));
    retry::send("apigateway:PutIntegration", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
    for code in &i.integration_responses {
        let request =
            api.put_integration_response().rest_api_id(api_id).resource_id(resource_id).http_method(&route.method).status_code(code);
        retry::send("apigateway:PutIntegrationResponse", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
    }
    Ok(())
}

/// Deletes a method; one already gone is success.
async fn delete_method(aws: &Aws, api_id: &str, resource_id: &str, method: &str) -> Result<()> {
    let request = aws.apigateway.delete_method().rest_api_id(api_id).resource_id(resource_id).http_method(method);
    send_classified(
        "apigateway:DeleteMethod",
        |e| match e {
            DeleteMethodError::NotFoundException(_) => ErrorClass::NotFound,
            _ => ErrorClass::Other,
        },
        || request.clone().send(),
    )
    .await
    .or_gone()
    .map(drop)
}

/// Deletes resources (other than the root) that hold no methods and no children, deepest first.
async fn prune(aws: &Aws, api_id: &str) -> Result<()> {
    let mut resources = existing_resources(aws, api_id).await?;
    resources.sort_by_key(|r| std::cmp::Reverse(r.path().map_or(0, routes::depth)));
    let mut children: HashMap<String, usize> = HashMap::new();
    for r in &resources {
        if let Some(parent) = r.parent_id() {
            *children.entry(parent.to_string()).or_default() += 1;
        }
    }
    for r in &resources {
        let (Some(id), Some(path)) = (r.id(), r.path()) else { continue };
        let has_methods = r.resource_methods().is_some_and(|m| !m.is_empty());
        if path == "/" || has_methods || children.get(id).is_some_and(|n| *n > 0) {
            continue;
        }
        let request = aws.apigateway.delete_resource().rest_api_id(api_id).resource_id(id);
        send_classified(
            "apigateway:DeleteResource",
            |e| match e {
                DeleteResourceError::NotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            },
            || request.clone().send(),
        )
        .await
        .or_gone()?;
        if let Some(n) = r.parent_id().and_then(|p| children.get_mut(p)) {
            *n = n.saturating_sub(1);
        }
    }
    Ok(())
}

/// A tag call on the API ARN that the endpoint answered with something that is not an AWS error (moto
/// answers HTTP 404 with HTML): the write failed, and says so plainly (tags are set at creation, so
/// only a later change needs these calls).
fn refused(operation: &str, arn: &str, result: Result<()>) -> Result<()> {
    match result {
        Err(ProviderError::Unsupported { operation: op, status }) => Err(ProviderError::Other(format!(
            "{op}: the endpoint refused {operation} on {arn} (HTTP {status}, not an AWS answer); the REST API's tags were not changed"
        ))),
        other => other,
    }
}

/// Every REST API in the region (one paged `GetRestApis`).
async fn all(aws: &Aws) -> Result<Vec<aws_sdk_apigateway::types::RestApi>> {
    aws.apigateway
        .get_rest_apis()
        .into_paginator()
        .page_size(500)
        .items()
        .send()
        .collect::<std::result::Result<Vec<_>, _>>()
        .await
        .map_err(|e| ProviderError::sdk("apigateway:GetRestApis", e))
}

/// What `read` takes from `GetRestApi`, or from the API's entry in `GetRestApis`.
#[derive(Debug, Clone)]
struct Head {
    name: Option<String>,
    description: Option<String>,
    endpoint_configuration: Option<EndpointConfiguration>,
    tags: Option<HashMap<String, String>>,
    root_resource_id: Option<String>,
}

/// Every REST API in the region by id, from at most `max_pages` pages of `GetRestApis` (the batch's
/// collection read; it holds what it got to).
async fn listed(aws: &Aws, max_pages: usize) -> Result<Option<batch::Collection<Head>>> {
    let mut pages = aws.apigateway.get_rest_apis().into_paginator().page_size(500).send();
    let mut items = HashMap::new();
    for _ in 0..max_pages {
        let Some(page) = pages.next().await else { break };
        for a in page.map_err(|e| ProviderError::sdk("apigateway:GetRestApis", e))?.items.unwrap_or_default() {
            let Some(id) = a.id else { continue };
            let head = Head {
                name: a.name,
                description: a.description,
                endpoint_configuration: a.endpoint_configuration,
                tags: a.tags,
                root_resource_id: a.root_resource_id,
            };
            items.insert(id, head);
        }
    }
    Ok(Some(items))
}

/// (id, name) of every REST API in the region (one paged `GetRestApis`).
pub async fn list_names(aws: &Aws) -> Result<Vec<(String, String)>> {
    Ok(all(aws).await?.iter().filter_map(|a| Some((a.id()?.to_string(), a.name()?.to_string()))).collect())
}

impl Resource for RestApi {
    type Spec = RestApiSpec;
    const KIND: Kind = Kind::RestApi;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    /// AWS assigns the id; names are not unique.
    fn physical_id(_spec: &RestApiSpec) -> Option<String> {
        None
    }

    fn name_check(spec: &RestApiSpec) -> NameCheck {
        NameCheck::Listed { name: spec.name.clone(), noun: "REST API" }
    }

    fn placement(_id: &str) -> Placement {
        Placement::Regional
    }

    async fn list_names(aws: &Aws) -> Result<Vec<(String, String)>> {
        list_names(aws).await
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    /// The REST API id (also the physical id).
    fn assigned_id(outputs: &BTreeMap<String, String>) -> Option<String> {
        outputs.get("id").cloned()
    }

    fn derived_outputs(spec: &RestApiSpec) -> BTreeMap<String, String> {
        BTreeMap::from([("model_hash".to_string(), routes::model_hash(&spec.routes))])
    }

    /// An update puts the routes a failed create did not.
    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<RestApiSpec>>> {
        let api = match batch::lookup(aws, Kind::RestApi, id, |_, max_pages| listed(aws, max_pages)).await {
            Lookup::Found(api) => api,
            Lookup::Gone => return Ok(None),
            Lookup::Unknown => {
                let out = aws
                    .apigateway
                    .get_rest_api()
                    .rest_api_id(id)
                    .send()
                    .await
                    .map_err(|e| ProviderError::sdk_classified("apigateway:GetRestApi", e, not_found_on_get_rest_api))
                    .or_gone()?;
                let Some(out) = out else { return Ok(None) };
                Head {
                    name: out.name,
                    description: out.description,
                    endpoint_configuration: out.endpoint_configuration,
                    tags: out.tags,
                    root_resource_id: out.root_resource_id,
                }
            }
        };
        let Some(resources) = resources(aws, id).await? else { return Ok(None) };
        let routes = live_routes(aws, id, &resources).await?;
        // Tags come with GetRestApi (GetTags on the API ARN is not supported everywhere).
        let tags = api.tags.map(|t| t.into_iter().collect()).unwrap_or_default();
        let endpoint_type = api.endpoint_configuration.as_ref().and_then(|c| c.types().first()).map_or("EDGE", EndpointType::as_str);
        let root = api.root_resource_id.as_deref().or_else(|| root_id(&resources)).unwrap_or_default();
        let outputs = outputs(aws, id, root, &routes).await?;
        let spec = RestApiSpec {
            name: api.name.unwrap_or_default(),
            description: api.description.unwrap_or_default(),
            endpoint_type: endpoint_type.to_string(),
            tags,
            routes,
        };
        Ok(Some(Observed { spec, outputs }))
    }

    /// A REST API by name among those carrying the spec's ownership tags (API names are not unique,
    /// tags tell ours apart): for recovering an interrupted create.
    async fn find(aws: &Aws, spec: &RestApiSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<RestApiSpec>)>> {
        let apis = all(aws).await?;
        let ownership: Vec<_> = spec.tags.iter().filter(|(k, _)| k.starts_with("reconcile:")).collect();
        let ours = apis
            .iter()
            .filter(|a| a.name() == Some(spec.name.as_str()))
            .find(|a| ownership.iter().all(|(k, v)| a.tags().and_then(|t| t.get(*k)) == Some(*v)));
        let Some(id) = ours.and_then(|a| a.id()) else { return Ok(None) };
        Ok(Self::read(aws, id).await?.map(|o| (id.to_string(), o)))
    }

    async fn create(aws: &Aws, spec: &RestApiSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let routes = routes::by_key(&spec.routes)?;
        let endpoint_type = if spec.endpoint_type.is_empty() { "REGIONAL" } else { spec.endpoint_type.as_str() };
        // API names are not unique: CreateRestApi has no name clash to report.
        let request = aws
            .apigateway
            .create_rest_api()
            .name(&spec.name)
            .set_description((!spec.description.is_empty()).then(|| spec.description.clone()))
            .endpoint_configuration(EndpointConfiguration::builder().types(EndpointType::from(endpoint_type)).build())
            .set_tags((!spec.tags.is_empty()).then(|| spec.tags.clone().into_iter().collect()));
        let out = retry::send("apigateway:CreateRestApi", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
        let api_id = out.id().ok_or_else(|| ProviderError::Other("apigateway:CreateRestApi returned no id".into()))?.to_string();
        match build_routes(aws, &api_id, routes.into_values()).await {
            Ok(root) => Ok(Applied { outputs: outputs(aws, &api_id, &root, &spec.routes).await?, physical_id: api_id }),
            Err(e) => {
                // Do not leave a half-built API behind that nothing records.
                if let Err(cleanup) = aws.apigateway.delete_rest_api().rest_api_id(&api_id).send().await {
                    tracing::warn!(api_id, error = %ProviderError::sdk("apigateway:DeleteRestApi", cleanup),
                        "could not delete the partly created REST API; delete it by hand");
                }
                Err(e)
            }
        }
    }

    async fn update(aws: &Aws, id: &str, current: &RestApiSpec, desired: &RestApiSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let want = routes::by_key(&desired.routes)?;

        let mut ops = Vec::new();
        if current.name != desired.name {
            ops.push(patch(Op::Replace, "/name", Some(&desired.name)));
        }
        if current.description != desired.description {
            ops.push(patch(Op::Replace, "/description", Some(&desired.description)));
        }
        if !ops.is_empty() {
            let request = aws.apigateway.update_rest_api().rest_api_id(id).set_patch_operations(Some(ops));
            retry::send("apigateway:UpdateRestApi", Backoff::THROTTLE, is_throttled, || request.clone().send()).await?;
        }

        // Routes: compare against what is there now (not only `current`), since resource ids are needed anyway.
        let resources = existing_resources(aws, id).await?;
        let mut ids = path_ids(&resources);
        let have: BTreeMap<_, Route> = live_routes(aws, id, &resources).await?.into_iter().map(|r| (r.key(), r)).collect();
        let mut removed = false;
        for (key, route) in &want {
            if have.get(key) == Some(*route) {
                continue;
            }
            if have.contains_key(key)
                && let Some(resource_id) = ids.get(&route.path)
            {
                delete_method(aws, id, resource_id, &route.method).await?;
            }
            let resource_id = ensure_path(aws, id, &mut ids, &route.path).await?;
            put_route(aws, id, &resource_id, route).await?;
        }
        for (key, route) in &have {
            if want.contains_key(key) {
                continue;
            }
            if let Some(resource_id) = ids.get(&route.path) {
                delete_method(aws, id, resource_id, &route.method).await?;
                removed = true;
            }
        }
        if removed {
            prune(aws, id).await?;
        }

        let arn = rest_api_arn(&aws.region, id);
        let arn = arn.as_str();
        TagChanges::between(&current.tags, &desired.tags)
            .apply(
                |set| async move {
                    let request = aws.apigateway.tag_resource().resource_arn(arn).set_tags(Some(set.into_iter().collect()));
                    let sent = retry::send("apigateway:TagResource", Backoff::THROTTLE, is_throttled, || request.clone().send()).await;
                    refused("TagResource", arn, sent.map(drop))
                },
                |keys| async move {
                    let request = aws.apigateway.untag_resource().resource_arn(arn).set_tag_keys(Some(keys));
                    let sent = retry::send("apigateway:UntagResource", Backoff::THROTTLE, is_throttled, || request.clone().send()).await;
                    refused("UntagResource", arn, sent.map(drop))
                },
            )
            .await?;

        let root = ids.get("/").cloned().ok_or_else(|| ProviderError::Other(format!("REST API {id} has no root resource")))?;
        Ok(Applied { physical_id: id.to_string(), outputs: outputs(aws, id, &root, &desired.routes).await? })
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        // Some endpoints (moto) answer 500 to DeleteRestApi for an unknown id: look first.
        let there = aws
            .apigateway
            .get_rest_api()
            .rest_api_id(id)
            .send()
            .await
            .map_err(|e| ProviderError::sdk_classified("apigateway:GetRestApi", e, not_found_on_get_rest_api))
            .or_gone()?;
        if there.is_none() {
            return Ok(());
        }
        let request = aws.apigateway.delete_rest_api().rest_api_id(id);
        send_classified(
            "apigateway:DeleteRestApi",
            |e| match e {
                DeleteRestApiError::NotFoundException(_) => ErrorClass::NotFound,
                _ => ErrorClass::Other,
            },
            || request.clone().send(),
        )
        .await
        .or_gone()
        .map(drop)
    }

    fn structured(field: &str, value: Value) -> std::result::Result<Value, String> {
        match field {
            "routes" => Route::parse(value).map(|r| r.to_value()),
            _ => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_round_trip() {
        let attrs = json!({
            "name": "hello-api",
            "description": "Hello",
            "endpoint_type": "REGIONAL",
            "tags": {"reconcile:stack": "s", "team": "x"},
            "routes": [
                {"path": "/book", "method": "GET", "authorization": "NONE", "method_responses": ["200"],
                 "integration": {"type": "AWS_PROXY", "uri": "${fn.invoke_arn}", "http_method": "POST",
                                 "credentials": "${role.arn}", "integration_responses": ["200"]}},
                {"path": "/bare", "method": "GET", "authorization": "NONE", "method_responses": []},
            ],
        });
        let attrs = attrs.as_object().unwrap();
        let provider = Kind::RestApi.provider();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(provider.physical_id(attrs).unwrap(), None, "AWS assigns the id");
        let hash = provider.derived_outputs(attrs).unwrap();
        assert_eq!(hash.keys().collect::<Vec<_>>(), ["model_hash"]);
        let mut wrong = attrs.clone();
        wrong["routes"][0]["method_responses"] = json!("200");
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent default");
        let mut unknown = attrs.clone();
        unknown["routes"][0]["integration"]["timeout"] = json!(29);
        assert!(provider.normalize(&unknown).is_err(), "an unknown field of a route is refused, not dropped");
        let mut unknown = attrs.clone();
        unknown.insert("policy".into(), json!(""));
        assert!(provider.normalize(&unknown).is_err(), "an unknown field is refused, not dropped");
    }

    #[test]
    fn the_routes_hook_returns_the_canonical_route() {
        let provider = Kind::RestApi.provider();
        let route =
            provider.structured("routes", json!({"path": "/order", "method": "get", "integration": {"type": "AWS_PROXY", "uri": "u"}}));
        assert_eq!(
            route.unwrap(),
            json!({"path": "/order", "method": "GET", "authorization": "NONE", "method_responses": [],
                   "integration": {"type": "AWS_PROXY", "uri": "u", "http_method": "POST", "credentials": "", "integration_responses": []}})
        );
        let bad = provider.structured("routes", json!({"path": "order", "method": "GET", "integration": {"type": "MOCK"}}));
        assert_eq!(bad.unwrap_err(), "`path` = \"order\" must start with `/` and have no empty segments");
    }
}
