//! `aws_lambda_permission`: a statement of a function's resource-based policy.
//!
//! Physical id: `<function_name>/<statement_id>` (the function name as written: a name, `Name:qualifier`
//! or an ARN, qualified or not; none contains `/`, and statement ids cannot either). A qualified function
//! (a version or an alias, e.g. `${alias.arn}`) has a policy of its own: the permission is added to,
//! read from and removed from that one.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_lambda::operation::add_permission::AddPermissionError;
use aws_sdk_lambda::operation::get_policy::GetPolicyError;
use aws_sdk_lambda::operation::remove_permission::RemovePermissionError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::resource::{NameCheck, Observed, Placement, Resource, find_by_name};
use super::retry::{Backoff, send_classified};
use super::schema::{DefaultValue, Field, FieldType as T, KindSchema};
use super::{Applied, Aws, ErrorClass, Kind, NotFoundOk, ProviderError, Result, rules};
use crate::artifact::Artifact;

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
    identity: crate::providers::schema::Identity::Fields(&["function_name", "statement_id"]),
};

/// A permission as the manifest gives it and as `read` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSpec {
    pub function_name: String,
    pub statement_id: String,
    pub action: String,
    pub principal: String,
    /// `""` = no `AWS:SourceArn` condition.
    pub source_arn: String,
}

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

/// The statement with `sid` in a function policy document (IAM policy JSON, as GetPolicy returns it).
fn statement(policy: &str, function_name: &str, sid: &str) -> Result<Option<PermissionSpec>> {
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
    Ok(Some(PermissionSpec {
        function_name: function_name.to_string(),
        statement_id: sid.to_string(),
        action: st.get("Action").and_then(single_string).unwrap_or_default(),
        principal: principal(st.get("Principal")),
        source_arn: source_arn(st),
    }))
}

/// Lambda refuses concurrent changes to a function and its policy; those clear up on their own.
/// A duplicate statement id is also a `ResourceConflictException`, and must not be retried.
fn is_concurrent_modification(e: &ProviderError) -> bool {
    let msg = e.message().to_ascii_lowercase();
    e.code() == Some("ResourceConflictException")
        && (msg.contains("being modified") || msg.contains("in progress") || msg.contains("try again"))
        && !msg.contains("already exists")
}

/// `aws_lambda_permission`: A statement in a Lambda function's resource-based policy (e.g. letting API Gateway invoke it).
pub struct LambdaPermission;

impl Resource for LambdaPermission {
    type Spec = PermissionSpec;
    const KIND: Kind = Kind::LambdaPermission;

