//! Routes: one method of one resource with its integration, as the manifest writes it (validated and
//! given its defaults once, by the kind's `structured` hook) and as `read` reports it.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_apigateway::types::{IntegrationType, MethodResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::providers::structured::{object, one_of, opt_str, req_str, str_list};
use crate::providers::{ProviderError, Result};

const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"];
const AUTHORIZATIONS: &[&str] = &["NONE", "AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS"];
const INTEGRATION_TYPES: &[&str] = &["AWS_PROXY", "AWS", "HTTP", "HTTP_PROXY", "MOCK"];

/// One method of one resource, with its integration (an entry of `routes`). Status code lists are
/// sorted and without repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path: String,
    pub method: String,
    pub authorization: String,
    pub method_responses: Vec<String>,
    /// Always there in a manifest; a method made by hand may have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<Integration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    #[serde(rename = "type")]
    pub kind: String,
    /// Empty for a MOCK integration.
    pub uri: String,
    pub http_method: String,
    /// Empty: no role.
    pub credentials: String,
    pub integration_responses: Vec<String>,
}

/// Where a route sits: routes are keyed by path and method.
pub type RouteKey = (String, String);

impl Route {
    /// Validates a route as the manifest writes it and fills in its defaults (`authorization` NONE,
    /// `integration.http_method` POST, none for MOCK; empty lists and strings).
    pub fn parse(value: Value) -> std::result::Result<Route, String> {
        let map = object(value, &["path", "method", "authorization", "method_responses", "integration"])?;
        let path = req_str(&map, "path")?;
        if !path.starts_with('/') || (path.len() > 1 && path.ends_with('/')) || path.contains("//") {
            return Err(format!("`path` = \"{path}\" must start with `/` and have no empty segments"));
        }
        let method = one_of(req_str(&map, "method")?.to_uppercase(), "method", HTTP_METHODS)?;
        let authorization = one_of(opt_str(&map, "authorization", "NONE")?, "authorization", AUTHORIZATIONS)?;
        let Some(integration) = map.get("integration").cloned() else { return Err("missing `integration`".into()) };
        let i = object(integration, &["type", "uri", "http_method", "credentials", "integration_responses"])
            .map_err(|e| format!("`integration`: {e}"))?;
        let kind = one_of(req_str(&i, "type")?, "integration.type", INTEGRATION_TYPES)?;
        let uri = opt_str(&i, "uri", "")?;
        if kind != "MOCK" && uri.is_empty() {
            return Err(format!("`integration.uri` is required for a {kind} integration"));
        }
        let method_responses = str_list(&map, "method_responses")?;
        let http_method = match opt_str(&i, "http_method", "")?.to_uppercase() {
            // A MOCK integration calls no backend: AWS needs no method, and reads none back unless one was sent.
            m if m.is_empty() && kind == "MOCK" => m,
            m if m.is_empty() => "POST".to_string(),
            m => one_of(m, "integration.http_method", HTTP_METHODS)?,
        };
        let integration = Integration {
            kind,
            uri,
            http_method,
            credentials: opt_str(&i, "credentials", "")?,
            integration_responses: str_list(&i, "integration_responses")?,
        };
        Ok(Route { path, method, authorization, method_responses, integration: Some(integration) })
    }

    /// The route as JSON: the canonical shape the manifest stores and `read` reports.
    pub fn to_value(&self) -> Value {
        // A struct of strings, lists and an optional struct always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn key(&self) -> RouteKey {
        (self.path.clone(), self.method.clone())
    }

    /// A route read from a method (`key` is the method's key in the resource's method map).
    pub fn from_method(
        path: &str,
        key: &str,
        http_method: Option<&str>,
        authorization: Option<&str>,
        method_responses: Option<&HashMap<String, MethodResponse>>,
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
                integration_responses: sorted_codes(i.integration_responses().into_iter().flat_map(|m| m.keys())),
            }),
        }
    }
}

fn sorted_codes<'a>(codes: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = codes.into_iter().cloned().collect();
    v.sort();
    v.dedup();
    v
}

/// The routes by path and method; a path and method given twice is refused.
pub fn by_key(routes: &[Route]) -> Result<BTreeMap<RouteKey, &Route>> {
    let mut out = BTreeMap::new();
    for (i, route) in routes.iter().enumerate() {
        if out.insert(route.key(), route).is_some() {
            return Err(ProviderError::Other(format!("routes[{i}] repeats a path and method")));
        }
    }
    Ok(out)
}

