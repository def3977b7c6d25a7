//! Lambda permissions: statements of a function's resource-based policy.
//!
//! Physical id: `<function_name>/<statement_id>` (the function name as written: a name or an ARN;
//! neither contains `/`, and statement ids cannot either).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::retry::{Backoff, with_backoff};
use super::{Applied, Aws, Desired, Live, ProviderError, Result, str_attr};

fn physical_id(function_name: &str, statement_id: &str) -> String {
    format!("{function_name}/{statement_id}")
}

fn parse_id(id: &str) -> Result<(&str, &str)> {
    match id.rsplit_once('/') {
        Some((f, s)) if !f.is_empty() && !s.is_empty() => Ok((f, s)),
        _ => Err(ProviderError::Other(format!("malformed lambda permission id `{id}`: expected `<function_name>/<statement_id>`"))),
    }
}

fn outputs(id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("id".to_string(), id.to_string())])
}

/// A policy value that may be a string or a list holding one string.
fn single_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.len() == 1 => items[0].as_str().map(str::to_string),
        _ => None,
    }
}

/// `{"Service": "x"}`, `{"AWS": "x"}` or `"*"` → the principal as written in the manifest.
fn principal(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(m)) => ["Service", "AWS", "Federated", "CanonicalUser"]
            .iter()
            .find_map(|k| m.get(*k).and_then(single_string))
            .or_else(|| m.values().find_map(single_string))
            .unwrap_or_default(),
        Some(v) => single_string(v).unwrap_or_default(),
        None => String::new(),
    }
}

/// `Condition.ArnLike["AWS:SourceArn"]` (or `ArnEquals`), `""` when there is no such condition.
fn source_arn(statement: &Map<String, Value>) -> String {
    let Some(cond) = statement.get("Condition").and_then(Value::as_object) else {
        return String::new();
    };
    ["ArnLike", "ArnEquals"]
        .iter()
        .filter_map(|op| cond.get(*op).and_then(Value::as_object))
        .find_map(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("AWS:SourceArn")).and_then(|(_, v)| single_string(v)))
        .unwrap_or_default()
}

/// The statement with `sid` in a function policy document, as manifest attributes.
fn statement_attrs(policy: &str, function_name: &str, sid: &str) -> Result<Option<Map<String, Value>>> {
    let doc: Value = serde_json::from_str(policy)
        .map_err(|e| ProviderError::Other(format!("lambda:GetPolicy returned a policy that is not JSON: {e}")))?;
    let statements = match doc.get("Statement") {
        Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    let Some(st) = statements.into_iter().filter_map(Value::as_object).find(|s| s.get("Sid").and_then(Value::as_str) == Some(sid)) else {
        return Ok(None);
    };
    let mut attrs = Map::new();
    attrs.insert("function_name".into(), json!(function_name));
    attrs.insert("statement_id".into(), json!(sid));
    attrs.insert("action".into(), json!(st.get("Action").and_then(single_string).unwrap_or_default()));
    attrs.insert("principal".into(), json!(principal(st.get("Principal"))));
    attrs.insert("source_arn".into(), json!(source_arn(st)));
    Ok(Some(attrs))
}

pub async fn read(aws: &Aws, id: &str) -> Result<Option<Live>> {
    let (function_name, sid) = parse_id(id)?;
    let out = match aws.lambda.get_policy().function_name(function_name).send().await {
        Ok(out) => out,
        // No such function, or a function without any policy.
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
            return Ok(None);
        }
        Err(e) => return Err(ProviderError::sdk("lambda:GetPolicy", e)),
    };
    let Some(policy) = out.policy() else {
        return Ok(None);
    };
    Ok(statement_attrs(policy, function_name, sid)?.map(|attrs| Live { attrs, outputs: outputs(id) }))
}

/// Lambda refuses concurrent changes to a function and its policy; those clear up on their own.
/// A duplicate statement id is also a `ResourceConflictException`, and must not be retried.
fn is_concurrent_modification(e: &ProviderError) -> bool {
    let msg = e.message().to_ascii_lowercase();
    e.code() == Some("ResourceConflictException")
        && (msg.contains("being modified") || msg.contains("in progress") || msg.contains("try again"))
        && !msg.contains("already exists")
}

pub async fn create(aws: &Aws, desired: Desired<'_>) -> Result<Applied> {
    let d = desired.attrs;
    let function_name = str_attr(d, "function_name");
    let sid = str_attr(d, "statement_id");
    let source = str_attr(d, "source_arn");
    let request = aws
        .lambda
        .add_permission()
        .function_name(function_name)
        .statement_id(sid)
        .action(str_attr(d, "action"))
        .principal(str_attr(d, "principal"))
        .set_source_arn((!source.is_empty()).then(|| source.to_string()));
    with_backoff("lambda:AddPermission", Backoff::PROPAGATION, is_concurrent_modification, || {
        let request = request.clone();
        async move { request.send().await.map_err(|e| ProviderError::sdk("lambda:AddPermission", e)) }
    })
    .await?;
    let id = physical_id(function_name, sid);
    Ok(Applied { outputs: outputs(&id), physical_id: id })
}

