//! REST APIs with their resource tree, methods and integrations.
//!
//! Physical id: the REST API id. `routes` is the flattened view of the resource tree: one entry per
//! method, keyed by `(path, method)`; resources exist only to hold methods.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_apigateway::types::{EndpointConfiguration, EndpointType, IntegrationType, Op, Resource};
use serde_json::{Map, Value, json};

use super::{partition, patch, rest_api_arn};
use crate::providers::{Applied, Aws, Desired, Live, ProviderError, Result, changed, str_attr, string_map, tag_changes, tags_value};

/// One method of one resource, with its integration (the shape of an entry of `routes`).
#[derive(Debug, Clone, PartialEq)]
struct Route {
    path: String,
    method: String,
    authorization: String,
    method_responses: Vec<String>,
    integration: Option<Integration>,
}

#[derive(Debug, Clone, PartialEq)]
struct Integration {
    kind: String,
    uri: String,
    http_method: String,
    credentials: String,
    responses: Vec<String>,
}

fn sorted_codes<'a>(codes: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = codes.into_iter().cloned().collect();
    v.sort();
    v.dedup();
    v
}

fn codes_of(v: &Value, key: &str) -> Vec<String> {
    let codes: Vec<String> = v
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| match c {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    sorted_codes(&codes)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl Route {
    /// Reads a route as the manifest writes it (`authorization` defaults to NONE).
    fn from_value(i: usize, v: &Value) -> Result<Route> {
        let path = str_of(v, "path");
        let method = str_of(v, "method");
        if path.is_empty() || method.is_empty() {
            return Err(ProviderError::Other(format!("routes[{i}] needs a `path` and a `method`")));
        }
        let authorization = match str_of(v, "authorization") {
            "" => "NONE",
            a => a,
        };
        let integration = v.get("integration").filter(|i| i.is_object()).map(|i| Integration {
            kind: str_of(i, "type").to_string(),
            uri: str_of(i, "uri").to_string(),
            http_method: str_of(i, "http_method").to_string(),
            credentials: str_of(i, "credentials").to_string(),
            responses: codes_of(i, "integration_responses"),
        });
        Ok(Route {
            path: path.to_string(),
            method: method.to_string(),
            authorization: authorization.to_string(),
            method_responses: codes_of(v, "method_responses"),
            integration,
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("path".into(), json!(self.path));
        m.insert("method".into(), json!(self.method));
        m.insert("authorization".into(), json!(self.authorization));
        m.insert("method_responses".into(), json!(self.method_responses));
        if let Some(i) = &self.integration {
            let mut im = Map::new();
            im.insert("type".into(), json!(i.kind));
            im.insert("uri".into(), json!(i.uri));
            im.insert("http_method".into(), json!(i.http_method));
            im.insert("credentials".into(), json!(i.credentials));
            im.insert("integration_responses".into(), json!(i.responses));
            m.insert("integration".into(), Value::Object(im));
        }
        Value::Object(m)
    }

    fn key(&self) -> (String, String) {
        (self.path.clone(), self.method.clone())
    }
}

fn desired_routes(d: &Map<String, Value>) -> Result<BTreeMap<(String, String), Route>> {
    let mut out = BTreeMap::new();
    for (i, v) in d.get("routes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let route = Route::from_value(i, v)?;
        if out.insert(route.key(), route).is_some() {
            return Err(ProviderError::Other(format!("routes[{i}] repeats a path and method")));
        }
    }
    Ok(out)
}

/// The path segments of `/a/b` (none for the root `/`).
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn depth(path: &str) -> usize {
    segments(path).count()
}

/// All resources of the API with their methods embedded.
async fn resources(aws: &Aws, api_id: &str) -> Result<Vec<Resource>> {
    aws.apigateway
        .get_resources()
        .rest_api_id(api_id)
        .embed("methods")
        .into_paginator()
        .page_size(500)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| ProviderError::sdk("apigateway:GetResources", e))
}

fn route_from_method(
    path: &str,
    key: &str,
    http_method: Option<&str>,
    authorization: Option<&str>,
    method_responses: Option<&HashMap<String, aws_sdk_apigateway::types::MethodResponse>>,
    integration: Option<&aws_sdk_apigateway::types::Integration>,
) -> Route {
    Route {
        path: path.to_string(),
        method: http_method.unwrap_or(key).to_string(),
        authorization: authorization.unwrap_or("NONE").to_string(),
        method_responses: sorted_codes(method_responses.into_iter().flat_map(|m| m.keys())),
        integration: integration.map(|i| Integration {
            kind: i.r#type().map(IntegrationType::as_str).unwrap_or_default().to_string(),
            uri: i.uri().unwrap_or_default().to_string(),
            http_method: i.http_method().unwrap_or_default().to_string(),
            credentials: i.credentials().unwrap_or_default().to_string(),
            responses: sorted_codes(i.integration_responses().into_iter().flat_map(|m| m.keys())),
        }),
    }
}

/// The routes the resource tree holds, sorted by path and method.
async fn live_routes(aws: &Aws, api_id: &str, resources: &[Resource]) -> Result<Vec<Route>> {
    let mut routes = Vec::new();
    for r in resources {
        let (Some(path), Some(methods)) = (r.path(), r.resource_methods()) else {
            continue;
        };
        for (key, m) in methods {
            if m.authorization_type().is_some() || m.method_integration().is_some() {
                routes.push(route_from_method(
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
            let out = match aws.apigateway.get_method().rest_api_id(api_id).resource_id(resource_id).http_method(key).send().await {
                Ok(out) => out,
                Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => continue,
                Err(e) => return Err(ProviderError::sdk("apigateway:GetMethod", e)),
            };
            routes.push(route_from_method(
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

fn root_id(resources: &[Resource]) -> Option<&str> {
    resources.iter().find(|r| r.path() == Some("/")).and_then(Resource::id)
}

async fn outputs(aws: &Aws, api_id: &str, root_resource_id: &str, attrs: &Map<String, Value>) -> Result<BTreeMap<String, String>> {
    let region = &aws.region;
    let account = aws.account_id().await?;
    Ok(BTreeMap::from([
        ("id".into(), api_id.to_string()),
        ("root_resource_id".into(), root_resource_id.to_string()),
        ("arn".into(), rest_api_arn(region, api_id)),
        ("execution_arn".into(), format!("arn:{}:execute-api:{region}:{account}:{api_id}", partition(region))),
        ("model_hash".into(), model_hash(attrs)),
    ]))
}

pub async fn read(aws: &Aws, id: &str) -> Result<Option<Live>> {
    let api = match aws.apigateway.get_rest_api().rest_api_id(id).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => return Ok(None),
        Err(e) => return Err(ProviderError::sdk("apigateway:GetRestApi", e)),
    };
    let resources = match resources(aws, id).await {
        Ok(r) => r,
        Err(e) if e.code() == Some("NotFoundException") => return Ok(None),
        Err(e) => return Err(e),
    };
    let routes = live_routes(aws, id, &resources).await?;
    // Tags come with GetRestApi (GetTags on the API ARN is not supported everywhere).
    let tags: BTreeMap<String, String> = api.tags().map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    let endpoint_type = api.endpoint_configuration().and_then(|c| c.types().first()).map_or("EDGE", EndpointType::as_str);
    let mut attrs = Map::new();
    attrs.insert("name".into(), json!(api.name().unwrap_or_default()));
    attrs.insert("description".into(), json!(api.description().unwrap_or_default()));
    attrs.insert("endpoint_type".into(), json!(endpoint_type));
    attrs.insert("tags".into(), tags_value(&tags));
    attrs.insert("routes".into(), Value::Array(routes.iter().map(Route::to_value).collect()));
    let root = api.root_resource_id().or_else(|| root_id(&resources)).unwrap_or_default();
    let outputs = outputs(aws, id, root, &attrs).await?;
    Ok(Some(Live { attrs, outputs }))
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let routes = desired_routes(d)?;
    let description = str_attr(d, "description");
    let endpoint_type = match str_attr(d, "endpoint_type") {
        "" => "REGIONAL",
        t => t,
    };
    let tags = string_map(d, "tags");
    let out = send_retrying!(
        "apigateway:CreateRestApi",
        aws.apigateway
            .create_rest_api()
            .name(str_attr(d, "name"))
            .set_description((!description.is_empty()).then(|| description.to_string()))
            .endpoint_configuration(EndpointConfiguration::builder().types(EndpointType::from(endpoint_type)).build())
            .set_tags((!tags.is_empty()).then(|| tags.into_iter().collect()))
    )?;
    let api_id = out.id().ok_or_else(|| ProviderError::Other("apigateway:CreateRestApi returned no id".into()))?.to_string();
    match build_routes(aws, &api_id, routes.values()).await {
        Ok(root) => Ok(Applied { outputs: outputs(aws, &api_id, &root, d).await?, physical_id: api_id }),
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

/// Puts `routes` into the API (creating the resources their paths need); returns the root resource id.
async fn build_routes<'a>(aws: &Aws, api_id: &str, routes: impl Iterator<Item = &'a Route>) -> Result<String> {
    let resources = resources(aws, api_id).await?;
    let mut ids = path_ids(&resources);
    for route in routes {
        let resource_id = ensure_path(aws, api_id, &mut ids, &route.path).await?;
        put_route(aws, api_id, &resource_id, route).await?;
    }
    ids.get("/").cloned().ok_or_else(|| ProviderError::Other(format!("REST API {api_id} has no root resource")))
}

fn path_ids(resources: &[Resource]) -> HashMap<String, String> {
    resources.iter().filter_map(|r| Some((r.path()?.to_string(), r.id()?.to_string()))).collect()
}

/// The id of the resource at `path`, creating missing segments (and reusing existing ones).
async fn ensure_path(aws: &Aws, api_id: &str, ids: &mut HashMap<String, String>, path: &str) -> Result<String> {
    let mut current = "/".to_string();
    let mut id = ids.get("/").cloned().ok_or_else(|| ProviderError::Other(format!("REST API {api_id} has no root resource")))?;
    for segment in segments(path) {
        let next = if current == "/" { format!("/{segment}") } else { format!("{current}/{segment}") };
        id = match ids.get(&next) {
            Some(existing) => existing.clone(),
            None => {
                let out = send_retrying!(
                    "apigateway:CreateResource",
                    aws.apigateway.create_resource().rest_api_id(api_id).parent_id(&id).path_part(segment)
                )?;
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
    send_retrying!(
        "apigateway:PutMethod",
        api.put_method().rest_api_id(api_id).resource_id(resource_id).http_method(&route.method).authorization_type(&route.authorization)
    )?;
    for code in &route.method_responses {
        send_retrying!(
            "apigateway:PutMethodResponse",
            api.put_method_response().rest_api_id(api_id).resource_id(resource_id).http_method(&route.method).status_code(code)
        )?;
    }
    let Some(i) = &route.integration else {
        return Ok(());
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    send_retrying!(
        "apigateway:PutIntegration",
        api.put_integration()
            .rest_api_id(api_id)
            .resource_id(resource_id)
            .http_method(&route.method)
            .r#type(IntegrationType::from(i.kind.as_str()))
            .set_uri(non_empty(&i.uri))
            .set_integration_http_method(non_empty(&i.http_method))
            .set_credentials(non_empty(&i.credentials))
    )?;
    for code in &i.responses {
        send_retrying!(
            "apigateway:PutIntegrationResponse",
            api.put_integration_response().rest_api_id(api_id).resource_id(resource_id).http_method(&route.method).status_code(code)
        )?;
    }
    Ok(())
}

async fn delete_method(aws: &Aws, api_id: &str, resource_id: &str, method: &str) -> Result<()> {
    let request = aws.apigateway.delete_method().rest_api_id(api_id).resource_id(resource_id).http_method(method);
    match send_retrying!("apigateway:DeleteMethod", request) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NotFoundException") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes resources (other than the root) that hold no methods and no children, deepest first.
async fn prune(aws: &Aws, api_id: &str) -> Result<()> {
    let mut resources = resources(aws, api_id).await?;
    resources.sort_by_key(|r| std::cmp::Reverse(r.path().map_or(0, depth)));
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
        match send_retrying!("apigateway:DeleteResource", request) {
            Ok(_) => {}
            Err(e) if e.code() == Some("NotFoundException") => {}
            Err(e) => return Err(e),
        }
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

pub async fn update(aws: &Aws, id: &str, current: &Map<String, Value>, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let want = desired_routes(d)?;

    let mut ops = Vec::new();
    for (field, path) in [("name", "/name"), ("description", "/description")] {
        if changed(current, d, field) {
            ops.push(patch(Op::Replace, path, Some(str_attr(d, field))));
        }
    }
    if !ops.is_empty() {
        send_retrying!("apigateway:UpdateRestApi", aws.apigateway.update_rest_api().rest_api_id(id).set_patch_operations(Some(ops)))?;
    }

    // Routes: compare against what is there now (not only `current`), since resource ids are needed anyway.
    let resources = resources(aws, id).await?;
    let mut ids = path_ids(&resources);
    let have: BTreeMap<(String, String), Route> = live_routes(aws, id, &resources).await?.into_iter().map(|r| (r.key(), r)).collect();
    let mut removed = false;
    for (key, route) in &want {
        if have.get(key) == Some(route) {
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
    let (set, remove) = tag_changes(current, d);
    if !set.is_empty() {
        refused(
            "TagResource",
            &arn,
            send_retrying!(
                "apigateway:TagResource",
                aws.apigateway.tag_resource().resource_arn(&arn).set_tags(Some(set.into_iter().collect()))
            )
            .map(|_| ()),
        )?;
    }
    if !remove.is_empty() {
        refused(
            "UntagResource",
            &arn,
            send_retrying!("apigateway:UntagResource", aws.apigateway.untag_resource().resource_arn(&arn).set_tag_keys(Some(remove)))
                .map(|_| ()),
        )?;
    }

    let root = ids.get("/").cloned().ok_or_else(|| ProviderError::Other(format!("REST API {id} has no root resource")))?;
    Ok(Applied { physical_id: id.to_string(), outputs: outputs(aws, id, &root, d).await? })
}

pub async fn delete(aws: &Aws, id: &str) -> Result<()> {
    // Some endpoints (moto) answer 500 to DeleteRestApi for an unknown id: look first.
    match aws.apigateway.get_rest_api().rest_api_id(id).send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => return Ok(()),
        Err(e) => return Err(ProviderError::sdk("apigateway:GetRestApi", e)),
    }
    match send_retrying!("apigateway:DeleteRestApi", aws.apigateway.delete_rest_api().rest_api_id(id)) {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NotFoundException") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Hash of the routes (normalised), known from the manifest alone.
/// Independent of the order of routes and of keys, so the manifest and a read of AWS agree.
pub fn model_hash(desired: &Map<String, Value>) -> String {
    use sha2::Digest;
    let mut routes: Vec<String> = desired
        .get("routes")
        .and_then(Value::as_array)
        .map(|r| r.iter().map(crate::canonical::canonical_string).collect())
        .unwrap_or_default();
    routes.sort();
    let digest = sha2::Sha256::digest(routes.join("\n").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// Every REST API in the region (one paged `GetRestApis`).
async fn all(aws: &Aws) -> Result<Vec<aws_sdk_apigateway::types::RestApi>> {
    aws.apigateway
        .get_rest_apis()
        .into_paginator()
        .page_size(500)
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(|e| ProviderError::sdk("apigateway:GetRestApis", e))
}

/// (id, name) of every REST API in the region (one paged `GetRestApis`).
pub async fn list_names(aws: &Aws) -> Result<Vec<(String, String)>> {
    Ok(all(aws).await?.iter().filter_map(|a| Some((a.id()?.to_string(), a.name()?.to_string()))).collect())
}

/// Finds a REST API by name among those carrying `ownership` tags (API names are not unique, tags
/// tell ours apart): for recovering an interrupted create.
pub async fn find(aws: &Aws, name: &str, ownership: &BTreeMap<String, String>) -> Result<Option<(String, Live)>> {
    let apis = all(aws).await?;
    let ours = apis.iter().filter(|a| a.name() == Some(name)).find(|a| {
        let tags = a.tags();
        ownership.iter().all(|(k, v)| tags.and_then(|t| t.get(k)) == Some(v))
    });
    let Some(id) = ours.and_then(|a| a.id()) else { return Ok(None) };
    Ok(read(aws, id).await?.map(|l| (id.to_string(), l)))
}

// ---- routes as the manifest writes them ----

mod manifest_shape {

    use crate::providers::structured::{object, one_of, opt_str, req_str, str_list};
    use serde_json::{Value, json};

    const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"];

    pub(super) fn route(value: Value) -> Result<Value, String> {
        let map = object(value, &["path", "method", "authorization", "method_responses", "integration"])?;
        let path = req_str(&map, "path")?;
        if !path.starts_with('/') || (path.len() > 1 && path.ends_with('/')) || path.contains("//") {
            return Err(format!("`path` = \"{path}\" must start with `/` and have no empty segments"));
        }
        let method = one_of(req_str(&map, "method")?.to_uppercase(), "method", HTTP_METHODS)?;
        let authorization =
            one_of(opt_str(&map, "authorization", "NONE")?, "authorization", &["NONE", "AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS"])?;
        let Some(integration) = map.get("integration").cloned() else { return Err("missing `integration`".into()) };
        let i = object(integration, &["type", "uri", "http_method", "credentials", "integration_responses"])
            .map_err(|e| format!("`integration`: {e}"))?;
        let kind = one_of(req_str(&i, "type")?, "integration.type", &["AWS_PROXY", "AWS", "HTTP", "HTTP_PROXY", "MOCK"])?;
        let uri = opt_str(&i, "uri", "")?;
        if kind != "MOCK" && uri.is_empty() {
            return Err(format!("`integration.uri` is required for a {kind} integration"));
        }
        Ok(json!({
            "path": path,
            "method": method,
            "authorization": authorization,
            "method_responses": str_list(&map, "method_responses")?,
            "integration": {
                "type": kind,
                "uri": uri,
                "http_method": one_of(opt_str(&i, "http_method", "POST")?.to_uppercase(), "integration.http_method", HTTP_METHODS)?,
                "credentials": opt_str(&i, "credentials", "")?,
                "integration_responses": str_list(&i, "integration_responses")?,
            }
        }))
    }
}

use manifest_shape::route;

// ---- the kind: schema and the registry's entry ----

use crate::providers::resource::Observed;
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema, TAGS};
use crate::providers::{Kind, rules};

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
            .default(DefaultValue::EmptyList),
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
};

/// `aws_api_gateway_rest_api`: An API Gateway REST API with its resource tree, methods and integrations (`routes`).
pub struct RestApi;

impl crate::providers::Resource for RestApi {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::RestApi;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(_spec: &Self::Spec) -> Option<String> {
        None
    }

    fn parent(_id: &str) -> Option<(Kind, String)> {
        None
    }

    fn canonical_id(id: &str) -> String {
        id.to_string()
    }

    fn derived_outputs(spec: &Self::Spec) -> BTreeMap<String, String> {
        BTreeMap::from([("model_hash".to_string(), model_hash(spec))])
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
        let ownership = super::super::string_map(spec, "tags").into_iter().filter(|(k, _)| k.starts_with("reconcile:")).collect();
        Ok(find(aws, super::super::str_attr(spec, "name"), &ownership)
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

    fn structured(field: &str, value: Value) -> std::result::Result<Value, String> {
        match field {
            "routes" => route(value),
            _ => Ok(value),
        }
    }
}