    fn schema() -> &'static KindSchema {
        &SCHEMA
    }

    fn physical_id(spec: &PermissionSpec) -> Option<String> {
        Some(physical_id(&spec.function_name, &spec.statement_id))
    }

    fn name_check(spec: &PermissionSpec) -> NameCheck {
        NameCheck::Read(physical_id(&spec.function_name, &spec.statement_id))
    }

    fn placement(_id: &str) -> Placement {
        // A statement in its function's policy.
        Placement::Anywhere
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

    /// A statement has no id of its own beyond its physical id; it belongs to its function.
    fn assigned_id(_outputs: &BTreeMap<String, String>) -> Option<String> {
        None
    }

    fn derived_outputs(_spec: &PermissionSpec) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn finishes_incomplete() -> bool {
        true
    }

    async fn read(aws: &Aws, id: &str) -> Result<Option<Observed<PermissionSpec>>> {
        let (function_name, sid) = parse_id(id)?;
        let out = aws
            .lambda
            .get_policy()
            .function_name(function_name)
            .send()
            .await
            .map_err(|e| {
                // No such function, or a function without any policy.
                ProviderError::sdk_classified("lambda:GetPolicy", e, |e| match e {
                    GetPolicyError::ResourceNotFoundException(_) => ErrorClass::NotFound,
                    _ => ErrorClass::Other,
                })
            })
            .or_gone()?;
        let Some(policy) = out.as_ref().and_then(|o| o.policy()) else {
            return Ok(None);
        };
        Ok(statement(policy, function_name, sid)?.map(|spec| Observed { spec, outputs: outputs(id) }))
    }

    async fn find(aws: &Aws, spec: &PermissionSpec, _taken: &HashSet<String>) -> Result<Option<(String, Observed<PermissionSpec>)>> {
        find_by_name::<Self>(aws, spec).await
    }

    async fn create(aws: &Aws, spec: &PermissionSpec, _artifact: Option<&Artifact>) -> Result<Applied> {
        let request = aws
            .lambda
            .add_permission()
            .function_name(&spec.function_name)
            .statement_id(&spec.statement_id)
            .action(&spec.action)
            .principal(&spec.principal)
            .set_source_arn((!spec.source_arn.is_empty()).then(|| spec.source_arn.clone()));
        send_classified(
            "lambda:AddPermission",
            Backoff::PROPAGATION,
            is_concurrent_modification,
            |e| match e {
                AddPermissionError::ResourceConflictException(c)
                    if c.message().is_some_and(|m| m.to_ascii_lowercase().contains("already exist")) =>
                {
                    ErrorClass::AlreadyExists
                }
                _ => ErrorClass::Other,
            },
            || request.clone().send(),
        )
        .await?;
        let id = physical_id(&spec.function_name, &spec.statement_id);
        Ok(Applied { outputs: outputs(&id), physical_id: id })
    }

    /// Every field forces replacement: nothing to change in place.
    async fn update(
        aws: &Aws,
        id: &str,
        _current: &PermissionSpec,
        _desired: &PermissionSpec,
        _artifact: Option<&Artifact>,
    ) -> Result<Applied> {
        let live =
            Self::read(aws, id).await?.ok_or_else(|| ProviderError::Other(format!("lambda permission {id} vanished during update")))?;
        Ok(Applied { physical_id: id.to_string(), outputs: live.outputs })
    }

    async fn delete(aws: &Aws, id: &str) -> Result<()> {
        let (function_name, sid) = parse_id(id)?;
        let request = aws.lambda.remove_permission().function_name(function_name).statement_id(sid);
        send_classified(
            "lambda:RemovePermission",
            Backoff::PROPAGATION,
            is_concurrent_modification,
            |e| match e {
                RemovePermissionError::ResourceNotFoundException(_) => ErrorClass::NotFound,
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
        let a = statement(&policy, "f", "apigw").unwrap().unwrap();
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"function_name": "f", "statement_id": "apigw", "action": "lambda:InvokeFunction",
                   "principal": "apigateway.amazonaws.com", "source_arn": "arn:aws:execute-api:us-east-1:1:abc/*/*"})
        );
        let b = statement(&policy, "f", "other").unwrap().unwrap();
        assert_eq!(b.principal, "*");
        assert_eq!(b.source_arn, "");
        assert!(statement(&policy, "f", "missing").unwrap().is_none());
    }

    #[test]
    fn spec_round_trip() {
        let provider = Kind::LambdaPermission.provider();
        let attrs = json!({"function_name": "arn:aws:lambda:us-east-1:123456789012:function:Hello:live", "statement_id": "AllowApi",
                           "action": "lambda:InvokeFunction", "principal": "apigateway.amazonaws.com",
                           "source_arn": "arn:aws:execute-api:us-east-1:123456789012:abc/*/GET/hello"});
        let attrs = attrs.as_object().unwrap();
        assert_eq!(&provider.normalize(attrs).unwrap(), attrs, "manifest attributes -> spec -> live attributes");
        assert_eq!(
            provider.physical_id(attrs).unwrap().as_deref(),
            Some("arn:aws:lambda:us-east-1:123456789012:function:Hello:live/AllowApi")
        );
        assert_eq!(
            provider.parent("arn:aws:lambda:us-east-1:123456789012:function:Hello:live/AllowApi"),
            Some((Kind::LambdaFunction, "Hello".into()))
        );
        let mut wrong = attrs.clone();
        wrong.insert("source_arn".into(), json!(false));
        assert!(matches!(provider.normalize(&wrong), Err(ProviderError::Spec { .. })), "no silent default");
        let mut unknown = attrs.clone();
        unknown.insert("qualifier".into(), json!("live"));
        assert!(provider.normalize(&unknown).is_err(), "an unknown field is refused, not dropped");
    }
}