/// Hash of the routes, known from the manifest alone: a deployment trigger. Independent of the order
/// of routes, so the manifest and a read of AWS agree. The text hashed is each route's canonical JSON
/// (keys sorted), sorted, one per line: existing deployments use the hash as a trigger, so it must
/// not change for the same routes.
pub fn model_hash(routes: &[Route]) -> String {
    use sha2::Digest;
    let mut lines: Vec<String> = routes.iter().map(|r| crate::canonical::canonical_string(&r.to_value())).collect();
    lines.sort();
    let digest = sha2::Sha256::digest(lines.join("\n").as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The path segments of `/a/b` (none for the root `/`).
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

pub fn depth(path: &str) -> usize {
    segments(path).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The manifest's canonical shape of `routes` (what the `structured` hook returns).
    fn book() -> Value {
        json!({"path": "/book", "method": "GET", "authorization": "NONE", "method_responses": ["200"],
               "integration": {"type": "AWS_PROXY", "uri": "${hello_function.invoke_arn}", "http_method": "POST",
                               "credentials": "${api_invoke_role.arn}", "integration_responses": ["200"]}})
    }

    #[test]
    fn a_route_is_parsed_once_into_its_canonical_shape() {
        let written = json!({"path": "/book", "method": "get", "method_responses": ["200", "200"],
            "integration": {"type": "AWS_PROXY", "uri": "${hello_function.invoke_arn}", "credentials": "${api_invoke_role.arn}",
                            "integration_responses": ["200"]}});
        let route = Route::parse(written).unwrap();
        assert_eq!(route.to_value(), book(), "defaults filled in, method upper-cased, codes deduplicated");
        assert_eq!(serde_json::from_value::<Route>(book()).unwrap(), route, "the canonical JSON reads back as the same route");
        let mock = Route::parse(json!({"path": "/", "method": "ANY", "integration": {"type": "MOCK"}})).unwrap();
        assert_eq!(
            mock.integration.as_ref().map(|i| (i.uri.as_str(), i.http_method.as_str())),
            Some(("", "")),
            "a MOCK integration has no backend method unless one is given"
        );
    }

    #[test]
    fn a_bad_route_is_refused_with_the_same_words_as_before() {
        let cases = [
            (
                json!({"path": "order", "method": "GET", "integration": {"type": "MOCK"}}),
                "`path` = \"order\" must start with `/` and have no empty segments",
            ),
            (
                json!({"path": "/a", "method": "FETCH", "integration": {"type": "MOCK"}}),
                "`method` = \"FETCH\" is not one of: GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, ANY",
            ),
            (json!({"path": "/a", "method": "GET"}), "missing `integration`"),
            (
                json!({"path": "/a", "method": "GET", "integration": {"type": "AWS_PROXY"}}),
                "`integration.uri` is required for a AWS_PROXY integration",
            ),
            (
                json!({"path": "/a", "method": "GET", "integration": {"type": "MOCK", "url": "x"}}),
                "`integration`: unknown key `url`; expected one of: type, uri, http_method, credentials, integration_responses; did you mean `uri`?",
            ),
            (
                json!({"path": "/a", "verb": "GET"}),
                "unknown key `verb`; expected one of: path, method, authorization, method_responses, integration",
            ),
            (
                json!({"path": "/a", "method": "GET", "method_responses": [200], "integration": {"type": "MOCK"}}),
                "`method_responses` must be an array of strings",
            ),
            (json!({"method": "GET"}), "missing `path`"),
        ];
        for (value, message) in cases {
            assert_eq!(Route::parse(value.clone()).unwrap_err(), message, "{value}");
        }
    }

    /// Deployments use `model_hash` as a trigger: the values below were computed by the code that
    /// hashed the routes' JSON before routes were typed; a different hash would redeploy every stack.
    #[test]
    fn model_hash_is_unchanged_by_typed_routes() {
        let order = json!({"path": "/order/{id}", "method": "ANY", "authorization": "AWS_IAM", "method_responses": ["200", "404"],
            "integration": {"type": "MOCK", "uri": "", "http_method": "POST", "credentials": "", "integration_responses": []}});
        let proxy = json!({"path": "/order", "method": "GET", "authorization": "NONE", "method_responses": [],
            "integration": {"type": "AWS_PROXY", "uri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:hello/invocations",
                            "http_method": "POST", "credentials": "", "integration_responses": []}});
        let bare = json!({"path": "/bare", "method": "GET", "authorization": "NONE", "method_responses": []});
        let typed = |values: Vec<Value>| -> Vec<Route> { values.into_iter().map(|v| serde_json::from_value(v).unwrap()).collect() };
        assert_eq!(model_hash(&typed(vec![book(), order.clone()])), "dc9c28b32587f3e7133d8116");
        assert_eq!(model_hash(&typed(vec![order, book()])), "dc9c28b32587f3e7133d8116", "independent of the routes' order");
        assert_eq!(model_hash(&typed(vec![proxy])), "d4a50426d2d6f83169fc3361");
        assert_eq!(model_hash(&typed(vec![bare])), "a28025ef395891ea92951ca3", "a method without integration (made by hand)");
        assert_eq!(model_hash(&[]), "e3b0c44298fc1c149afbf4c8");
    }

    #[test]
    fn repeated_routes_are_refused() {
        let route: Route = serde_json::from_value(book()).unwrap();
        assert_eq!(by_key(std::slice::from_ref(&route)).unwrap().len(), 1);
        let err = by_key(&[route.clone(), route]).unwrap_err();
        assert_eq!(err.to_string(), "routes[1] repeats a path and method");
    }
}