/// Every field forces replacement: nothing to change in place.
pub async fn update(aws: &Aws, id: &str, _current: &Map<String, Value>, _desired: Desired<'_>) -> Result<Applied> {
    let live = read(aws, id).await?.ok_or_else(|| ProviderError::Other(format!("lambda permission {id} vanished during update")))?;
    Ok(Applied { physical_id: id.to_string(), outputs: live.outputs })
}

pub async fn delete(aws: &Aws, id: &str) -> Result<()> {
    let (function_name, sid) = parse_id(id)?;
    let request = aws.lambda.remove_permission().function_name(function_name).statement_id(sid);
    with_backoff("lambda:RemovePermission", Backoff::PROPAGATION, is_concurrent_modification, || {
        let request = request.clone();
        async move {
            match request.send().await {
                Ok(_) => Ok(()),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(()),
                Err(e) => Err(ProviderError::sdk("lambda:RemovePermission", e)),
            }
        }
    })
    .await
}

// ---- the kind: schema and the registry's entry ----

use crate::providers::resource::{Observed, Resource};
use crate::providers::schema::{DefaultValue, Field, FieldType as T, KindSchema};
use crate::providers::{Kind, rules};

pub static SCHEMA: KindSchema = KindSchema {
    type_name: "aws_lambda_permission",
    doc: "A statement in a Lambda function's resource-based policy (e.g. letting API Gateway invoke it).",
    fields: &[
        Field::new("function_name", T::String, "Function name or ARN, usually `${function.name}`")
            .required()
            .force_new()
            .check(rules::lambda_function_ref),
        Field::new("statement_id", T::String, "Statement id, unique within the function's policy")
            .required()
            .force_new()
            .check(rules::lambda_statement_id),
        Field::new("action", T::String, "Action allowed")
            .default(DefaultValue::Str("lambda:InvokeFunction"))
            .force_new()
            .check(rules::lambda_permission_action),
        Field::new("principal", T::String, "Service or account allowed, e.g. `apigateway.amazonaws.com`")
            .required()
            .force_new()
            .check(rules::lambda_principal),
        Field::new("source_arn", T::String, "Only calls from this ARN (pattern) are allowed")
            .default(DefaultValue::Str(""))
            .force_new()
            .check(rules::optional_arn),
    ],
    physical_name: "",
    create_before_destroy: false,
    retain_on_delete: false,
    outputs: &[("id", "`<function>/<statement id>`")],
    taggable: false,
    singleton: false,
};

/// `aws_lambda_permission`: A statement in a Lambda function's resource-based policy (e.g. letting API Gateway invoke it).
pub struct LambdaPermission;

impl Resource for LambdaPermission {
    type Spec = Map<String, Value>;
    const KIND: Kind = Kind::LambdaPermission;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &Self::Spec) -> Option<String> {
        Some(format!("{}/{}", super::str_attr(spec, "function_name"), super::str_attr(spec, "statement_id")))
    }

    fn parent(id: &str) -> Option<(Kind, String)> {
        id.rsplit_once('/').map(|(f, _)| {
            let name = crate::providers::lambda_function::function_name(f);
            (Kind::LambdaFunction, name.split(':').next().unwrap_or(name).to_string())
        })
    }

    fn canonical_id(id: &str) -> String {
        match id.rsplit_once('/') {
            Some((function, sid)) => format!("{}/{sid}", crate::providers::lambda_function::function_name(function)),
            None => id.to_string(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_with_arns() {
        assert_eq!(parse_id("fn/sid").unwrap(), ("fn", "sid"));
        assert_eq!(
            parse_id("arn:aws:lambda:us-east-1:123456789012:function:fn/allow-apigw").unwrap(),
            ("arn:aws:lambda:us-east-1:123456789012:function:fn", "allow-apigw")
        );
        assert!(parse_id("nosid").is_err());
        assert!(parse_id("fn/").is_err());
    }

    #[test]
    fn reads_statement_from_policy() {
        let policy = json!({
            "Version": "2012-10-17",
            "Id": "default",
            "Statement": [
                {"Sid": "other", "Effect": "Allow", "Principal": "*", "Action": "lambda:InvokeFunction", "Resource": "x"},
                {"Sid": "apigw", "Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"},
                 "Action": "lambda:InvokeFunction", "Resource": "arn:aws:lambda:us-east-1:1:function:f",
                 "Condition": {"ArnLike": {"AWS:SourceArn": "arn:aws:execute-api:us-east-1:1:abc/*/*"}}}
            ]
        })
        .to_string();
        let a = statement_attrs(&policy, "f", "apigw").unwrap().unwrap();
        assert_eq!(
            Value::Object(a),
            json!({"function_name": "f", "statement_id": "apigw", "action": "lambda:InvokeFunction",
                   "principal": "apigateway.amazonaws.com", "source_arn": "arn:aws:execute-api:us-east-1:1:abc/*/*"})
        );
        let b = statement_attrs(&policy, "f", "other").unwrap().unwrap();
        assert_eq!(b.get("principal"), Some(&json!("*")));
        assert_eq!(b.get("source_arn"), Some(&json!("")));
        assert!(statement_attrs(&policy, "f", "missing").unwrap().is_none());
    }
}
